//! `vane bench retained`: publishes R retained messages, each on a topic of its own under
//! `<prefix>/<run id>/`, at QoS 1 with up to `--window` unacknowledged; then a new subscriber
//! subscribes to `<prefix>/<run id>/#` and the time until it has received every one of them is
//! measured. Messages that never arrive are reported as missing. At the end the retained
//! messages are cleared again (empty retained publishes) unless `--keep`.
//!
//! `--only store` and `--only receive` run one half each, on topics `<prefix>/<i>` (no run
//! id), so that messages stored by one run, and kept across a broker restart, are received by
//! a later one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};
use vane_proto::{Packet, PacketId, PubAck, QoS};

use super::client::{encode_publish, Client};
use super::common::{self, disconnect, per_sec, Table, Target, SETUP_TIMEOUT};
use super::seqset::SeqSet;
use super::{parse_duration, thousands};

/// Arguments of `vane bench retained`.
#[derive(Debug, Args)]
pub struct RetainedArgs {
    #[command(flatten)]
    pub target: Target,
    /// Retained messages, each on its own topic.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub messages: u32,
    /// QoS of the subscription (the retained messages are published at QoS 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub payload: u32,
    /// Unacknowledged publishes while storing the messages.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub window: u32,
    /// Longest time to store the messages, and again to receive them.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Topic prefix.
    #[arg(long, default_value = "bench/retained")]
    pub prefix: String,
    /// Leave the retained messages on the broker instead of clearing them.
    #[arg(long)]
    pub keep: bool,
    /// Run one half only, on topics PREFIX/<i>: `store` publishes the retained messages and
    /// keeps them; `receive` subscribes and counts those that arrive (of --messages).
    #[arg(long, value_enum)]
    pub only: Option<Phase>,
    /// The new subscriber's filter; PREFIX/<run id>/# by default (PREFIX/# with --only).
    /// Only messages under the prefix count.
    #[arg(long)]
    pub filter: Option<String>,
}

/// `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Publish the retained messages and keep them.
    Store,
    /// Subscribe and count the retained messages that arrive.
    Receive,
}

pub fn run(args: RetainedArgs) -> anyhow::Result<()> {
    if args.prefix.is_empty() || args.prefix.contains(['+', '#']) {
        bail!("--prefix must be a non-empty topic name without wildcards");
    }
    if args.filter.as_deref() == Some("") {
        bail!("--filter must not be empty");
    }
    common::execute_one(
        SETUP_TIMEOUT + args.duration * 3 + Duration::from_secs(15),
        &args,
        &args.target,
        run_async(&args),
        Report::to_json,
        Report::to_table,
    )
}

struct Report {
    broker: String,
    granted: QoS,
    /// None when not stored here (`--only receive`).
    store_secs: Option<f64>,
    /// None when not received here (`--only store`).
    receive_secs: Option<f64>,
    /// Until the first retained message arrived.
    first_secs: Option<f64>,
    received: u64,
    missing: u64,
    duplicates: u64,
    cleared: bool,
}

async fn run_async(args: &RetainedArgs) -> anyhow::Result<Report> {
    let dialer = common::dialer(&args.target).await?;
    let qos = QoS::from_u8(args.qos).context("--qos")?;
    let client_prefix = common::client_prefix(&args.target);
    let run = u64::from_be_bytes(common::run_id());
    let base = match args.only {
        Some(_) => args.prefix.clone(),
        None => format!("{}/{run:016x}", args.prefix),
    };
    let n = u64::from(args.messages);
    let quiet = args.target.quiet;

    let mut publisher = None;
    let mut store_secs = None;
    if args.only != Some(Phase::Receive) {
        let mut client = timeout_at(
            Instant::now() + SETUP_TIMEOUT,
            dialer.connect(0, &format!("{client_prefix}-rp"), 64 * 1024),
        )
        .await
        .context("publisher: no CONNACK in time")??;
        let payload = vec![b'r'; args.payload as usize];
        let started = Instant::now();
        publish_all(
            &mut client,
            &base,
            n,
            &payload,
            args,
            started + args.duration,
        )
        .await
        .context("storing the retained messages")?;
        let secs = started.elapsed().as_secs_f64();
        if !quiet {
            eprintln!(
                "stored {} retained messages in {secs:.2} s ({} msg/s)",
                thousands(n),
                thousands(per_sec(n, secs) as u64)
            );
        }
        store_secs = Some(secs);
        publisher = Some(client);
    }
    if args.only == Some(Phase::Store) {
        if let Some(client) = publisher.as_mut() {
            disconnect(client).await;
        }
        return Ok(Report {
            broker: dialer.addr.to_string(),
            granted: qos,
            store_secs,
            receive_secs: None,
            first_secs: None,
            received: 0,
            missing: 0,
            duplicates: 0,
            cleared: false,
        });
    }

    // The new subscriber: SUBSCRIBE and count distinct topics until all arrived.
    let mut sub = timeout_at(
        Instant::now() + SETUP_TIMEOUT,
        dialer.connect(1, &format!("{client_prefix}-rs"), 1024 * 1024),
    )
    .await
    .context("subscriber: no CONNACK in time")??;
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let mut seen = SeqSet::default();
    let (mut distinct, mut duplicates) = (0u64, 0u64);
    let mut first: Option<Instant> = None;
    let topic_prefix = format!("{base}/");
    let start = Instant::now();
    let filter = args.filter.clone().unwrap_or_else(|| format!("{base}/#"));
    sub.send_subscribe(&filter, qos).await?;
    let deadline = start + args.duration;
    let receiving = {
        let waiter = done.clone();
        let stop = async move {
            tokio::select! {
                _ = waiter.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        };
        sub.receive(stop, &received, |publish| {
            let Some(i) = publish
                .topic
                .strip_prefix(&topic_prefix)
                .and_then(|i| i.parse::<u64>().ok())
                .filter(|&i| i < n)
            else {
                return false;
            };
            first.get_or_insert_with(Instant::now);
            if seen.insert(i) {
                distinct += 1;
                if distinct == n {
                    done.notify_one();
                }
            } else {
                duplicates += 1;
            }
            true
        })
    };
    let progress = common::progress(start, deadline, quiet, |t, _| {
        Some(format!(
            "[{t:>4.0}s] received {:>10} of {}",
            thousands(received.load(Relaxed)),
            thousands(n)
        ))
    });
    let result = tokio::select! {
        r = receiving => r,
        () = progress => Ok(()),
    };
    let receive_secs = start.elapsed().as_secs_f64();
    result.context("subscriber")?;
    disconnect(&mut sub).await;

    let mut cleared = false;
    if let Some(client) = publisher.as_mut() {
        if !args.keep {
            cleared = publish_all(client, &base, n, &[], args, Instant::now() + args.duration)
                .await
                .is_ok();
        }
        disconnect(client).await;
    }
    Ok(Report {
        broker: dialer.addr.to_string(),
        granted: qos,
        store_secs,
        receive_secs: Some(receive_secs),
        first_secs: first.map(|f| (f - start).as_secs_f64()),
        received: distinct,
        missing: n - distinct,
        duplicates,
        cleared,
    })
}

/// Publishes `payload` retained at QoS 1 to `<base>/0` .. `<base>/<n-1>`, at most `--window`
/// unacknowledged, and waits for every PUBACK.
async fn publish_all(
    client: &mut Client,
    base: &str,
    n: u64,
    payload: &[u8],
    args: &RetainedArgs,
    deadline: Instant,
) -> anyhow::Result<()> {
    // No more unacknowledged than the broker's MQTT 5.0 Receive Maximum.
    let window = (args.window as usize).min(usize::from(client.receive_maximum));
    let mut free: Vec<u16> = (1..=window as u16).rev().collect();
    let (mut next, mut acked) = (0u64, 0u64);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let Client {
        stream,
        read_buf,
        decoder,
        version,
        ..
    } = client;
    let version = *version;
    let (mut reader, mut writer) = stream.split();
    while acked < n {
        while next < n && out.len() < 64 * 1024 {
            let Some(id) = free.pop() else { break };
            let topic = format!("{base}/{next}");
            encode_publish(
                &mut out,
                version,
                &topic,
                QoS::AtLeastOnce,
                true,
                PacketId::new(id),
                payload,
            );
            next += 1;
        }
        tokio::select! {
            biased;
            read = reader.read_buf(read_buf) => {
                if read? == 0 {
                    bail!("the broker closed the connection");
                }
                while let Some(packet) = decoder.decode(read_buf)? {
                    match packet {
                        Packet::PubAck(PubAck { packet_id, .. }) => {
                            free.push(packet_id.get());
                            acked += 1;
                        }
                        other => bail!("unexpected {:?} from the broker", other.packet_type()),
                    }
                }
            }
            written = writer.write(&out), if !out.is_empty() => {
                let w = written?;
                out.advance(w);
            }
            _ = tokio::time::sleep_until(deadline) => {
                bail!("{acked} of {n} acknowledged by the deadline");
            }
        }
    }
    Ok(())
}

impl Report {
    fn to_json(&self, args: &RetainedArgs) -> serde_json::Value {
        json!({
            "scenario": "retained",
            "broker": self.broker,
            "messages": args.messages,
            "qos": self.granted.as_u8(),
            "payload_bytes": args.payload,
            "window": args.window,
            "only": args.only.map(|p| match p {
                Phase::Store => "store",
                Phase::Receive => "receive",
            }),
            "store_secs": self.store_secs,
            "store_per_sec": self.store_secs.map(|s| per_sec(u64::from(args.messages), s)),
            "receive_secs": self.receive_secs,
            "first_message_secs": self.first_secs,
            "received": self.receive_secs.map(|_| self.received),
            "received_per_sec": self.receive_secs.map(|s| per_sec(self.received, s)),
            "missing": self.receive_secs.map(|_| self.missing),
            "duplicates": self.duplicates,
            "cleared": self.cleared,
        })
    }

    fn to_table(&self, args: &RetainedArgs) -> Table {
        let mut t = Table::new(format!(
            "vane bench retained: {} retained messages under {}/…, {}, subscription QoS {}, {} B payload",
            thousands(u64::from(args.messages)),
            args.prefix,
            self.broker,
            self.granted.as_u8(),
            args.payload,
        ));
        let n = u64::from(args.messages);
        if let Some(store_secs) = self.store_secs {
            t.row(
                "stored",
                format!(
                    "{:.2} s ({} msg/s, window {})",
                    store_secs,
                    thousands(per_sec(n, store_secs) as u64),
                    args.window
                ),
            );
        }
        if let Some(receive_secs) = self.receive_secs {
            t.row(
                "new subscriber received all in",
                if self.missing == 0 {
                    format!("{receive_secs:.3} s")
                } else {
                    format!("did not: stopped after {receive_secs:.3} s")
                },
            );
            t.row(
                "first message after",
                self.first_secs
                    .map_or("none".into(), |s| format!("{:.3} s", s)),
            );
            t.row(
                "received",
                format!(
                    "{} ({} msg/s)",
                    thousands(self.received),
                    thousands(per_sec(self.received, receive_secs) as u64)
                ),
            );
            t.row("missing", thousands(self.missing));
            t.row("duplicates", thousands(self.duplicates));
        }
        if args.only.is_none() {
            t.row(
                "cleared afterwards",
                if self.cleared { "yes" } else { "no" },
            );
        }
        t
    }
}
