//! `vane bench latency`: one publisher at a fixed rate to one subscriber on the same topic.
//! Every payload starts with the send time (nanoseconds since the run's start, 8 bytes big
//! endian) and this run's id; the subscriber, in the same process, records the end-to-end
//! latency of every message received after the warmup in an HDR histogram.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout_at, Instant};
use vane_proto::{Packet, PacketId, QoS};

use super::client::{encode_publish, Client};
use super::common::{self, disconnect, per_sec, Pace, Table, Target, SETUP_TIMEOUT};
use super::{parse_duration, thousands};

/// Arguments of `vane bench latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub target: Target,
    /// Messages per second.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub rate: u32,
    /// QoS of the publishes and of the subscription (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Payload size in bytes, at least 16 (send time and run id).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub payload: u32,
    /// Measured time, after the warmup.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the measured time, not recorded.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Topic.
    #[arg(long, default_value = "bench/latency")]
    pub topic: String,
}

/// Messages still in flight after the last publish are waited for this long.
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
}

pub fn run(args: LatencyArgs) -> anyhow::Result<()> {
    if args.duration.is_zero() {
        bail!("--duration must be above zero");
    }
    if args.topic.is_empty() || args.topic.contains(['+', '#']) {
        bail!("--topic must be a topic name without wildcards");
    }
    common::execute_one(
        SETUP_TIMEOUT + args.warmup + args.duration + DRAIN + Duration::from_secs(10),
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
    sent: u64,
    received: u64,
    recorded: Histogram<u64>,
    measured_secs: f64,
    /// Publishes sent after the warmup.
    measured_sent: u64,
}

async fn run_async(args: &LatencyArgs) -> anyhow::Result<Report> {
    let dialer = common::dialer(&args.target).await?;
    let qos = QoS::from_u8(args.qos).context("--qos")?;
    let prefix = common::client_prefix(&args.target);
    let run_id = common::run_id();
    let setup = Instant::now() + SETUP_TIMEOUT;
    let mut sub = timeout_at(
        setup,
        dialer.connect(0, &format!("{prefix}-ls"), 256 * 1024),
    )
    .await
    .context("subscriber: no CONNACK in time")??;
    let granted = timeout_at(setup, sub.subscribe(&args.topic, qos))
        .await
        .context("no SUBACK in time")??;
    let publisher = timeout_at(setup, dialer.connect(1, &format!("{prefix}-lp"), 4096))
        .await
        .context("publisher: no CONNACK in time")??;
    publisher.check_qos(qos)?;

    let base = std::time::Instant::now();
    let start = Instant::now();
    let warm_end = start + args.warmup;
    let end = warm_end + args.duration;
    let warm_nanos = args.warmup.as_nanos() as u64;
    let counters = Arc::new(Counters::default());
    let measured_sent = Arc::new(AtomicU64::new(0));

    // The subscriber runs on its own thread with its own runtime, so that the publisher's
    // timer does not delay its reads.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let sub_thread = {
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("bench-subscriber".into())
            .spawn(move || -> anyhow::Result<Histogram<u64>> {
                let rt = common::runtime(1)?;
                rt.block_on(async move {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                    let stopped = async move {
                        let _ = stop_rx.changed().await;
                    };
                    sub.receive(stopped, &counters.received, |publish| {
                        let p = &publish.payload;
                        if p.len() < 16 || p[8..16] != run_id {
                            return false;
                        }
                        let now = base.elapsed().as_nanos() as u64;
                        let mut sent = [0; 8];
                        sent.copy_from_slice(&p[..8]);
                        let sent = u64::from_be_bytes(sent);
                        if sent >= warm_nanos {
                            hist.saturating_record(now.saturating_sub(sent).div_ceil(1000).max(1));
                        }
                        true
                    })
                    .await?;
                    disconnect(&mut sub).await;
                    Ok(hist)
                })
            })?
    };

    let progress = {
        let counters = counters.clone();
        let quiet = args.target.quiet;
        let mut last = (0, 0);
        common::progress(start, end, quiet, move |t, dt| {
            let now = (counters.sent.load(Relaxed), counters.received.load(Relaxed));
            let line = format!(
                "[{t:>4.0}s {}] sent {:>9} msg/s   received {:>9} msg/s",
                if t < warm_nanos as f64 / 1e9 {
                    "warmup "
                } else {
                    "measure"
                },
                thousands(per_sec(now.0 - last.0, dt) as u64),
                thousands(per_sec(now.1 - last.1, dt) as u64),
            );
            last = now;
            Some(line)
        })
    };
    let publish = publish_at_rate(
        publisher,
        args,
        qos,
        run_id,
        base,
        (start, warm_end, end),
        &counters,
        &measured_sent,
    );
    let (published, ()) = tokio::join!(publish, progress);
    published?;
    // Wait for the last messages, at most DRAIN.
    let drain_end = Instant::now() + DRAIN;
    while counters.received.load(Relaxed) < counters.sent.load(Relaxed)
        && Instant::now() < drain_end
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let recorded = match sub_thread.join() {
        Ok(r) => r.context("subscriber")?,
        Err(_) => bail!("the subscriber thread panicked"),
    };
    Ok(Report {
        broker: dialer.addr.to_string(),
        granted,
        sent: counters.sent.load(Relaxed),
        received: counters.received.load(Relaxed),
        measured_secs: args.duration.as_secs_f64(),
        measured_sent: measured_sent.load(Relaxed),
        recorded,
    })
}

/// Publishes at `--rate` from `start` to `end`, catching up in bursts after a late wake-up;
/// at QoS 1 reads and discards the PUBACKs.
#[allow(clippy::too_many_arguments)]
async fn publish_at_rate(
    mut client: Client,
    args: &LatencyArgs,
    qos: QoS,
    run_id: [u8; 8],
    base: std::time::Instant,
    (start, warm_end, end): (Instant, Instant, Instant),
    counters: &Counters,
    measured_sent: &AtomicU64,
) -> anyhow::Result<()> {
    let rate = f64::from(args.rate);
    let tick = Duration::from_micros(100).max(Duration::from_secs_f64(1.0 / rate));
    let pace = Pace::new(start, rate).context("--rate must be above zero")?;
    let total = pace.due(end) - 1;
    let mut payload = vec![b'v'; args.payload as usize];
    payload[8..16].copy_from_slice(&run_id);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut seq: u64 = 0;
    let mut next_id: u16 = 0;
    let Client {
        stream,
        read_buf,
        decoder,
        version,
        ..
    } = &mut client;
    let version = *version;
    let (mut reader, mut writer) = stream.split();
    let mut next = start;
    while next < end {
        tokio::select! {
            biased;
            read = reader.read_buf(read_buf), if qos != QoS::AtMostOnce => {
                if read? == 0 {
                    bail!("the broker closed the publisher's connection");
                }
                while let Some(packet) = decoder.decode(read_buf)? {
                    if !matches!(packet, Packet::PubAck(_)) {
                        bail!("unexpected {:?} from the broker", packet.packet_type());
                    }
                }
                read_buf.clear();
                continue;
            }
            _ = sleep_until(next) => {}
        }
        let now = Instant::now();
        let due = pace.due(now).min(total);
        while seq < due {
            let sent_at = base.elapsed().as_nanos() as u64;
            payload[..8].copy_from_slice(&sent_at.to_be_bytes());
            let id = if qos == QoS::AtMostOnce {
                None
            } else {
                next_id = next_id.checked_add(1).unwrap_or(1);
                PacketId::new(next_id)
            };
            encode_publish(&mut out, version, &args.topic, qos, false, id, &payload);
            seq += 1;
        }
        let n = seq - counters.sent.load(Relaxed);
        writer.write_all(&out).await?;
        out.advance(out.len());
        counters.sent.fetch_add(n, Relaxed);
        if now >= warm_end {
            measured_sent.fetch_add(n, Relaxed);
        }
        next += tick;
    }
    disconnect(&mut client).await;
    Ok(())
}

impl Report {
    fn quantiles(&self) -> [(&'static str, u64); 6] {
        let h = &self.recorded;
        [
            ("p50", h.value_at_quantile(0.5)),
            ("p90", h.value_at_quantile(0.9)),
            ("p99", h.value_at_quantile(0.99)),
            ("p99.9", h.value_at_quantile(0.999)),
            ("p99.99", h.value_at_quantile(0.9999)),
            ("max", h.max()),
        ]
    }

    fn to_json(&self, args: &LatencyArgs) -> serde_json::Value {
        let latency: serde_json::Map<String, serde_json::Value> = self
            .quantiles()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "scenario": "latency",
            "broker": self.broker,
            "qos": args.qos,
            "granted_qos": self.granted.as_u8(),
            "rate": args.rate,
            "payload_bytes": args.payload,
            "warmup_secs": args.warmup.as_secs_f64(),
            "duration_secs": args.duration.as_secs_f64(),
            "sent": self.sent,
            "received": self.received,
            "lost": self.sent.saturating_sub(self.received),
            "measured_sent_per_sec": per_sec(self.measured_sent, self.measured_secs),
            "recorded": self.recorded.len(),
            "latency_us": latency,
            "mean_us": self.recorded.mean(),
        })
    }

    fn to_table(&self, args: &LatencyArgs) -> Table {
        let mut t = Table::new(format!(
            "vane bench latency: {} msg/s on {}, {}, QoS {} (granted {}), {} B payload\n\
             measured {:?} after {:?} warmup",
            thousands(u64::from(args.rate)),
            args.topic,
            self.broker,
            args.qos,
            self.granted.as_u8(),
            args.payload,
            args.duration,
            args.warmup,
        ));
        t.row(
            "sent rate (measured)",
            format!(
                "{} msg/s",
                thousands(per_sec(self.measured_sent, self.measured_secs) as u64)
            ),
        );
        t.row(
            "messages (whole run)",
            format!(
                "sent {}, received {}, lost {}",
                thousands(self.sent),
                thousands(self.received),
                thousands(self.sent.saturating_sub(self.received))
            ),
        );
        t.row("latencies recorded", thousands(self.recorded.len()));
        for (k, v) in self.quantiles() {
            t.row(&format!("latency {k}"), format!("{} µs", thousands(v)));
        }
        t.row("latency mean", format!("{:.1} µs", self.recorded.mean()));
        t
    }
}
