//! The store's error type: one variant per thing the operator or the broker does about it.

use std::path::PathBuf;

/// What went wrong opening, running, checking or repairing the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store path exists and is not a directory.
    #[error("store path {path} is a file, not a directory: point the store at a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The directory holds files but no Vane store.
    #[error(
        "{path} holds files but no Vane store ({why}); point the store at an empty or new directory, or move those files away"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// The store was written by another format version of Vane.
    #[error(
        "the store in {path} has format version {found}, this Vane reads version {expected}; run the Vane version that wrote it, or start with a new directory"
    )]
    FormatVersion {
        /// The directory.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// The store recovered to an earlier state than the one it was cleanly closed at.
    #[error(
        "the store in {path} was closed cleanly after commit {closed_at} but recovered only up to commit {recovered}: its journal was cut and acknowledged writes are lost; run `vane store check` to see what is left and `vane store repair` to accept it and start from there"
    )]
    RolledBack {
        /// The directory.
        path: PathBuf,
        /// Commit counter written at the clean shutdown.
        closed_at: u64,
        /// Commit counter recovered from the database.
        recovered: u64,
    },
    /// The clean-shutdown marker or the store's metadata cannot be read.
    #[error(
        "the store in {path} is damaged: {why}; run `vane store check` and `vane store repair`"
    )]
    Damaged {
        /// The directory.
        path: PathBuf,
        /// What is damaged.
        why: String,
    },
    /// The storage engine failed.
    #[error("storage engine error in {path}: {source}; run `vane store check` and `vane store repair` if it persists")]
    Engine {
        /// The directory.
        path: PathBuf,
        /// The engine's error.
        #[source]
        source: fjall::Error,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The committer thread stopped after a failed commit; nothing submitted since is durable.
    #[error("the store in {path} stopped after a failed commit: {why}")]
    Failed {
        /// The directory.
        path: PathBuf,
        /// The commit error.
        why: String,
    },
}

impl StoreError {
    pub(crate) fn engine(path: &std::path::Path) -> impl FnOnce(fjall::Error) -> StoreError + '_ {
        move |source| StoreError::Engine {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn io<'a>(
        what: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
        move |source| StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}
