//! The running store: `submit` queues ops, one committer thread turns everything pending into
//! one fjall batch (group commit) and publishes the highest durable ticket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::PersistMode;
use tokio::sync::watch;
use vane_core::{Delivery, Message};
use vane_proto::{ByteString, PacketId};

use crate::db::{self, Db, Ks, COMMIT_KEY};
use crate::error::StoreError;
use crate::record::{self, Clocks, SessionRecord};
use crate::scan::{self, Recovered};

/// A submission's place in commit order; durable once [`Store::durable_ticket`] reaches it.
pub type Ticket = u64;

/// When a commit is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Each group of submissions is fdatasync'ed before its tickets are durable.
    Sync,
    /// Each group is written to the OS before its tickets are durable (a process kill loses
    /// nothing); an fsync follows within `interval` (power loss may lose that much).
    Batch {
        /// Longest time between a write and its fsync.
        interval: Duration,
    },
}

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Directory of the store; created when missing.
    pub dir: PathBuf,
    /// When commits are durable.
    pub durability: Durability,
    /// Recover queued deliveries that are neither in flight nor for a shared subscription as
    /// sequence numbers and sizes only ([`RecoveredSession::on_disk`]), for a broker that
    /// keeps offline queues on disk; otherwise every one is decoded into memory.
    pub queues_on_disk: bool,
}

/// One change to the store.
#[derive(Debug, Clone)]
pub enum Op {
    /// Writes a session record.
    PutSession(Arc<SessionRecord>),
    /// Deletes the session record and all of its deliveries, outflight states and inbound QoS 2
    /// ids, including ones put earlier in the same commit group.
    DeleteSession(ByteString),
    /// Queues a delivery under `seq`.
    PutDelivery {
        /// Client id.
        client_id: ByteString,
        /// Sequence number from [`Store::next_seq`].
        seq: u64,
        /// The delivery.
        delivery: Delivery,
    },
    /// Deletes a delivery and its outflight state.
    DeleteDelivery {
        /// Client id.
        client_id: ByteString,
        /// Its sequence number.
        seq: u64,
    },
    /// Records that delivery `seq` was sent with `packet_id` (and, for QoS 2, released).
    PutOutflight {
        /// Client id.
        client_id: ByteString,
        /// The delivery's sequence number.
        seq: u64,
        /// Packet id it was sent with.
        packet_id: PacketId,
        /// PUBREC received and PUBREL sent.
        released: bool,
    },
    /// Records a QoS 2 publish received and not yet released.
    PutInboundQos2 {
        /// Client id.
        client_id: ByteString,
        /// Its packet id.
        packet_id: PacketId,
    },
    /// Forgets a released inbound QoS 2 packet id.
    DeleteInboundQos2 {
        /// Client id.
        client_id: ByteString,
        /// Its packet id.
        packet_id: PacketId,
    },
    /// Writes the retained message of its topic.
    PutRetained(Arc<Message>),
    /// Deletes the retained message of a topic.
    DeleteRetained(ByteString),
}

/// Counters of the running store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches committed.
    pub commits: u64,
    /// Ops applied.
    pub ops: u64,
    /// fsyncs made.
    pub syncs: u64,
    /// Key and value bytes written.
    pub bytes_written: u64,
    /// Damaged records set aside when the store was opened.
    pub set_aside: u64,
}

struct Pending {
    work: Vec<(Ticket, Vec<Op>)>,
    last_ticket: Ticket,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    durable: AtomicU64,
    watch: watch::Sender<Ticket>,
    seq: AtomicU64,
    commits: AtomicU64,
    ops: AtomicU64,
    syncs: AtomicU64,
    bytes: AtomicU64,
    set_aside: u64,
    late_submit_logged: AtomicBool,
    failed: Mutex<Option<String>>,
    /// Operations submitted and not yet committed.
    pending_ops: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    shared: Arc<Shared>,
    committer: Mutex<Option<JoinHandle<Result<u64, StoreError>>>>,
    dir: PathBuf,
    /// The queue keyspace, read by connections that take an offline queue back from disk;
    /// released at close so that the database closes with it.
    queue: Mutex<Option<fjall::Keyspace>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = close(self) {
            tracing::error!(error = %e, "closing the store failed");
        }
    }
}

/// The durable store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("durable_ticket", &self.durable_ticket())
            .finish()
    }
}

impl Store {
    /// Opens or creates the store in `options.dir` and recovers everything in it.
    pub fn open(options: StoreOptions) -> Result<(Store, Recovered), StoreError> {
        let dir = options.dir;
        let db = db::open(&dir, true)?;
        let recovered_commit = db.commit_counter()?;
        if let Some(closed_at) = db::read_sidecar(&dir)? {
            if recovered_commit < closed_at {
                return Err(StoreError::RolledBack {
                    path: dir,
                    closed_at,
                    recovered: recovered_commit,
                });
            }
        }
        let mut scanned = scan::scan(&db, Clocks::now(), options.queues_on_disk)
            .map_err(StoreError::engine(&dir))?;
        scanned.settle(&db)?;
        db::remove_sidecar(&dir)?;
        let (sender, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                work: Vec::new(),
                last_ticket: 0,
                closing: false,
            }),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
            watch: sender,
            seq: AtomicU64::new(scanned.max_seq.saturating_add(1)),
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            set_aside: scanned.recovered.set_aside,
            late_submit_logged: AtomicBool::new(false),
            failed: Mutex::new(None),
            pending_ops: AtomicUsize::new(0),
        });
        let queue = db.ks(Ks::Queue).clone();
        let committer = Committer {
            shared: Arc::clone(&shared),
            db,
            durability: options.durability,
            commit: recovered_commit,
        };
        let handle = std::thread::Builder::new()
            .name("vane-store".into())
            .spawn(move || committer.run())
            .map_err(StoreError::io(
                "cannot start the committer thread for",
                &dir,
            ))?;
        let store = Store {
            inner: Arc::new(Inner {
                shared,
                committer: Mutex::new(Some(handle)),
                dir,
                queue: Mutex::new(Some(queue)),
            }),
        };
        Ok((store, scanned.recovered))
    }

    /// A fresh delivery sequence number, above every one in the store.
    pub fn next_seq(&self) -> u64 {
        self.inner.shared.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues `ops` for the committer; never blocks on I/O. The ops of one call are applied
    /// atomically and after every earlier call's. After [`Store::close`] the ops are ignored
    /// and the last ticket issued (already durable) is returned.
    pub fn submit(&self, ops: Vec<Op>) -> Ticket {
        let shared = &self.inner.shared;
        let mut pending = lock(&shared.pending);
        if pending.closing {
            if !shared.late_submit_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(dir = %self.inner.dir.display(), "store closed: later writes are ignored");
            }
            return pending.last_ticket;
        }
        pending.last_ticket += 1;
        let ticket = pending.last_ticket;
        shared.pending_ops.fetch_add(ops.len(), Ordering::Relaxed);
        pending.work.push((ticket, ops));
        drop(pending);
        shared.wake.notify_one();
        ticket
    }

    /// Reads queued deliveries of `client_id` back from disk, in the order of `seqs`. Only
    /// what a durable ticket covers is certain to be found. A record that is missing (its
    /// delivery completed meanwhile) is skipped; one that cannot be read is skipped and
    /// counted in the second value (it stays on disk and is set aside at the next start).
    pub fn load_deliveries(
        &self,
        client_id: &str,
        seqs: &[u64],
    ) -> Result<(Vec<Delivery>, usize), StoreError> {
        let clocks = Clocks::now();
        let mut out = Vec::with_capacity(seqs.len());
        let mut damaged = 0;
        let Some(queue) = lock(&self.inner.queue).clone() else {
            return Err(StoreError::Failed {
                path: self.inner.dir.clone(),
                why: "the store is closed".into(),
            });
        };
        for &seq in seqs {
            let Some(key) = record::seq_key(client_id, seq) else {
                damaged += 1;
                continue;
            };
            let value = queue
                .get(&key)
                .map_err(StoreError::engine(&self.inner.dir))?;
            let Some(value) = value else {
                continue;
            };
            match record::decode_delivery(&value, seq, clocks) {
                Ok(d) => out.push(d),
                Err(why) => {
                    tracing::warn!(
                        client_id,
                        seq,
                        why,
                        "queued message in the store cannot be read; skipped"
                    );
                    damaged += 1;
                }
            }
        }
        Ok((out, damaged))
    }

    /// The last ticket handed out by [`Store::submit`].
    pub fn last_ticket(&self) -> Ticket {
        lock(&self.inner.shared.pending).last_ticket
    }

    /// Operations submitted and not yet committed: what a broker should stop adding to while
    /// the disk catches up.
    pub fn pending_ops(&self) -> usize {
        self.inner.shared.pending_ops.load(Ordering::Relaxed)
    }

    /// Highest ticket made durable as the durability mode promises.
    pub fn durable_ticket(&self) -> Ticket {
        self.inner.shared.durable.load(Ordering::Acquire)
    }

    /// True once ticket `t` is durable.
    pub fn is_durable(&self, t: Ticket) -> bool {
        self.durable_ticket() >= t
    }

    /// A receiver of the durable ticket, for async waiters.
    pub fn watch(&self) -> watch::Receiver<Ticket> {
        self.inner.shared.watch.subscribe()
    }

    /// The error that stopped the committer, if one did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.inner.shared.failed).clone()
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Commits everything submitted, fsyncs, writes the clean-shutdown marker and stops the
    /// committer. Idempotent.
    pub fn close(&self) -> Result<(), StoreError> {
        close(&self.inner)
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        let s = &self.inner.shared;
        StoreStats {
            commits: s.commits.load(Ordering::Relaxed),
            ops: s.ops.load(Ordering::Relaxed),
            syncs: s.syncs.load(Ordering::Relaxed),
            bytes_written: s.bytes.load(Ordering::Relaxed),
            set_aside: s.set_aside,
        }
    }
}

fn close(inner: &Inner) -> Result<(), StoreError> {
    let mut committer = lock(&inner.committer);
    let Some(handle) = committer.take() else {
        return Ok(());
    };
    lock(&inner.shared.pending).closing = true;
    inner.shared.wake.notify_all();
    // The last handle on the database besides the committer's.
    lock(&inner.queue).take();
    let commit = handle.join().map_err(|_| StoreError::Failed {
        path: inner.dir.clone(),
        why: "the committer thread panicked".into(),
    })??;
    db::write_sidecar(&inner.dir, commit)
}

struct Committer {
    shared: Arc<Shared>,
    db: Db,
    durability: Durability,
    /// Commit counter of the last batch, as stored in `meta`.
    commit: u64,
}

/// The keys a group writes, last write wins: `None` deletes.
type Group = [BTreeMap<Vec<u8>, Option<Vec<u8>>>; 7];

/// Most operations committed in one group (one write batch, one sync).
const MAX_GROUP_OPS: usize = 16 * 1024;

impl Committer {
    fn run(mut self) -> Result<u64, StoreError> {
        let mut unsynced_since: Option<Instant> = None;
        loop {
            let (work, closing) = self.next_work(unsynced_since);
            let taken: usize = work.iter().map(|(_, ops)| ops.len()).sum();
            if !work.is_empty() && lock(&self.shared.failed).is_none() {
                if let Err(e) = self.commit_group(work) {
                    tracing::error!(dir = %self.db.dir.display(), error = %e, "store commit failed; later writes are not durable");
                    *lock(&self.shared.failed) = Some(e.to_string());
                } else if matches!(self.durability, Durability::Batch { .. }) {
                    unsynced_since.get_or_insert_with(Instant::now);
                }
            }
            self.shared.pending_ops.fetch_sub(taken, Ordering::Relaxed);
            if let (Durability::Batch { interval }, Some(since)) = (self.durability, unsynced_since)
            {
                if closing || since.elapsed() >= interval {
                    self.sync(PersistMode::SyncData)?;
                    unsynced_since = None;
                }
            }
            if closing {
                return self.finish();
            }
        }
    }

    /// Waits for work (or for the batch fsync deadline, or for close) and takes it all.
    fn next_work(&self, unsynced_since: Option<Instant>) -> (Vec<(Ticket, Vec<Op>)>, bool) {
        let mut pending = lock(&self.shared.pending);
        loop {
            if !pending.work.is_empty() || pending.closing {
                // A bounded group: the batch and its encoded records stay a few MiB however
                // far the publishers are ahead of the disk.
                let mut ops = 0;
                let n = pending
                    .work
                    .iter()
                    .take_while(|(_, w)| {
                        let take = ops < MAX_GROUP_OPS;
                        ops += w.len();
                        take
                    })
                    .count();
                let work: Vec<_> = pending.work.drain(..n).collect();
                return (work, pending.closing && pending.work.is_empty());
            }
            match (self.durability, unsynced_since) {
                (Durability::Batch { interval }, Some(since)) => {
                    let left = interval.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return (Vec::new(), false);
                    }
                    pending = self
                        .shared
                        .wake
                        .wait_timeout(pending, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                _ => {
                    pending = self
                        .shared
                        .wake
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    fn sync(&self, mode: PersistMode) -> Result<(), StoreError> {
        self.db
            .db
            .persist(mode)
            .map_err(StoreError::engine(&self.db.dir))?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Last fsync, and memtables flushed so the next open replays little journal.
    fn finish(self) -> Result<u64, StoreError> {
        if let Some(why) = lock(&self.shared.failed).clone() {
            return Err(StoreError::Failed {
                path: self.db.dir.clone(),
                why,
            });
        }
        self.sync(PersistMode::SyncAll)?;
        for ks in &self.db.ks {
            if let Err(e) = ks.rotate_memtable_and_wait() {
                tracing::warn!(dir = %self.db.dir.display(), error = %e, "flushing memtables at close failed; the next open replays the journal");
            }
        }
        Ok(self.commit)
    }

    fn commit_group(&mut self, work: Vec<(Ticket, Vec<Op>)>) -> Result<(), StoreError> {
        let clocks = Clocks::now();
        let mut group: Group = Default::default();
        let mut highest = 0;
        let mut ops = 0u64;
        for (ticket, batch) in work {
            highest = highest.max(ticket);
            for op in batch {
                ops += 1;
                self.apply(&mut group, op, clocks)?;
            }
        }
        let commit = self.commit + 1;
        group[Ks::Meta as usize].insert(COMMIT_KEY.to_vec(), Some(record::encode_u64(commit)));
        let mode = match self.durability {
            Durability::Sync => PersistMode::SyncData,
            Durability::Batch { .. } => PersistMode::Buffer,
        };
        let mut batch = self.db.db.batch().durability(Some(mode));
        let mut bytes = 0u64;
        for (i, writes) in group.into_iter().enumerate() {
            let ks = &self.db.ks[i];
            for (key, value) in writes {
                bytes += (key.len() + value.as_ref().map_or(0, Vec::len)) as u64;
                match value {
                    Some(value) => batch.insert(ks, key, value),
                    None => batch.remove(ks, key),
                }
            }
        }
        batch.commit().map_err(StoreError::engine(&self.db.dir))?;
        self.commit = commit;
        let s = &self.shared;
        s.commits.fetch_add(1, Ordering::Relaxed);
        s.ops.fetch_add(ops, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        if mode == PersistMode::SyncData {
            s.syncs.fetch_add(1, Ordering::Relaxed);
        }
        s.durable.store(highest, Ordering::Release);
        s.watch.send_replace(highest);
        Ok(())
    }

    fn apply(&self, group: &mut Group, op: Op, clocks: Clocks) -> Result<(), StoreError> {
        let put = |group: &mut Group,
                   ks: Ks,
                   key: Option<Vec<u8>>,
                   value: Result<Vec<u8>, record::Damage>| {
            match (key, value) {
                (Some(key), Ok(value)) => {
                    group[ks as usize].insert(key, Some(value));
                }
                (None, _) => tracing::error!(
                    keyspace = ks.name(),
                    "client id too long to store; write dropped"
                ),
                (_, Err(why)) => tracing::error!(
                    keyspace = ks.name(),
                    why,
                    "record cannot be encoded; write dropped"
                ),
            }
        };
        let delete = |group: &mut Group, ks: Ks, key: Option<Vec<u8>>| {
            if let Some(key) = key {
                group[ks as usize].insert(key, None);
            }
        };
        match op {
            Op::PutSession(s) => {
                let value = record::encode_session(&s, clocks);
                put(
                    group,
                    Ks::Sessions,
                    Some(s.client_id.as_bytes().to_vec()),
                    value,
                );
            }
            Op::DeleteSession(client_id) => {
                delete(group, Ks::Sessions, Some(client_id.as_bytes().to_vec()));
                if let Some(prefix) = record::client_key(&client_id) {
                    for ks in [Ks::Queue, Ks::Outflight, Ks::Inbound] {
                        let writes = &mut group[ks as usize];
                        for guard in self.db.ks(ks).prefix(&prefix) {
                            let key = guard.key().map_err(StoreError::engine(&self.db.dir))?;
                            writes.insert(key.to_vec(), None);
                        }
                        for (_, value) in writes
                            .range_mut(prefix.clone()..)
                            .take_while(|(k, _)| k.starts_with(&prefix))
                        {
                            *value = None;
                        }
                    }
                }
            }
            Op::PutDelivery {
                client_id,
                seq,
                delivery,
            } => {
                let value = record::encode_delivery(&delivery, clocks);
                put(group, Ks::Queue, record::seq_key(&client_id, seq), value);
            }
            Op::DeleteDelivery { client_id, seq } => {
                delete(group, Ks::Queue, record::seq_key(&client_id, seq));
                delete(group, Ks::Outflight, record::seq_key(&client_id, seq));
            }
            Op::PutOutflight {
                client_id,
                seq,
                packet_id,
                released,
            } => put(
                group,
                Ks::Outflight,
                record::seq_key(&client_id, seq),
                Ok(record::encode_outflight(packet_id, released)),
            ),
            Op::PutInboundQos2 {
                client_id,
                packet_id,
            } => put(
                group,
                Ks::Inbound,
                record::inbound_key(&client_id, packet_id),
                Ok(record::encode_empty()),
            ),
            Op::DeleteInboundQos2 {
                client_id,
                packet_id,
            } => delete(
                group,
                Ks::Inbound,
                record::inbound_key(&client_id, packet_id),
            ),
            Op::PutRetained(message) => {
                let value = record::encode_retained(&message, clocks);
                put(
                    group,
                    Ks::Retained,
                    Some(message.topic.as_bytes().to_vec()),
                    value,
                );
            }
            Op::DeleteRetained(topic) => {
                delete(group, Ks::Retained, Some(topic.as_bytes().to_vec()))
            }
        }
        Ok(())
    }
}
