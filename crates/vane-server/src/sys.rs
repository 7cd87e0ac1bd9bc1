//! The `$SYS/broker/...` topics: every `sys.interval` the broker publishes the values that
//! changed since its last round, retained at QoS 0, through normal routing, so subscribers
//! and the ACL treat them like any message ([MQTT-4.7.2-1]: `#` and `+` do not match them).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::info;
use vane_core::{Message, RouteScratch};
use vane_proto::{ByteString, QoS};

use crate::broker::Broker;

/// Publishes the `$SYS` values until shutdown; returns at once when `sys.interval` is 0.
pub(crate) async fn run(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let interval = broker.config.sys.interval;
    if interval.is_zero() {
        info!("$SYS topics off (sys.interval = 0)");
        return;
    }
    info!(interval = ?interval, "publishing $SYS/broker/... topics");
    let mut last: HashMap<String, String> = HashMap::new();
    let mut scratch = RouteScratch::with_seed(rand::random());
    let mut ops = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {}
        }
        let snapshot = broker.metrics.snapshot(&broker);
        for (topic, value) in snapshot.sys_values() {
            if last.get(&topic) == Some(&value) {
                continue;
            }
            let message = Message {
                topic: ByteString::from(topic.as_str()),
                payload: Bytes::from(value.clone().into_bytes()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Default::default(),
                // 0: made by the broker, so No Local never hides it.
                origin: 0,
                received: Instant::now(),
            };
            // QoS 0 and not stored (see `Broker::publish`): no store operation to wait for.
            broker.publish(message, &mut scratch, &mut ops);
            ops.clear();
            last.insert(topic, value);
        }
    }
}
