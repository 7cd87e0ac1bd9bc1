//! MQTT 5.0 enhanced authentication (section 4.12) from the client's side: [`ScramClient`], a
//! SCRAM-SHA-256 client (RFC 5802, RFC 7677) written independently of the broker's
//! `vane-auth`, so that a test checks the broker against the RFC rather than against itself,
//! and builders for the CONNECT and AUTH packets that carry the exchange.
//!
//! ```
//! use test_support::enhanced_auth::ScramClient;
//!
//! // RFC 7677 section 3's example exchange.
//! let mut client = ScramClient::with_nonce("user", "pencil", "rOprNGfwEbeRWgbNEkqO");
//! assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
//! let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
//!                      s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
//! let client_final = client.client_final(server_first).expect("valid server-first");
//! assert_eq!(
//!     client_final,
//!     b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
//!       p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
//! );
//! client
//!     .verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
//!     .expect("the server knows the password");
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use vane_proto::{Auth, AuthProperties, AuthReason, Connect, Packet};

/// The Authentication Method name of SCRAM-SHA-256.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// What is wrong with a server's SCRAM message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramClientError {
    /// The server-first-message does not follow RFC 5802's syntax.
    MalformedServerFirst(&'static str),
    /// The server's nonce does not start with the client's.
    NonceMismatch,
    /// The server-final-message is malformed or carries `e=`.
    MalformedServerFinal(String),
    /// The server's signature is wrong: it does not know the password's keys.
    BadServerSignature,
    /// `verify_server_final` before `client_final`.
    OutOfOrder,
}

impl std::fmt::Display for ScramClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for ScramClientError {}

/// One SCRAM-SHA-256 exchange, client side.
///
/// The password is used as given: SASLprep is the identity for the printable ASCII passwords
/// tests use. No channel binding, no authorization identity.
#[derive(Debug, Clone)]
pub struct ScramClient {
    username: String,
    password: String,
    nonce: String,
    /// The ServerSignature the server-final-message must carry, once client_final ran.
    expected_server_signature: Option<[u8; 32]>,
}

impl ScramClient {
    /// A client for `username` and `password` with a fresh nonce, unique within the process.
    pub fn new(username: &str, password: &str) -> ScramClient {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = format!("{}-{n}-{nanos}", std::process::id());
        let nonce = STANDARD.encode(&Sha256::digest(seed.as_bytes())[..18]);
        ScramClient::with_nonce(username, password, &nonce)
    }

    /// A client with a given nonce (printable ASCII without `,`), for known-answer tests.
    pub fn with_nonce(username: &str, password: &str, nonce: &str) -> ScramClient {
        ScramClient {
            username: username.to_owned(),
            password: password.to_owned(),
            nonce: nonce.to_owned(),
            expected_server_signature: None,
        }
    }

    /// The client's nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// client-first-message-bare: `n=user,r=nonce`, the user name escaped as a saslname.
    fn client_first_bare(&self) -> String {
        let name = self.username.replace('=', "=3D").replace(',', "=2C");
        format!("n={name},r={}", self.nonce)
    }

    /// The client-first-message, the Authentication Data of CONNECT (or of AUTH 0x19).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    /// Answers the server-first-message (the data of the server's AUTH 0x18) with the
    /// client-final-message, and remembers the signature the server must prove itself with.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramClientError> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| ScramClientError::MalformedServerFirst("not UTF-8"))?;
        let mut attributes = server_first.split(',');
        let mut attribute = |prefix: &str, what: &'static str| {
            attributes
                .next()
                .and_then(|a| a.strip_prefix(prefix))
                .ok_or(ScramClientError::MalformedServerFirst(what))
        };
        let nonce = attribute("r=", "no nonce")?;
        let salt = attribute("s=", "no salt")?;
        let iterations = attribute("i=", "no iteration count")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramClientError::NonceMismatch);
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| ScramClientError::MalformedServerFirst("salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramClientError::MalformedServerFirst("invalid iteration count"))?;
        if iterations == 0 {
            return Err(ScramClientError::MalformedServerFirst("zero iterations"));
        }

        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(self.password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let server_key = hmac(&salted, b"Server Key");

        // "biws" is base64("n,,"), the GS2 header without channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!(
            "{},{server_first},{without_proof}",
            self.client_first_bare()
        );
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message (the data of CONNACK 0x00 or of AUTH 0x00): the server
    /// must prove it knows the password's ServerKey.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<(), ScramClientError> {
        let expected = self
            .expected_server_signature
            .ok_or(ScramClientError::OutOfOrder)?;
        let text = String::from_utf8_lossy(server_final);
        let signature = text
            .strip_prefix("v=")
            .ok_or_else(|| ScramClientError::MalformedServerFinal(text.to_string()))?;
        let signature = STANDARD
            .decode(signature)
            .map_err(|_| ScramClientError::MalformedServerFinal(text.to_string()))?;
        if signature != expected {
            return Err(ScramClientError::BadServerSignature);
        }
        Ok(())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// An MQTT 5.0 CONNECT (clean start, keep alive 60 s) naming an Authentication Method, with
/// optional Authentication Data.
pub fn connect_with_auth(client_id: &str, method: &str, data: Option<&[u8]>) -> Connect {
    let mut connect = crate::connect_v5(client_id);
    connect.properties.authentication_method = Some(method.into());
    connect.properties.authentication_data = data.map(Bytes::copy_from_slice);
    connect
}

/// An AUTH packet with a method and optional data.
pub fn auth(reason: AuthReason, method: &str, data: Option<&[u8]>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: AuthProperties {
            authentication_method: Some(method.into()),
            authentication_data: data.map(Bytes::copy_from_slice),
            ..Default::default()
        },
    })
}

/// The reason, method and data of an AUTH packet, or a panic naming what came instead.
pub fn expect_auth(packet: Option<Packet>) -> (AuthReason, Option<String>, Option<Bytes>) {
    match packet {
        Some(Packet::Auth(a)) => (
            a.reason,
            a.properties.authentication_method.map(|m| m.to_string()),
            a.properties.authentication_data,
        ),
        other => panic!("expected AUTH, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn user_names_are_escaped_and_nonces_unique() {
        let a = ScramClient::new("a,b=c", "pw");
        let b = ScramClient::new("a,b=c", "pw");
        assert_ne!(a.nonce(), b.nonce());
        assert!(!a.nonce().contains(','));
        let first = String::from_utf8(a.client_first()).unwrap();
        assert_eq!(first, format!("n,,n=a=2Cb=3Dc,r={}", a.nonce()));
    }

    #[test]
    fn bad_server_messages_are_refused() {
        let mut c = ScramClient::with_nonce("u", "p", "abc");
        assert_eq!(
            c.verify_server_final(b"v=AAAA"),
            Err(ScramClientError::OutOfOrder)
        );
        assert_eq!(
            c.client_final(b"r=xyz123,s=AAAA,i=4096"),
            Err(ScramClientError::NonceMismatch)
        );
        assert_eq!(
            c.client_final(b"r=abc,s=AAAA,i=4096"),
            Err(ScramClientError::NonceMismatch)
        );
        assert!(c.client_final(b"r=abcd,i=4096").is_err());
        c.client_final(b"r=abcd,s=AAAA,i=4096").unwrap();
        assert_eq!(
            c.verify_server_final(b"v=AAAA"),
            Err(ScramClientError::BadServerSignature)
        );
        assert!(matches!(
            c.verify_server_final(b"e=invalid-proof"),
            Err(ScramClientError::MalformedServerFinal(_))
        ));
    }
}
