//! The SCRAM credentials file: one `username:SCRAM-SHA-256:iterations:salt:stored_key:server_key`
//! line per user, the last three fields in base64; blank lines and `#` comments are skipped.
//!
//! The user name is everything before the last five `:`-separated fields, so it may itself
//! contain `:`. It must be in SASLprep form, non-empty, free of control characters and of
//! leading or trailing white space, and must not start with `#`.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::credentials::{ScramCredentials, KEY_LEN, MIN_ITERATIONS};
use super::SCRAM_SHA_256;
use crate::store::MemoryCredentialStore;

/// What is wrong with one line of a credentials file, or with a user to be written to one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line does not have the six `:`-separated fields.
    #[error("expected 6 ':'-separated fields, found {0}")]
    FieldCount(usize),
    /// The user name cannot be stored in the file.
    #[error("invalid user name: {0}")]
    InvalidUsername(&'static str),
    /// The mechanism field is not `SCRAM-SHA-256`.
    #[error("unsupported mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// The iteration count is not a number.
    #[error("invalid iteration count {0:?}")]
    InvalidIterations(String),
    /// The iteration count is below [`MIN_ITERATIONS`].
    #[error("iteration count {0} is below the minimum of {MIN_ITERATIONS}")]
    TooFewIterations(u32),
    /// A field is not valid base64.
    #[error("{0} is not valid base64")]
    InvalidBase64(&'static str),
    /// The salt is empty.
    #[error("the salt is empty")]
    EmptySalt,
    /// A key does not have the 32 bytes of a SHA-256 digest.
    #[error("{field} is {len} bytes long, expected {KEY_LEN}")]
    KeyLength {
        /// The field: `stored_key` or `server_key`.
        field: &'static str,
        /// Its decoded length.
        len: usize,
    },
    /// The user already appeared on an earlier line.
    #[error("duplicate user {0:?}")]
    DuplicateUser(String),
}

/// A credentials file could not be read or parsed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialFileError {
    /// A line is invalid.
    #[error("line {line}: {error}")]
    Line {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        error: LineError,
    },
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Parses one non-comment line into its user name and credentials.
pub fn parse_line(line: &str) -> Result<(String, ScramCredentials), LineError> {
    let fields: Vec<&str> = line.rsplitn(6, ':').collect();
    let [server_key, stored_key, salt, iterations, mechanism, username] = fields[..] else {
        return Err(LineError::FieldCount(fields.len()));
    };
    check_username(username)?;
    if mechanism != SCRAM_SHA_256 {
        return Err(LineError::UnsupportedMechanism(mechanism.to_owned()));
    }
    let iterations: u32 = iterations
        .parse()
        .map_err(|_| LineError::InvalidIterations(iterations.to_owned()))?;
    if iterations < MIN_ITERATIONS {
        return Err(LineError::TooFewIterations(iterations));
    }
    let salt = STANDARD
        .decode(salt)
        .map_err(|_| LineError::InvalidBase64("salt"))?;
    if salt.is_empty() {
        return Err(LineError::EmptySalt);
    }
    let credentials = ScramCredentials {
        salt,
        iterations,
        stored_key: decode_key("stored_key", stored_key)?,
        server_key: decode_key("server_key", server_key)?,
    };
    Ok((username.to_owned(), credentials))
}

/// Formats one user as a line (without a line break), checking that it will parse back.
pub fn format_line(username: &str, credentials: &ScramCredentials) -> Result<String, LineError> {
    check_username(username)?;
    if credentials.iterations < MIN_ITERATIONS {
        return Err(LineError::TooFewIterations(credentials.iterations));
    }
    if credentials.salt.is_empty() {
        return Err(LineError::EmptySalt);
    }
    Ok(format!(
        "{username}:{SCRAM_SHA_256}:{}:{}:{}:{}",
        credentials.iterations,
        credentials.salt_base64(),
        STANDARD.encode(credentials.stored_key),
        STANDARD.encode(credentials.server_key),
    ))
}

/// Parses a whole credentials file's text. Errors name the 1-based line.
pub fn parse_str(text: &str) -> Result<MemoryCredentialStore, CredentialFileError> {
    let mut store = MemoryCredentialStore::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at_line = |error| CredentialFileError::Line {
            line: index + 1,
            error,
        };
        let (username, credentials) = parse_line(line).map_err(at_line)?;
        if store.contains(&username) {
            return Err(at_line(LineError::DuplicateUser(username)));
        }
        store.insert(username, credentials);
    }
    Ok(store)
}

/// Formats a whole store as credentials file text, one line per user sorted by name, each
/// ending with a line break.
pub fn format_store(store: &MemoryCredentialStore) -> Result<String, LineError> {
    let mut text = String::new();
    for (username, credentials) in store.iter() {
        text.push_str(&format_line(username, credentials)?);
        text.push('\n');
    }
    Ok(text)
}

/// Reads and parses the credentials file at `path`.
pub fn load(path: impl AsRef<Path>) -> Result<MemoryCredentialStore, CredentialFileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| CredentialFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text)
}

fn check_username(username: &str) -> Result<(), LineError> {
    if let Some(problem) = crate::username::line_problem(username) {
        return Err(LineError::InvalidUsername(problem));
    }
    match stringprep::saslprep(username) {
        Ok(prepared) if prepared == username => Ok(()),
        _ => Err(LineError::InvalidUsername("not in SASLprep form")),
    }
}

fn decode_key(field: &'static str, value: &str) -> Result<[u8; KEY_LEN], LineError> {
    let key = STANDARD
        .decode(value)
        .map_err(|_| LineError::InvalidBase64(field))?;
    let len = key.len();
    key.try_into()
        .map_err(|_| LineError::KeyLength { field, len })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::CredentialStore;

    const RFC_LINE: &str = "user:SCRAM-SHA-256:4096:W22ZaJ0SNY7soEsUEjb6gQ==:WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    fn rfc_credentials() -> ScramCredentials {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        ScramCredentials::from_password_with_salt("pencil", &salt, 4096).unwrap()
    }

    fn line_error(text: &str) -> (usize, LineError) {
        match parse_str(text) {
            Err(CredentialFileError::Line { line, error }) => (line, error),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn rfc_credentials_format_to_the_known_line() {
        assert_eq!(format_line("user", &rfc_credentials()).unwrap(), RFC_LINE);
        assert_eq!(
            parse_line(RFC_LINE).unwrap(),
            ("user".to_owned(), rfc_credentials())
        );
    }

    #[test]
    fn round_trip() {
        let mut store = MemoryCredentialStore::new();
        store.insert("user", rfc_credentials());
        for (name, password) in [
            ("alice", "a"),
            ("with:colons:", "b"),
            ("jürgen", "c"),
            ("a b", "d"),
        ] {
            store.insert_password(name, password, 5000).unwrap();
        }
        let text = format_store(&store).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().any(|line| line == RFC_LINE));
        let parsed = parse_str(&text).unwrap();
        assert_eq!(parsed, store);
        assert_eq!(parsed.scram("with:colons:"), store.scram("with:colons:"));
        assert_eq!(format_store(&parsed).unwrap(), text);
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_skipped() {
        let text = format!("# users\r\n\r\n   \n  # indented comment\n{RFC_LINE}\r\n\n");
        let store = parse_str(&text).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.scram("user"), Some(rfc_credentials()));
        assert!(parse_str("").unwrap().is_empty());
    }

    #[test]
    fn parse_errors_carry_the_line_number() {
        let good = RFC_LINE;
        let cases: Vec<(String, usize, LineError)> = vec![
            (
                format!("# c\n{good}\nuser:SCRAM-SHA-256:4096"),
                3,
                LineError::FieldCount(3),
            ),
            (
                format!("{good}\n{good}"),
                2,
                LineError::DuplicateUser("user".into()),
            ),
            (
                good.replacen("user", "", 1),
                1,
                LineError::InvalidUsername("empty"),
            ),
            (
                good.replace("SCRAM-SHA-256", "SCRAM-SHA-1"),
                1,
                LineError::UnsupportedMechanism("SCRAM-SHA-1".into()),
            ),
            (
                good.replace(":4096:", ":many:"),
                1,
                LineError::InvalidIterations("many".into()),
            ),
            (
                good.replace(":4096:", ":-1:"),
                1,
                LineError::InvalidIterations("-1".into()),
            ),
            (
                good.replace(":4096:", ":4095:"),
                1,
                LineError::TooFewIterations(4095),
            ),
            (
                good.replace("W22ZaJ0SNY7soEsUEjb6gQ==", "W22Z*"),
                1,
                LineError::InvalidBase64("salt"),
            ),
            (
                good.replace("W22ZaJ0SNY7soEsUEjb6gQ==", ""),
                1,
                LineError::EmptySalt,
            ),
            (
                good.replace("WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=", "WG5d"),
                1,
                LineError::KeyLength {
                    field: "stored_key",
                    len: 3,
                },
            ),
            (
                good.replace("wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", "wfPL!"),
                1,
                LineError::InvalidBase64("server_key"),
            ),
            (
                good.replacen("user", "I\u{AD}X", 1),
                1,
                LineError::InvalidUsername("not in SASLprep form"),
            ),
        ];
        for (text, line, error) in cases {
            assert_eq!(line_error(&text), (line, error.clone()), "for {text:?}");
            let message = parse_str(&text).unwrap_err().to_string();
            assert!(message.starts_with(&format!("line {line}: ")), "{message}");
        }
    }

    #[test]
    fn unrepresentable_users_are_refused_by_format() {
        let credentials = rfc_credentials();
        for (name, reason) in [
            ("", "empty"),
            ("#root", "starts with '#'"),
            (" padded", "leading or trailing white space"),
            ("two\nlines", "control character"),
        ] {
            assert_eq!(
                format_line(name, &credentials),
                Err(LineError::InvalidUsername(reason)),
                "for {name:?}"
            );
        }
        let weak = ScramCredentials {
            iterations: 1,
            ..credentials.clone()
        };
        assert_eq!(format_line("u", &weak), Err(LineError::TooFewIterations(1)));
        let unsalted = ScramCredentials {
            salt: vec![],
            ..credentials
        };
        assert_eq!(format_line("u", &unsalted), Err(LineError::EmptySalt));
    }

    #[test]
    fn load_reads_a_file_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("vane-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("users.scram");
        std::fs::write(&path, format!("{RFC_LINE}\n")).unwrap();
        let store = load(&path).unwrap();
        assert_eq!(store.scram("user"), Some(rfc_credentials()));
        std::fs::remove_dir_all(&dir).unwrap();
        match load(&path) {
            Err(CredentialFileError::Io { path: reported, .. }) => assert_eq!(reported, path),
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
