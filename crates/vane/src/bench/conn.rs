//! `vane bench conn`: opens N idle MQTT connections at a target rate, holds them, then closes
//! them. Against a loopback broker the connections come from 127.0.0.2, 127.0.0.3, ... in turn
//! (`--sources`), so that tens of thousands fit in the ephemeral port range. Reports the connect rate, connect
//! times and failures. The process's open-file limit is checked up front.
//!
//! With `--persistent` the sessions outlive the connections, and `--subscribe` makes each
//! subscribe to a filter; with `--disconnect` each connection ends (DISCONNECT) as soon as it
//! is connected and subscribed, instead of being held, so that any number of offline persistent
//! sessions can be made with few open files. `--retry-for` retries refused connections, to
//! time how long a starting broker takes to answer its first CONNECT (`first_connack_unix`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use super::client::{Client, KEEP_ALIVE};
use super::common::{self, disconnect, per_sec, Table, Target};
use super::{parse_duration, thousands};

/// Arguments of `vane bench conn`.
#[derive(Debug, Args)]
pub struct ConnArgs {
    #[command(flatten)]
    pub target: Target,
    /// Connections to open.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// Connections opened per second; 0 for as fast as possible.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// How long to hold the connections once all are open.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    /// MQTT keep alive in seconds; 0 disables it (some brokers, rumqttd for one, refuse 0).
    /// The held connections send PINGREQ at half this interval, or at half the broker's Server
    /// Keep Alive (MQTT 5.0).
    #[arg(long, default_value_t = KEEP_ALIVE)]
    pub keepalive: u16,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub concurrency: u32,
    /// Longest time for one connection attempt (TCP and CONNACK).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Keep persistent sessions: Clean Session 0 (MQTT 3.1.1), or Clean Start 0 and a Session
    /// Expiry Interval that never ends (MQTT 5.0). Connection i has client id
    /// `<client prefix>-c<i>`: with a fixed --client-prefix a later run resumes the sessions
    /// (counted as `session_present`).
    #[arg(long)]
    pub persistent: bool,
    /// Each connection subscribes to this filter once connected; `{i}` in it stands for the
    /// connection's number (0 to N-1).
    #[arg(long, value_name = "FILTER")]
    pub subscribe: Option<String>,
    /// QoS of the --subscribe subscriptions.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// End each connection with DISCONNECT as soon as it is connected (and subscribed) instead
    /// of holding them all: at most --concurrency are open at once, whatever the number of
    /// connections. --hold does not apply.
    #[arg(long)]
    pub disconnect: bool,
    /// Retry a connection that fails (refused, closed, no CONNACK) for this long after the
    /// start, every 5 ms: to wait for a broker that is starting. 0: no retry.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub retry_for: Duration,
}

/// File descriptors kept free for the runtime, stdio and the like.
const SPARE_FDS: u64 = 64;

pub fn run(args: ConnArgs) -> anyhow::Result<()> {
    if args.subscribe.as_deref() == Some("") {
        bail!("--subscribe must not be empty");
    }
    // Connections open at once: all of them, unless each ends at once.
    let n = if args.disconnect {
        u64::from(args.connections.min(args.concurrency))
    } else {
        u64::from(args.connections)
    };
    crate::open_files::raise_limit();
    match common::open_files_limit() {
        Some(limit) if n + SPARE_FDS > limit => bail!(
            "{n} connections need about {} open files, but this process may open only {limit} \
             (`ulimit -n`, from /proc/self/limits); raise it (e.g. `ulimit -n {}`) or ask for \
             fewer --connections",
            n + SPARE_FDS,
            n + SPARE_FDS
        ),
        _ => {}
    }
    let open_budget = if args.rate > 0 {
        Duration::from_secs_f64(n as f64 / f64::from(args.rate))
    } else {
        Duration::ZERO
    };
    // Without --disconnect, --connections is below a million (clap) and the open-file limit.
    let per_connection = if args.disconnect {
        Duration::from_millis(2) * args.connections
    } else {
        Duration::ZERO
    };
    common::execute_one(
        open_budget
            + per_connection
            + args.retry_for
            + args.connect_timeout * 2
            + args.hold
            + Duration::from_secs(60),
        &args,
        &args.target,
        run_async(&args),
        Report::to_json,
        Report::to_table,
    )
}

struct Report {
    broker: String,
    opened: u64,
    failed: u64,
    errors: Vec<String>,
    open_secs: f64,
    connect_us: Histogram<u64>,
    /// Connections the broker closed while held.
    dropped: u64,
    close_secs: f64,
    /// Connections whose --subscribe subscription was granted.
    subscribed: u64,
    /// CONNACKs with Session Present set: sessions the broker resumed.
    session_present: u64,
    /// Wall-clock time of the first CONNACK, seconds since the Unix epoch.
    first_connack_unix: Option<f64>,
}

/// Microseconds since the Unix epoch, now.
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Connection attempts made so far, and the tallies of what they did.
#[derive(Default)]
struct Tally {
    opened: AtomicU64,
    failed: AtomicU64,
    subscribed: AtomicU64,
    session_present: AtomicU64,
    /// Microseconds since the Unix epoch of the first CONNACK; u64::MAX before it.
    first_connack: AtomicU64,
}

async fn run_async(args: &ConnArgs) -> anyhow::Result<Report> {
    let dialer = common::dialer(&args.target)
        .await?
        .with_keep_alive(args.keepalive)
        .with_persistent(args.persistent);
    let prefix = format!("{}-c", common::client_prefix(&args.target));
    let n = args.connections as usize;
    let qos = vane_proto::QoS::from_u8(args.qos).context("--qos")?;
    let tally = Arc::new(Tally {
        first_connack: AtomicU64::new(u64::MAX),
        ..Tally::default()
    });
    let (opened, failed) = (&tally.opened, &tally.failed);
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let limit = Arc::new(Semaphore::new(args.concurrency as usize));
    let start = Instant::now();
    let retry_end = start + args.retry_for;
    let mut set = JoinSet::new();
    let progress = {
        let (tally, quiet) = (tally.clone(), args.target.quiet);
        tokio::spawn(async move {
            let (opened, failed) = (&tally.opened, &tally.failed);
            let mut last = 0;
            common::progress(start, start + Duration::from_secs(3600), quiet, |t, dt| {
                let now = opened.load(Relaxed);
                let line = format!(
                    "[{t:>4.0}s] open {:>9}   {:>9} conn/s   failed {}",
                    thousands(now),
                    thousands(per_sec(now - last, dt) as u64),
                    thousands(failed.load(Relaxed)),
                );
                last = now;
                Some(line)
            })
            .await;
        })
    };
    let mut clients = Vec::with_capacity(if args.disconnect { 0 } else { n });
    let mut connect_us = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for i in 0..n {
        if args.rate > 0 {
            sleep_until(start + Duration::from_secs_f64(i as f64 / f64::from(args.rate))).await;
        }
        let permit = limit.clone().acquire_owned().await?;
        let (id, tally, errors) = (format!("{prefix}{i}"), tally.clone(), errors.clone());
        let connect_timeout = args.connect_timeout;
        let filter = args
            .subscribe
            .as_ref()
            .map(|f| f.replace("{i}", &i.to_string()));
        let disconnect_at_once = args.disconnect;
        set.spawn(async move {
            let began = Instant::now();
            let result = loop {
                let attempt = dialer.connect(i, &id, 256);
                let result = match timeout(connect_timeout, attempt).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow::anyhow!("no CONNACK within {connect_timeout:?}")),
                };
                if result.is_ok() || Instant::now() >= retry_end {
                    break result;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            let took = began.elapsed();
            if result.is_ok() {
                tally.first_connack.fetch_min(unix_micros(), Relaxed);
            }
            let result = match (result, filter) {
                (Ok(mut client), Some(filter)) => {
                    let subscribing = client.subscribe(&filter, qos);
                    match timeout(connect_timeout, subscribing).await {
                        Ok(Ok(_)) => {
                            tally.subscribed.fetch_add(1, Relaxed);
                            Ok(client)
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(anyhow::anyhow!("no SUBACK within {connect_timeout:?}")),
                    }
                }
                (result, _) => result,
            };
            let result = match result {
                Ok(mut client) if disconnect_at_once => {
                    tally
                        .session_present
                        .fetch_add(u64::from(client.session_present), Relaxed);
                    disconnect(&mut client).await;
                    // The broker closes the connection after DISCONNECT; wait for it a moment, so
                    // that the session is offline when this run ends.
                    let _ = timeout(Duration::from_secs(1), client.next_packet()).await;
                    Ok(None)
                }
                Ok(client) => {
                    tally
                        .session_present
                        .fetch_add(u64::from(client.session_present), Relaxed);
                    Ok(Some(client))
                }
                Err(e) => Err(e),
            };
            drop(permit);
            match result {
                Ok(client) => {
                    tally.opened.fetch_add(1, Relaxed);
                    Some((client, took))
                }
                Err(e) => {
                    tally.failed.fetch_add(1, Relaxed);
                    let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                    if errors.len() < 10 {
                        errors.push(format!("{id}: {e:#}"));
                    }
                    None
                }
            }
        });
        // Collect what has finished, so that finished tasks do not pile up.
        while let Some(joined) = set.try_join_next() {
            collect(joined?, &mut connect_us, &mut clients);
        }
    }
    while let Some(joined) = set.join_next().await {
        collect(joined?, &mut connect_us, &mut clients);
    }
    let open_secs = start.elapsed().as_secs_f64();
    progress.abort();
    if !args.target.quiet {
        eprintln!(
            "opened {} connections in {open_secs:.2} s ({} failed); {}",
            thousands(opened.load(Relaxed)),
            thousands(failed.load(Relaxed)),
            if args.disconnect {
                "each disconnected at once".to_string()
            } else {
                format!("holding for {:?}", args.hold)
            }
        );
    }
    // Hold: every connection waits for the end of the hold, pinging if keep alive is on, and
    // notices when the broker closes it.
    let hold_for = if args.disconnect {
        Duration::ZERO
    } else {
        args.hold
    };
    let hold_end = Instant::now() + hold_for;
    let dropped = Arc::new(AtomicU64::new(0));
    let mut holders = JoinSet::new();
    for mut client in clients {
        let dropped = dropped.clone();
        holders.spawn(async move {
            if hold(&mut client, hold_end).await.is_err() {
                dropped.fetch_add(1, Relaxed);
                return;
            }
            disconnect(&mut client).await;
        });
    }
    sleep_until(hold_end).await;
    let closing = Instant::now();
    while let Ok(Some(_)) = timeout(Duration::from_secs(30), holders.join_next()).await {}
    holders.abort_all();
    let errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Report {
        broker: dialer.addr.to_string(),
        opened: opened.load(Relaxed),
        failed: failed.load(Relaxed),
        errors,
        open_secs,
        connect_us,
        dropped: dropped.load(Relaxed),
        close_secs: closing.elapsed().as_secs_f64(),
        subscribed: tally.subscribed.load(Relaxed),
        session_present: tally.session_present.load(Relaxed),
        first_connack_unix: match tally.first_connack.load(Relaxed) {
            u64::MAX => None,
            us => Some(us as f64 / 1e6),
        },
    })
}

/// Records what one connection task returned: its connect time, and the client if it is held.
fn collect(
    joined: Option<(Option<Client>, Duration)>,
    connect_us: &mut Histogram<u64>,
    clients: &mut Vec<Client>,
) {
    if let Some((client, took)) = joined {
        connect_us.saturating_record(took.as_micros() as u64);
        clients.extend(client);
    }
}

/// Keeps one connection until `end`; fails when the broker closes it.
async fn hold(client: &mut Client, end: Instant) -> anyhow::Result<()> {
    let ping = client.ping_interval();
    let mut next_ping = ping.map(|p| Instant::now() + p);
    loop {
        let wake = next_ping.map_or(end, |p| p.min(end));
        let woke = tokio::select! {
            _ = sleep_until(wake) => true,
            packet = client.next_packet() => { packet?; false }
        };
        if woke {
            if Instant::now() >= end {
                return Ok(());
            }
            client.send(&vane_proto::Packet::PingReq).await?;
            next_ping = next_ping.zip(ping).map(|(at, p)| at + p);
        }
    }
}

impl Report {
    fn to_json(&self, args: &ConnArgs) -> serde_json::Value {
        let q = |p: f64| self.connect_us.value_at_quantile(p);
        json!({
            "scenario": "conn",
            "broker": self.broker,
            "connections": args.connections,
            "target_rate": args.rate,
            "opened": self.opened,
            "failed": self.failed,
            "open_secs": self.open_secs,
            "connect_per_sec": per_sec(self.opened, self.open_secs),
            "connect_us": {
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": self.connect_us.max(),
            },
            "hold_secs": args.hold.as_secs_f64(),
            "dropped_while_held": self.dropped,
            "close_secs": self.close_secs,
            "persistent": args.persistent,
            "subscribe": args.subscribe,
            "subscribed": self.subscribed,
            "session_present": self.session_present,
            "disconnect": args.disconnect,
            "first_connack_unix": self.first_connack_unix,
            "errors": self.errors,
        })
    }

    fn to_table(&self, args: &ConnArgs) -> Table {
        let mut t = Table::new(format!(
            "vane bench conn: {} connections to {}, rate {}, held {:?}, keep alive {}",
            thousands(u64::from(args.connections)),
            self.broker,
            if args.rate == 0 {
                "unlimited".to_string()
            } else {
                format!("{}/s", thousands(u64::from(args.rate)))
            },
            args.hold,
            args.keepalive,
        ));
        let q = |p: f64| thousands(self.connect_us.value_at_quantile(p));
        t.row("opened", thousands(self.opened));
        t.row("failed", thousands(self.failed));
        t.row(
            "connect rate",
            format!(
                "{} conn/s ({:.2} s)",
                thousands(per_sec(self.opened, self.open_secs) as u64),
                self.open_secs
            ),
        );
        t.row(
            "connect time (µs)",
            format!(
                "p50 {} / p90 {} / p99 {} / max {}",
                q(0.5),
                q(0.9),
                q(0.99),
                thousands(self.connect_us.max())
            ),
        );
        if args.persistent {
            t.row(
                "sessions resumed (Session Present)",
                thousands(self.session_present),
            );
        }
        if let Some(filter) = &args.subscribe {
            t.row(
                "subscribed",
                format!("{} to {filter}", thousands(self.subscribed)),
            );
        }
        if !args.disconnect {
            t.row("closed by the broker while held", thousands(self.dropped));
        }
        t.row("close time", format!("{:.2} s", self.close_secs));
        for e in &self.errors {
            t.row("error", e.clone());
        }
        t
    }
}
