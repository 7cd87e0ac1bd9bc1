//! Timers of a parked (offline) session: its Session Expiry Interval and its delayed will.
//! One task per parked session that has either; a reconnect cancels both, which the task
//! sees from the slot's connection sequence number when it wakes.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};
use vane_core::session::Will;
use vane_core::RouteScratch;

use crate::broker::Broker;
use crate::registry::SessionSlot;

/// Waits out the will delay and the session expiry of a session parked by the connection with
/// sequence number `seq`. `expiry` is in seconds; `u32::MAX` never expires.
pub(crate) async fn park_timers(
    broker: Arc<Broker>,
    slot: Arc<SessionSlot>,
    seq: u64,
    mut will: Option<Will>,
    expiry: u32,
) {
    let parked = Instant::now();
    let expire_at = (expiry != u32::MAX).then(|| parked + Duration::from_secs(u64::from(expiry)));
    if let Some(w) = &will {
        let will_at = parked + Duration::from_secs(u64::from(w.delay));
        if expire_at.is_none_or(|e| will_at < e) {
            tokio::time::sleep_until(will_at).await;
            if !slot.is_latest(seq) {
                // [MQTT-3.1.3-9] the client came back within the will delay: no will.
                return;
            }
            if let Some(w) = will.take() {
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
    broker.registry.remove_if_latest(&slot, seq);
    drop(guard);
    info!(client_id = %slot.client_id, expiry_secs = expiry, "session expired");
    // The session ended before the will delay passed: the will goes now.
    if let Some(w) = will {
        publish_will(&broker, &slot, w);
    }
}

fn publish_will(broker: &Broker, slot: &SessionSlot, mut will: Will) {
    will.message.received = std::time::Instant::now();
    debug!(client_id = %slot.client_id, topic = %will.message.topic, "publishing delayed will");
    broker.publish(will.message, &mut RouteScratch::default());
}
