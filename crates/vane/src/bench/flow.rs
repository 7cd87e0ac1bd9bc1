//! The publish/subscribe load engine behind `fanin`, `fanout`, `pairs`, `pub` and `sub`:
//! publishers, each publishing to `<prefix>/<i>` as fast as the broker takes it or at
//! `--rate`, and subscribers, each with one filter. The result is the rate at which the
//! subscribers together receive messages during the measured window, after a warmup, and the
//! rates at which the publishers sent and got acknowledgements. `pub` has no subscribers and
//! `sub` no publishers: something else subscribes or publishes.
//!
//! Publishers encode `--batch` publishes into one buffer per write. At QoS 1 and 2 each keeps at
//! most `--window` publishes unacknowledged (and no more than the broker's MQTT 5.0 Receive
//! Maximum) and completes the handshakes (PUBACK; PUBREC, PUBREL, PUBCOMP); the subscribers
//! acknowledge what they receive. Every payload starts with a
//! sequence number (8 bytes, big endian) and this run's id (8 bytes), room permitting: at QoS 1
//! and 2 the run checks that every message the broker acknowledged reached every subscriber
//! that expects it, and messages left over from an earlier run on the same topics are not
//! counted.
//!
//! The subscribers run on a thread of their own, so that the publishers cannot starve them of
//! CPU within one runtime; the publishers share a runtime of `--threads` threads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use vane_proto::{
    Packet, PacketId, ProtocolVersion, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
};

use super::client::{encode_packet, encode_publish, Client, Dialer};
use super::common::{self, disconnect, Pace, Table, Target, SETUP_TIMEOUT};
use super::seqset::SeqSet;
use super::{parse_duration, thousands};

/// Arguments of the scenarios with P publishers, publisher i on `<prefix>/<i>`: `vane bench
/// fanin` and `vane bench pub`.
#[derive(Debug, Args)]
pub struct PublishersArgs {
    /// Publisher connections, publisher i on PREFIX/<i>.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub publishers: u32,
    #[command(flatten)]
    pub flow: FlowArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

impl PublishersArgs {
    /// Runs the scenario `shape` makes of the publishers.
    pub(crate) fn run(&self, shape: fn(usize) -> Shape<'static>) -> anyhow::Result<()> {
        run(
            shape(self.publishers as usize),
            &self.flow,
            Some(&self.publish),
        )
    }
}

/// Arguments shared by the publish/subscribe scenarios.
#[derive(Debug, Args)]
pub struct FlowArgs {
    #[command(flatten)]
    pub target: Target,
    /// QoS of the publishes and of the subscriptions.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Measured time, after the warmup.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the measured time, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Subscribers keep persistent sessions: Clean Session 0 (MQTT 3.1.1), or Clean Start 0 and
    /// a Session Expiry Interval that never ends (MQTT 5.0). Their sessions stay on the broker
    /// after the run; with a fixed --client-prefix a later run resumes them, without
    /// subscribing again (`resumed_sessions`), and receives what was queued meanwhile (with
    /// publishers here, as foreign messages; with `sub`, counted). Publishers keep clean
    /// sessions.
    #[arg(long)]
    pub persistent: bool,
}

/// How the publishers publish: every publish/subscribe scenario but `sub`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Payload size in bytes. The first 8 carry a sequence number and the next 8 the run's id,
    /// as far as there is room.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub payload: u32,
    /// Publishes per second of each publisher; 0 publishes as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Publishes encoded into one buffer per write (at most; fewer at a low --rate).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub batch: u32,
    /// Unacknowledged publishes per publisher at QoS 1 and 2.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub window: u32,
    /// Longest wait after the measured time for outstanding acknowledgements and deliveries
    /// (QoS 1 and 2 only).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// During the drain, the subscribers stop once nothing has arrived for this long (QoS 1
    /// and 2 only). Longer than any pause of the broker's, such as a periodic save of its
    /// database, or what it still has queued counts as lost.
    #[arg(long, default_value = "250ms", value_parser = parse_duration)]
    pub settle: Duration,
    /// Runtime threads for the publishers; the subscribers have a thread of their own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Topic prefix: publisher i publishes to PREFIX/<i>.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Publishes of each publisher: it stops after this many, and the run ends once every
    /// publisher has stopped (at QoS 1 and 2, once they are all acknowledged), or at the end
    /// of --warmup + --duration (+ --drain) at the latest. Without it, publishers publish
    /// until the end of the measured time.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// `--rate`: a finite number of messages per second, 0 or more.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate (messages per second, 0 or more)"
        )),
    }
}

/// Who publishes and who subscribes to what.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape<'a> {
    /// N publishers, one subscriber to PREFIX/#.
    Fanin(usize),
    /// One publisher, N subscribers to PREFIX/0.
    Fanout(usize),
    /// N publishers, subscriber i to PREFIX/i.
    Pairs(usize),
    /// N publishers and no subscriber here.
    Pub(usize),
    /// N subscribers to a filter and no publisher here: every message counts.
    Sub(usize, &'a str),
}

impl Shape<'_> {
    fn name(self) -> &'static str {
        match self {
            Shape::Fanin(_) => "fanin",
            Shape::Fanout(_) => "fanout",
            Shape::Pairs(_) => "pairs",
            Shape::Pub(_) => "pub",
            Shape::Sub(..) => "sub",
        }
    }

    /// Publishers and subscribers.
    fn counts(self) -> (usize, usize) {
        match self {
            Shape::Fanin(n) => (n, 1),
            Shape::Fanout(n) => (1, n),
            Shape::Pairs(n) => (n, n),
            Shape::Pub(n) => (n, 0),
            Shape::Sub(n, _) => (0, n),
        }
    }

    /// Each subscriber's filter and the publishers whose messages it should receive.
    fn subscribers(self, prefix: &str) -> Vec<(String, Vec<usize>)> {
        match self {
            Shape::Fanin(n) => vec![(format!("{prefix}/#"), (0..n).collect())],
            Shape::Fanout(n) => vec![(format!("{prefix}/0"), vec![0]); n],
            Shape::Pairs(n) => (0..n).map(|i| (format!("{prefix}/{i}"), vec![i])).collect(),
            Shape::Pub(_) => Vec::new(),
            Shape::Sub(n, filter) => vec![(filter.to_string(), Vec::new()); n],
        }
    }

    /// Copies of each published message the subscribers here should receive together; None
    /// when the other side is elsewhere.
    fn copies(self) -> Option<usize> {
        match self {
            Shape::Fanout(n) => Some(n),
            Shape::Fanin(_) | Shape::Pairs(_) => Some(1),
            Shape::Pub(_) | Shape::Sub(..) => None,
        }
    }

    /// Who talks to whom, for the table heading.
    fn describe(self, prefix: &str) -> String {
        let (p, s) = self.counts();
        match self {
            Shape::Fanin(_) => format!("{p} publishers -> 1 subscriber ({prefix}/#)"),
            Shape::Fanout(_) => format!("1 publisher -> {s} subscribers ({prefix}/0)"),
            Shape::Pairs(_) => format!("{p} publishers -> {s} subscribers ({prefix}/<i>)"),
            Shape::Pub(_) => format!("{p} publishers to {prefix}/<i>"),
            Shape::Sub(_, filter) => format!("{s} subscribers to {filter}"),
        }
    }
}

/// Subscriber read buffer; one read takes up to this much.
const SUB_READ_BUF: usize = 1024 * 1024;

/// What every task shares: live counters, read by the progress line.
#[derive(Default)]
struct Counters {
    /// Publishes written (QoS 0) or handed to the socket (QoS 1 and 2).
    sent: AtomicU64,
    /// PUBACKs (QoS 1) or PUBCOMPs (QoS 2) received by the publishers.
    acked: AtomicU64,
    /// Publishes received by the subscribers, together.
    received: AtomicU64,
    /// Publishes the broker refused (MQTT 5.0 PUBACK or PUBREC with an error reason code).
    refused: AtomicU64,
    /// Publishers whose connection failed during the run.
    failed: AtomicU64,
    /// Subscribers whose persistent session the broker resumed (not subscribed again).
    resumed: AtomicU64,
}

/// Publishers still running, and a signal once none is (for `--count`).
struct Running {
    publishers: AtomicU64,
    none: tokio::sync::Notify,
}

impl Running {
    /// One publisher has stopped.
    fn stopped(&self) {
        if self.publishers.fetch_sub(1, Relaxed) == 1 {
            // notify_one keeps a permit when nobody waits yet.
            self.none.notify_one();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    sent: u64,
    acked: u64,
    received: u64,
}

impl Counters {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            sent: self.sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            received: self.received.load(Relaxed),
        }
    }
}

/// The run's fixed parameters.
struct Plan {
    dialer: Dialer,
    publishers: usize,
    /// Each subscriber's filter and the publishers it expects messages from.
    subscribers: Vec<(String, Vec<usize>)>,
    qos: QoS,
    payload: usize,
    /// Publishes per second of each publisher; 0 for as fast as possible.
    rate: f64,
    batch: usize,
    window: usize,
    /// Publishes of each publisher, when limited (`--count`).
    count: Option<u64>,
    /// Subscribers keep persistent sessions.
    persistent: bool,
    prefix: String,
    client_prefix: String,
    /// Written into payloads, so that the subscribers can tell this run's messages from others.
    run_id: [u8; 8],
}

impl Plan {
    /// Whether payloads carry sequence numbers that the subscribers track.
    fn tracks_sequences(&self) -> bool {
        self.qos != QoS::AtMostOnce
            && self.payload >= 8
            && self.publishers > 0
            && !self.subscribers.is_empty()
    }
}

/// When each phase ends.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    start: Instant,
    warm_end: Instant,
    end: Instant,
    drain_end: Instant,
}

/// Runs a scenario of `shape`; `publish` is None when it has no publishers (`sub`).
pub(crate) fn run(
    shape: Shape,
    args: &FlowArgs,
    publish: Option<&PublishArgs>,
) -> anyhow::Result<()> {
    if args.duration.is_zero() {
        bail!("--duration must be above zero");
    }
    if let Some(p) = publish {
        if p.prefix.is_empty() || p.prefix.contains(['+', '#']) {
            bail!("--prefix must be a non-empty topic name without wildcards");
        }
    }
    let drain = match publish {
        Some(p) if args.qos > 0 => p.drain,
        _ => Duration::ZERO,
    };
    common::execute(
        2 * SETUP_TIMEOUT + args.warmup + args.duration + drain + Duration::from_secs(10),
        publish.map_or(1, |p| p.threads),
        &args.target,
        run_async(shape, args, publish, drain),
        |report| {
            (
                report.to_json(shape, args, publish),
                report.to_table(shape, args, publish),
            )
        },
    )
}

async fn run_async(
    shape: Shape<'_>,
    args: &FlowArgs,
    publish: Option<&PublishArgs>,
    drain: Duration,
) -> anyhow::Result<Report> {
    let setup_deadline = Instant::now() + SETUP_TIMEOUT;
    let dialer = common::dialer(&args.target).await?;
    let prefix = publish.map_or("", |p| &p.prefix);
    let plan = Arc::new(Plan {
        dialer,
        publishers: shape.counts().0,
        subscribers: shape.subscribers(prefix),
        qos: QoS::from_u8(args.qos).context("--qos")?,
        payload: publish.map_or(0, |p| p.payload as usize),
        rate: publish.map_or(0.0, |p| p.rate),
        batch: publish.map_or(1, |p| p.batch as usize),
        window: publish.map_or(1, |p| p.window as usize),
        count: publish.and_then(|p| p.count),
        persistent: args.persistent,
        prefix: prefix.to_string(),
        client_prefix: common::client_prefix(&args.target),
        run_id: common::run_id(),
    });
    let counters = Arc::new(Counters::default());

    // The subscribers connect and subscribe first, on their own thread.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let subscriber_thread = {
        let plan = plan.clone();
        let counters = counters.clone();
        std::thread::Builder::new()
            .name("bench-subscriber".into())
            .spawn(move || {
                let outcome = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(subscribers(plan, counters, ready_tx, stop_rx)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = done_tx.send(outcome);
            })?
    };
    let granted = match timeout_at(setup_deadline + SETUP_TIMEOUT, ready_rx).await {
        Ok(Ok(r)) => r.context("subscriber")?,
        Ok(Err(_)) => bail!("the subscriber thread ended before subscribing"),
        Err(_) => bail!("the subscribers did not connect within {SETUP_TIMEOUT:?}"),
    };

    let clients = common::connect_many(
        plan.dialer,
        &format!("{}-p", plan.client_prefix),
        plan.publishers,
        4096,
        Instant::now() + SETUP_TIMEOUT,
    )
    .await?;
    if let Some(client) = clients.first() {
        client.check_qos(plan.qos)?;
    }
    let start = Instant::now();
    let warm_end = start + args.warmup;
    let end = warm_end + args.duration;
    let timeline = Timeline {
        start,
        warm_end,
        end,
        drain_end: end + drain,
    };
    let running = Arc::new(Running {
        publishers: AtomicU64::new(plan.publishers as u64),
        none: tokio::sync::Notify::new(),
    });
    let mut publishers = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (plan, counters, running) = (plan.clone(), counters.clone(), running.clone());
        publishers.spawn(async move {
            let mut publisher = Publisher::new(&plan, i, counters, &client, start);
            let result = if plan.qos == QoS::AtMostOnce {
                publisher.run_qos0(client, timeline).await
            } else {
                publisher.run_acked(client, timeline).await
            };
            if result.is_err() {
                publisher.counters.failed.fetch_add(1, Relaxed);
            }
            running.stopped();
            (i, result.map(|()| publisher.outcome()))
        });
    }

    // With --count the run may end before the measured time does: when no publisher runs.
    let finished = (plan.count.is_some() && plan.publishers > 0).then_some(&running.none);
    let window = monitor(&counters, timeline, shape, args.target.quiet, finished).await;

    // QoS 0 stops at the end of the window; QoS 1 and 2 wait for acknowledgements and deliveries.
    if plan.qos == QoS::AtMostOnce {
        let _ = stop_tx.send(true);
    }
    let mut outcomes: Vec<Option<PublisherOutcome>> = vec![None; plan.publishers];
    let mut errors = Vec::new();
    let join_deadline = timeline.drain_end + Duration::from_secs(2);
    loop {
        match timeout_at(join_deadline, publishers.join_next()).await {
            Ok(Some(Ok((i, Ok(outcome))))) => outcomes[i] = Some(outcome),
            Ok(Some(Ok((i, Err(e))))) => errors.push(format!("publisher {i}: {e:#}")),
            Ok(Some(Err(e))) => errors.push(format!("publisher task: {e}")),
            Ok(None) => break,
            Err(_) => {
                errors.push(format!(
                    "{} publishers did not finish in time",
                    publishers.len()
                ));
                publishers.abort_all();
                break;
            }
        }
    }
    if plan.qos != QoS::AtMostOnce {
        let settle = publish.map_or(Duration::ZERO, |p| p.settle);
        // Wait for the last deliveries: until nothing arrives for --settle, at most until the end
        // of the drain.
        let mut last = counters.received.load(Relaxed);
        let mut last_change = Instant::now();
        while Instant::now() < timeline.drain_end {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = counters.received.load(Relaxed);
            if now != last {
                (last, last_change) = (now, Instant::now());
            } else if last_change.elapsed() >= settle {
                break;
            }
        }
        let _ = stop_tx.send(true);
    }
    let subs = match timeout_at(Instant::now() + Duration::from_secs(3), done_rx).await {
        Ok(Ok(outcome)) => outcome,
        _ => bail!("the subscribers did not stop"),
    };
    let _ = subscriber_thread.join();
    if let Some(e) = subs.iter().find_map(|s| s.error.as_ref()) {
        bail!("subscriber: {e}");
    }
    if !args.target.quiet {
        for e in &errors {
            eprintln!("vane bench: {e}");
        }
    }
    Ok(Report::new(
        &plan, granted, window, &subs, &outcomes, errors, &counters,
    ))
}

/// Bytes of the run id that fit in a payload of `len` bytes, after the sequence number.
fn run_id_room(len: usize) -> usize {
    len.saturating_sub(8).min(8)
}

/// The counters at both ends of the measured window, and the per-second receive rates in it.
struct Window {
    first: Snapshot,
    last: Snapshot,
    samples: Vec<f64>,
}

/// Prints a progress line every second and snapshots the counters at the window's ends: the
/// end of the measured time, or when `finished` is signalled if that comes first.
async fn monitor(
    counters: &Counters,
    t: Timeline,
    shape: Shape<'_>,
    quiet: bool,
    finished: Option<&tokio::sync::Notify>,
) -> Window {
    let (publishers, subscribers) = shape.counts();
    let second = Duration::from_secs(1);
    let mut prev = counters.snapshot();
    let mut first = (t.warm_end <= t.start).then_some(prev);
    let mut next_tick = t.start + second;
    let mut samples = Vec::new();
    let start = prev;
    let mut ended = false;
    loop {
        let target = match first {
            None => next_tick.min(t.warm_end),
            Some(_) => next_tick.min(t.end),
        };
        if let Some(finished) = finished {
            tokio::select! {
                () = sleep_until(target) => {}
                () = finished.notified() => ended = true,
            }
        } else {
            sleep_until(target).await;
        }
        let snap = counters.snapshot();
        if ended {
            // Everything was published before the measured time began: count it all.
            return Window {
                first: first.unwrap_or(start),
                last: snap,
                samples,
            };
        }
        if first.is_none() && snap.at >= t.warm_end {
            first = Some(snap);
        }
        if snap.at >= next_tick {
            let secs = (snap.at - prev.at).as_secs_f64();
            let rate = |a: u64, b: u64| (b - a) as f64 / secs;
            let measuring = prev.at >= t.warm_end;
            if measuring && snap.at <= t.end + Duration::from_millis(100) {
                samples.push(rate(prev.received, snap.received));
            }
            if !quiet {
                let mut line = format!(
                    "[{:>4.0}s {}]",
                    (snap.at - t.start).as_secs_f64(),
                    if measuring { "measure" } else { "warmup " },
                );
                if subscribers > 0 {
                    line += &format!(
                        " received {:>11} msg/s  ",
                        thousands(rate(prev.received, snap.received) as u64)
                    );
                }
                if publishers > 0 {
                    line += &format!(
                        " sent {:>11} msg/s",
                        thousands(rate(prev.sent, snap.sent) as u64)
                    );
                }
                let acked = snap.acked - prev.acked;
                if acked > 0 {
                    line += &format!(
                        "   acked {:>11} msg/s",
                        thousands(rate(prev.acked, snap.acked) as u64)
                    );
                }
                let failed = counters.failed.load(Relaxed);
                if failed > 0 {
                    line += &format!("   ({failed} publishers failed)");
                }
                eprintln!("{line}");
            }
            prev = snap;
            next_tick += second;
        }
        if snap.at >= t.end {
            return Window {
                first: first.unwrap_or(snap),
                last: snap,
                samples,
            };
        }
    }
}

/// What a publisher hands back: the sequence numbers the broker acknowledged.
#[derive(Debug, Clone, Default)]
struct PublisherOutcome {
    acked: SeqSet,
    /// Publishes still unacknowledged when the drain ended.
    unacked: u64,
}

struct Publisher {
    counters: Arc<Counters>,
    topic: String,
    qos: QoS,
    batch: usize,
    window: usize,
    payload: Vec<u8>,
    seq: u64,
    /// When each publish is due, at a fixed --rate.
    pace: Option<Pace>,
    /// Publishes in all (`--count`), if limited.
    limit: Option<u64>,
    track: bool,
    /// The sequence number in flight under each packet id (index = id; 0 unused).
    in_flight: Vec<Option<u64>>,
    free_ids: Vec<u16>,
    outcome: PublisherOutcome,
}

impl Publisher {
    /// Publisher `index` of the plan on `client`, publishing from `start`.
    fn new(
        plan: &Plan,
        index: usize,
        counters: Arc<Counters>,
        client: &Client,
        start: Instant,
    ) -> Publisher {
        let window = if plan.qos == QoS::AtMostOnce {
            0
        } else {
            plan.window.min(usize::from(client.receive_maximum))
        };
        // Paced publishers start spread over one interval, not all at once.
        let pace = Pace::new(start, plan.rate)
            .map(|pace| pace.shifted(index as f64 / plan.publishers as f64));
        let mut payload = vec![b'v'; plan.payload];
        let room = run_id_room(payload.len());
        if room > 0 {
            payload[8..8 + room].copy_from_slice(&plan.run_id[..room]);
        }
        Publisher {
            counters,
            topic: format!("{}/{index}", plan.prefix),
            qos: plan.qos,
            batch: plan.batch,
            window,
            payload,
            seq: 0,
            pace,
            limit: plan.count,
            track: plan.tracks_sequences(),
            in_flight: vec![None; window + 1],
            // Popped from the end: ids are used from 1 up.
            free_ids: (1..=window as u16).rev().collect(),
            outcome: PublisherOutcome::default(),
        }
    }

    fn outcome(&mut self) -> PublisherOutcome {
        std::mem::take(&mut self.outcome)
    }

    /// Publishes allowed now, at most `max`: all of them unless paced or limited.
    fn allowed(&self, max: usize) -> usize {
        let max = match self.limit {
            Some(limit) => limit.saturating_sub(self.seq).min(max as u64) as usize,
            None => max,
        };
        match self.pace {
            None => max,
            Some(pace) => pace
                .due(Instant::now())
                .saturating_sub(self.seq)
                .min(max as u64) as usize,
        }
    }

    /// Whether every publish of a limited publisher (`--count`) has been written.
    fn all_published(&self) -> bool {
        self.limit.is_some_and(|limit| self.seq >= limit)
    }

    /// When the next publish is due, if paced.
    fn next_due(&self) -> Option<Instant> {
        self.pace.map(|pace| pace.at(self.seq))
    }

    /// Appends the next publish to `buf`, under `packet_id` at QoS 1 and 2.
    fn encode_next(
        &mut self,
        buf: &mut BytesMut,
        version: ProtocolVersion,
        packet_id: Option<PacketId>,
    ) {
        if let Some(head) = self.payload.get_mut(..8) {
            head.copy_from_slice(&self.seq.to_be_bytes());
        }
        encode_publish(
            buf,
            version,
            &self.topic,
            self.qos,
            false,
            packet_id,
            &self.payload,
        );
        if let Some(id) = packet_id {
            self.in_flight[usize::from(id.get())] = Some(self.seq);
        }
        self.seq += 1;
    }

    /// QoS 0: write batches until the end of the window. The broker sends nothing back.
    async fn run_qos0(&mut self, mut client: Client, t: Timeline) -> anyhow::Result<()> {
        let mut buf =
            BytesMut::with_capacity(self.batch * (self.payload.len() + self.topic.len() + 8));
        let end = sleep_until(t.end);
        tokio::pin!(end);
        loop {
            if self.all_published() {
                break;
            }
            let n = self.allowed(self.batch);
            if n == 0 {
                let due = self.next_due().unwrap_or(t.end);
                tokio::select! {
                    biased;
                    _ = &mut end => break,
                    _ = sleep_until(due) => continue,
                }
            }
            buf.clear();
            for _ in 0..n {
                self.encode_next(&mut buf, client.version, None);
            }
            tokio::select! {
                biased;
                // A batch cut short at the end is not counted, and the connection is dropped
                // rather than ended with DISCONNECT after a partial packet.
                _ = &mut end => return Ok(()),
                written = client.stream.write_all(&buf) => written?,
            }
            self.counters.sent.fetch_add(n as u64, Relaxed);
            if Instant::now() >= t.end {
                break;
            }
        }
        disconnect(&mut client).await;
        Ok(())
    }

    /// QoS 1 and 2: keep up to `window` publishes unacknowledged until the end of the window,
    /// then wait for the outstanding acknowledgements until the end of the drain.
    async fn run_acked(&mut self, mut client: Client, t: Timeline) -> anyhow::Result<()> {
        let Client {
            stream,
            read_buf: rbuf,
            decoder,
            version,
            ..
        } = &mut client;
        let version = *version;
        let (mut reader, mut writer) = stream.split();
        let low_water = self.batch * (self.payload.len() + self.topic.len() + 8);
        let mut out = BytesMut::with_capacity(2 * low_water);
        let end = sleep_until(t.end);
        let drain_end = sleep_until(t.drain_end);
        // When paced: wakes the loop when the next publish is due.
        let due = sleep_until(t.drain_end);
        tokio::pin!(end, drain_end, due);
        // Refill once a quarter of the window is free, not on every acknowledgement: a broker
        // that acknowledges one packet per segment would otherwise get one small write each.
        let refill = (self.batch.min(self.window) / 4).max(1);
        let mut publishing = true;
        // Acknowledged packet ids, and whether the broker accepted the message.
        let mut acked_packets = Vec::new();
        loop {
            // Paced, with nothing due yet: wait for the next publish's time.
            let mut waiting = false;
            if publishing && out.len() < low_water && self.free_ids.len() >= refill {
                let allowed = self.allowed(self.batch);
                let mut n = 0;
                while n < allowed {
                    let Some(id) = self.free_ids.pop() else { break };
                    self.encode_next(&mut out, version, PacketId::new(id));
                    n += 1;
                }
                self.counters.sent.fetch_add(n as u64, Relaxed);
                if self.all_published() {
                    publishing = false;
                } else if let (0, Some(at)) = (allowed, self.next_due()) {
                    due.as_mut().reset(at);
                    waiting = true;
                }
            }
            if !publishing && out.is_empty() && self.free_ids.len() == self.window {
                break;
            }
            tokio::select! {
                biased;
                read = reader.read_buf(rbuf) => {
                    if read? == 0 {
                        bail!("the broker closed the connection");
                    }
                    while let Some(packet) = decoder.decode(rbuf)? {
                        match packet {
                            Packet::PubAck(PubAck { packet_id, reason, .. }) if self.qos == QoS::AtLeastOnce => {
                                acked_packets.push((packet_id, !reason.is_error()));
                            }
                            // A refused QoS 2 publish ends at the PUBREC [MQTT-4.3.3].
                            Packet::PubRec(PubRec { packet_id, reason, .. }) if self.qos == QoS::ExactlyOnce => {
                                if reason.is_error() {
                                    acked_packets.push((packet_id, false));
                                } else {
                                    encode_packet(&mut out, version, &Packet::PubRel(PubRel::new(packet_id)));
                                }
                            }
                            Packet::PubComp(PubComp { packet_id, .. }) if self.qos == QoS::ExactlyOnce => {
                                acked_packets.push((packet_id, true));
                            }
                            other => bail!("unexpected {:?} from the broker", other.packet_type()),
                        }
                    }
                    for (id, accepted) in acked_packets.drain(..) {
                        let seq = self
                            .in_flight
                            .get_mut(usize::from(id.get()))
                            .and_then(Option::take)
                            .with_context(|| format!("acknowledgement for packet id {id}, which is not in flight"))?;
                        self.free_ids.push(id.get());
                        if !accepted {
                            self.counters.refused.fetch_add(1, Relaxed);
                            continue;
                        }
                        if self.track {
                            self.outcome.acked.insert(seq);
                        }
                        self.counters.acked.fetch_add(1, Relaxed);
                    }
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(4096);
                    }
                }
                written = writer.write(&out), if !out.is_empty() => {
                    let n = written?;
                    out.advance(n);
                }
                _ = &mut end, if publishing => publishing = false,
                _ = &mut drain_end => break,
                _ = &mut due, if waiting => {}
            }
        }
        self.outcome.unacked = (self.window - self.free_ids.len()) as u64;
        if out.is_empty() {
            disconnect(&mut client).await;
        }
        Ok(())
    }
}

/// What each subscriber hands back.
#[derive(Debug, Default)]
struct SubscriberOutcome {
    /// This run's publishes received over the whole run.
    received: u64,
    /// Publishes received from each publisher over the whole run.
    per_publisher: Vec<u64>,
    /// Sequence numbers received from each publisher (QoS 1 and 2).
    seqs: Vec<SeqSet>,
    /// Publishes received twice.
    duplicates: u64,
    /// Publishes that are not this run's: other topics, or another run's id.
    foreign: u64,
    error: Option<String>,
}

/// Connects and subscribes every subscriber, reports readiness (with the QoS granted to the
/// first), then receives until told to stop.
async fn subscribers(
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    ready: oneshot::Sender<anyhow::Result<Option<QoS>>>,
    stop: watch::Receiver<bool>,
) -> Vec<SubscriberOutcome> {
    let n = plan.subscribers.len();
    let connected = async {
        let read_buf = (SUB_READ_BUF / n.max(1)).max(16 * 1024);
        let mut clients = common::connect_many(
            plan.dialer.with_persistent(plan.persistent),
            &format!("{}-s", plan.client_prefix),
            n,
            read_buf,
            Instant::now() + SETUP_TIMEOUT,
        )
        .await?;
        let mut granted = None;
        let mut resumed = 0;
        for (client, (filter, _)) in clients.iter_mut().zip(&plan.subscribers) {
            // A resumed persistent session keeps its subscriptions, and its queued messages
            // may come right after the CONNACK: they are counted, not skipped while waiting
            // for a SUBACK.
            if client.session_present {
                resumed += 1;
                continue;
            }
            let g = client.subscribe(filter, plan.qos).await?;
            granted.get_or_insert(g);
        }
        counters.resumed.store(resumed, Relaxed);
        anyhow::Ok((clients, granted))
    };
    let clients = match tokio::time::timeout(SETUP_TIMEOUT, connected).await {
        Ok(Ok((clients, granted))) => {
            let _ = ready.send(Ok(granted));
            clients
        }
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return Vec::new();
        }
        Err(_) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "no CONNACK or SUBACK within {SETUP_TIMEOUT:?}"
            )));
            return Vec::new();
        }
    };
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::with_capacity(n);
    for mut client in clients {
        let (plan, counters, mut stop) = (plan.clone(), counters.clone(), stop.clone());
        handles.push(local.spawn_local(async move {
            let mut outcome = SubscriberOutcome {
                per_publisher: vec![0; plan.publishers],
                seqs: if plan.tracks_sequences() {
                    vec![SeqSet::default(); plan.publishers]
                } else {
                    Vec::new()
                },
                ..Default::default()
            };
            let topic_prefix = format!("{}/", plan.prefix);
            let stopped = async move {
                let _ = stop.changed().await;
            };
            let result = client
                .receive(stopped, &counters.received, |publish| {
                    on_publish(publish, &topic_prefix, &plan, &mut outcome)
                })
                .await;
            match result {
                Ok(()) => disconnect(&mut client).await,
                Err(e) => outcome.error = Some(format!("{e:#}")),
            }
            outcome
        }));
    }
    local
        .run_until(async move {
            let mut outcomes = Vec::with_capacity(n);
            for h in handles {
                outcomes.push(h.await.unwrap_or_else(|e| SubscriberOutcome {
                    error: Some(e.to_string()),
                    ..Default::default()
                }));
            }
            outcomes
        })
        .await
}

/// Accounts for one publish; false when it is not this run's. Without publishers here, every
/// message is.
fn on_publish(
    publish: &Publish,
    topic_prefix: &str,
    plan: &Plan,
    outcome: &mut SubscriberOutcome,
) -> bool {
    if plan.publishers == 0 {
        outcome.received += 1;
        return true;
    }
    let run_id = &plan.run_id;
    let index = publish
        .topic
        .strip_prefix(topic_prefix)
        .and_then(|i| i.parse::<usize>().ok())
        .filter(|&i| i < outcome.per_publisher.len());
    let room = run_id_room(publish.payload.len());
    let ours = room == 0 || publish.payload[8..8 + room] == run_id[..room];
    let (Some(i), true) = (index, ours) else {
        outcome.foreign += 1;
        return false;
    };
    outcome.per_publisher[i] += 1;
    outcome.received += 1;
    if let (Some(seqs), Some(head)) = (outcome.seqs.get_mut(i), publish.payload.get(..8)) {
        let mut seq = [0; 8];
        seq.copy_from_slice(head);
        if !seqs.insert(u64::from_be_bytes(seq)) {
            outcome.duplicates += 1;
        }
    }
    true
}

/// The result of a run.
struct Report {
    addr: SocketAddr,
    qos: QoS,
    /// QoS granted to the first subscriber; None without subscribers.
    granted: Option<QoS>,
    measured_secs: f64,
    received: u64,
    sent: u64,
    acked: u64,
    samples: Vec<f64>,
    total_received: u64,
    total_sent: u64,
    total_acked: u64,
    total_refused: u64,
    /// Acknowledged messages some subscriber expecting them never received (QoS 1 and 2 with
    /// sequence numbers), counted once per subscriber.
    lost: Option<u64>,
    duplicates: u64,
    unacked: u64,
    foreign: u64,
    /// The least and most messages one publisher got through, relative to the mean.
    share_min: f64,
    share_max: f64,
    /// The least and most messages one subscriber received over the whole run.
    sub_min: u64,
    sub_max: u64,
    errors: Vec<String>,
    /// Subscribers whose persistent session was resumed.
    resumed: u64,
}

impl Report {
    fn new(
        plan: &Plan,
        granted: Option<QoS>,
        window: Window,
        subs: &[SubscriberOutcome],
        publishers: &[Option<PublisherOutcome>],
        errors: Vec<String>,
        counters: &Counters,
    ) -> Report {
        let totals = counters.snapshot();
        let lost = plan.tracks_sequences().then(|| {
            subs.iter()
                .zip(&plan.subscribers)
                .map(|(sub, (_, expects))| {
                    expects
                        .iter()
                        .filter_map(|&p| {
                            let acked = &publishers.get(p)?.as_ref()?.acked;
                            Some(acked.missing_from(sub.seqs.get(p)?))
                        })
                        .sum::<u64>()
                })
                .sum()
        });
        let mut per_publisher = vec![0u64; plan.publishers];
        for sub in subs {
            for (total, n) in per_publisher.iter_mut().zip(&sub.per_publisher) {
                *total += n;
            }
        }
        let per_sub: Vec<u64> = subs.iter().map(|s| s.received).collect();
        let mean = per_publisher.iter().sum::<u64>() as f64 / per_publisher.len().max(1) as f64;
        let share = |v: Option<&u64>| {
            if mean > 0.0 {
                v.map_or(0.0, |&v| v as f64 / mean)
            } else {
                0.0
            }
        };
        let (first, last) = (window.first, window.last);
        Report {
            addr: plan.dialer.addr,
            qos: plan.qos,
            granted,
            measured_secs: (last.at - first.at).as_secs_f64(),
            received: last.received - first.received,
            sent: last.sent - first.sent,
            acked: last.acked - first.acked,
            samples: window.samples,
            total_received: totals.received,
            total_sent: totals.sent,
            total_acked: totals.acked,
            total_refused: counters.refused.load(Relaxed),
            lost,
            duplicates: subs.iter().map(|s| s.duplicates).sum(),
            unacked: publishers.iter().flatten().map(|p| p.unacked).sum(),
            foreign: subs.iter().map(|s| s.foreign).sum(),
            share_min: share(per_publisher.iter().min()),
            share_max: share(per_publisher.iter().max()),
            sub_min: per_sub.iter().copied().min().unwrap_or(0),
            sub_max: per_sub.iter().copied().max().unwrap_or(0),
            errors,
            resumed: counters.resumed.load(Relaxed),
        }
    }

    fn rate(&self, n: u64) -> f64 {
        common::per_sec(n, self.measured_secs)
    }

    /// Received over sent, with every subscriber expecting one copy of its publishers' messages;
    /// None when the messages are not all published and received here.
    fn delivered_ratio(&self, shape: Shape) -> Option<f64> {
        let copies = shape.copies()?;
        (self.sent > 0).then(|| self.received as f64 / (self.sent as f64 * copies as f64))
    }

    fn to_json(
        &self,
        shape: Shape,
        args: &FlowArgs,
        publish: Option<&PublishArgs>,
    ) -> serde_json::Value {
        let (publishers, subscribers) = shape.counts();
        let (has_pubs, has_subs) = (publishers > 0, subscribers > 0);
        let acked = self.qos != QoS::AtMostOnce && has_pubs;
        let shares = has_pubs && has_subs;
        json!({
            "scenario": shape.name(),
            "broker": self.addr.to_string(),
            "publishers": publishers,
            "subscribers": subscribers,
            "filter": match shape {
                Shape::Sub(_, filter) => Some(filter),
                _ => None,
            },
            "qos": self.qos.as_u8(),
            "granted_qos": self.granted.map(QoS::as_u8),
            "payload_bytes": publish.map(|p| p.payload),
            "rate_per_publisher": publish.map(|p| p.rate).filter(|&r| r > 0.0),
            "batch": publish.map(|p| p.batch),
            "window": publish.filter(|_| acked).map(|p| p.window),
            "threads": publish.map(|p| p.threads),
            "count_per_publisher": publish.and_then(|p| p.count),
            "drain_secs": publish.filter(|_| acked).map(|p| p.drain.as_secs_f64()),
            "settle_secs": publish.filter(|_| acked).map(|p| p.settle.as_secs_f64()),
            "persistent_subscribers": has_subs.then_some(args.persistent),
            "resumed_sessions": (has_subs && args.persistent).then_some(self.resumed),
            "warmup_secs": args.warmup.as_secs_f64(),
            "duration_secs": args.duration.as_secs_f64(),
            "measured_secs": self.measured_secs,
            "received": self.received,
            "received_per_sec": self.rate(self.received),
            "sent": self.sent,
            "sent_per_sec": self.rate(self.sent),
            "acked": acked.then_some(self.acked),
            "acked_per_sec": acked.then(|| self.rate(self.acked)),
            "delivered_ratio": self.delivered_ratio(shape),
            "received_per_sec_samples": self.samples,
            "publisher_share_min": shares.then_some(self.share_min),
            "publisher_share_max": shares.then_some(self.share_max),
            "subscriber_received_min": has_subs.then_some(self.sub_min),
            "subscriber_received_max": has_subs.then_some(self.sub_max),
            "totals": {
                "sent": self.total_sent,
                "acked": acked.then_some(self.total_acked),
                "refused": acked.then_some(self.total_refused),
                "received": self.total_received,
                "lost": self.lost,
                "duplicates": self.duplicates,
                "unacked_at_end": acked.then_some(self.unacked),
                "foreign": self.foreign,
            },
            "errors": self.errors,
        })
    }

    fn to_table(&self, shape: Shape, args: &FlowArgs, publish: Option<&PublishArgs>) -> Table {
        let (publishers, subscribers) = shape.counts();
        let mut heading = format!(
            "vane bench {}: {}, {}, QoS {}",
            shape.name(),
            shape.describe(publish.map_or("", |p| &p.prefix)),
            self.addr,
            self.qos.as_u8(),
        );
        if let Some(granted) = self.granted {
            heading += &format!(" (granted {})", granted.as_u8());
        }
        if let Some(p) = publish {
            heading += &format!(", {} B payload, batch {}", p.payload, p.batch);
            if p.rate > 0.0 {
                heading += &format!(", {} msg/s per publisher", p.rate);
            }
            if let Some(count) = p.count {
                heading += &format!(", {} publishes per publisher", thousands(count));
            }
        }
        if args.persistent && subscribers > 0 {
            heading += ", persistent subscribers";
        }
        heading += &format!(
            "\nmeasured {:.2} s after {:?} warmup",
            self.measured_secs, args.warmup
        );
        let mut t = Table::new(heading);
        let per_sec = |n: u64| format!("{} msg/s", thousands(self.rate(n).round() as u64));
        let acked = self.qos != QoS::AtMostOnce && publishers > 0;
        if subscribers > 0 {
            t.row("received (all subscribers)", per_sec(self.received));
        }
        if publishers > 0 {
            t.row("sent", per_sec(self.sent));
        }
        if acked {
            t.row("acked", per_sec(self.acked));
        }
        if let Some(r) = self.delivered_ratio(shape) {
            t.row("received / expected", format!("{:.1} %", r * 100.0));
        }
        if subscribers > 0 && !self.samples.is_empty() {
            let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = self.samples.iter().copied().fold(0.0, f64::max);
            t.row(
                "received, per second",
                format!(
                    "min {} / max {}",
                    thousands(min as u64),
                    thousands(max as u64)
                ),
            );
        }
        if publishers > 1 && subscribers > 0 {
            t.row(
                "publisher share",
                format!(
                    "min {:.2} / max {:.2} of the mean",
                    self.share_min, self.share_max
                ),
            );
        }
        if subscribers > 1 {
            t.row(
                "per subscriber (whole run)",
                format!(
                    "min {} / max {}",
                    thousands(self.sub_min),
                    thousands(self.sub_max)
                ),
            );
        }
        let mut whole = Vec::new();
        if publishers > 0 {
            whole.push(format!("sent {}", thousands(self.total_sent)));
        }
        if subscribers > 0 {
            whole.push(format!("received {}", thousands(self.total_received)));
        }
        t.row("messages (whole run)", whole.join(", "));
        if acked {
            t.row("acked (whole run)", thousands(self.total_acked));
            if self.total_refused > 0 {
                t.row("refused by the broker", thousands(self.total_refused));
            }
            if subscribers > 0 {
                t.row(
                    "lost (acked, not received by the end of the drain)",
                    self.lost
                        .map_or("not tracked (payload < 8 bytes)".into(), thousands),
                );
                t.row("duplicates", thousands(self.duplicates));
            }
            t.row("unacked at the end", thousands(self.unacked));
        }
        if self.foreign > 0 {
            t.row("foreign messages", thousands(self.foreign));
        }
        if publishers > 0 {
            t.row("publisher errors", self.errors.len().to_string());
        }
        t
    }
}
