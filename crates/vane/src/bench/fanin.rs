//! `vane bench fanin`: P publishers, each publishing to `<prefix>/<i>` as fast as the broker
//! takes it, and one subscriber to `<prefix>/#`. The result is the rate at which the subscriber
//! receives messages during the measured window, after a warmup.
//!
//! Publishers encode `--batch` publishes into one buffer per write. At QoS 1 and 2 each keeps at
//! most `--window` publishes unacknowledged and completes the handshakes (PUBACK; PUBREC,
//! PUBREL, PUBCOMP); the subscriber acknowledges what it receives. Every payload starts with a
//! sequence number (8 bytes, big endian) and this run's id (8 bytes), room permitting: at QoS 1
//! and 2 the run checks that every message the broker acknowledged reached the subscriber, and
//! messages left over from an earlier run on the same topics are not counted.
//!
//! The subscriber runs on its own thread, so that the publishers cannot starve it of CPU within
//! one runtime; the publishers share a runtime of `--threads` threads.

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
    Disconnect, DisconnectReason, Packet, PacketId, PubAck, PubComp, PubRec, PubRel, Publish, QoS,
};

use super::client::{encode_packet, encode_publish, Client};
use super::seqset::SeqSet;
use super::{parse_duration, thousands};

/// Arguments of `vane bench fanin`.
#[derive(Debug, Args)]
pub struct FaninArgs {
    /// Broker host, the only one connected to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Publisher connections.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub publishers: u32,
    /// QoS of the publishes and of the subscription.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// Payload size in bytes. The first 8 carry a sequence number and the next 8 the run's id,
    /// as far as there is room.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub payload: u32,
    /// Measured time, after the warmup.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the measured time, not counted.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Publishes encoded into one buffer per write.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub batch: u32,
    /// Unacknowledged publishes per publisher at QoS 1 and 2.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub window: u32,
    /// Longest wait after the measured time for outstanding acknowledgements and deliveries
    /// (QoS 1 and 2 only).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Runtime threads for the publishers; the subscriber has a thread of its own.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Topic prefix: publishers publish to PREFIX/<i>, the subscriber subscribes to PREFIX/#.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Time allowed to connect every client before the load starts.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Subscriber read buffer; one read takes up to this much.
const SUB_READ_BUF: usize = 1024 * 1024;
/// Free space below which the subscriber grows its read buffer before reading.
const SUB_READ_MIN: usize = 256 * 1024;
/// After the publishers have finished, the subscriber stops once nothing arrived for this long.
const QUIET: Duration = Duration::from_millis(250);
/// Clients connecting at once.
const CONNECT_CONCURRENCY: usize = 64;

/// What every task shares: live counters, read by the progress line.
#[derive(Default)]
struct Counters {
    /// Publishes written (QoS 0) or handed to the socket (QoS 1 and 2).
    sent: AtomicU64,
    /// PUBACKs (QoS 1) or PUBCOMPs (QoS 2) received by the publishers.
    acked: AtomicU64,
    /// Publishes received by the subscriber.
    received: AtomicU64,
    /// Publishers whose connection failed during the run.
    failed: AtomicU64,
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
    addr: SocketAddr,
    publishers: usize,
    qos: QoS,
    payload: usize,
    batch: usize,
    window: usize,
    prefix: String,
    /// Client identifiers start with this, so that concurrent runs do not take each other over.
    client_prefix: String,
    /// Written into payloads, so that the subscriber can tell this run's messages from others.
    run_id: [u8; 8],
}

impl Plan {
    /// Whether payloads carry sequence numbers that the subscriber tracks.
    fn tracks_sequences(&self) -> bool {
        self.qos != QoS::AtMostOnce && self.payload >= 8
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

pub fn run(args: FaninArgs) -> anyhow::Result<()> {
    if args.duration.is_zero() {
        bail!("--duration must be above zero");
    }
    if args.prefix.is_empty() || args.prefix.contains(['+', '#']) {
        bail!("--prefix must be a non-empty topic name without wildcards");
    }
    let drain = if args.qos == 0 {
        Duration::ZERO
    } else {
        args.drain
    };
    // Hard deadline: whatever the broker does, the process ends by itself.
    let budget = SETUP_TIMEOUT + args.warmup + args.duration + drain + Duration::from_secs(10);
    std::thread::Builder::new()
        .name("bench-watchdog".into())
        .spawn(move || {
            std::thread::sleep(budget);
            eprintln!("vane bench: hard deadline of {budget:?} reached, exiting");
            std::process::exit(3);
        })?;
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .thread_name("bench-publisher")
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(run_async(&args, drain))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json(&args))?);
    } else {
        print!("{}", report.to_table(&args));
    }
    Ok(())
}

async fn run_async(args: &FaninArgs, drain: Duration) -> anyhow::Result<Report> {
    let setup_deadline = Instant::now() + SETUP_TIMEOUT;
    let addr = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("resolving {}", args.host))?
        .next()
        .with_context(|| format!("{} has no address", args.host))?;
    let plan = Arc::new(Plan {
        addr,
        publishers: args.publishers as usize,
        qos: QoS::from_u8(args.qos).context("--qos")?,
        payload: args.payload as usize,
        batch: args.batch as usize,
        window: args.window as usize,
        prefix: args.prefix.clone(),
        client_prefix: format!("vb{}", std::process::id()),
        run_id: run_id(),
    });
    let counters = Arc::new(Counters::default());

    // The subscriber connects and subscribes first, on its own thread.
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
                    Ok(rt) => rt.block_on(subscriber(plan, counters, ready_tx, stop_rx)),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let _ = done_tx.send(outcome);
            })?
    };
    let granted = match timeout_at(setup_deadline, ready_rx).await {
        Ok(Ok(r)) => r.context("subscriber")?,
        Ok(Err(_)) => bail!("the subscriber thread ended before subscribing"),
        Err(_) => bail!("the subscriber did not connect within {SETUP_TIMEOUT:?}"),
    };

    let clients = connect_publishers(&plan, setup_deadline).await?;
    let start = Instant::now();
    let warm_end = start + args.warmup;
    let end = warm_end + args.duration;
    let timeline = Timeline {
        start,
        warm_end,
        end,
        drain_end: end + drain,
    };
    let mut publishers = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let (plan, counters) = (plan.clone(), counters.clone());
        publishers.spawn(async move {
            let mut publisher = Publisher::new(&plan, i, counters);
            let result = if plan.qos == QoS::AtMostOnce {
                publisher.run_qos0(client, timeline).await
            } else {
                publisher.run_acked(client, timeline).await
            };
            if result.is_err() {
                publisher.counters.failed.fetch_add(1, Relaxed);
            }
            (i, result.map(|()| publisher.outcome()))
        });
    }

    let window = monitor(&counters, timeline, args.quiet).await;

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
        // Wait for the last deliveries: until nothing arrives for QUIET, at most until the end
        // of the drain.
        let mut last = counters.received.load(Relaxed);
        let mut last_change = Instant::now();
        while Instant::now() < timeline.drain_end {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = counters.received.load(Relaxed);
            if now != last {
                (last, last_change) = (now, Instant::now());
            } else if last_change.elapsed() >= QUIET {
                break;
            }
        }
        let _ = stop_tx.send(true);
    }
    let sub = match timeout_at(Instant::now() + Duration::from_secs(3), done_rx).await {
        Ok(Ok(outcome)) => outcome,
        _ => bail!("the subscriber did not stop"),
    };
    let _ = subscriber_thread.join();
    if let Some(e) = &sub.error {
        bail!("subscriber: {e}");
    }
    if !args.quiet {
        for e in &errors {
            eprintln!("vane bench: {e}");
        }
    }
    Ok(Report::new(
        &plan, granted, window, &sub, &outcomes, errors, &counters,
    ))
}

/// An id unlikely to repeat: the process id and the time.
fn run_id() -> [u8; 8] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ((nanos as u64) ^ (u64::from(std::process::id()) << 40)).to_be_bytes()
}

/// Bytes of the run id that fit in a payload of `len` bytes, after the sequence number.
fn run_id_room(len: usize) -> usize {
    len.saturating_sub(8).min(8)
}

/// Connects every publisher, a few at a time.
async fn connect_publishers(plan: &Plan, deadline: Instant) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(plan.publishers);
    let mut next = 0;
    while next < plan.publishers {
        let mut set = JoinSet::new();
        for i in next..(next + CONNECT_CONCURRENCY).min(plan.publishers) {
            let (addr, id) = (plan.addr, format!("{}-p{i}", plan.client_prefix));
            set.spawn(async move { (i, Client::connect(addr, &id, 4096).await) });
        }
        let mut chunk = Vec::new();
        while let Some(joined) = timeout_at(deadline, set.join_next())
            .await
            .map_err(|_| anyhow::anyhow!("publishers did not connect within {SETUP_TIMEOUT:?}"))?
        {
            let (i, client) = joined?;
            chunk.push((i, client.with_context(|| format!("publisher {i}"))?));
        }
        chunk.sort_by_key(|(i, _)| *i);
        next += chunk.len();
        clients.extend(chunk.into_iter().map(|(_, c)| c));
    }
    Ok(clients)
}

/// The counters at both ends of the measured window, and the per-second receive rates in it.
struct Window {
    first: Snapshot,
    last: Snapshot,
    samples: Vec<f64>,
}

/// Prints a progress line every second and snapshots the counters at the window's ends.
async fn monitor(counters: &Counters, t: Timeline, quiet: bool) -> Window {
    let second = Duration::from_secs(1);
    let mut prev = counters.snapshot();
    let mut first = (t.warm_end <= t.start).then_some(prev);
    let mut next_tick = t.start + second;
    let mut samples = Vec::new();
    loop {
        let target = match first {
            None => next_tick.min(t.warm_end),
            Some(_) => next_tick.min(t.end),
        };
        sleep_until(target).await;
        let snap = counters.snapshot();
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
                    "[{:>4.0}s {}] received {:>11} msg/s   sent {:>11} msg/s",
                    (snap.at - t.start).as_secs_f64(),
                    if measuring { "measure" } else { "warmup " },
                    thousands(rate(prev.received, snap.received) as u64),
                    thousands(rate(prev.sent, snap.sent) as u64),
                );
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
    track: bool,
    /// The sequence number in flight under each packet id (index = id; 0 unused).
    in_flight: Vec<Option<u64>>,
    free_ids: Vec<u16>,
    outcome: PublisherOutcome,
}

impl Publisher {
    fn new(plan: &Plan, index: usize, counters: Arc<Counters>) -> Publisher {
        let window = if plan.qos == QoS::AtMostOnce {
            0
        } else {
            plan.window
        };
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

    /// Appends the next publish to `buf`, under `packet_id` at QoS 1 and 2.
    fn encode_next(&mut self, buf: &mut BytesMut, packet_id: Option<PacketId>) {
        if let Some(head) = self.payload.get_mut(..8) {
            head.copy_from_slice(&self.seq.to_be_bytes());
        }
        encode_publish(buf, &self.topic, self.qos, packet_id, &self.payload);
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
            buf.clear();
            for _ in 0..self.batch {
                self.encode_next(&mut buf, None);
            }
            tokio::select! {
                biased;
                // A batch cut short at the end is not counted, and the connection is dropped
                // rather than ended with DISCONNECT after a partial packet.
                _ = &mut end => return Ok(()),
                written = client.stream.write_all(&buf) => written?,
            }
            self.counters.sent.fetch_add(self.batch as u64, Relaxed);
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
        } = &mut client;
        let (mut reader, mut writer) = stream.split();
        let low_water = self.batch * (self.payload.len() + self.topic.len() + 8);
        let mut out = BytesMut::with_capacity(2 * low_water);
        let end = sleep_until(t.end);
        let drain_end = sleep_until(t.drain_end);
        tokio::pin!(end, drain_end);
        // Refill once a quarter of the window is free, not on every acknowledgement: a broker
        // that acknowledges one packet per segment would otherwise get one small write each.
        let refill = (self.batch.min(self.window) / 4).max(1);
        let mut publishing = true;
        let mut acked_packets = Vec::new();
        loop {
            if publishing && out.len() < low_water && self.free_ids.len() >= refill {
                let mut n = 0;
                while n < self.batch {
                    let Some(id) = self.free_ids.pop() else { break };
                    self.encode_next(&mut out, PacketId::new(id));
                    n += 1;
                }
                self.counters.sent.fetch_add(n as u64, Relaxed);
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
                            Packet::PubAck(PubAck { packet_id, .. }) if self.qos == QoS::AtLeastOnce => {
                                acked_packets.push(packet_id);
                            }
                            Packet::PubRec(PubRec { packet_id, .. }) if self.qos == QoS::ExactlyOnce => {
                                encode_packet(&mut out, &Packet::PubRel(PubRel::new(packet_id)));
                            }
                            Packet::PubComp(PubComp { packet_id, .. }) if self.qos == QoS::ExactlyOnce => {
                                acked_packets.push(packet_id);
                            }
                            other => bail!("unexpected {:?} from the broker", other.packet_type()),
                        }
                    }
                    for id in acked_packets.drain(..) {
                        let seq = self.in_flight[usize::from(id.get())]
                            .take()
                            .with_context(|| format!("acknowledgement for packet id {id}, which is not in flight"))?;
                        if self.track {
                            self.outcome.acked.insert(seq);
                        }
                        self.free_ids.push(id.get());
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
            }
        }
        self.outcome.unacked = (self.window - self.free_ids.len()) as u64;
        if out.is_empty() {
            disconnect(&mut client).await;
        }
        Ok(())
    }
}

/// Ends a connection with DISCONNECT, giving up after a moment.
async fn disconnect(client: &mut Client) {
    let packet = Packet::Disconnect(Disconnect::new(DisconnectReason::NormalDisconnection));
    let _ = tokio::time::timeout(Duration::from_millis(200), client.send(&packet)).await;
}

/// What the subscriber hands back.
#[derive(Debug, Default)]
struct SubscriberOutcome {
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

async fn subscriber(
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    ready: oneshot::Sender<anyhow::Result<QoS>>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberOutcome {
    let id = format!("{}-sub", plan.client_prefix);
    let filter = format!("{}/#", plan.prefix);
    let connected = async {
        let mut client = Client::connect(plan.addr, &id, SUB_READ_BUF).await?;
        let granted = client.subscribe(&filter, plan.qos).await?;
        anyhow::Ok((client, granted))
    };
    let mut client = match tokio::time::timeout(SETUP_TIMEOUT, connected).await {
        Ok(Ok((client, granted))) => {
            let _ = ready.send(Ok(granted));
            client
        }
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return SubscriberOutcome::default();
        }
        Err(_) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "no CONNACK or SUBACK within {SETUP_TIMEOUT:?}"
            )));
            return SubscriberOutcome::default();
        }
    };
    let mut outcome = SubscriberOutcome {
        per_publisher: vec![0; plan.publishers],
        seqs: if plan.tracks_sequences() {
            vec![SeqSet::default(); plan.publishers]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    if let Err(e) = receive(&plan, &counters, &mut client, &mut stop, &mut outcome).await {
        outcome.error = Some(format!("{e:#}"));
    } else {
        disconnect(&mut client).await;
    }
    outcome
}

/// The subscriber's loop: read as much as there is, decode every packet, acknowledge.
async fn receive(
    plan: &Plan,
    counters: &Counters,
    client: &mut Client,
    stop: &mut watch::Receiver<bool>,
    outcome: &mut SubscriberOutcome,
) -> anyhow::Result<()> {
    let topic_prefix = format!("{}/", plan.prefix);
    let Client {
        stream,
        read_buf,
        decoder,
    } = client;
    let (mut reader, mut writer) = stream.split();
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        if read_buf.capacity() - read_buf.len() < SUB_READ_MIN {
            read_buf.reserve(SUB_READ_BUF);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            read = reader.read_buf(read_buf) => {
                if read? == 0 {
                    bail!("the broker closed the connection");
                }
                let mut received = 0;
                while let Some(packet) = decoder.decode(read_buf)? {
                    match packet {
                        Packet::Publish(publish) => {
                            if on_publish(&publish, &topic_prefix, &plan.run_id, outcome) {
                                received += 1;
                            }
                            match (publish.qos, publish.packet_id) {
                                (QoS::AtLeastOnce, Some(id)) => encode_packet(&mut out, &Packet::PubAck(PubAck::new(id))),
                                (QoS::ExactlyOnce, Some(id)) => encode_packet(&mut out, &Packet::PubRec(PubRec::new(id))),
                                _ => {}
                            }
                        }
                        Packet::PubRel(rel) => encode_packet(&mut out, &Packet::PubComp(PubComp::new(rel.packet_id))),
                        Packet::PingResp => {}
                        other => bail!("unexpected {:?} from the broker", other.packet_type()),
                    }
                }
                counters.received.fetch_add(received, Relaxed);
            }
            written = writer.write(&out), if !out.is_empty() => {
                let n = written?;
                out.advance(n);
            }
        }
    }
}

/// Accounts for one publish; false when it is not this run's.
fn on_publish(
    publish: &Publish,
    topic_prefix: &str,
    run_id: &[u8; 8],
    outcome: &mut SubscriberOutcome,
) -> bool {
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
    granted: QoS,
    measured_secs: f64,
    received: u64,
    sent: u64,
    acked: u64,
    samples: Vec<f64>,
    total_received: u64,
    total_sent: u64,
    total_acked: u64,
    /// Acknowledged messages never received (QoS 1 and 2 with sequence numbers).
    lost: Option<u64>,
    duplicates: u64,
    unacked: u64,
    foreign: u64,
    /// The least and most messages one publisher got through, relative to the mean.
    share_min: f64,
    share_max: f64,
    errors: Vec<String>,
}

impl Report {
    fn new(
        plan: &Plan,
        granted: QoS,
        window: Window,
        sub: &SubscriberOutcome,
        publishers: &[Option<PublisherOutcome>],
        errors: Vec<String>,
        counters: &Counters,
    ) -> Report {
        let totals = counters.snapshot();
        let lost = plan.tracks_sequences().then(|| {
            publishers
                .iter()
                .zip(&sub.seqs)
                .filter_map(|(p, received)| p.as_ref().map(|p| p.acked.missing_from(received)))
                .sum()
        });
        let mean =
            sub.per_publisher.iter().sum::<u64>() as f64 / sub.per_publisher.len().max(1) as f64;
        let share = |v: Option<&u64>| {
            if mean > 0.0 {
                v.map_or(0.0, |&v| v as f64 / mean)
            } else {
                0.0
            }
        };
        let (first, last) = (window.first, window.last);
        Report {
            addr: plan.addr,
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
            lost,
            duplicates: sub.duplicates,
            unacked: publishers.iter().flatten().map(|p| p.unacked).sum(),
            foreign: sub.foreign,
            share_min: share(sub.per_publisher.iter().min()),
            share_max: share(sub.per_publisher.iter().max()),
            errors,
        }
    }

    fn rate(&self, n: u64) -> f64 {
        if self.measured_secs > 0.0 {
            n as f64 / self.measured_secs
        } else {
            0.0
        }
    }

    fn delivered_ratio(&self) -> Option<f64> {
        (self.sent > 0).then(|| self.received as f64 / self.sent as f64)
    }

    fn to_json(&self, args: &FaninArgs) -> serde_json::Value {
        let acked = self.qos != QoS::AtMostOnce;
        json!({
            "scenario": "fanin",
            "broker": self.addr.to_string(),
            "publishers": args.publishers,
            "qos": self.qos.as_u8(),
            "granted_qos": self.granted.as_u8(),
            "payload_bytes": args.payload,
            "batch": args.batch,
            "window": acked.then_some(args.window),
            "threads": args.threads,
            "warmup_secs": args.warmup.as_secs_f64(),
            "duration_secs": args.duration.as_secs_f64(),
            "measured_secs": self.measured_secs,
            "received": self.received,
            "received_per_sec": self.rate(self.received),
            "sent": self.sent,
            "sent_per_sec": self.rate(self.sent),
            "acked": acked.then_some(self.acked),
            "acked_per_sec": acked.then(|| self.rate(self.acked)),
            "delivered_ratio": self.delivered_ratio(),
            "received_per_sec_samples": self.samples,
            "publisher_share_min": self.share_min,
            "publisher_share_max": self.share_max,
            "totals": {
                "sent": self.total_sent,
                "acked": acked.then_some(self.total_acked),
                "received": self.total_received,
                "lost": self.lost,
                "duplicates": self.duplicates,
                "unacked_at_end": acked.then_some(self.unacked),
                "foreign": self.foreign,
            },
            "errors": self.errors,
        })
    }

    fn to_table(&self, args: &FaninArgs) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
        let per_sec = |n: u64| format!("{} msg/s", thousands(self.rate(n).round() as u64));
        row("received", per_sec(self.received));
        row("sent", per_sec(self.sent));
        if self.qos != QoS::AtMostOnce {
            row("acked", per_sec(self.acked));
        }
        if let Some(r) = self.delivered_ratio() {
            row("received / sent", format!("{:.1} %", r * 100.0));
        }
        if !self.samples.is_empty() {
            let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
            let max = self.samples.iter().copied().fold(0.0, f64::max);
            row(
                "received, per second",
                format!(
                    "min {} / max {}",
                    thousands(min as u64),
                    thousands(max as u64)
                ),
            );
        }
        row(
            "publisher share",
            format!(
                "min {:.2} / max {:.2} of the mean",
                self.share_min, self.share_max
            ),
        );
        row(
            "messages (whole run)",
            format!(
                "sent {}, received {}",
                thousands(self.total_sent),
                thousands(self.total_received)
            ),
        );
        if self.qos != QoS::AtMostOnce {
            row("acked (whole run)", thousands(self.total_acked));
            row(
                "lost (acked, never received)",
                self.lost
                    .map_or("not tracked (payload < 8 bytes)".into(), thousands),
            );
            row("duplicates", thousands(self.duplicates));
            row("unacked at the end", thousands(self.unacked));
        }
        if self.foreign > 0 {
            row("foreign messages", thousands(self.foreign));
        }
        row("publisher errors", self.errors.len().to_string());
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut s = format!(
            "vane bench fanin: {} publishers -> 1 subscriber on {}/#, {}, QoS {} (granted {}), {} B payload, batch {}\n\
             measured {:.2} s after {:?} warmup\n\n",
            args.publishers,
            args.prefix,
            self.addr,
            self.qos.as_u8(),
            self.granted.as_u8(),
            args.payload,
            args.batch,
            self.measured_secs,
            args.warmup,
        );
        for (k, v) in rows {
            s += &format!("  {k:<width$}  {v}\n");
        }
        s
    }
}
