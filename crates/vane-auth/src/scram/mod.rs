//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5.0 enhanced authentication method.
//!
//! The exchange, with the AUTH packets that carry it:
//!
//! 1. CONNECT data: client-first-message `n,,n=user,r=cnonce`;
//!    the server answers AUTH 0x18 with server-first-message `r=cnonce+snonce,s=salt,i=iterations`.
//! 2. AUTH 0x18 data: client-final-message `c=biws,r=cnonce+snonce,p=proof`;
//!    the server answers CONNACK 0x00 with server-final-message `v=signature`.
//!
//! Channel binding (`y`, `p=` and the `-PLUS` method) and authorization identities are not
//! supported. An unknown user gets a server-first-message with a salt derived from the user name
//! and a server secret, so the exchange looks the same as for a known user until the proof fails.

pub mod credentials;
pub mod file;
mod messages;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use subtle::{Choice, ConstantTimeEq};

use crate::exchange::{AuthExchange, AuthFailure, AuthStep, Authenticator};
use crate::store::CredentialStore;
use credentials::{hmac, sha256, xor, SALT_LEN};
pub use credentials::{CredentialError, ScramCredentials, MIN_ITERATIONS};
use messages::{format_server_final, format_server_first, parse_client_final, parse_client_first};

/// The Authentication Method name of SCRAM-SHA-256.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// The length in random bytes of a server nonce (base64-encoded on the wire).
const SERVER_NONCE_LEN: usize = 24;

/// A source of server nonces.
type NonceSource = Arc<dyn Fn() -> String + Send + Sync>;

/// The SCRAM-SHA-256 [`Authenticator`], verifying clients against a [`CredentialStore`].
#[derive(Clone)]
pub struct ScramAuthenticator {
    store: Arc<dyn CredentialStore>,
    secret: [u8; 32],
    fake_iterations: u32,
    nonce: NonceSource,
}

impl ScramAuthenticator {
    /// An authenticator over `store`, with a random server secret for unknown users' fake
    /// salts and [`MIN_ITERATIONS`] as their iteration count.
    ///
    /// With a random secret, an unknown user's fake salt changes when the server restarts
    /// while a real user's does not: set a persistent secret with
    /// [`ScramAuthenticator::with_secret`] to hide that too.
    pub fn new(store: Arc<dyn CredentialStore>) -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self {
            store,
            secret,
            fake_iterations: MIN_ITERATIONS,
            nonce: Arc::new(random_nonce),
        }
    }

    /// Sets the server secret that unknown users' fake salts and keys are derived from. Keep
    /// it stable across restarts and private.
    #[must_use]
    pub fn with_secret(mut self, secret: [u8; 32]) -> Self {
        self.secret = secret;
        self
    }

    /// Sets the iteration count announced for unknown users; it should match the count most
    /// stored credentials use. Values below [`MIN_ITERATIONS`] are raised to it.
    #[must_use]
    pub fn with_fake_iterations(mut self, iterations: u32) -> Self {
        self.fake_iterations = iterations.max(MIN_ITERATIONS);
        self
    }

    /// Replaces the random server nonce with `nonce()`'s output, which must be printable ASCII
    /// without `,`. For deterministic tests only: a predictable nonce defeats SCRAM's replay
    /// protection.
    #[must_use]
    pub fn with_nonce_generator(
        mut self,
        nonce: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        self.nonce = Arc::new(nonce);
        self
    }

    /// Credentials for an unknown user: derived from the secret and the name, so that the same
    /// name always gets the same salt, and unusable as nobody knows the keys' password.
    fn fake_credentials(&self, username: &str) -> ScramCredentials {
        let name = username.as_bytes();
        let salt = hmac(&self.secret, &[b"vane-auth scram fake salt\0", name]);
        ScramCredentials {
            salt: salt[..SALT_LEN].to_vec(),
            iterations: self.fake_iterations,
            stored_key: hmac(&self.secret, &[b"vane-auth scram fake stored key\0", name]),
            server_key: hmac(&self.secret, &[b"vane-auth scram fake server key\0", name]),
        }
    }
}

impl Authenticator for ScramAuthenticator {
    fn method(&self) -> &str {
        SCRAM_SHA_256
    }

    fn start(&self, _client_id: &str) -> Box<dyn AuthExchange> {
        Box::new(ScramExchange {
            authenticator: self.clone(),
            state: State::AwaitClientFirst,
        })
    }
}

impl fmt::Debug for ScramAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramAuthenticator")
            .field("fake_iterations", &self.fake_iterations)
            .finish_non_exhaustive()
    }
}

/// 24 CSPRNG bytes in base64.
fn random_nonce() -> String {
    let mut bytes = [0u8; SERVER_NONCE_LEN];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// Where one SCRAM exchange stands.
enum State {
    /// Waiting for the client-first-message (the CONNECT's data).
    AwaitClientFirst,
    /// The server-first-message was sent; waiting for the client-final-message.
    AwaitClientFinal(Pending),
    /// The exchange has ended, in success or failure.
    Done,
}

/// What the server remembers between its server-first-message and the client-final-message.
struct Pending {
    /// client-first-message-bare, for the AuthMessage.
    client_first_bare: String,
    /// server-first-message, for the AuthMessage.
    server_first: String,
    /// The combined nonce the client must echo.
    nonce: String,
    /// The prepared user name.
    username: String,
    /// The user's credentials, or fake ones.
    credentials: ScramCredentials,
    /// False when the credentials are fake: the exchange then fails at the proof.
    known: bool,
}

/// One SCRAM-SHA-256 exchange.
struct ScramExchange {
    authenticator: ScramAuthenticator,
    state: State,
}

impl AuthExchange for ScramExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitClientFirst => self.client_first(data),
            State::AwaitClientFinal(pending) => pending.client_final(data),
            State::Done => Err(AuthFailure::OutOfOrder),
        };
        result.unwrap_or_else(AuthStep::Failure)
    }
}

impl ScramExchange {
    /// Handles the client-first-message and answers with the server-first-message.
    fn client_first(&mut self, data: Option<&[u8]>) -> Result<AuthStep, AuthFailure> {
        let message = message_text(data, "missing client-first-message")?;
        let client_first = parse_client_first(message)?;
        let auth = &self.authenticator;
        let (credentials, known) = match auth.store.scram(&client_first.username) {
            Some(credentials) => (credentials, true),
            None => (auth.fake_credentials(&client_first.username), false),
        };
        let nonce = format!("{}{}", client_first.nonce, (auth.nonce)());
        let server_first = format_server_first(&nonce, &credentials.salt, credentials.iterations);
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitClientFinal(Pending {
            client_first_bare: client_first.bare.to_owned(),
            server_first,
            nonce,
            username: client_first.username,
            credentials,
            known,
        });
        Ok(AuthStep::Continue(reply))
    }
}

impl Pending {
    /// Handles the client-final-message: verifies the proof in constant time and answers with
    /// the server-final-message.
    fn client_final(self, data: Option<&[u8]>) -> Result<AuthStep, AuthFailure> {
        let message = message_text(data, "missing client-final-message")?;
        let client_final = parse_client_final(message)?;
        if client_final.nonce != self.nonce {
            return Err(AuthFailure::Malformed(
                "nonce does not match the server-first-message",
            ));
        }
        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            self.server_first.as_bytes(),
            b",",
            client_final.without_proof.as_bytes(),
        ];
        let credentials = &self.credentials;
        let client_signature = hmac(&credentials.stored_key, &auth_message);
        let client_key = xor(&client_final.proof, &client_signature);
        let proof_ok = sha256(&client_key).ct_eq(&credentials.stored_key);
        if !bool::from(proof_ok & Choice::from(u8::from(self.known))) {
            return Err(AuthFailure::InvalidCredentials);
        }
        let server_signature = hmac(&credentials.server_key, &auth_message);
        Ok(AuthStep::Success {
            data: Some(format_server_final(&server_signature).into_bytes()),
            username: self.username,
        })
    }
}

/// The message as UTF-8 text; SCRAM messages are UTF-8.
fn message_text<'a>(data: Option<&'a [u8]>, missing: &'static str) -> Result<&'a str, AuthFailure> {
    let data = data.ok_or(AuthFailure::Malformed(missing))?;
    std::str::from_utf8(data).map_err(|_| AuthFailure::Malformed("message is not UTF-8"))
}
