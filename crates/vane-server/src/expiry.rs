//! Timers of a parked (offline) session: its Session Expiry Interval and its delayed will.
//! One task per parked session that has either; a reconnect cancels both, which the task
//! sees from the slot's connection sequence number when it wakes. The will itself waits in
//! the slot, where a reconnecting client's handshake decides it (see `SessionSlot::take_will`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};
use vane_core::session::Will;
use vane_core::RouteScratch;

use crate::broker::Broker;
use crate::registry::SessionSlot;

/// Waits out the will delay (seconds, when the slot holds a parked will) and the session
/// expiry of a session parked by the connection with sequence number `seq`. `expiry` is in
/// seconds; `u32::MAX` never expires.
pub(crate) async fn park_timers(
    broker: Arc<Broker>,
    slot: Arc<SessionSlot>,
    seq: u64,
    will_delay: Option<u32>,
    expiry: u32,
) {
    let parked = Instant::now();
    let expire_at = (expiry != u32::MAX).then(|| parked + Duration::from_secs(u64::from(expiry)));
    if let Some(delay) = will_delay {
        let will_at = parked + Duration::from_secs(u64::from(delay));
        if expire_at.is_none_or(|e| will_at < e) {
            tokio::time::sleep_until(will_at).await;
            if !slot.is_latest(seq) {
                // A new connection came for the session within the will delay: its handshake
                // took the will (cancelled on resume [MQTT-3.1.3-9], sent on Clean Start).
                return;
            }
            if let Some(w) = slot.take_will() {
                publish_will(&broker, &slot, w);
            }
        }
    }
    let Some(expire_at) = expire_at else {
        return;
    };
    tokio::time::sleep_until(expire_at).await;
    if !slot.is_latest(seq) {
        return;
    }
    let mut guard = slot.acquire().await;
    // A connection that arrived while the lock was being taken keeps the session.
    if !slot.is_latest(seq) {
        return;
    }
    if let Some(mut session) = guard.take() {
        broker.discard_session(&slot, &mut session);
    }
    broker.forget_stored_session(&slot);
    broker.registry.remove_if_latest(&slot, seq);
    drop(guard);
    info!(client_id = %slot.client_id, expiry_secs = expiry, "session expired");
    // The session ended before the will delay passed: the will goes now.
    if let Some(w) = slot.take_will() {
        publish_will(&broker, &slot, w);
    }
}

pub(crate) fn publish_will(broker: &Broker, slot: &SessionSlot, mut will: Will) {
    will.message.received = std::time::Instant::now();
    debug!(client_id = %slot.client_id, topic = %will.message.topic, "publishing delayed will");
    broker.publish(will.message, &mut RouteScratch::default(), &mut Vec::new());
}
