//! One small interface over the engines under test, each committing with an fsync per commit.

use std::path::Path;

/// Any engine's error, boxed.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with a boxed engine error.
pub type Result<T> = std::result::Result<T, Error>;

/// The engines compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Redb,
    /// redb opened with `set_check_integrity_on_open(true)`: every checksum verified at open.
    RedbChecked,
    Fjall,
    Sqlite,
}

impl Engine {
    /// Every engine, in report order.
    pub const ALL: [Engine; 4] = [
        Engine::Redb,
        Engine::RedbChecked,
        Engine::Fjall,
        Engine::Sqlite,
    ];

    /// Name as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Redb => "redb",
            Engine::RedbChecked => "redb-checked",
            Engine::Fjall => "fjall",
            Engine::Sqlite => "sqlite",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|engine| engine.name() == name)
    }

    /// Opens (or creates) a store of this engine in `dir`.
    pub fn open(self, dir: &Path) -> Result<Box<dyn Store>> {
        std::fs::create_dir_all(dir)?;
        Ok(match self {
            Engine::Redb => Box::new(RedbStore::open(dir, false)?),
            Engine::RedbChecked => Box::new(RedbStore::open(dir, true)?),
            Engine::Fjall => Box::new(FjallStore::open(dir)?),
            Engine::Sqlite => Box::new(SqliteStore::open(dir)?),
        })
    }
}

/// The broker's three kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// Queued messages of offline sessions: session id + sequence -> message.
    Queue,
    /// Retained messages: topic -> message.
    Retained,
    /// Session index: session id -> session state.
    Sessions,
}

impl Tree {
    const ALL: [Tree; 3] = [Tree::Queue, Tree::Retained, Tree::Sessions];

    fn name(self) -> &'static str {
        match self {
            Tree::Queue => "queue",
            Tree::Retained => "retained",
            Tree::Sessions => "sessions",
        }
    }

    fn index(self) -> usize {
        match self {
            Tree::Queue => 0,
            Tree::Retained => 1,
            Tree::Sessions => 2,
        }
    }
}

/// One write in a commit: a put (`value` is `Some`) or a delete.
#[derive(Debug, Clone)]
pub struct Op {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Op {
    pub fn put(tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Op {
        Op {
            tree,
            key,
            value: Some(value),
        }
    }

    pub fn delete(tree: Tree, key: Vec<u8>) -> Op {
        Op {
            tree,
            key,
            value: None,
        }
    }
}

/// What the broker needs from a store.
pub trait Store {
    /// Applies `ops` atomically and returns once they are fsynced.
    fn commit(&mut self, ops: &[Op]) -> Result<()>;
    /// Calls `visit` for every record of `tree` whose key starts with `prefix`, in key order.
    fn scan(&self, tree: Tree, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>;
    /// Moves buffered data to the engine's long-term files (an LSM flush); a no-op elsewhere.
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }
    /// Gives space held by deleted and overwritten records back to the file system as far as
    /// the engine can (redb: `compact`, fjall: major compaction, SQLite: `VACUUM`).
    fn compact(&mut self) -> Result<()>;
}

/// The smallest key greater than every key starting with `prefix`; `None` if there is none.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

// ---------------------------------------------------------------- redb

const REDB_TABLES: [redb::TableDefinition<&[u8], &[u8]>; 3] = [
    redb::TableDefinition::new("queue"),
    redb::TableDefinition::new("retained"),
    redb::TableDefinition::new("sessions"),
];

/// redb: one copy-on-write B+tree file; `Durability::Immediate` fsyncs on commit.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    fn open(dir: &Path, check_integrity: bool) -> Result<RedbStore> {
        let db = redb::Database::builder()
            .set_check_integrity_on_open(check_integrity)
            .create(dir.join("store.redb"))?;
        let txn = db.begin_write()?;
        for table in REDB_TABLES {
            txn.open_table(table)?;
        }
        txn.commit()?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut tables: [Option<redb::Table<&[u8], &[u8]>>; 3] = [None, None, None];
            for op in ops {
                let slot = &mut tables[op.tree.index()];
                if slot.is_none() {
                    *slot = Some(txn.open_table(REDB_TABLES[op.tree.index()])?);
                }
                let table = slot.as_mut().expect("opened above");
                match &op.value {
                    Some(value) => {
                        table.insert(op.key.as_slice(), value.as_slice())?;
                    }
                    None => {
                        table.remove(op.key.as_slice())?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn compact(&mut self) -> Result<()> {
        while self.db.compact()? {}
        Ok(())
    }

    fn scan(&self, tree: Tree, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        use redb::ReadableDatabase;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REDB_TABLES[tree.index()])?;
        for entry in table.range::<&[u8]>(prefix..)? {
            let (key, value) = entry?;
            if !key.value().starts_with(prefix) {
                break;
            }
            visit(key.value(), value.value());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- fjall

/// fjall: an LSM tree per keyspace sharing one journal; batches commit with `SyncData`.
pub struct FjallStore {
    db: fjall::Database,
    keyspaces: Vec<fjall::Keyspace>,
}

impl FjallStore {
    fn open(dir: &Path) -> Result<FjallStore> {
        let db = fjall::Database::builder(dir).open()?;
        let mut keyspaces = Vec::new();
        for tree in Tree::ALL {
            keyspaces.push(db.keyspace(tree.name(), fjall::KeyspaceCreateOptions::default)?);
        }
        Ok(FjallStore { db, keyspaces })
    }
}

impl Store for FjallStore {
    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        let mut batch = self
            .db
            .batch()
            .durability(Some(fjall::PersistMode::SyncData));
        for op in ops {
            let keyspace = &self.keyspaces[op.tree.index()];
            match &op.value {
                Some(value) => batch.insert(keyspace, op.key.as_slice(), value.as_slice()),
                None => batch.remove(keyspace, op.key.as_slice()),
            }
        }
        batch.commit()?;
        Ok(())
    }

    fn scan(&self, tree: Tree, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        for guard in self.keyspaces[tree.index()].prefix(prefix) {
            let (key, value) = guard.into_inner()?;
            visit(&key, &value);
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<()> {
        for keyspace in &self.keyspaces {
            keyspace.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    fn compact(&mut self) -> Result<()> {
        self.settle()?;
        for keyspace in &self.keyspaces {
            keyspace.major_compact()?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- SQLite

/// SQLite through rusqlite (bundled): WAL mode, `synchronous=FULL` (the WAL is fsynced at
/// every commit), one `WITHOUT ROWID` table per tree.
pub struct SqliteStore {
    conn: rusqlite::Connection,
}

impl SqliteStore {
    fn open(dir: &Path) -> Result<SqliteStore> {
        let conn = rusqlite::Connection::open(dir.join("store.sqlite"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        for tree in Tree::ALL {
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID",
                tree.name()
            ))?;
        }
        Ok(SqliteStore { conn })
    }
}

impl Store for SqliteStore {
    fn commit(&mut self, ops: &[Op]) -> Result<()> {
        let txn = self.conn.transaction()?;
        for op in ops {
            let table = op.tree.name();
            match &op.value {
                Some(value) => {
                    let mut statement = txn.prepare_cached(&format!(
                        "INSERT OR REPLACE INTO {table} (k, v) VALUES (?1, ?2)"
                    ))?;
                    statement.execute((&op.key, value))?;
                }
                None => {
                    let mut statement =
                        txn.prepare_cached(&format!("DELETE FROM {table} WHERE k = ?1"))?;
                    statement.execute((&op.key,))?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn compact(&mut self) -> Result<()> {
        self.conn
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    fn scan(&self, tree: Tree, prefix: &[u8], visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        let table = tree.name();
        let mut visit_row = |row: &rusqlite::Row| -> Result<()> {
            let key = row.get_ref(0)?.as_blob()?;
            let value = row.get_ref(1)?.as_blob()?;
            visit(key, value);
            Ok(())
        };
        match prefix_end(prefix) {
            Some(end) => {
                let mut statement = self.conn.prepare_cached(&format!(
                    "SELECT k, v FROM {table} WHERE k >= ?1 AND k < ?2 ORDER BY k"
                ))?;
                let mut rows = statement.query((prefix, end))?;
                while let Some(row) = rows.next()? {
                    visit_row(row)?;
                }
            }
            None => {
                let mut statement = self.conn.prepare_cached(&format!(
                    "SELECT k, v FROM {table} WHERE k >= ?1 ORDER BY k"
                ))?;
                let mut rows = statement.query((prefix,))?;
                while let Some(row) = rows.next()? {
                    visit_row(row)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn every_engine_round_trips_puts_deletes_and_prefix_scans() {
        for engine in Engine::ALL {
            let dir = std::env::temp_dir().join(format!("store-bench-test-{}", engine.name()));
            let _ = std::fs::remove_dir_all(&dir);
            let mut store = engine.open(&dir).unwrap();
            store
                .commit(&[
                    Op::put(Tree::Queue, b"a1".to_vec(), b"x".to_vec()),
                    Op::put(Tree::Queue, b"a2".to_vec(), b"y".to_vec()),
                    Op::put(Tree::Queue, b"b1".to_vec(), b"z".to_vec()),
                ])
                .unwrap();
            store
                .commit(&[Op::delete(Tree::Queue, b"a1".to_vec())])
                .unwrap();
            let mut seen = Vec::new();
            store
                .scan(Tree::Queue, b"a", &mut |key, value| {
                    seen.push((key.to_vec(), value.to_vec()))
                })
                .unwrap();
            assert_eq!(seen, vec![(b"a2".to_vec(), b"y".to_vec())], "{engine:?}");
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
