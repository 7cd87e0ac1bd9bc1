//! Offline tools: `check` reads a store without changing it, `repair` sets damaged records
//! aside (or, when the database cannot be read at all, moves the directory aside).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use fjall::PersistMode;

use crate::db;
use crate::error::StoreError;
use crate::record::Clocks;
use crate::scan::{self, DamagedRecord};

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The store checked.
    pub path: PathBuf,
    /// Commit counter recovered from the database.
    pub commit_counter: u64,
    /// Commit counter of the clean-shutdown marker, when the store was closed cleanly.
    pub clean_shutdown: Option<u64>,
    /// True when the database recovered to before its clean shutdown (its journal was cut).
    pub rolled_back: bool,
    /// Session records.
    pub sessions: u64,
    /// Queued deliveries.
    pub queued: u64,
    /// Outflight states.
    pub outflight: u64,
    /// Inbound QoS 2 ids.
    pub inbound: u64,
    /// Retained messages.
    pub retained: u64,
    /// Records already in `quarantine`.
    pub quarantined: u64,
    /// Records of clients with no session (removed at the next open).
    pub orphans: u64,
    /// Damaged records (set aside at the next open or by [`repair`]).
    pub damaged: Vec<DamagedRecord>,
}

/// What [`repair`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The store repaired.
    pub path: PathBuf,
    /// Damaged records moved to `quarantine`.
    pub damaged: Vec<DamagedRecord>,
    /// Orphaned records removed.
    pub orphans_removed: u64,
    /// (commit at clean shutdown, commit recovered) when a rolled-back state was accepted.
    pub accepted_rollback: Option<(u64, u64)>,
    /// Where the directory was moved when the database could not be read at all.
    pub moved_to: Option<PathBuf>,
    /// Why it was moved.
    pub why_moved: Option<String>,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(to).map_err(StoreError::io("cannot create", to))?;
    for entry in std::fs::read_dir(from).map_err(StoreError::io("cannot list", from))? {
        let entry = entry.map_err(StoreError::io("cannot list", from))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(StoreError::io("cannot read", &entry.path()))?;
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)
                .map_err(StoreError::io("cannot copy", &entry.path()))?;
        }
    }
    Ok(())
}

/// Reads the store in `dir` without modifying it: the database is opened on a copy made
/// beside it (`<dir>.check-<pid>`, removed afterwards), because opening recovers the journal
/// in place.
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    let meta = std::fs::metadata(dir).map_err(StoreError::io("cannot read", dir))?;
    if !meta.is_dir() {
        return Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let copy = sibling(dir, &format!(".check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    let result = copy_dir(dir, &copy).and_then(|()| check_copy(dir, &copy));
    let _ = std::fs::remove_dir_all(&copy);
    result
}

fn check_copy(dir: &Path, copy: &Path) -> Result<CheckReport, StoreError> {
    let rename = |e: StoreError| rename_error(e, copy, dir);
    let db = db::open(copy, false).map_err(rename)?;
    let commit_counter = db.commit_counter().map_err(rename)?;
    let clean_shutdown = db::read_sidecar(copy).map_err(rename)?;
    let scanned =
        scan::scan(&db, Clocks::now(), true).map_err(|e| rename(StoreError::engine(copy)(e)))?;
    let r = &scanned.recovered;
    Ok(CheckReport {
        path: dir.to_path_buf(),
        commit_counter,
        clean_shutdown,
        rolled_back: clean_shutdown.is_some_and(|c| commit_counter < c),
        sessions: r.sessions.len() as u64,
        queued: scanned.queued,
        outflight: scanned.outflight,
        inbound: scanned.inbound,
        retained: r.retained.len() as u64,
        quarantined: scanned.quarantined,
        orphans: scanned.orphans.len() as u64,
        damaged: scanned.damaged.iter().map(|d| d.report()).collect(),
    })
}

/// Errors about the copy name the original directory.
fn rename_error(e: StoreError, copy: &Path, dir: &Path) -> StoreError {
    let fix = |p: PathBuf| p.strip_prefix(copy).map(|rest| dir.join(rest)).unwrap_or(p);
    match e {
        StoreError::Engine { path, source } => StoreError::Engine {
            path: fix(path),
            source,
        },
        StoreError::Damaged { path, why } => StoreError::Damaged {
            path: fix(path),
            why: why.replace(&copy.display().to_string(), &dir.display().to_string()),
        },
        StoreError::FormatVersion {
            path,
            found,
            expected,
        } => StoreError::FormatVersion {
            path: fix(path),
            found,
            expected,
        },
        StoreError::Foreign { path, why } => StoreError::Foreign {
            path: fix(path),
            why,
        },
        StoreError::Io { what, path, source } => StoreError::Io {
            what,
            path: fix(path),
            source,
        },
        other => other,
    }
}

/// Repairs the store in `dir`: damaged records move to `quarantine`, orphans are removed, a
/// rolled-back state is accepted (the clean-shutdown marker is removed). When the database
/// cannot be opened or read at all, the directory is renamed to `<dir>.damaged-<unix secs>`
/// so that a fresh store can start. Never deletes data.
pub fn repair(dir: &Path) -> Result<RepairReport, StoreError> {
    let mut report = RepairReport {
        path: dir.to_path_buf(),
        damaged: Vec::new(),
        orphans_removed: 0,
        accepted_rollback: None,
        moved_to: None,
        why_moved: None,
    };
    let attempt = (|| {
        let db = db::open(dir, false)?;
        let commit = db.commit_counter()?;
        let scanned = scan::scan(&db, Clocks::now(), true).map_err(StoreError::engine(dir))?;
        Ok((db, commit, scanned))
    })();
    let (db, commit, mut scanned) = match attempt {
        Ok(opened) => opened,
        Err(e @ (StoreError::Engine { .. } | StoreError::Damaged { .. })) => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let target = sibling(dir, &format!(".damaged-{secs}"));
            std::fs::rename(dir, &target).map_err(StoreError::io("cannot move aside", dir))?;
            tracing::warn!(from = %dir.display(), to = %target.display(), error = %e, "unreadable store moved aside");
            report.moved_to = Some(target);
            report.why_moved = Some(e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    report.damaged = scanned.damaged.iter().map(|d| d.report()).collect();
    scanned.settle(&db)?;
    report.orphans_removed = scanned.recovered.orphans_removed;
    match db::read_sidecar(dir) {
        Ok(Some(closed_at)) if commit < closed_at => {
            db::remove_sidecar(dir)?;
            report.accepted_rollback = Some((closed_at, commit));
        }
        Ok(_) => {}
        Err(StoreError::Damaged { .. }) => db::remove_sidecar(dir)?,
        Err(e) => return Err(e),
    }
    db.db
        .persist(PersistMode::SyncAll)
        .map_err(StoreError::engine(dir))?;
    Ok(report)
}
