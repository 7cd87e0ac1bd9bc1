//! What the broker writes to its store and when, and how it restores everything at start:
//! persistent sessions with their subscriptions, queued and in-flight messages, inbound QoS 2
//! packet ids, delayed wills and retained messages.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};
use vane_config::{Durability, StoreConfig};
use vane_core::session::{StoreEvent, Will};
use vane_core::{RouteScratch, Session};
use vane_proto::{ByteString, QoS};
use vane_store::{Op, Recovered, SessionRecord, Store, StoreError, StoreOptions};

use crate::broker::Broker;
use crate::registry::SessionSlot;

/// Opens the configured store; `None` when durability is `memory`.
pub(crate) fn open(config: &StoreConfig) -> Result<Option<(Store, Recovered)>, StoreError> {
    let durability = match config.durability {
        Durability::Memory => return Ok(None),
        Durability::Sync => vane_store::Durability::Sync,
        Durability::Batch => vane_store::Durability::Batch {
            interval: config.batch_interval,
        },
    };
    let started = Instant::now();
    let (store, recovered) = Store::open(StoreOptions {
        dir: PathBuf::from(&config.dir),
        durability,
        queues_on_disk: true,
    })?;
    info!(
        dir = %config.dir,
        durability = ?config.durability,
        sessions = recovered.sessions.len(),
        queued = recovered
            .sessions
            .iter()
            .map(|s| s.queue.len() + s.on_disk.len())
            .sum::<usize>(),
        retained = recovered.retained.len(),
        set_aside = recovered.set_aside,
        took = ?started.elapsed(),
        "store opened"
    );
    if recovered.set_aside > 0 {
        warn!(
            dir = %config.dir,
            records = recovered.set_aside,
            "damaged store records were set aside (kept in the store's quarantine for inspection; see `vane store check`)"
        );
    }
    Ok(Some((store, recovered)))
}

/// The store record of a persistent session as it is now. `parked_will` is the delayed will
/// waiting while the session is offline; `disconnected` whether it is.
pub(crate) fn session_op(
    session: &Session,
    slot: &SessionSlot,
    parked_will: Option<Will>,
    disconnected: bool,
) -> Op {
    Op::PutSession(Arc::new(SessionRecord {
        client_id: session.client_id().clone(),
        version: session.version(),
        expiry: session.session_expiry(),
        subscriptions: session.subscriptions().cloned().collect(),
        will: parked_will,
        disconnected_at: disconnected.then(SystemTime::now),
        owner: slot.bound_user(),
    }))
}

/// Turns what happened to a session's stored deliveries into store operations. Returns true
/// when one of them must be durable before the client hears more (a QoS 2 packet id given
/// out, or PUBREL about to be sent).
pub(crate) fn event_ops(
    client_id: &ByteString,
    events: &mut Vec<StoreEvent>,
    ops: &mut Vec<Op>,
) -> bool {
    let mut gate = false;
    for event in events.drain(..) {
        match event {
            StoreEvent::Assigned { seq, packet_id } => {
                gate = true;
                ops.push(Op::PutOutflight {
                    client_id: client_id.clone(),
                    seq,
                    packet_id,
                    released: false,
                });
            }
            StoreEvent::Released { seq, packet_id } => {
                gate = true;
                ops.push(Op::PutOutflight {
                    client_id: client_id.clone(),
                    seq,
                    packet_id,
                    released: true,
                });
            }
            StoreEvent::Completed { seq } => ops.push(Op::DeleteDelivery {
                client_id: client_id.clone(),
                seq,
            }),
        }
    }
    gate
}

/// Restores what the store recovered: retained messages, then every persistent session parked
/// as if its client had just gone offline (sessions and delayed wills that expired while the
/// broker was down end now, their wills published).
pub(crate) async fn restore(broker: &Arc<Broker>, recovered: Recovered) {
    let Some(store) = &broker.store else {
        return;
    };
    {
        let mut retained = broker.retained.write();
        for message in recovered.retained {
            retained.set(Arc::new(message));
        }
    }
    let now = Instant::now();
    let wall = SystemTime::now();
    let mut ops = Vec::new();
    let mut due_wills = Vec::new();
    let (mut restored, mut expired) = (0usize, 0usize);
    for rs in recovered.sessions {
        let record = rs.record;
        // A session that was connected when the broker stopped counts as offline from now.
        let offline_for = record
            .disconnected_at
            .and_then(|t| wall.duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        let offline_secs = u32::try_from(offline_for.as_secs()).unwrap_or(u32::MAX);
        let will = record.will;
        // A cap lowered since the session was stored applies to it too.
        let expiry = record.expiry.min(broker.session_config.max_session_expiry);
        if expiry != u32::MAX && offline_secs >= expiry {
            // [MQTT-3.1.2-23] the session expired while the broker was down.
            ops.push(Op::DeleteSession(record.client_id.clone()));
            due_wills.extend(will);
            expired += 1;
            continue;
        }
        let slot = broker
            .registry
            .get_or_create(&record.client_id, || broker.new_mailbox());
        slot.persistent.store(true, Ordering::Relaxed);
        // The client id stays bound to its user across the restart.
        slot.restore_binding(record.owner.as_deref());
        let mut session = Session::new(
            slot.id,
            record.client_id.clone(),
            broker.session_config.clone(),
            now,
        );
        session.restore(record.version, expiry);
        broker.index_subscriptions(&slot, &record.subscriptions);
        for sub in record.subscriptions {
            session.restore_subscription(sub);
        }
        for id in rs.inbound_qos2 {
            session.restore_inbound_qos2(id);
        }
        let mut evicted = Vec::new();
        for rd in rs.queue {
            match rd.outflight {
                // Only QoS 2 deliveries keep their packet id: the client may hold it.
                Some((packet_id, released)) if rd.delivery.qos == QoS::ExactlyOnce => {
                    session.restore_inflight(rd.delivery, packet_id, released);
                }
                _ => {
                    // Already on disk: an offline session's queue stays there.
                    slot.mailbox.push_evicting(rd.delivery, &mut evicted, 0);
                }
            }
        }
        for (seq, size) in rs.on_disk {
            slot.mailbox.push_on_disk(seq, size as usize, &mut evicted);
        }
        for seq in evicted {
            ops.push(Op::DeleteDelivery {
                client_id: slot.client_id.clone(),
                seq,
            });
        }
        let expiry_left = match expiry {
            u32::MAX => u32::MAX,
            e => e - offline_secs,
        };
        let mut will_delay = None;
        if let Some(will) = will {
            let delay_left = will.delay.saturating_sub(offline_secs);
            if delay_left == 0 {
                due_wills.push(will);
            } else {
                will_delay = Some(delay_left);
                slot.park_will(will);
            }
        }
        slot.install(session).await;
        if expiry_left != u32::MAX || will_delay.is_some() {
            tokio::spawn(crate::expiry::park_timers(
                broker.clone(),
                slot.clone(),
                0,
                will_delay,
                expiry_left,
            ));
        }
        restored += 1;
    }
    if !ops.is_empty() {
        store.submit(ops);
    }
    if restored + expired > 0 {
        info!(
            restored,
            expired, "persistent sessions restored from the store"
        );
    }
    let mut scratch = RouteScratch::default();
    for mut will in due_wills {
        will.message.received = now;
        broker.publish(will.message, &mut scratch, &mut Vec::new());
    }
}

/// Whether a slot's session is kept in the store.
pub(crate) fn is_persistent(slot: &SessionSlot) -> bool {
    slot.persistent.load(Ordering::Relaxed)
}
