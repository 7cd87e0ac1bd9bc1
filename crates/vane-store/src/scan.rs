//! Recovery: reads every record, sorts the good from the damaged and the orphaned, and moves
//! the damaged ones to `quarantine`.

use std::collections::HashMap;

use fjall::PersistMode;
use vane_core::{Delivery, Message};
use vane_proto::PacketId;

use crate::db::{Db, Ks};
use crate::error::StoreError;
use crate::record::{self, Clocks, SessionRecord};

/// Everything the store held at open.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Sessions with their queues, in client id order.
    pub sessions: Vec<RecoveredSession>,
    /// Retained messages, in topic order.
    pub retained: Vec<Message>,
    /// Damaged records moved to the `quarantine` keyspace at this open.
    pub set_aside: u64,
    /// Queue, outflight and inbound records of clients with no session, deleted at this open.
    pub orphans_removed: u64,
}

/// One session and what it had in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSession {
    /// The session.
    pub record: SessionRecord,
    /// Its queued deliveries, in sequence order (with `queues_on_disk`, only those in flight
    /// or for a shared subscription).
    pub queue: Vec<RecoveredDelivery>,
    /// With `queues_on_disk`: the other queued deliveries, as (sequence number, size in
    /// bytes) in sequence order, to read back with [`crate::Store::load_deliveries`].
    pub on_disk: Vec<(u64, u32)>,
    /// Packet ids of QoS 2 publishes received and not yet released.
    pub inbound_qos2: Vec<PacketId>,
}

/// A queued delivery and, once sent, its packet id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredDelivery {
    /// The delivery, with `stored` set to its sequence number.
    pub delivery: Delivery,
    /// (packet id, PUBREL sent) once it was sent.
    pub outflight: Option<(PacketId, bool)>,
}

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    /// Its keyspace.
    pub keyspace: &'static str,
    /// Its key, in hex.
    pub key_hex: String,
    /// Why it cannot be read.
    pub why: &'static str,
}

/// A damaged record with its bytes, to move.
pub(crate) struct Damaged {
    pub(crate) ks: Ks,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) why: &'static str,
}

impl Damaged {
    pub(crate) fn report(&self) -> DamagedRecord {
        DamagedRecord {
            keyspace: self.ks.name(),
            key_hex: hex(&self.key),
            why: self.why,
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The result of reading the whole store.
#[derive(Default)]
pub(crate) struct Scan {
    pub(crate) recovered: Recovered,
    pub(crate) damaged: Vec<Damaged>,
    pub(crate) orphans: Vec<(Ks, Vec<u8>)>,
    pub(crate) max_seq: u64,
    pub(crate) quarantined: u64,
    pub(crate) queued: u64,
    pub(crate) outflight: u64,
    pub(crate) inbound: u64,
}

/// Reads every record of `db`. Engine errors (a block that fails fjall's own checksum) end
/// the scan: the damage cannot be tied to one record.
pub(crate) fn scan(db: &Db, clocks: Clocks, queues_on_disk: bool) -> Result<Scan, fjall::Error> {
    let mut out = Scan::default();
    // client key -> index in out.recovered.sessions
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    for guard in db.ks(Ks::Sessions).iter() {
        let (key, value) = guard.into_inner()?;
        let decoded = record::client_id_of_raw(&key)
            .and_then(|id| record::decode_session(&value, id, clocks));
        match decoded {
            Ok(session) => {
                if let Some(client) = record::client_key(&session.client_id) {
                    index.insert(client, out.recovered.sessions.len());
                    out.recovered.sessions.push(RecoveredSession {
                        record: session,
                        queue: Vec::new(),
                        on_disk: Vec::new(),
                        inbound_qos2: Vec::new(),
                    });
                }
            }
            Err(why) => out.damage(Ks::Sessions, &key, &value, why),
        }
    }

    let mut outflight: HashMap<Vec<u8>, (PacketId, bool)> = HashMap::new();
    for guard in db.ks(Ks::Outflight).iter() {
        let (key, value) = guard.into_inner()?;
        match record::parse_seq_key(&key).and_then(|_| record::decode_outflight(&value)) {
            Ok(state) => {
                outflight.insert(key.to_vec(), state);
            }
            Err(why) => out.damage(Ks::Outflight, &key, &value, why),
        }
    }
    out.outflight = outflight.len() as u64;

    let mut last: Option<(Vec<u8>, Option<usize>)> = None;
    for guard in db.ks(Ks::Queue).iter() {
        let (key, value) = guard.into_inner()?;
        let (client, seq) = match record::parse_seq_key(&key) {
            Ok(parsed) => parsed,
            Err(why) => {
                out.damage(Ks::Queue, &key, &value, why);
                continue;
            }
        };
        out.max_seq = out.max_seq.max(seq);
        let session = match &last {
            Some((c, s)) if c.as_slice() == client => *s,
            _ => {
                let s = index.get(client).copied();
                last = Some((client.to_vec(), s));
                s
            }
        };
        let Some(session) = session else {
            out.orphans.push((Ks::Queue, key.to_vec()));
            continue;
        };
        match record::decode_delivery(&value, seq, clocks) {
            Ok(delivery) => {
                out.queued += 1;
                let state = if outflight.is_empty() {
                    None
                } else {
                    outflight.remove(key.as_ref())
                };
                let recovered = &mut out.recovered.sessions[session];
                if queues_on_disk && state.is_none() && delivery.shared.is_none() {
                    // Checked and decoded like every record, then left on disk.
                    let size = u32::try_from(delivery.size()).unwrap_or(u32::MAX);
                    recovered.on_disk.push((seq, size));
                } else {
                    recovered.queue.push(RecoveredDelivery {
                        delivery,
                        outflight: state,
                    });
                }
            }
            Err(why) => out.damage(Ks::Queue, &key, &value, why),
        }
    }
    // Outflight states whose delivery is gone (or damaged) have nothing to resend.
    let mut left: Vec<Vec<u8>> = outflight.into_keys().collect();
    left.sort();
    out.outflight -= left.len() as u64;
    out.orphans
        .extend(left.into_iter().map(|k| (Ks::Outflight, k)));

    for guard in db.ks(Ks::Inbound).iter() {
        let (key, value) = guard.into_inner()?;
        let parsed = record::parse_inbound_key(&key)
            .and_then(|parsed| record::decode_empty(&value).map(|()| parsed));
        match parsed {
            Ok((client, id)) => match index.get(client) {
                Some(&s) => {
                    out.inbound += 1;
                    out.recovered.sessions[s].inbound_qos2.push(id);
                }
                None => out.orphans.push((Ks::Inbound, key.to_vec())),
            },
            Err(why) => out.damage(Ks::Inbound, &key, &value, why),
        }
    }

    for guard in db.ks(Ks::Retained).iter() {
        let (key, value) = guard.into_inner()?;
        match record::decode_retained(&value, &key, clocks) {
            Ok(message) => out.recovered.retained.push(message),
            Err(why) => out.damage(Ks::Retained, &key, &value, why),
        }
    }

    for guard in db.ks(Ks::Quarantine).iter() {
        guard.key()?;
        out.quarantined += 1;
    }
    Ok(out)
}

impl Scan {
    fn damage(&mut self, ks: Ks, key: &[u8], value: &[u8], why: &'static str) {
        self.damaged.push(Damaged {
            ks,
            key: key.to_vec(),
            value: value.to_vec(),
            why,
        });
    }

    /// Moves the damaged records to `quarantine`, deletes the orphans, in one synced batch;
    /// logs once per keyspace.
    pub(crate) fn settle(&mut self, db: &Db) -> Result<(), StoreError> {
        if self.damaged.is_empty() && self.orphans.is_empty() {
            return Ok(());
        }
        let mut batch = db.db.batch().durability(Some(PersistMode::SyncAll));
        let mut per_ks: Vec<(Ks, u64, &'static str)> = Vec::new();
        for d in &self.damaged {
            let mut key = d.ks.name().as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&d.key);
            batch.insert(db.ks(Ks::Quarantine), key, d.value.as_slice());
            batch.remove(db.ks(d.ks), d.key.as_slice());
            match per_ks.iter_mut().find(|(k, _, _)| *k == d.ks) {
                Some(entry) => entry.1 += 1,
                None => per_ks.push((d.ks, 1, d.why)),
            }
        }
        for (ks, key) in &self.orphans {
            batch.remove(db.ks(*ks), key.as_slice());
        }
        batch.commit().map_err(StoreError::engine(&db.dir))?;
        for (ks, count, why) in per_ks {
            tracing::warn!(
                dir = %db.dir.display(),
                keyspace = ks.name(),
                count,
                first_reason = why,
                "damaged records set aside in the `quarantine` keyspace"
            );
        }
        if !self.orphans.is_empty() {
            tracing::info!(
                dir = %db.dir.display(),
                count = self.orphans.len(),
                "removed records of clients that have no session"
            );
        }
        self.recovered.set_aside = self.damaged.len() as u64;
        self.recovered.orphans_removed = self.orphans.len() as u64;
        self.quarantined += self.damaged.len() as u64;
        Ok(())
    }
}
