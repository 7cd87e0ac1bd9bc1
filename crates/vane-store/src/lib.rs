//! Vane's durable store: sessions, queued deliveries, outflight and inbound QoS 2 state and
//! retained messages in one fjall database, written by one group-committing thread
//! (decision 004).
//!
//! Layout: keyspaces `meta` (format version, commit counter), `sessions` (client id),
//! `queue` and `outflight` (u16 BE client id length + client id + u64 BE seq), `inbound`
//! (client key + u16 BE packet id), `retained` (topic) and `quarantine` (damaged records,
//! keyed by keyspace name + 0 + original key). Every value is a version byte, a crc32 of the
//! body and the body.

mod check;
mod db;
mod error;
mod record;
mod scan;
mod store;

pub use check::{check, repair, CheckReport, RepairReport};
pub use db::{CLEAN_SHUTDOWN_FILE, FORMAT_VERSION};
pub use error::StoreError;
pub use record::SessionRecord;
pub use scan::{DamagedRecord, Recovered, RecoveredDelivery, RecoveredSession};
pub use store::{Durability, Op, Store, StoreOptions, StoreStats, Ticket};
