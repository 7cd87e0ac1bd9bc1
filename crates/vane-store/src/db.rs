//! The fjall database behind the store: what a directory holds, opening it with Vane's limits,
//! the format version key, and the clean-shutdown sidecar.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::error::StoreError;
use crate::record;

/// Format version of the store's keys and values, kept in `meta` under [`FORMAT_KEY`].
pub const FORMAT_VERSION: u32 = 1;
pub(crate) const FORMAT_KEY: &[u8] = b"format";
pub(crate) const COMMIT_KEY: &[u8] = b"commit";
/// The sidecar file a clean shutdown leaves, holding the commit counter.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// The file fjall writes first in a database directory.
const FJALL_MARKER: &str = "version";
/// Journal bytes fjall keeps before flushing, which bounds replay at start-up.
const MAX_JOURNAL: u64 = 64 * 1024 * 1024;
/// Block cache.
const CACHE: u64 = 32 * 1024 * 1024;

/// The keyspaces, in the order of [`Ks`].
pub(crate) const NAMES: [&str; 7] = [
    "meta",
    "sessions",
    "queue",
    "outflight",
    "inbound",
    "retained",
    "quarantine",
];

/// Index of a keyspace in [`NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ks {
    Meta = 0,
    Sessions = 1,
    Queue = 2,
    Outflight = 3,
    Inbound = 4,
    Retained = 5,
    Quarantine = 6,
}

impl Ks {
    pub(crate) fn name(self) -> &'static str {
        NAMES[self as usize]
    }
}

/// An open database with every keyspace.
pub(crate) struct Db {
    pub(crate) db: Database,
    pub(crate) ks: Vec<Keyspace>,
    pub(crate) dir: PathBuf,
}

impl Db {
    pub(crate) fn ks(&self, k: Ks) -> &Keyspace {
        &self.ks[k as usize]
    }

    /// The commit counter in `meta` (0 in a new store).
    pub(crate) fn commit_counter(&self) -> Result<u64, StoreError> {
        match self
            .ks(Ks::Meta)
            .get(COMMIT_KEY)
            .map_err(StoreError::engine(&self.dir))?
        {
            None => Ok(0),
            Some(value) => record::decode_u64(&value).map_err(|why| StoreError::Damaged {
                path: self.dir.clone(),
                why: format!("the commit counter in `meta` cannot be read ({why})"),
            }),
        }
    }
}

/// What a directory holds.
enum DirState {
    Missing,
    Empty,
    Fjall,
}

fn inspect(dir: &Path) -> Result<DirState, StoreError> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirState::Missing),
        Err(e) => return Err(StoreError::io("cannot read", dir)(e)),
    };
    if !meta.is_dir() {
        return Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let mut entries = std::fs::read_dir(dir).map_err(StoreError::io("cannot list", dir))?;
    if entries.next().is_none() {
        return Ok(DirState::Empty);
    }
    if dir.join(FJALL_MARKER).is_file() {
        Ok(DirState::Fjall)
    } else {
        Err(StoreError::Foreign {
            path: dir.to_path_buf(),
            why: "no database marker file".into(),
        })
    }
}

/// Largest memtable per keyspace before it is flushed to a table file. fjall's default of
/// 64 MiB made the queue keyspace alone hold ~64 MiB of RSS under a QoS 1 load whose records
/// are deleted again within milliseconds; 8 MiB keeps a busy broker's store near 60 MiB.
const MAX_MEMTABLE: u64 = 8 * 1024 * 1024;

fn open_fjall(dir: &Path) -> Result<Database, StoreError> {
    Database::builder(dir)
        .max_journaling_size(MAX_JOURNAL)
        .cache_size(CACHE)
        .open()
        .map_err(StoreError::engine(dir))
}

fn open_keyspaces(db: Database, dir: &Path) -> Result<Db, StoreError> {
    let mut ks = Vec::with_capacity(NAMES.len());
    for name in NAMES {
        ks.push(
            db.keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MAX_MEMTABLE)
            })
            .map_err(StoreError::engine(dir))?,
        );
    }
    Ok(Db {
        db,
        ks,
        dir: dir.to_path_buf(),
    })
}

/// Opens the store in `dir`; with `create`, makes a new one in a missing or empty directory.
pub(crate) fn open(dir: &Path, create: bool) -> Result<Db, StoreError> {
    let state = inspect(dir)?;
    let fresh = match state {
        DirState::Missing | DirState::Empty if !create => {
            return Err(StoreError::Io {
                what: "no store in",
                path: dir.to_path_buf(),
                source: std::io::ErrorKind::NotFound.into(),
            })
        }
        DirState::Missing => {
            std::fs::create_dir_all(dir).map_err(StoreError::io("cannot create", dir))?;
            true
        }
        DirState::Empty => true,
        DirState::Fjall => false,
    };
    let db = open_fjall(dir)?;
    if !fresh && !db.keyspace_exists(NAMES[0]) && db.keyspace_count() > 0 {
        return Err(StoreError::Foreign {
            path: dir.to_path_buf(),
            why: "a database without Vane's `meta` keyspace".into(),
        });
    }
    let db = open_keyspaces(db, dir)?;
    let meta = db.ks(Ks::Meta);
    match meta.get(FORMAT_KEY).map_err(StoreError::engine(dir))? {
        Some(value) => {
            let found = record::decode_u64(&value).map_err(|why| StoreError::Damaged {
                path: dir.to_path_buf(),
                why: format!("the format version in `meta` cannot be read ({why})"),
            })?;
            if found != u64::from(FORMAT_VERSION) {
                return Err(StoreError::FormatVersion {
                    path: dir.to_path_buf(),
                    found: u32::try_from(found).unwrap_or(u32::MAX),
                    expected: FORMAT_VERSION,
                });
            }
        }
        None => {
            // A new store, or one whose creation was cut before the format key was written.
            for k in &db.ks[1..] {
                if !k.is_empty().map_err(StoreError::engine(dir))? {
                    return Err(StoreError::Foreign {
                        path: dir.to_path_buf(),
                        why: "a database with records but no format version".into(),
                    });
                }
            }
            if !create {
                return Err(StoreError::Damaged {
                    path: dir.to_path_buf(),
                    why: "no format version: the store was never completely created".into(),
                });
            }
            let mut batch = db.db.batch().durability(Some(PersistMode::SyncAll));
            batch.insert(
                meta,
                FORMAT_KEY,
                record::encode_u64(u64::from(FORMAT_VERSION)),
            );
            batch.insert(meta, COMMIT_KEY, record::encode_u64(0));
            batch.commit().map_err(StoreError::engine(dir))?;
        }
    }
    Ok(db)
}

/// Reads the clean-shutdown sidecar: `None` when there is none.
pub(crate) fn read_sidecar(dir: &Path) -> Result<Option<u64>, StoreError> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("cannot read", &path)(e)),
    };
    let parsed = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.strip_prefix("vane-store clean-shutdown\ncommit "))
        .and_then(|t| t.strip_suffix('\n'))
        .and_then(|n| n.parse::<u64>().ok());
    match parsed {
        Some(n) => Ok(Some(n)),
        None => Err(StoreError::Damaged {
            path: dir.to_path_buf(),
            why: format!(
                "the clean-shutdown marker {} cannot be read",
                path.display()
            ),
        }),
    }
}

/// Writes the clean-shutdown sidecar and makes it durable.
pub(crate) fn write_sidecar(dir: &Path, commit: u64) -> Result<(), StoreError> {
    use std::io::Write;
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    let mut file = std::fs::File::create(&path).map_err(StoreError::io("cannot create", &path))?;
    file.write_all(format!("vane-store clean-shutdown\ncommit {commit}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(StoreError::io("cannot write", &path))?;
    sync_dir(dir)
}

/// Removes the sidecar (the store is running again) and makes that durable.
pub(crate) fn remove_sidecar(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("cannot remove", &path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("cannot sync directory", dir))
}
