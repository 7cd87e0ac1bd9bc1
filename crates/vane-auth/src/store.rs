//! Where authenticators find users' credentials: the [`CredentialStore`] trait and its
//! in-memory implementation.

use std::collections::HashMap;
use std::fmt;

use crate::scram::credentials::{CredentialError, ScramCredentials};

/// A source of users' stored credentials.
///
/// User names are looked up exactly as the authenticator received them, after SASLprep
/// (RFC 4013): store them in that prepared form.
pub trait CredentialStore: Send + Sync {
    /// The SCRAM-SHA-256 credentials of `username`, or `None` for an unknown user.
    fn scram(&self, username: &str) -> Option<ScramCredentials>;
}

/// A [`CredentialStore`] held in memory, for example parsed from a credentials file with
/// [`scram::file::parse_str`](crate::scram::file::parse_str).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MemoryCredentialStore {
    users: HashMap<String, ScramCredentials>,
}

impl MemoryCredentialStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `username`'s credentials and returns the ones they replace, if any. The name is
    /// stored as given: it should already be in SASLprep form.
    pub fn insert(
        &mut self,
        username: impl Into<String>,
        credentials: ScramCredentials,
    ) -> Option<ScramCredentials> {
        self.users.insert(username.into(), credentials)
    }

    /// Derives credentials from `password` with a fresh random salt (see
    /// [`ScramCredentials::from_password`]) and stores them for `username`.
    pub fn insert_password(
        &mut self,
        username: impl Into<String>,
        password: &str,
        iterations: u32,
    ) -> Result<(), CredentialError> {
        let credentials = ScramCredentials::from_password(password, iterations)?;
        self.insert(username, credentials);
        Ok(())
    }

    /// Removes `username` and returns their credentials, if they were stored.
    pub fn remove(&mut self, username: &str) -> Option<ScramCredentials> {
        self.users.remove(username)
    }

    /// True when `username` has credentials here.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// The stored users and their credentials, sorted by user name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ScramCredentials)> {
        let mut users: Vec<_> = self.users.iter().map(|(k, v)| (k.as_str(), v)).collect();
        users.sort_unstable_by_key(|(name, _)| *name);
        users.into_iter()
    }

    /// The number of stored users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when no user is stored.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl CredentialStore for MemoryCredentialStore {
    fn scram(&self, username: &str) -> Option<ScramCredentials> {
        self.users.get(username).cloned()
    }
}

impl fmt::Debug for MemoryCredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.users.keys().collect();
        names.sort_unstable();
        f.debug_struct("MemoryCredentialStore")
            .field("users", &names)
            .finish()
    }
}
