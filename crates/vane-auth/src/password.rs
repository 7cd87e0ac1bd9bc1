//! The password file for user name and password in CONNECT, in Mosquitto's format so that
//! operators can bring their files along.
//!
//! One `user:hash` line per user; blank lines and `#` comments are skipped. The user name is
//! everything before the first `:` (Mosquitto's user names cannot contain one). The hash is
//! one of:
//!
//! - `$7$<iterations>$<base64 salt>$<base64 hash>`: PBKDF2-HMAC-SHA512 with a 64-byte
//!   output (Mosquitto 2.0 and later; written by [`PasswordHash::new`]);
//! - `$6$<base64 salt>$<base64 hash>`: `SHA-512(password || salt)` (Mosquitto 1.x), read only.
//!
//! Verification compares in constant time, and an unknown user costs as much as a known one.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// The smallest PBKDF2 iteration count [`PasswordHash::new`] accepts for new hashes. Files
/// may hold lower counts (Mosquitto writes 101), which are read as they are.
pub const MIN_NEW_ITERATIONS: u32 = 1000;

/// The salt length, in bytes, of new hashes.
pub const SALT_LEN: usize = 16;

/// The length of a SHA-512 digest, and so of every stored hash.
pub const HASH_LEN: usize = 64;

/// One user's stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// The iteration count.
        iterations: u32,
        /// The salt.
        salt: Vec<u8>,
        /// The derived key.
        hash: [u8; HASH_LEN],
    },
    /// `$6$`: SHA-512 of the password followed by the salt (Mosquitto 1.x).
    Sha512 {
        /// The salt.
        salt: Vec<u8>,
        /// The digest.
        hash: [u8; HASH_LEN],
    },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => f
                .debug_struct("Pbkdf2Sha512")
                .field("iterations", iterations)
                .finish_non_exhaustive(),
            PasswordHash::Sha512 { .. } => f.debug_struct("Sha512").finish_non_exhaustive(),
        }
    }
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    out
}

impl PasswordHash {
    /// A new `$7$` hash of `password` with a random salt.
    pub fn new(password: &str, iterations: u32) -> Result<PasswordHash, LineError> {
        if iterations < MIN_NEW_ITERATIONS {
            return Err(LineError::TooFewIterations(iterations));
        }
        let mut salt = vec![0u8; SALT_LEN];
        rand::rng().fill_bytes(&mut salt);
        Ok(PasswordHash::with_salt(password, salt, iterations))
    }

    /// A `$7$` hash of `password` with the given salt and iteration count.
    pub fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> PasswordHash {
        let hash = pbkdf2_sha512(password.as_bytes(), &salt, iterations);
        PasswordHash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        }
    }

    /// Whether `password` matches, compared in constant time. Costs the hash's iterations.
    pub fn verify(&self, password: &[u8]) -> bool {
        let (computed, stored) = match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => (pbkdf2_sha512(password, salt, *iterations), hash),
            PasswordHash::Sha512 { salt, hash } => {
                let digest: [u8; HASH_LEN] = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize()
                    .into();
                (digest, hash)
            }
        };
        computed.ct_eq(stored).into()
    }

    /// The hash in the file's notation, e.g. `$7$100000$<salt>$<hash>`.
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => format!(
                "$7${iterations}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(hash)
            ),
            PasswordHash::Sha512 { salt, hash } => {
                format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(hash))
            }
        }
    }

    /// Parses the hash part of a line (after `user:`).
    pub fn parse(text: &str) -> Result<PasswordHash, LineError> {
        let fields: Vec<&str> = text.split('$').collect();
        match fields[..] {
            ["", "7", iterations, salt, hash] => {
                let iterations: u32 = iterations
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| LineError::InvalidIterations(iterations.to_owned()))?;
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt: decode_salt(salt)?,
                    hash: decode_hash(hash)?,
                })
            }
            ["", "6", salt, hash] => Ok(PasswordHash::Sha512 {
                salt: decode_salt(salt)?,
                hash: decode_hash(hash)?,
            }),
            ["", kind, ..] if kind != "6" && kind != "7" => {
                Err(LineError::UnsupportedHash(kind.to_owned()))
            }
            _ => Err(LineError::Layout),
        }
    }
}

fn decode_salt(salt: &str) -> Result<Vec<u8>, LineError> {
    let salt = STANDARD
        .decode(salt)
        .map_err(|_| LineError::InvalidBase64("salt"))?;
    if salt.is_empty() {
        return Err(LineError::EmptySalt);
    }
    Ok(salt)
}

fn decode_hash(hash: &str) -> Result<[u8; HASH_LEN], LineError> {
    let hash = STANDARD
        .decode(hash)
        .map_err(|_| LineError::InvalidBase64("hash"))?;
    let len = hash.len();
    hash.try_into().map_err(|_| LineError::HashLength(len))
}

/// What is wrong with one line of a password file, or with a user to be written to one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line has no `:` between user name and hash.
    #[error("expected user:hash")]
    NoSeparator,
    /// The user name cannot be stored in the file.
    #[error("invalid user name: {0}")]
    InvalidUsername(&'static str),
    /// The hash is neither `$7$` nor `$6$` (a plain-text password, for example).
    #[error("unsupported hash type ${0}$ (expected $7$ or $6$)")]
    UnsupportedHash(String),
    /// The hash does not have the fields of its type.
    #[error("expected $7$iterations$salt$hash or $6$salt$hash")]
    Layout,
    /// The iteration count is not a positive number.
    #[error("invalid iteration count {0:?}")]
    InvalidIterations(String),
    /// The iteration count is too low for a new hash.
    #[error("iteration count {0} is below the minimum of {MIN_NEW_ITERATIONS}")]
    TooFewIterations(u32),
    /// A field is not valid base64.
    #[error("{0} is not valid base64")]
    InvalidBase64(&'static str),
    /// The salt is empty.
    #[error("the salt is empty")]
    EmptySalt,
    /// The hash is not the 64 bytes of a SHA-512 digest.
    #[error("the hash is {0} bytes long, expected {HASH_LEN}")]
    HashLength(usize),
    /// The user already appeared on an earlier line.
    #[error("duplicate user {0:?}")]
    DuplicateUser(String),
}

/// A password file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct PasswordFileError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub error: LineError,
}

/// Checks that `username` can be stored in a password file.
pub fn check_username(username: &str) -> Result<(), LineError> {
    if let Some(problem) = crate::username::line_problem(username) {
        return Err(LineError::InvalidUsername(problem));
    }
    if username.contains(':') {
        return Err(LineError::InvalidUsername("contains ':'"));
    }
    Ok(())
}

/// Parses one non-comment line into its user name and hash.
pub fn parse_line(line: &str) -> Result<(String, PasswordHash), LineError> {
    let (username, hash) = line.split_once(':').ok_or(LineError::NoSeparator)?;
    check_username(username)?;
    Ok((username.to_owned(), PasswordHash::parse(hash)?))
}

/// Formats one user as a line (without a line break).
pub fn format_line(username: &str, hash: &PasswordHash) -> Result<String, LineError> {
    check_username(username)?;
    Ok(format!("{username}:{}", hash.encode()))
}

/// The users of a password file, ready to verify CONNECT user names and passwords.
#[derive(Clone)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
    /// Verified against for unknown users, so that they cost as much as known ones.
    decoy: PasswordHash,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl PasswordFile {
    /// Parses a whole password file's text. Errors name the 1-based line.
    pub fn parse_str(text: &str) -> Result<PasswordFile, PasswordFileError> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at_line = |error| PasswordFileError {
                line: index + 1,
                error,
            };
            let (username, hash) = parse_line(line).map_err(at_line)?;
            if users.contains_key(&username) {
                return Err(at_line(LineError::DuplicateUser(username)));
            }
            users.insert(username, hash);
        }
        // The decoy costs what most users' hashes cost.
        let mut counts: HashMap<Option<u32>, usize> = HashMap::new();
        for hash in users.values() {
            let iterations = match hash {
                PasswordHash::Pbkdf2Sha512 { iterations, .. } => Some(*iterations),
                PasswordHash::Sha512 { .. } => None,
            };
            *counts.entry(iterations).or_default() += 1;
        }
        let common = counts
            .into_iter()
            .max_by_key(|&(iterations, n)| (n, iterations))
            .map(|(iterations, _)| iterations);
        let decoy = match common {
            Some(None) => PasswordHash::Sha512 {
                salt: vec![0; SALT_LEN],
                hash: [0; HASH_LEN],
            },
            Some(Some(iterations)) => PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt: vec![0; SALT_LEN],
                hash: [0; HASH_LEN],
            },
            None => PasswordHash::Sha512 {
                salt: vec![0; SALT_LEN],
                hash: [0; HASH_LEN],
            },
        };
        Ok(PasswordFile { users, decoy })
    }

    /// The number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when the file holds no user.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user names in the file, in no particular order.
    pub fn usernames(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// The stored hash of `username`, if the user is known.
    pub fn get(&self, username: &str) -> Option<&PasswordHash> {
        self.users.get(username)
    }

    /// Whether `username` is known and `password` is theirs. Costs a PBKDF2 run (up to a
    /// hundred milliseconds): call it off an async runtime's worker threads.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        match self.users.get(username) {
            Some(hash) => hash.verify(password),
            None => {
                // The decoy's hash is all zeros: no password matches it.
                let _ = self.decoy.verify(password);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pbkdf2_sha512_matches_a_known_vector() {
        // The widely published PBKDF2-HMAC-SHA512("password", "salt", 1 iteration) vector.
        let out = pbkdf2_sha512(b"password", b"salt", 1);
        assert_eq!(&out[..8], &[0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf]);
    }

    #[test]
    fn new_hash_round_trips_and_verifies() {
        let hash = PasswordHash::new("s3cret", 1000).unwrap();
        assert!(hash.verify(b"s3cret"));
        assert!(!hash.verify(b"s3cret "));
        assert!(!hash.verify(b""));
        let line = format_line("alice", &hash).unwrap();
        assert!(line.starts_with("alice:$7$1000$"), "{line}");
        let (user, parsed) = parse_line(&line).unwrap();
        assert_eq!(user, "alice");
        assert_eq!(parsed, hash);
        assert!(parsed.verify(b"s3cret"));
        assert_eq!(
            PasswordHash::new("x", 999),
            Err(LineError::TooFewIterations(999))
        );
    }

    #[test]
    fn mosquitto_pbkdf2_line_with_known_salt() {
        // As mosquitto_passwd writes it: 101 iterations, a 12-byte salt.
        let salt = b"0123456789ab".to_vec();
        let hash = pbkdf2_sha512(b"mosquitto", &salt, 101);
        let line = format!(
            "dev:$7$101${}${}",
            STANDARD.encode(&salt),
            STANDARD.encode(hash)
        );
        let file = PasswordFile::parse_str(&format!("# migrated\n\n{line}\n")).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("dev", b"mosquitto"));
        assert!(!file.verify("dev", b"mosquitt0"));
        assert!(!file.verify("other", b"mosquitto"));
    }

    #[test]
    fn mosquitto_sha512_line() {
        let salt = b"saltsaltsalt".to_vec();
        let digest: [u8; HASH_LEN] = Sha512::new()
            .chain_update(b"old password")
            .chain_update(&salt)
            .finalize()
            .into();
        let line = format!(
            "legacy:$6${}${}",
            STANDARD.encode(&salt),
            STANDARD.encode(digest)
        );
        let file = PasswordFile::parse_str(&line).unwrap();
        assert!(file.verify("legacy", b"old password"));
        assert!(!file.verify("legacy", b"new password"));
        // Read only: re-encoding gives the same line back.
        assert_eq!(
            format_line("legacy", file.get("legacy").unwrap()).unwrap(),
            line
        );
    }

    #[test]
    fn errors_name_the_line() {
        let good = format_line("a", &PasswordHash::new("pw", 1000).unwrap()).unwrap();
        let cases = [
            ("plain", LineError::NoSeparator),
            ("bob:hunter2", LineError::Layout),
            ("bob:$1$abc$def", LineError::UnsupportedHash("1".into())),
            (
                "bob:$7$x$AAAA$AAAA",
                LineError::InvalidIterations("x".into()),
            ),
            (
                "bob:$7$0$AAAA$AAAA",
                LineError::InvalidIterations("0".into()),
            ),
            ("bob:$7$10$!!$AAAA", LineError::InvalidBase64("salt")),
            ("bob:$7$10$$AAAA", LineError::EmptySalt),
            ("bob:$6$AAAA$AAAA", LineError::HashLength(3)),
            (":$6$AAAA$AAAA", LineError::InvalidUsername("empty")),
            ("a:$6$AAAA", LineError::Layout),
        ];
        for (bad, error) in cases {
            let text = format!("# header\n{good}\n{bad}\n");
            let err = PasswordFile::parse_str(&text).unwrap_err();
            assert_eq!(err, PasswordFileError { line: 3, error }, "{bad}");
            assert!(err.to_string().starts_with("line 3: "));
        }
        let err = PasswordFile::parse_str(&format!("{good}\n{good}\n")).unwrap_err();
        assert_eq!(err.error, LineError::DuplicateUser("a".into()));
        assert_eq!(err.line, 2);
    }

    #[test]
    fn user_names_that_cannot_be_stored() {
        let hash = PasswordHash::new("pw", 1000).unwrap();
        for bad in ["", "a:b", "#a", " a", "a\n"] {
            assert!(format_line(bad, &hash).is_err(), "{bad:?}");
        }
        assert!(format!("{hash:?}").starts_with("Pbkdf2Sha512"));
        assert!(!format!("{hash:?}").contains("hash"));
    }
}
