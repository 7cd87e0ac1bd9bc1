//! Pieces every scenario shares: target arguments, the hard-deadline watchdog, the runtime,
//! address resolution, connecting many clients, the progress ticker and the result output
//! (a table on stdout, or one JSON object).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use vane_proto::{Disconnect, DisconnectReason, Packet};

use super::client::Client;

/// Where to connect and how to report, common to every scenario.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Broker host, the only one connected to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,
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
/// threads and prints its result through `render` (JSON or table).
pub(crate) fn execute<R>(
    budget: Duration,
    threads: u16,
    json: bool,
    scenario: impl std::future::Future<Output = anyhow::Result<R>>,
    render: impl FnOnce(&R) -> (serde_json::Value, Table),
) -> anyhow::Result<()> {
    watchdog(budget)?;
    let report = runtime(threads)?.block_on(scenario)?;
    let (value, table) = render(&report);
    emit(json, &value, &table)
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

/// The first address of `host:port`.
pub(crate) async fn resolve(target: &Target) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("resolving {}", target.host))?
        .next()
        .with_context(|| format!("{} has no address", target.host))
}

/// Client identifiers start with this, so that concurrent runs do not take each other over.
pub(crate) fn client_prefix() -> String {
    format!("vb{}", std::process::id())
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
    addr: SocketAddr,
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
            set.spawn(async move { (i, Client::connect(addr, &id, read_capacity).await) });
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
