//! The broker's counters and gauges, read by the `$SYS` publisher (`sys.rs`) and the
//! Prometheus endpoint (`metrics_http.rs`).
//!
//! Cost on the hot path: a connection counts its traffic in plain integers of its own (and its
//! session's, see `vane_core::session::SessionCounts`) and adds them here once per turn of its
//! loop, into one of [`SHARDS`] cache-line-aligned shards chosen by its session id, so
//! publishers on different cores do not fight over one cache line per message. Rare events
//! (refusals, drops, slow consumers) are single relaxed atomics. Gauges that other structures
//! already know (sessions, subscriptions, retained messages, overload level) are read from
//! them when a value is asked for, not kept twice.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use vane_core::session::SessionCounts;
use vane_proto::ConnAckReason;

use crate::broker::Broker;

/// Shards of the traffic counters: enough that the connections on a few cores rarely share one.
const SHARDS: usize = 16;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusedCause {
    /// `limits.max_connections` or a listener's `max_connections`.
    ConnectionLimit = 0,
    /// `limits.connection_rate_per_source`.
    Rate,
    /// A banned address, client id or user name (CONNACK 0x8A).
    Banned,
    /// Memory overload (CONNACK 0x89, or closed before the TLS handshake).
    Overload,
    /// Bad user name or password, or an unsupported authentication method (0x86, 0x8C).
    AuthFailed,
    /// Authentication refused the client, or its client id is bound to another user (0x87).
    NotAuthorized,
    /// A CONNECT the broker cannot serve: client id, will QoS or will topic refused, or a
    /// configured redirect.
    Other,
}

impl RefusedCause {
    const ALL: [RefusedCause; 7] = [
        RefusedCause::ConnectionLimit,
        RefusedCause::Rate,
        RefusedCause::Banned,
        RefusedCause::Overload,
        RefusedCause::AuthFailed,
        RefusedCause::NotAuthorized,
        RefusedCause::Other,
    ];

    /// The label value and `$SYS` topic level.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RefusedCause::ConnectionLimit => "connection_limit",
            RefusedCause::Rate => "rate",
            RefusedCause::Banned => "banned",
            RefusedCause::Overload => "overload",
            RefusedCause::AuthFailed => "auth_failed",
            RefusedCause::NotAuthorized => "not_authorized",
            RefusedCause::Other => "other",
        }
    }

    /// The cause of a CONNACK refusal.
    pub(crate) fn of_connack(reason: ConnAckReason) -> RefusedCause {
        match reason {
            ConnAckReason::Banned => RefusedCause::Banned,
            ConnAckReason::ServerBusy => RefusedCause::Overload,
            ConnAckReason::BadUserNameOrPassword | ConnAckReason::BadAuthenticationMethod => {
                RefusedCause::AuthFailed
            }
            ConnAckReason::NotAuthorized => RefusedCause::NotAuthorized,
            _ => RefusedCause::Other,
        }
    }
}

/// Why a delivery was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropCause {
    /// A QoS 0 delivery shed under memory overload (read from `Overload::dropped_qos0`).
    Overload = 0,
    /// A QoS 0 delivery to a client flagged as a slow consumer.
    SlowConsumer,
    /// The receiver's queue was full (its overflow policy dropped this or an older one).
    QueueFull,
    /// The message expired before it could be sent.
    Expired,
    /// The ACL or the client's token refused the topic to the receiver.
    NotAuthorized,
}

impl DropCause {
    const ALL: [DropCause; 5] = [
        DropCause::Overload,
        DropCause::SlowConsumer,
        DropCause::QueueFull,
        DropCause::Expired,
        DropCause::NotAuthorized,
    ];

    fn name(self) -> &'static str {
        match self {
            DropCause::Overload => "overload",
            DropCause::SlowConsumer => "slow_consumer",
            DropCause::QueueFull => "queue_full",
            DropCause::Expired => "expired",
            DropCause::NotAuthorized => "not_authorized",
        }
    }
}

/// Why a PUBLISH from a client was refused (or, at QoS 0 or MQTT 3.x, dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishRefusedCause {
    /// The ACL or the client's token (0x87).
    NotAuthorized = 0,
    /// Topic beyond `limits.max_topic_length` / `max_topic_levels` (0x90).
    TopicLimit,
    /// Every receiver's queue was full (0x97).
    QueueFull,
    /// Memory overload (0x97; read from `Overload::refused_publishes`).
    Overload,
}

impl PublishRefusedCause {
    const ALL: [PublishRefusedCause; 4] = [
        PublishRefusedCause::NotAuthorized,
        PublishRefusedCause::TopicLimit,
        PublishRefusedCause::QueueFull,
        PublishRefusedCause::Overload,
    ];

    fn name(self) -> &'static str {
        match self {
            PublishRefusedCause::NotAuthorized => "not_authorized",
            PublishRefusedCause::TopicLimit => "topic_limit",
            PublishRefusedCause::QueueFull => "queue_full",
            PublishRefusedCause::Overload => "overload",
        }
    }
}

/// Traffic counters of the connections whose session id falls in this shard. Aligned to two
/// cache lines (adjacent-line prefetch) so that shards never share one.
#[repr(align(128))]
#[derive(Default)]
struct TrafficShard {
    publishes_received: [AtomicU64; 3],
    bytes_received: AtomicU64,
    publishes_sent: [AtomicU64; 3],
    bytes_sent: AtomicU64,
}

/// What one connection counted since it last added to the shared counters. 32-bit: it is
/// emptied every turn of the connection's loop (one read and one write at most, each smaller
/// than 4 GiB), and it widens every connection's task by 20 bytes rather than 40.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub publishes_received: [u32; 3],
    pub bytes_received: u32,
    pub bytes_sent: u32,
}

impl Tally {
    #[inline]
    fn is_empty(&self) -> bool {
        *self == Tally::default()
    }
}

/// The broker's counters.
pub(crate) struct Metrics {
    started: Instant,
    traffic: [TrafficShard; SHARDS],
    /// Connections admitted at accept (before TLS and CONNECT).
    connections_accepted: AtomicU64,
    connections_refused: [AtomicU64; RefusedCause::ALL.len()],
    /// Clients past CONNACK and not yet gone.
    clients_connected: AtomicU64,
    dropped: [AtomicU64; DropCause::ALL.len()],
    publishes_refused: [AtomicU64; PublishRefusedCause::ALL.len()],
    subscriptions_refused: AtomicU64,
    slow_consumers_flagged: AtomicU64,
    slow_consumers_disconnected: AtomicU64,
    /// Connections ended because the store failed.
    store_failures: AtomicU64,
    /// The memory budget in bytes once the overload sampler has resolved it (0: none).
    pub memory_budget: AtomicU64,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            traffic: Default::default(),
            connections_accepted: AtomicU64::new(0),
            connections_refused: Default::default(),
            clients_connected: AtomicU64::new(0),
            dropped: Default::default(),
            publishes_refused: Default::default(),
            subscriptions_refused: AtomicU64::new(0),
            slow_consumers_flagged: AtomicU64::new(0),
            slow_consumers_disconnected: AtomicU64::new(0),
            store_failures: AtomicU64::new(0),
            memory_budget: AtomicU64::new(0),
        }
    }

    pub(crate) fn connection_accepted(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_refused(&self, cause: RefusedCause) {
        self.connections_refused[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn client_connected(&self) {
        self.clients_connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts `n` dropped deliveries (only called when some were).
    pub(crate) fn dropped(&self, cause: DropCause, n: u64) {
        self.dropped[cause as usize].fetch_add(n, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub(crate) fn dropped_total(&self, cause: DropCause) -> u64 {
        self.dropped[cause as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn publish_refused(&self, cause: PublishRefusedCause) {
        self.publishes_refused[cause as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn slow_consumer_flagged(&self) {
        self.slow_consumers_flagged.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn slow_consumer_disconnected(&self) {
        self.slow_consumers_disconnected
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn store_failed(&self) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what a connection counted (its own tally and its session's counts) to the shard
    /// of session `id`, and resets the tally. Called once per turn of the connection's loop:
    /// a relaxed add per counter that moved, none when nothing did.
    #[inline]
    pub(crate) fn add(&self, id: u64, tally: &mut Tally, counts: SessionCounts) {
        if !tally.is_empty() {
            let shard = &self.traffic[id as usize % SHARDS];
            let t = std::mem::take(tally);
            for (q, n) in t.publishes_received.into_iter().enumerate() {
                if n > 0 {
                    shard.publishes_received[q].fetch_add(u64::from(n), Ordering::Relaxed);
                }
            }
            if t.bytes_received > 0 {
                shard
                    .bytes_received
                    .fetch_add(u64::from(t.bytes_received), Ordering::Relaxed);
            }
            if t.bytes_sent > 0 {
                shard
                    .bytes_sent
                    .fetch_add(u64::from(t.bytes_sent), Ordering::Relaxed);
            }
        }
        if !counts.is_empty() {
            self.add_session_counts(id, counts);
        }
    }

    fn add_session_counts(&self, id: u64, counts: SessionCounts) {
        let shard = &self.traffic[id as usize % SHARDS];
        for (q, n) in counts.publishes_sent.into_iter().enumerate() {
            if n > 0 {
                shard.publishes_sent[q].fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
        let rare = [
            (&self.dropped[DropCause::Expired as usize], counts.expired),
            (
                &self.dropped[DropCause::NotAuthorized as usize],
                counts.deliveries_denied,
            ),
            (
                &self.publishes_refused[PublishRefusedCause::NotAuthorized as usize],
                counts.publishes_denied,
            ),
            (
                &self.publishes_refused[PublishRefusedCause::TopicLimit as usize],
                counts.publishes_topic_limit,
            ),
            (&self.subscriptions_refused, counts.subscriptions_denied),
        ];
        for (counter, n) in rare {
            if n > 0 {
                counter.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
    }

    fn sum(&self, field: impl Fn(&TrafficShard) -> &AtomicU64) -> u64 {
        self.traffic
            .iter()
            .map(|s| field(s).load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Every value, read once, for one `$SYS` round or one scrape.
    pub(crate) fn snapshot(&self, broker: &Broker) -> Snapshot {
        let q = |f: fn(&TrafficShard) -> &[AtomicU64; 3]| [0, 1, 2].map(|i| self.sum(|s| &f(s)[i]));
        let overload = &broker.overload;
        let mut dropped = self.dropped.each_ref().map(|c| c.load(Ordering::Relaxed));
        dropped[DropCause::Overload as usize] = overload.dropped_qos0.load(Ordering::Relaxed);
        let mut refused_publishes = self
            .publishes_refused
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed));
        refused_publishes[PublishRefusedCause::Overload as usize] =
            overload.refused_publishes.load(Ordering::Relaxed);
        let mut refused_connections = self
            .connections_refused
            .each_ref()
            .map(|c| c.load(Ordering::Relaxed));
        refused_connections[RefusedCause::Overload as usize] +=
            overload.refused_connections.load(Ordering::Relaxed);
        let (sessions, persistent) = broker.registry.counts();
        Snapshot {
            uptime_seconds: self.started.elapsed().as_secs(),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_refused: refused_connections,
            connections_open: broker.connections.load(Ordering::Relaxed) as u64,
            clients_connected: self.clients_connected.load(Ordering::Relaxed),
            sessions,
            sessions_persistent: persistent,
            subscriptions: broker.index.read().len() as u64,
            retained: broker.retained.read().len() as u64,
            publishes_received: q(|s| &s.publishes_received),
            bytes_received: self.sum(|s| &s.bytes_received),
            publishes_sent: q(|s| &s.publishes_sent),
            bytes_sent: self.sum(|s| &s.bytes_sent),
            dropped,
            publishes_refused: refused_publishes,
            subscriptions_refused: self.subscriptions_refused.load(Ordering::Relaxed),
            slow_consumers_flagged: self.slow_consumers_flagged.load(Ordering::Relaxed),
            slow_consumers_disconnected: self.slow_consumers_disconnected.load(Ordering::Relaxed),
            overload_level: overload.level() as u8,
            memory_budget_bytes: self.memory_budget.load(Ordering::Relaxed),
            resident_bytes: crate::overload::resident_bytes().unwrap_or(0),
            store_failures: self.store_failures.load(Ordering::Relaxed),
            store_failed: broker.store.as_ref().is_some_and(|s| s.failure().is_some()),
            store: broker.store.as_ref().map(|s| s.stats()),
        }
    }
}

/// Every metric at one moment.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub uptime_seconds: u64,
    pub connections_accepted: u64,
    pub connections_refused: [u64; RefusedCause::ALL.len()],
    pub connections_open: u64,
    pub clients_connected: u64,
    pub sessions: u64,
    pub sessions_persistent: u64,
    pub subscriptions: u64,
    pub retained: u64,
    pub publishes_received: [u64; 3],
    pub bytes_received: u64,
    pub publishes_sent: [u64; 3],
    pub bytes_sent: u64,
    pub dropped: [u64; DropCause::ALL.len()],
    pub publishes_refused: [u64; PublishRefusedCause::ALL.len()],
    pub subscriptions_refused: u64,
    pub slow_consumers_flagged: u64,
    pub slow_consumers_disconnected: u64,
    pub overload_level: u8,
    pub memory_budget_bytes: u64,
    pub resident_bytes: u64,
    pub store_failures: u64,
    /// Whether the store has failed (its committer stopped): nothing becomes durable any more.
    pub store_failed: bool,
    pub store: Option<vane_store::StoreStats>,
}

/// The broker's version, as `$SYS/broker/version` and `vane_build_info` say it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Snapshot {
    /// The `$SYS` topics and their values (text, as Mosquitto publishes them).
    pub(crate) fn sys_values(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::with_capacity(48);
        let mut put = |topic: &str, value: String| v.push((format!("$SYS/broker/{topic}"), value));
        put("version", format!("vane {VERSION}"));
        put("uptime", format!("{} seconds", self.uptime_seconds));
        put("clients/connected", self.clients_connected.to_string());
        put("clients/total", self.sessions.to_string());
        put(
            "clients/disconnected",
            self.sessions
                .saturating_sub(self.clients_connected)
                .to_string(),
        );
        put("clients/persistent", self.sessions_persistent.to_string());
        put(
            "connections/accepted",
            self.connections_accepted.to_string(),
        );
        put("connections/open", self.connections_open.to_string());
        for cause in RefusedCause::ALL {
            put(
                &format!("connections/refused/{}", cause.name()),
                self.connections_refused[cause as usize].to_string(),
            );
        }
        let received: u64 = self.publishes_received.iter().sum();
        let sent: u64 = self.publishes_sent.iter().sum();
        put("messages/received", received.to_string());
        put("messages/sent", sent.to_string());
        put("publish/messages/received", received.to_string());
        put("publish/messages/sent", sent.to_string());
        for q in 0..3 {
            put(
                &format!("messages/received/qos{q}"),
                self.publishes_received[q].to_string(),
            );
            put(
                &format!("messages/sent/qos{q}"),
                self.publishes_sent[q].to_string(),
            );
        }
        put("bytes/received", self.bytes_received.to_string());
        put("bytes/sent", self.bytes_sent.to_string());
        for cause in DropCause::ALL {
            put(
                &format!("messages/dropped/{}", cause.name()),
                self.dropped[cause as usize].to_string(),
            );
        }
        for cause in PublishRefusedCause::ALL {
            put(
                &format!("publish/refused/{}", cause.name()),
                self.publishes_refused[cause as usize].to_string(),
            );
        }
        put(
            "subscriptions/refused",
            self.subscriptions_refused.to_string(),
        );
        put("subscriptions/count", self.subscriptions.to_string());
        put("retained messages/count", self.retained.to_string());
        put(
            "slow consumers/flagged",
            self.slow_consumers_flagged.to_string(),
        );
        put(
            "slow consumers/disconnected",
            self.slow_consumers_disconnected.to_string(),
        );
        put("overload/level", self.overload_level.to_string());
        put("memory/budget", self.memory_budget_bytes.to_string());
        put("memory/resident", self.resident_bytes.to_string());
        put("store/failures", self.store_failures.to_string());
        put("store/failed", u8::from(self.store_failed).to_string());
        v
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub(crate) fn prometheus(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        };
        let one = |v: u64| [("", v)];
        family(
            "vane_build_info",
            "gauge",
            "The broker's version, in the version label; always 1.",
            &[(&format!("version=\"{VERSION}\""), 1)],
        );
        family(
            "vane_uptime_seconds",
            "gauge",
            "Seconds since the broker started.",
            &one(self.uptime_seconds),
        );
        family(
            "vane_connections_accepted_total",
            "counter",
            "TCP connections admitted at accept (before TLS and CONNECT).",
            &one(self.connections_accepted),
        );
        let refused: Vec<(String, u64)> = RefusedCause::ALL
            .iter()
            .map(|c| {
                (
                    format!("cause=\"{}\"", c.name()),
                    self.connections_refused[*c as usize],
                )
            })
            .collect();
        family(
            "vane_connections_refused_total",
            "counter",
            "Connections refused, at accept or at CONNECT, by cause.",
            &labelled(&refused),
        );
        family(
            "vane_connections_open",
            "gauge",
            "Connection tasks running (accepted, whether or not CONNECT has completed).",
            &one(self.connections_open),
        );
        family(
            "vane_clients_connected",
            "gauge",
            "Clients connected (CONNACK sent and not yet gone).",
            &one(self.clients_connected),
        );
        family(
            "vane_sessions",
            "gauge",
            "Sessions the broker holds, connected or not.",
            &one(self.sessions),
        );
        family(
            "vane_sessions_persistent",
            "gauge",
            "Sessions kept in the store (session expiry above 0, or MQTT 3.x clean session 0 with a store).",
            &one(self.sessions_persistent),
        );
        family(
            "vane_subscriptions",
            "gauge",
            "Subscriptions in the subscription index (shared ones included).",
            &one(self.subscriptions),
        );
        family(
            "vane_retained_messages",
            "gauge",
            "Retained messages held ($SYS ones included).",
            &one(self.retained),
        );
        let by_qos = |v: &[u64; 3]| -> Vec<(String, u64)> {
            (0..3).map(|q| (format!("qos=\"{q}\""), v[q])).collect()
        };
        family(
            "vane_messages_received_total",
            "counter",
            "PUBLISH packets received from clients, by QoS.",
            &labelled(&by_qos(&self.publishes_received)),
        );
        family(
            "vane_messages_sent_total",
            "counter",
            "PUBLISH packets sent to clients, by QoS (resends included).",
            &labelled(&by_qos(&self.publishes_sent)),
        );
        family(
            "vane_received_bytes_total",
            "counter",
            "Bytes read from client connections after CONNECT.",
            &one(self.bytes_received),
        );
        family(
            "vane_sent_bytes_total",
            "counter",
            "Bytes written to client connections after CONNACK.",
            &one(self.bytes_sent),
        );
        let dropped: Vec<(String, u64)> = DropCause::ALL
            .iter()
            .map(|c| (format!("cause=\"{}\"", c.name()), self.dropped[*c as usize]))
            .collect();
        family(
            "vane_messages_dropped_total",
            "counter",
            "Deliveries dropped before reaching their client, by cause.",
            &labelled(&dropped),
        );
        let publishes: Vec<(String, u64)> = PublishRefusedCause::ALL
            .iter()
            .map(|c| {
                (
                    format!("cause=\"{}\"", c.name()),
                    self.publishes_refused[*c as usize],
                )
            })
            .collect();
        family(
            "vane_publishes_refused_total",
            "counter",
            "PUBLISH packets refused (MQTT 5.0 reason code) or dropped, by cause.",
            &labelled(&publishes),
        );
        family(
            "vane_subscriptions_refused_total",
            "counter",
            "Subscriptions refused as not authorized (SUBACK 0x87 / 0x80).",
            &one(self.subscriptions_refused),
        );
        family(
            "vane_slow_consumers_flagged_total",
            "counter",
            "Clients found to be slow consumers (slow_consumer.timeout).",
            &one(self.slow_consumers_flagged),
        );
        family(
            "vane_slow_consumers_disconnected_total",
            "counter",
            "Slow consumers disconnected (slow_consumer.disconnect_after).",
            &one(self.slow_consumers_disconnected),
        );
        family(
            "vane_overload_level",
            "gauge",
            "Memory overload level: 0 normal, 1 shedding, 2 refusing.",
            &one(u64::from(self.overload_level)),
        );
        family(
            "vane_memory_budget_bytes",
            "gauge",
            "The memory budget (overload.memory_budget or its computed default); 0: none.",
            &one(self.memory_budget_bytes),
        );
        family(
            "vane_resident_memory_bytes",
            "gauge",
            "The broker's resident memory (RSS), sampled when asked.",
            &one(self.resident_bytes),
        );
        family(
            "vane_store_failures_total",
            "counter",
            "Connections closed because the store failed to make their data durable.",
            &one(self.store_failures),
        );
        family(
            "vane_store_failed",
            "gauge",
            "1 when the store has failed and nothing becomes durable any more; 0 otherwise.",
            &one(u64::from(self.store_failed)),
        );
        if let Some(store) = &self.store {
            family(
                "vane_store_commits_total",
                "counter",
                "Store write batches committed.",
                &one(store.commits),
            );
            family(
                "vane_store_syncs_total",
                "counter",
                "Store fsyncs.",
                &one(store.syncs),
            );
            family(
                "vane_store_written_bytes_total",
                "counter",
                "Key and value bytes written to the store.",
                &one(store.bytes_written),
            );
        }
        out
    }
}

fn labelled(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples.iter().map(|(l, v)| (l.as_str(), *v)).collect()
}

#[cfg(test)]
mod tests {
    use super::{Metrics, RefusedCause, Tally, SHARDS};
    use vane_core::session::SessionCounts;
    use vane_proto::ConnAckReason;

    #[test]
    fn shards_do_not_share_a_cache_line() {
        assert!(std::mem::align_of::<super::TrafficShard>() >= 128);
        assert_eq!(
            std::mem::size_of::<[super::TrafficShard; SHARDS]>() % 128,
            0
        );
    }

    #[test]
    fn connection_tallies_add_up_across_shards() {
        let m = Metrics::new();
        for id in 0..40u64 {
            let mut tally = Tally {
                publishes_received: [1, 2, 0],
                bytes_received: 10,
                bytes_sent: 5,
            };
            let counts = SessionCounts {
                publishes_sent: [0, 1, 1],
                expired: 1,
                ..SessionCounts::default()
            };
            m.add(id, &mut tally, counts);
            assert_eq!(tally, Tally::default(), "adding resets the tally");
        }
        assert_eq!(m.sum(|s| &s.publishes_received[0]), 40);
        assert_eq!(m.sum(|s| &s.publishes_received[1]), 80);
        assert_eq!(m.sum(|s| &s.bytes_received), 400);
        assert_eq!(m.sum(|s| &s.bytes_sent), 200);
        assert_eq!(m.sum(|s| &s.publishes_sent[2]), 40);
        assert_eq!(
            m.dropped[super::DropCause::Expired as usize]
                .load(std::sync::atomic::Ordering::Relaxed),
            40
        );
    }

    /// Every `$SYS` topic is a valid topic name, under `$SYS/broker/`, published once a round.
    #[test]
    fn sys_topics_are_valid_and_distinct() {
        let values = super::Snapshot::default().sys_values();
        let mut seen = std::collections::HashSet::new();
        for (topic, _) in &values {
            assert!(topic.starts_with("$SYS/broker/"), "{topic}");
            vane_proto::TopicName::new(topic.as_str()).expect("a valid topic name");
            assert!(seen.insert(topic.clone()), "{topic} twice");
        }
        assert!(values
            .iter()
            .any(|(t, _)| t == "$SYS/broker/clients/connected"));
    }

    /// Each family is announced once, before its samples, and every sample is one of them.
    #[test]
    fn prometheus_families_are_announced_once() {
        let text = super::Snapshot {
            store: Some(vane_store::StoreStats::default()),
            ..super::Snapshot::default()
        }
        .prometheus();
        let mut families = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().expect("a name");
                assert!(families.insert(name.to_owned()), "{name} announced twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().expect("a name");
                assert!(families.contains(name), "{name} sampled before its TYPE");
            }
        }
        assert!(families.contains("vane_store_commits_total"));
    }

    #[test]
    fn connack_refusals_have_causes() {
        assert_eq!(
            RefusedCause::of_connack(ConnAckReason::BadUserNameOrPassword),
            RefusedCause::AuthFailed
        );
        assert_eq!(
            RefusedCause::of_connack(ConnAckReason::NotAuthorized),
            RefusedCause::NotAuthorized
        );
        assert_eq!(
            RefusedCause::of_connack(ConnAckReason::Banned),
            RefusedCause::Banned
        );
        assert_eq!(
            RefusedCause::of_connack(ConnAckReason::ServerBusy),
            RefusedCause::Overload
        );
        assert_eq!(
            RefusedCause::of_connack(ConnAckReason::ClientIdentifierNotValid),
            RefusedCause::Other
        );
    }
}
