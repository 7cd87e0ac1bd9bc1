//! `vane bench conn`: opens N idle MQTT connections at a target rate, holds them, then closes
//! them. Against a loopback broker the connections come from 127.0.0.2, 127.0.0.3, ... in turn
//! (`--sources`), so that tens of thousands fit in the ephemeral port range. Reports the connect rate, connect
//! times and failures. The process's open-file limit is checked up front.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
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
}

/// File descriptors kept free for the runtime, stdio and the like.
const SPARE_FDS: u64 = 64;

pub fn run(args: ConnArgs) -> anyhow::Result<()> {
    let n = u64::from(args.connections);
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
    common::execute_one(
        open_budget + args.connect_timeout * 2 + args.hold + Duration::from_secs(60),
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
}

async fn run_async(args: &ConnArgs) -> anyhow::Result<Report> {
    let dialer = common::dialer(&args.target)
        .await?
        .with_keep_alive(args.keepalive);
    let prefix = format!("{}-c", common::client_prefix());
    let n = args.connections as usize;
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let limit = Arc::new(Semaphore::new(args.concurrency as usize));
    let start = Instant::now();
    let mut set = JoinSet::new();
    let progress = {
        let (opened, failed, quiet) = (opened.clone(), failed.clone(), args.target.quiet);
        tokio::spawn(async move {
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
    for i in 0..n {
        if args.rate > 0 {
            sleep_until(start + Duration::from_secs_f64(i as f64 / f64::from(args.rate))).await;
        }
        let permit = limit.clone().acquire_owned().await?;
        let (id, opened, failed, errors) = (
            format!("{prefix}{i}"),
            opened.clone(),
            failed.clone(),
            errors.clone(),
        );
        let connect_timeout = args.connect_timeout;
        set.spawn(async move {
            let began = Instant::now();
            let attempt = dialer.connect(i, &id, 256);
            let result = match timeout(connect_timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!("no CONNACK within {connect_timeout:?}")),
            };
            drop(permit);
            match result {
                Ok(client) => {
                    opened.fetch_add(1, Relaxed);
                    Some((client, began.elapsed()))
                }
                Err(e) => {
                    failed.fetch_add(1, Relaxed);
                    let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                    if errors.len() < 10 {
                        errors.push(format!("{id}: {e:#}"));
                    }
                    None
                }
            }
        });
    }
    let mut clients = Vec::with_capacity(n);
    let mut connect_us = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    while let Some(joined) = set.join_next().await {
        if let Some((client, took)) = joined? {
            connect_us.saturating_record(took.as_micros() as u64);
            clients.push(client);
        }
    }
    let open_secs = start.elapsed().as_secs_f64();
    progress.abort();
    if !args.target.quiet {
        eprintln!(
            "opened {} connections in {open_secs:.2} s ({} failed); holding for {:?}",
            thousands(clients.len() as u64),
            thousands(failed.load(Relaxed)),
            args.hold
        );
    }
    // Hold: every connection waits for the end of the hold, pinging if keep alive is on, and
    // notices when the broker closes it.
    let hold_end = Instant::now() + args.hold;
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
    })
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
        t.row("closed by the broker while held", thousands(self.dropped));
        t.row("close time", format!("{:.2} s", self.close_secs));
        for e in &self.errors {
            t.row("error", e.clone());
        }
        t
    }
}
