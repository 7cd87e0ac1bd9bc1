//! Pieces every scenario shares: target arguments, the hard-deadline watchdog, the runtime,
//! address resolution, connecting many clients, pacing at a fixed rate, the progress ticker
//! and the result output (a table on stdout, or one JSON object).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use vane_proto::{Disconnect, DisconnectReason, Packet, ProtocolVersion};

use super::client::{Client, Dialer};

/// Where to connect and how to report, common to every scenario.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Broker host, the only one connected to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// MQTT version of every connection.
    #[arg(long, value_enum, default_value_t = MqttVersion::V3_1_1)]
    pub mqtt_version: MqttVersion,
    /// Against a broker on 127.x, spread the connections over this many source addresses,
    /// 127.0.0.2 onwards, each with its own ephemeral port range; 0 lets the system choose.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=250))]
    pub sources: u8,
    /// Client identifiers start with this; the default, `vb<process id>`, is new every run.
    /// Give a fixed one with `--persistent` so that a later run resumes the same sessions.
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--mqtt-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[value(name = "3.1.1", alias = "4")]
    V3_1_1,
    /// MQTT 5.0.
    #[value(name = "5", alias = "5.0")]
    V5,
}

impl MqttVersion {
    pub(crate) fn protocol(self) -> ProtocolVersion {
        match self {
            MqttVersion::V3_1_1 => ProtocolVersion::V3_1_1,
            MqttVersion::V5 => ProtocolVersion::V5,
        }
    }
}

/// Time allowed to connect every client before the load starts.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Clients connecting at once.
pub(crate) const CONNECT_CONCURRENCY: usize = 64;

/// Hard deadline: whatever the broker does, the process ends by itself after `budget`.
pub(crate) fn watchdog(budget: Duration) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || {
            std::thread::sleep(budget);
            eprintln!("vane bench: hard deadline of {budget:?} reached, exiting");
            std::process::exit(3);
        })?;
    Ok(())
}

/// Runs a scenario: arms the watchdog for `budget`, runs `scenario` on a runtime of `threads`
/// threads and prints its result through `render` (JSON or table), with the MQTT version of
/// `target` added.
pub(crate) fn execute<R>(
    budget: Duration,
    threads: u16,
    target: &Target,
    scenario: impl std::future::Future<Output = anyhow::Result<R>>,
    render: impl FnOnce(&R) -> (serde_json::Value, Table),
) -> anyhow::Result<()> {
    watchdog(budget)?;
    let report = runtime(threads)?.block_on(scenario)?;
    let (mut value, mut table) = render(&report);
    let version = target.mqtt_version.protocol().to_string();
    if let Some(object) = value.as_object_mut() {
        object.insert("mqtt_version".into(), version.clone().into());
    }
    table.row("MQTT version", version);
    emit(target.json, &value, &table)
}

/// [`execute`] on one thread, for a scenario whose report renders itself from `args` through
/// `json` and `table`.
pub(crate) fn execute_one<A, R>(
    budget: Duration,
    args: &A,
    target: &Target,
    scenario: impl std::future::Future<Output = anyhow::Result<R>>,
    json: fn(&R, &A) -> serde_json::Value,
    table: fn(&R, &A) -> Table,
) -> anyhow::Result<()> {
    execute(budget, 1, target, scenario, |report| {
        (json(report, args), table(report, args))
    })
}

/// A current-thread runtime for one thread, a multi-thread one otherwise.
pub(crate) fn runtime(threads: u16) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(threads))
            .thread_name("bench-worker")
            .enable_all()
            .build()?
    })
}

/// How to reach the target: the first address of `host:port`, with the version and source
/// addresses asked for.
pub(crate) async fn dialer(target: &Target) -> anyhow::Result<Dialer> {
    let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("resolving {}", target.host))?
        .next()
        .with_context(|| format!("{} has no address", target.host))?;
    Ok(Dialer::new(
        addr,
        target.mqtt_version.protocol(),
        target.sources,
    ))
}

/// Client identifiers start with this: `--client-prefix`, or by default one of this process,
/// so that concurrent runs do not take each other over.
pub(crate) fn client_prefix(target: &Target) -> String {
    target
        .client_prefix
        .clone()
        .unwrap_or_else(|| format!("vb{}", std::process::id()))
}

/// An id unlikely to repeat: the process id and the time.
pub(crate) fn run_id() -> [u8; 8] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ((nanos as u64) ^ (u64::from(std::process::id()) << 40)).to_be_bytes()
}

/// Connects `n` clients named `<prefix><i>`, a few at a time, in index order.
pub(crate) async fn connect_many(
    dialer: Dialer,
    prefix: &str,
    n: usize,
    read_capacity: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    while clients.len() < n {
        let next = clients.len();
        let mut set = JoinSet::new();
        for i in next..(next + CONNECT_CONCURRENCY).min(n) {
            let id = format!("{prefix}{i}");
            set.spawn(async move { (i, dialer.connect(i, &id, read_capacity).await) });
        }
        let mut chunk = Vec::new();
        while let Some(joined) = timeout_at(deadline, set.join_next())
            .await
            .map_err(|_| anyhow::anyhow!("clients did not connect within {SETUP_TIMEOUT:?}"))?
        {
            let (i, client) = joined?;
            chunk.push((i, client.with_context(|| format!("client {prefix}{i}"))?));
        }
        chunk.sort_by_key(|(i, _)| *i);
        clients.extend(chunk.into_iter().map(|(_, c)| c));
    }
    Ok(clients)
}

/// Ends a connection with DISCONNECT, giving up after a moment.
pub(crate) async fn disconnect(client: &mut Client) {
    let packet = Packet::Disconnect(Disconnect::new(DisconnectReason::NormalDisconnection));
    let _ = tokio::time::timeout(Duration::from_millis(200), client.send(&packet)).await;
}

/// Messages at a fixed rate from a start: message k (from 0) is due at `start + k / rate`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    start: Instant,
    /// Messages per second, above zero.
    rate: f64,
}

impl Pace {
    /// None when `rate` is 0 (no pacing).
    pub(crate) fn new(start: Instant, rate: f64) -> Option<Pace> {
        (rate > 0.0).then_some(Pace { start, rate })
    }

    /// The same rate, starting `intervals` message intervals later.
    pub(crate) fn shifted(self, intervals: f64) -> Pace {
        Pace {
            start: self.start + Duration::from_secs_f64(intervals.max(0.0) / self.rate),
            rate: self.rate,
        }
    }

    /// Messages due by `at`, counting from the start (none before it).
    pub(crate) fn due(&self, at: Instant) -> u64 {
        if at < self.start {
            return 0;
        }
        ((at - self.start).as_secs_f64() * self.rate) as u64 + 1
    }

    /// When message `k` is due.
    pub(crate) fn at(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }
}

/// Calls `line` once a second from `start` until `end` and prints what it returns on stderr
/// (unless `quiet`). `line` gets the seconds since `start` and the seconds since its last call.
pub(crate) async fn progress(
    start: Instant,
    end: Instant,
    quiet: bool,
    mut line: impl FnMut(f64, f64) -> Option<String>,
) {
    let mut prev = start;
    let mut tick = start + Duration::from_secs(1);
    while tick <= end {
        sleep_until(tick).await;
        let now = Instant::now();
        if let Some(l) = line((now - start).as_secs_f64(), (now - prev).as_secs_f64()) {
            if !quiet {
                eprintln!("{l}");
            }
        }
        prev = now;
        tick += Duration::from_secs(1);
    }
    sleep_until(end).await;
}

/// `n` per `secs`, zero over an empty interval.
pub(crate) fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// A result table: a heading and aligned key/value rows.
pub(crate) struct Table {
    heading: String,
    rows: Vec<(String, String)>,
}

impl Table {
    pub(crate) fn new(heading: impl Into<String>) -> Table {
        Table {
            heading: heading.into(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, key: &str, value: impl Into<String>) {
        self.rows.push((key.to_string(), value.into()));
    }

    pub(crate) fn render(&self) -> String {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut s = format!("{}\n\n", self.heading);
        for (k, v) in &self.rows {
            s += &format!("  {k:<width$}  {v}\n");
        }
        s
    }
}

/// Prints the result: JSON or the table.
pub(crate) fn emit(json: bool, value: &serde_json::Value, table: &Table) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table.render());
    }
    Ok(())
}

/// The process's soft limit on open files, from /proc/self/limits; None when unknown or
/// unlimited.
pub(crate) fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_spreads_messages_evenly() {
        let start = Instant::now();
        let pace = Pace::new(start, 1000.0).expect("a rate");
        assert_eq!(pace.due(start - Duration::from_millis(1)), 0);
        assert_eq!(pace.due(start), 1);
        assert_eq!(pace.due(start + Duration::from_micros(999)), 1);
        assert_eq!(pace.due(start + Duration::from_millis(1)), 2);
        assert_eq!(pace.due(start + Duration::from_secs(1)), 1001);
        assert_eq!(pace.at(0), start);
        assert_eq!(pace.at(500), start + Duration::from_millis(500));
        let later = pace.shifted(0.5);
        assert_eq!(later.due(start), 0);
        assert_eq!(later.at(0), start + Duration::from_micros(500));
        assert!(Pace::new(start, 0.0).is_none());
    }
}
