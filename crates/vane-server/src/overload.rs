//! The global memory budget: a task samples the process's resident memory into an atomic
//! level that connections and routing read (one relaxed load), and the broker degrades in
//! order as memory nears the budget: shed (pause reading publishes, drop QoS 0 deliveries),
//! then refuse (QoS 1/2 publishes with 0x97, new connections with 0x89), then back to normal
//! below a lower watermark.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};
use vane_config::OverloadConfig;

use crate::broker::Broker;

/// How far the broker has degraded, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Level {
    /// Within the budget's normal range.
    Normal = 0,
    /// Reading of new publishes pauses; QoS 0 deliveries are dropped.
    Shedding = 1,
    /// Also: QoS 1/2 publishes (MQTT 5.0) and new connections are refused.
    Refusing = 2,
}

impl Level {
    fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Normal,
            1 => Level::Shedding,
            _ => Level::Refusing,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Shedding => "shedding (publishes paused, QoS 0 deliveries dropped)",
            Level::Refusing => {
                "refusing (QoS 1/2 publishes refused with 0x97, new connections with 0x89)"
            }
        }
    }
}

/// The budget's thresholds in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Thresholds {
    shed: u64,
    refuse: u64,
    recover: u64,
}

impl Thresholds {
    fn new(budget: u64, config: &OverloadConfig) -> Thresholds {
        let at = |percent: u8| budget / 100 * u64::from(percent);
        Thresholds {
            shed: at(config.shed_at_percent),
            refuse: at(config.refuse_at_percent),
            recover: at(config.recover_below_percent),
        }
    }

    /// The level after sampling `rss` at level `now`: rising at once, falling with
    /// hysteresis (refusing ends below the shedding threshold, shedding below the recovery
    /// one), so a broker hovering at a threshold does not flap.
    fn next(&self, now: Level, rss: u64) -> Level {
        if rss >= self.refuse {
            return Level::Refusing;
        }
        if rss < self.recover {
            return Level::Normal;
        }
        match now {
            Level::Refusing if rss >= self.shed => Level::Refusing,
            Level::Normal if rss < self.shed => Level::Normal,
            _ => Level::Shedding,
        }
    }
}

/// The overload state every connection reads, and what degrading has cost so far.
pub(crate) struct Overload {
    level: AtomicU8,
    /// Wakes connections holding publishes back when the level changes.
    changed: Notify,
    /// QoS 0 deliveries (and MQTT 5.0 QoS 0 publishes while refusing) dropped.
    pub dropped_qos0: AtomicU64,
    /// QoS 1/2 publishes refused with 0x97.
    pub refused_publishes: AtomicU64,
    /// Connections refused before CONNECT was handled.
    pub refused_connections: AtomicU64,
    /// Refused plain-TCP connections waiting for their CONNECT, to be told 0x89.
    refusals_waiting: AtomicUsize,
}

/// Most refused connections held at once to be told why; past this a refused connection is
/// closed at once. In a connection storm under overload each held one costs a task and a
/// socket, so their number is bounded rather than their rate.
const MAX_REFUSALS_WAITING: usize = 1024;

/// Longest a refused connection is held for its CONNECT (within `mqtt.connect_timeout`):
/// clients send CONNECT right after connecting, and a refusal should not hold a socket for
/// the full timeout a slow client is allowed.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

impl Overload {
    pub(crate) fn new() -> Overload {
        Overload {
            level: AtomicU8::new(Level::Normal as u8),
            changed: Notify::new(),
            dropped_qos0: AtomicU64::new(0),
            refused_publishes: AtomicU64::new(0),
            refused_connections: AtomicU64::new(0),
            refusals_waiting: AtomicUsize::new(0),
        }
    }

    /// The current level: one relaxed load.
    #[inline]
    pub(crate) fn level(&self) -> Level {
        Level::from_u8(self.level.load(Ordering::Relaxed))
    }

    fn set(&self, level: Level) {
        self.level.store(level as u8, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// Waits until the level is no longer `seen`.
    pub(crate) async fn changed_from(&self, seen: Level) {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change between the two is not missed.
        notified.as_mut().enable();
        if self.level() != seen {
            return;
        }
        notified.await;
    }
}

/// The budget in bytes (0: none) and where it came from, for the start-up log.
pub(crate) fn resolve_budget(config: &OverloadConfig) -> (u64, String) {
    if let Some(b) = config.memory_budget {
        return (b.0 as u64, "overload.memory_budget".into());
    }
    let machine = meminfo_total();
    let cgroup = cgroup_limit();
    let (limit, source) = match (machine, cgroup) {
        (Some(m), Some(c)) if c < m => (c, "the cgroup's memory limit"),
        (Some(m), _) => (m, "the machine's memory"),
        (None, Some(c)) => (c, "the cgroup's memory limit"),
        (None, None) => return (0, "no memory size known on this system: no budget".into()),
    };
    (limit / 4 * 3, format!("75% of {source} ({limit} bytes)"))
}

/// MemTotal from /proc/meminfo, in bytes.
fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    kib_field(&text, "MemTotal:")
}

/// A `Name:   1234 kB` line's value in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024))
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`, at its own path or, in a container, at the mount's root), if one
/// is set.
fn cgroup_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut v2 = String::new();
    let mut v1 = String::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        match (controllers, path) {
            (Some(""), Some(path)) => v2 = path.trim_end_matches('/').to_owned(),
            (Some(c), Some(path)) if c.split(',').any(|c| c == "memory") => {
                v1 = path.trim_end_matches('/').to_owned();
            }
            _ => {}
        }
    }
    let candidates = [
        format!("/sys/fs/cgroup{v2}/memory.max"),
        "/sys/fs/cgroup/memory.max".to_owned(),
        format!("/sys/fs/cgroup/memory{v1}/memory.limit_in_bytes"),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned(),
    ];
    candidates.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        let v: u64 = text.trim().parse().ok()?;
        // "max" (v2) does not parse; v1 reports "no limit" as a number near i64::MAX.
        (v < 1 << 60).then_some(v)
    })
}

/// The process's resident memory, in bytes.
pub(crate) fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&text, "VmRSS:")
}

/// Samples resident memory until shutdown and moves the level, logging each change once.
pub(crate) async fn run_sampler(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    let config = &broker.config.overload;
    let (budget, source) = resolve_budget(config);
    if budget == 0 {
        info!(%source, "no memory budget: the broker does not degrade under memory pressure");
        return;
    }
    if resident_bytes().is_none() {
        warn!(budget, "memory budget set but resident memory cannot be read (/proc/self/status): not enforced");
        return;
    }
    broker
        .metrics
        .memory_budget
        .store(budget, Ordering::Relaxed);
    let thresholds = Thresholds::new(budget, config);
    info!(
        budget,
        %source,
        shed_at = thresholds.shed,
        refuse_at = thresholds.refuse,
        recover_below = thresholds.recover,
        "memory budget"
    );
    let overload = &broker.overload;
    let mut ticker = tokio::time::interval(config.sample_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = ticker.tick() => {}
        }
        let Some(rss) = resident_bytes() else {
            continue;
        };
        let now = overload.level();
        let next = thresholds.next(now, rss);
        if next == now {
            continue;
        }
        overload.set(next);
        let (dropped, refused_pub, refused_conn) = (
            overload.dropped_qos0.load(Ordering::Relaxed),
            overload.refused_publishes.load(Ordering::Relaxed),
            overload.refused_connections.load(Ordering::Relaxed),
        );
        let change = if next > now {
            "memory overload: degrading"
        } else {
            "memory overload easing"
        };
        warn!(
            rss,
            budget,
            level = %next.name(),
            dropped_qos0 = dropped,
            refused_publishes = refused_pub,
            refused_connections = refused_conn,
            "{change}"
        );
    }
}

/// Admission under overload, before anything else is spent on a new connection: the stream
/// back when it may go on; otherwise it is refused (plain: CONNACK 0x89 / 3.x return code 3,
/// in a task of its own; TLS or WebSocket (`handshake`): closed before the handshake, which
/// costs more than the refusal and has to come before any CONNACK) and `None` is returned.
pub(crate) fn admit(
    broker: &Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    handshake: bool,
) -> Option<TcpStream> {
    if broker.overload.level() < Level::Refusing {
        return Some(stream);
    }
    let refused = broker
        .overload
        .refused_connections
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    debug!(%peer, refused, "connection refused: memory overload");
    if !handshake {
        let waiting = &broker.overload.refusals_waiting;
        if waiting.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS_WAITING {
            waiting.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let wait = broker.config.mqtt.connect_timeout.min(REFUSAL_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let max_packet = broker.config.mqtt.max_packet_size.0;
        let broker = broker.clone();
        tokio::spawn(async move {
            crate::connection::refuse_busy(stream, peer, deadline, max_packet).await;
            broker
                .overload
                .refusals_waiting
                .fetch_sub(1, Ordering::AcqRel);
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{kib_field, Level, Thresholds};

    fn thresholds() -> Thresholds {
        Thresholds::new(1000, &vane_config::OverloadConfig::default())
    }

    #[test]
    fn levels_rise_at_once_and_fall_below_lower_watermarks() {
        let t = thresholds();
        assert_eq!(t.next(Level::Normal, 790), Level::Normal);
        assert_eq!(t.next(Level::Normal, 800), Level::Shedding);
        assert_eq!(t.next(Level::Normal, 950), Level::Refusing);
        assert_eq!(t.next(Level::Shedding, 750), Level::Shedding, "hysteresis");
        assert_eq!(t.next(Level::Shedding, 690), Level::Normal);
        assert_eq!(t.next(Level::Refusing, 850), Level::Refusing, "hysteresis");
        assert_eq!(t.next(Level::Refusing, 790), Level::Shedding);
        assert_eq!(t.next(Level::Refusing, 600), Level::Normal);
    }

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tvane\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }
}
