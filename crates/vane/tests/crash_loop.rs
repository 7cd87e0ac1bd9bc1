//! Crash loop (issue 5): a `vane serve --store-dir DIR --durability MODE` child is killed with
//! SIGKILL at random moments, ROUNDS times, under a QoS 1 + QoS 2 load of RATE messages/s to a
//! persistent subscriber that keeps going on and offline, and is started again on the same
//! store each time. Publishers reconnect and resend what was not acknowledged (DUP PUBLISH, or
//! PUBREL after a PUBREC, [MQTT-4.4.0-1]). After a last clean restart (SIGTERM) and a drain,
//! it reports acknowledged, received, lost, and duplicates.
//!
//! Rules checked in `sync` mode: no acknowledged message is lost (PUBACK, or PUBREC for QoS 2,
//! means the broker owns it) and no QoS 2 message arrives twice ([MQTT-4.3.3]); no persistent
//! session is lost. QoS 1 duplicates are allowed and reported. Other modes only report.
//!
//! Long: run by `scripts/crash-loop.sh` (`ROUNDS`, `RATE`, `DURABILITY`, `SEED`, `QOS2_PERCENT`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use test_support::process::{write_file, ServeOptions, TempDir, VaneProcess};
use test_support::vane_proto::{Connect, Packet, QoS};
use test_support::*;
use tokio::time::Instant;

const VANE: &str = env!("CARGO_BIN_EXE_vane");
/// How long a (re)started broker has to listen.
const START: Duration = Duration::from_secs(30);
/// Unacknowledged messages one publisher may have; beyond it, it publishes nothing new.
const MAX_INFLIGHT: usize = 4000;
/// The load is paced in ticks of this length.
const TICK: Duration = Duration::from_millis(10);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: a small seeded generator, so a run can be repeated with `SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration uniformly in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo).max(1))
    }
}

/// What everyone saw, shared by the tasks. Locks are short and never held across an await.
#[derive(Default)]
struct Ledger {
    /// (qos, seq) of messages acknowledged by the broker (PUBACK, PUBREC).
    acked: HashSet<(u8, u64)>,
    /// (qos, seq) of messages published at least once.
    sent: HashSet<(u8, u64)>,
    /// (qos published, seq) -> deliveries to the subscriber.
    received: HashMap<(u8, u64), u32>,
    /// Deliveries whose QoS was not the published one (the subscription is QoS 2).
    wrong_qos: u64,
    /// Payloads nobody published.
    unknown: Vec<String>,
    /// Reconnections of a persistent session answered with Session Present = 0.
    sessions_lost: Vec<String>,
    /// Connections (successful CONNACKs) per client.
    connects: BTreeMap<String, u32>,
    /// PUBLISHes resent with DUP and PUBRELs resent after a reconnection.
    resent_publish: u64,
    resent_pubrel: u64,
    /// Deliveries that came with DUP set.
    dup_flagged: u64,
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects, retrying every 20 ms while the broker is down, for at most `limit`.
async fn reconnect(
    addr: SocketAddr,
    connect: &Connect,
    limit: Duration,
) -> Option<(TestClient, bool)> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok((c, ack)) =
            TestClient::try_connect(addr, connect.clone(), Duration::from_secs(2)).await
        {
            if ack.reason == test_support::vane_proto::ConnAckReason::Success {
                return Some((c, ack.session_present));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn note_connect(shared: &Shared, id: &str, present: bool) {
    let mut l = ledger(shared);
    let n = l.connects.entry(id.to_owned()).or_insert(0);
    *n += 1;
    if *n > 1 && !present {
        let line = format!("{id} (connection {n})");
        l.sessions_lost.push(line);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stage {
    /// PUBLISH sent, no PUBACK/PUBREC yet.
    Published,
    /// PUBREC received and PUBREL sent, no PUBCOMP yet (QoS 2).
    Released,
}

struct Publisher {
    addr: SocketAddr,
    qos: u8,
    rate: f64,
    shared: Shared,
    stop: Arc<AtomicBool>,
    /// Where this publisher's message numbers start (unique across publishers is not needed:
    /// the published QoS is part of a message's key).
    id: String,
}

/// Publishes `rate` messages/s at `qos` to `load/q<qos>` with a persistent session; reconnects
/// after each crash and resends every unfinished flow with its original packet id. After
/// `stop`, publishes nothing new and returns once every flow is finished (or after 60 s).
async fn run_publisher(p: Publisher) -> usize {
    let connect = connect_v311_persistent(&p.id);
    let topic = format!("load/q{}", p.qos);
    // packet id -> (seq, stage)
    let mut inflight: BTreeMap<u16, (u64, Stage)> = BTreeMap::new();
    let mut next_seq: u64 = 0;
    let mut next_id: u16 = 1;
    let mut stop_deadline = None;
    loop {
        if p.stop.load(Ordering::SeqCst) {
            let d = *stop_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            if inflight.is_empty() || Instant::now() >= d {
                return inflight.len();
            }
        }
        let Some((mut c, present)) = reconnect(p.addr, &connect, Duration::from_secs(60)).await
        else {
            return inflight.len();
        };
        note_connect(&p.shared, &p.id, present);
        // [MQTT-4.4.0-1] resend unacknowledged PUBLISH (DUP) and PUBREL, original ids, in order.
        let mut out = Vec::new();
        for (&id, &(seq, stage)) in &inflight {
            let packet = match stage {
                Stage::Published => {
                    let mut m =
                        publish_packet(&topic, p.qos, id, format!("{}:{seq}", p.qos), false);
                    m.dup = true;
                    Packet::Publish(m)
                }
                Stage::Released => pubrel(id),
            };
            out.extend_from_slice(&encode(c.version(), &packet));
        }
        {
            let mut l = ledger(&p.shared);
            for (_, stage) in inflight.values() {
                match stage {
                    Stage::Published => l.resent_publish += 1,
                    Stage::Released => l.resent_pubrel += 1,
                }
            }
        }
        if !out.is_empty() && c.try_send_raw(&out).await.is_err() {
            continue;
        }
        let mut budget = 0.0f64;
        let mut next_tick = Instant::now();
        'connected: loop {
            let stopping = p.stop.load(Ordering::SeqCst);
            if stopping {
                let d =
                    *stop_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
                if inflight.is_empty() || Instant::now() >= d {
                    let _ = c.try_send(&disconnect()).await;
                    return inflight.len();
                }
            }
            if Instant::now() >= next_tick {
                next_tick += TICK;
                if Instant::now() > next_tick + TICK * 10 {
                    next_tick = Instant::now() + TICK; // fell behind (a restart): no catch-up burst
                }
                if !stopping {
                    budget += p.rate * TICK.as_secs_f64();
                }
                let mut out = Vec::new();
                let mut new = Vec::new();
                while budget >= 1.0 && inflight.len() < MAX_INFLIGHT && !stopping {
                    while inflight.contains_key(&next_id) {
                        next_id = next_id.checked_add(1).unwrap_or(1);
                    }
                    let id = next_id;
                    next_id = next_id.checked_add(1).unwrap_or(1);
                    next_seq += 1;
                    inflight.insert(id, (next_seq, Stage::Published));
                    new.push((p.qos, next_seq));
                    out.extend_from_slice(&encode(
                        c.version(),
                        &publish(&topic, p.qos, id, format!("{}:{next_seq}", p.qos)),
                    ));
                    budget -= 1.0;
                }
                if inflight.len() >= MAX_INFLIGHT {
                    budget = budget.min(1.0);
                }
                ledger(&p.shared).sent.extend(new);
                if !out.is_empty() && c.try_send_raw(&out).await.is_err() {
                    break 'connected;
                }
            }
            let wait = next_tick.saturating_duration_since(Instant::now());
            match c.next_event(wait.max(Duration::from_millis(1))).await {
                Received::Timeout => {}
                Received::Packet(Packet::PubAck(a)) if p.qos == 1 => {
                    if let Some((seq, _)) = inflight.remove(&a.packet_id.get()) {
                        ledger(&p.shared).acked.insert((1, seq));
                    }
                }
                Received::Packet(Packet::PubRec(r)) if p.qos == 2 => {
                    let id = r.packet_id.get();
                    if let Some((seq, stage)) = inflight.get_mut(&id) {
                        *stage = Stage::Released;
                        ledger(&p.shared).acked.insert((2, *seq));
                    }
                    if c.try_send(&pubrel(id)).await.is_err() {
                        break 'connected;
                    }
                }
                Received::Packet(Packet::PubComp(r)) if p.qos == 2 => {
                    inflight.remove(&r.packet_id.get());
                }
                Received::Packet(other) => panic!("publisher {}: unexpected {other:?}", p.id),
                Received::Closed | Received::Error(_) | Received::Malformed(_) => break 'connected,
            }
        }
    }
}

/// The persistent subscriber: subscribes once to `load/#` at QoS 2, then connects, reads for a
/// random while, disconnects (DISCONNECT, or just drops the socket), stays away a random while,
/// and again, until `draining`; then stays connected until `stop`.
async fn run_subscriber(
    addr: SocketAddr,
    shared: Shared,
    draining: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let id = unique_id("loop-sub");
    let connect = connect_v311_persistent(&id);
    let mut rng = Rng(seed);
    let mut subscribed = false;
    // QoS 2 packet ids received (PUBREC sent), not yet released: a PUBLISH with one of them is
    // the same message again [MQTT-4.3.3-2]. Kept across connections, like the session.
    let mut awaiting_pubrel: HashSet<u16> = HashSet::new();
    while !stop.load(Ordering::SeqCst) {
        let Some((mut c, present)) = reconnect(addr, &connect, Duration::from_secs(60)).await
        else {
            panic!("the subscriber could not reconnect for 60 s");
        };
        note_connect(&shared, &id, present || !subscribed);
        if !present {
            awaiting_pubrel.clear();
        }
        if (!subscribed || !present) && c.try_send(&subscribe(1, "load/#", 2)).await.is_err() {
            continue;
        }
        let online_until = Instant::now() + rng.millis(200, 1500);
        let polite = rng.next() & 1 == 0;
        let mut closed = false;
        loop {
            let now = Instant::now();
            let stay = draining.load(Ordering::SeqCst);
            if stop.load(Ordering::SeqCst) || (!stay && now >= online_until) {
                break;
            }
            let wait = if stay {
                Duration::from_millis(50)
            } else {
                online_until - now
            };
            match c.next_event(wait).await {
                Received::Timeout => {}
                Received::Packet(Packet::SubAck(_)) => subscribed = true,
                Received::Packet(Packet::Publish(m)) => {
                    let pid = m.packet_id.map(|x| x.get());
                    let count = match (m.qos, pid) {
                        (QoS::AtLeastOnce, Some(x)) => {
                            let _ = c.try_send(&puback(x)).await;
                            true
                        }
                        (QoS::ExactlyOnce, Some(x)) => {
                            let _ = c.try_send(&pubrec(x)).await;
                            awaiting_pubrel.insert(x)
                        }
                        _ => true,
                    };
                    if m.dup {
                        ledger(&shared).dup_flagged += 1;
                    }
                    if count {
                        record(&shared, &m.payload, m.qos);
                    }
                }
                Received::Packet(Packet::PubRel(r)) => {
                    awaiting_pubrel.remove(&r.packet_id.get());
                    let _ = c.try_send(&pubcomp(r.packet_id.get())).await;
                }
                Received::Packet(other) => panic!("subscriber: unexpected {other:?}"),
                Received::Closed | Received::Error(_) | Received::Malformed(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if !closed && polite {
            let _ = c.try_send(&disconnect()).await;
        }
        drop(c);
        if !closed && !draining.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(rng.millis(0, 500)).await;
        }
    }
}

fn record(shared: &Shared, payload: &[u8], delivered: QoS) {
    let text = String::from_utf8_lossy(payload);
    let mut l = ledger(shared);
    let parsed = text
        .split_once(':')
        .and_then(|(q, s)| Some((q.parse::<u8>().ok()?, s.parse::<u64>().ok()?)));
    match parsed {
        Some(key) if l.sent.contains(&key) => {
            if delivered.as_u8() != key.0 {
                l.wrong_qos += 1;
            }
            *l.received.entry(key).or_insert(0) += 1;
        }
        _ => l.unknown.push(text.into_owned()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long (ROUNDS kills); run by scripts/crash-loop.sh"]
async fn crash_loop() {
    let rounds: u32 = env_or("ROUNDS", 20);
    let rate: f64 = env_or("RATE", 2000.0);
    let durability: String = env_or("DURABILITY", "sync".to_owned());
    let qos2_percent: f64 = env_or("QOS2_PERCENT", 10.0);
    let seed: u64 = env_or(
        "SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    println!(
        "crash loop: ROUNDS={rounds} RATE={rate} DURABILITY={durability} QOS2_PERCENT={qos2_percent} SEED={seed}"
    );
    let mut rng = Rng(seed);
    let dir = TempDir::new("vane-crash-loop");
    let config = dir.path().join("vane.toml");
    // Queues big enough that nothing is dropped for overflow: a loss here is a durability loss.
    write_file(
        &config,
        "[queue]\nmax_messages = 10000000\nmax_bytes = \"4GiB\"\n",
    );
    let mut options = ServeOptions::new(VANE, dir.path(), &durability);
    options.config = Some(config);
    let addr = options.addr;
    let mut broker = tokio::task::block_in_place(|| VaneProcess::start(options, START));

    let shared = Shared::default();
    let stop_pub = Arc::new(AtomicBool::new(false));
    let draining = Arc::new(AtomicBool::new(false));
    let stop_sub = Arc::new(AtomicBool::new(false));
    let sub = tokio::spawn(run_subscriber(
        addr,
        shared.clone(),
        draining.clone(),
        stop_sub.clone(),
        rng.next(),
    ));
    // Let the subscription exist before the load starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ledger(&shared).connects.is_empty() {
        assert!(Instant::now() < deadline, "the subscriber never connected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let publishers: Vec<_> = [(1u8, 100.0 - qos2_percent), (2u8, qos2_percent)]
        .into_iter()
        .filter(|(_, pct)| *pct > 0.0)
        .map(|(qos, pct)| {
            tokio::spawn(run_publisher(Publisher {
                addr,
                qos,
                rate: rate * pct / 100.0,
                shared: shared.clone(),
                stop: stop_pub.clone(),
                id: unique_id(&format!("loop-pub{qos}")),
            }))
        })
        .collect();

    let started = std::time::Instant::now();
    let restarts = AtomicU64::new(0);
    for round in 1..=rounds {
        tokio::time::sleep(rng.millis(300, 3000)).await;
        let acked = ledger(&shared).acked.len();
        tokio::task::block_in_place(|| {
            broker.kill();
            broker.restart(START);
        });
        restarts.fetch_add(1, Ordering::Relaxed);
        println!(
            "round {round}/{rounds}: SIGKILL at {:.1} s, {acked} acknowledged so far",
            started.elapsed().as_secs_f64()
        );
    }

    // Stop the load; publishers finish their flows.
    stop_pub.store(true, Ordering::SeqCst);
    let mut unfinished = 0;
    for p in publishers {
        unfinished += tokio::time::timeout(Duration::from_secs(90), p)
            .await
            .expect("publishers finish within 90 s")
            .expect("publisher task");
    }
    // A last clean restart: SIGTERM, exit 0, start again on the same store.
    let clean_exit = tokio::task::block_in_place(|| {
        broker.terminate();
        let status = broker.wait_exit(Duration::from_secs(30));
        if status.is_none() {
            broker.kill();
        }
        broker.restart(START);
        status
    });
    // Drain: the subscriber stays online until everything acknowledged has arrived, or nothing
    // new arrived for 5 s (at most 60 s).
    draining.store(true, Ordering::SeqCst);
    let drain_start = Instant::now();
    let mut last_count = 0;
    let mut last_progress = Instant::now();
    loop {
        let (missing, count) = {
            let l = ledger(&shared);
            let missing = l
                .acked
                .iter()
                .filter(|k| !l.received.contains_key(k))
                .count();
            (
                missing,
                l.received.values().map(|&n| u64::from(n)).sum::<u64>(),
            )
        };
        if count != last_count {
            last_count = count;
            last_progress = Instant::now();
        }
        let idle = last_progress.elapsed();
        if (missing == 0 && idle >= Duration::from_millis(500))
            || idle >= Duration::from_secs(5)
            || drain_start.elapsed() >= Duration::from_secs(60)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_sub.store(true, Ordering::SeqCst);
    let _ = tokio::time::timeout(Duration::from_secs(5), sub).await;

    let l = ledger(&shared);
    let acked = l.acked.len();
    let received = l.received.len();
    let lost: Vec<&(u8, u64)> = l
        .acked
        .iter()
        .filter(|k| !l.received.contains_key(k))
        .collect();
    let dup = |q: u8| {
        l.received
            .iter()
            .filter(|((qq, _), n)| *qq == q && **n > 1)
            .count()
    };
    let (dup1, dup2) = (dup(1), dup(2));
    let acked_q2 = l.acked.iter().filter(|(q, _)| *q == 2).count();
    let mut lost_sample: Vec<_> = lost.iter().take(10).collect();
    lost_sample.sort();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "crash-loop summary: durability={durability} rounds={} elapsed={elapsed:.1}s sent={} acknowledged={acked} \
         (qos2 {acked_q2}) received={received} lost={} qos1_duplicates={dup1} qos2_duplicates={dup2} \
         sessions_lost={} unknown={} wrong_qos={} unfinished_flows={unfinished} clean_exit={} \
         resent_publish={} resent_pubrel={} dup_flagged_deliveries={} connections={:?}",
        restarts.load(Ordering::Relaxed),
        l.sent.len(),
        lost.len(),
        l.sessions_lost.len(),
        l.unknown.len(),
        l.wrong_qos,
        clean_exit.map_or("timeout".to_owned(), |s| s.to_string()),
        l.resent_publish,
        l.resent_pubrel,
        l.dup_flagged,
        l.connects.values().collect::<Vec<_>>(),
    );
    if !lost.is_empty() {
        println!("lost (qos, seq), first 10: {lost_sample:?}");
    }
    if !l.sessions_lost.is_empty() {
        println!("sessions lost: {:?}", l.sessions_lost);
    }
    let problems = broker.problems();
    if !problems.is_empty() {
        println!(
            "broker WARN/ERROR lines ({}), first 20:\n{}",
            problems.len(),
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    if durability == "sync" {
        assert!(
            lost.is_empty(),
            "{} acknowledged messages never arrived",
            lost.len()
        );
        assert_eq!(dup2, 0, "[MQTT-4.3.3] QoS 2 messages delivered twice");
        assert!(
            l.sessions_lost.is_empty(),
            "persistent sessions lost: {:?}",
            l.sessions_lost
        );
        assert!(
            l.unknown.is_empty(),
            "payloads nobody sent: {:?}",
            &l.unknown[..l.unknown.len().min(10)]
        );
        assert_eq!(l.wrong_qos, 0, "deliveries at another QoS than published");
        assert!(
            clean_exit.is_some_and(|s| s.success()),
            "SIGTERM: vane exited with {clean_exit:?}"
        );
    }
}
