//! SCRAM-SHA-256 credentials (the salted keys a server stores instead of a password) and the
//! RFC 5802 primitives they are built from.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The smallest iteration count accepted for stored credentials (RFC 7677 section 4).
pub const MIN_ITERATIONS: u32 = 4096;

/// The salt length, in bytes, of credentials made by [`ScramCredentials::from_password`].
pub const SALT_LEN: usize = 16;

/// The length in bytes of a SHA-256 digest, and so of each SCRAM-SHA-256 key.
pub const KEY_LEN: usize = 32;

/// A SHA-256 digest or SCRAM-SHA-256 key.
pub(crate) type Key = [u8; KEY_LEN];

/// What a server stores for one SCRAM-SHA-256 user (RFC 5802 section 3): enough to verify a
/// client's proof and to prove itself to the client, but not to impersonate the client.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The salt the password was hashed with, sent to the client.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count, sent to the client.
    pub iterations: u32,
    /// `StoredKey = H(HMAC(SaltedPassword, "Client Key"))`, which verifies the client's proof.
    pub stored_key: [u8; KEY_LEN],
    /// `ServerKey = HMAC(SaltedPassword, "Server Key")`, which signs the server's final message.
    pub server_key: [u8; KEY_LEN],
}

/// Credentials could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The iteration count is below [`MIN_ITERATIONS`].
    #[error("iteration count {0} is below the minimum of {MIN_ITERATIONS}")]
    TooFewIterations(u32),
    /// The salt is empty.
    #[error("the salt is empty")]
    EmptySalt,
    /// The password contains characters that SASLprep (RFC 4013) prohibits.
    #[error("the password is not valid under SASLprep (RFC 4013)")]
    InvalidPassword,
}

impl ScramCredentials {
    /// Derives credentials from `password` with a fresh random salt of [`SALT_LEN`] bytes.
    ///
    /// The password is prepared with SASLprep first, as RFC 5802 asks. `iterations` must be at
    /// least [`MIN_ITERATIONS`]; each client pays this many HMAC rounds per connection.
    pub fn from_password(password: &str, iterations: u32) -> Result<Self, CredentialError> {
        let mut salt = [0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Self::from_password_with_salt(password, &salt, iterations)
    }

    /// Derives credentials from `password` with the given salt (deterministic; for tests and
    /// for importing known salts). Same rules as [`ScramCredentials::from_password`].
    pub fn from_password_with_salt(
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Self, CredentialError> {
        if iterations < MIN_ITERATIONS {
            return Err(CredentialError::TooFewIterations(iterations));
        }
        if salt.is_empty() {
            return Err(CredentialError::EmptySalt);
        }
        let password =
            stringprep::saslprep(password).map_err(|_| CredentialError::InvalidPassword)?;
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let (stored_key, server_key) = keys_from_salted_password(&salted);
        Ok(Self {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        })
    }

    /// The salt in base64, as sent to the client and written to the credentials file.
    pub fn salt_base64(&self) -> String {
        STANDARD.encode(&self.salt)
    }
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("salt", &self.salt_base64())
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// `SaltedPassword = Hi(password, salt, i)`: PBKDF2-HMAC-SHA-256 with one output block.
pub(crate) fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

/// `(StoredKey, ServerKey)` from `SaltedPassword`.
pub(crate) fn keys_from_salted_password(salted: &Key) -> (Key, Key) {
    let client_key = hmac(salted, &[b"Client Key"]);
    (sha256(&client_key), hmac(salted, &[b"Server Key"]))
}

/// `HMAC-SHA-256(key, parts concatenated)`.
pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> Key {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// `SHA-256(data)`.
pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// Byte-wise XOR of two keys.
pub(crate) fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}
