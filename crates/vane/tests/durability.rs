//! Durability acceptance (issue 5): a real `vane serve --store-dir DIR --durability sync` child
//! is killed with SIGKILL in the middle of work and started again on the same directory; what
//! it acknowledged before the kill must still be there. Clients are raw MQTT (`TestClient` on
//! the `vane-proto` codec), so packet ids, DUP and acknowledgements are exactly what each case
//! needs. Clause numbers are MQTT 3.1.1's unless marked "(5.0)".
//!
//! What "acknowledged" means: PUBACK for QoS 1 and PUBREC for QoS 2 (from PUBREC on, the broker
//! owns the message, [MQTT-4.3.3]); SUBACK for a subscription. With `durability = "sync"`, an
//! acknowledgement is only sent once what it acknowledges is on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use test_support::process::{ServeOptions, TempDir, VaneProcess};
use test_support::vane_proto::{Connect, DisconnectReason, Packet, Publish, QoS};
use test_support::*;
use tokio::time::Instant;

const VANE: &str = env!("CARGO_BIN_EXE_vane");

/// How long a (re)started broker has to listen: opening a store replays its journal.
const START: Duration = Duration::from_secs(15);
/// How long any one packet is waited for.
const WAIT: Duration = Duration::from_secs(5);
/// How long "nothing more arrives" is watched for once everything expected has arrived.
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A `vane serve --durability sync` child on a fresh store directory.
fn durable_broker(name: &str) -> (TempDir, VaneProcess) {
    let dir = TempDir::new(&format!("vane-durability-{name}"));
    let options = ServeOptions::new(VANE, dir.path(), "sync");
    let broker = VaneProcess::start(options, START);
    (dir, broker)
}

/// The broker's warnings and errors, for failure messages.
fn problems(broker: &VaneProcess) -> String {
    let p = broker.problems();
    if p.is_empty() {
        "(no WARN/ERROR lines in the broker log)".to_owned()
    } else {
        p.join("\n")
    }
}

/// Connects and checks the CONNACK is a success; returns the client and Session Present.
async fn connect(broker: &VaneProcess, connect: Connect) -> (TestClient, bool) {
    let id = connect.client_id.to_string();
    match TestClient::try_connect(broker.addr(), connect, WAIT).await {
        Ok((c, ack)) => {
            assert_eq!(
                ack.reason,
                test_support::vane_proto::ConnAckReason::Success,
                "CONNECT of {id} refused: {ack:?}\n{}",
                problems(broker)
            );
            (c, ack.session_present)
        }
        Err(e) => panic!("{id} could not connect: {e}\n{}", problems(broker)),
    }
}

/// The next packet, panicking with the broker's log when none comes within [`WAIT`].
async fn next(c: &mut TestClient, broker: &VaneProcess, what: &str) -> Packet {
    match c.next_event(WAIT).await {
        Received::Packet(p) => p,
        other => panic!(
            "{what}: expected a packet, got {other:?}\n{}",
            problems(broker)
        ),
    }
}

fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// Publishes a QoS 2 message from a fresh client and completes the flow.
async fn publish_qos2(broker: &VaneProcess, topic: &str, payload: &str) {
    let (mut c, _) = connect(broker, connect_v311(&unique_id("pub2"))).await;
    c.send(publish(topic, 2, 1, payload)).await;
    c.expect(pubrec(1)).await;
    c.send(pubrel(1)).await;
    c.expect(pubcomp(1)).await;
    c.disconnect().await;
}

/// What a receiving client saw: payloads with how often each arrived, at which QoS.
#[derive(Default)]
struct Inbox {
    /// payload -> (times delivered, QoS of the first delivery, topic, retain flag)
    seen: BTreeMap<String, (u32, QoS, String, bool)>,
    /// QoS 2 packet ids received (PUBREC sent) and not yet released by PUBREL: a PUBLISH with
    /// one of these ids is a retransmission of the same message, not a new one [MQTT-4.3.3-2].
    awaiting_pubrel: BTreeSet<u16>,
}

impl Inbox {
    /// Acknowledges what needs acknowledging and records deliveries; returns false for a packet
    /// that is not a PUBLISH or PUBREL.
    async fn take(&mut self, c: &mut TestClient, packet: Packet) -> bool {
        match packet {
            Packet::Publish(p) => {
                self.deliver(c, p).await;
                true
            }
            Packet::PubRel(r) => {
                self.awaiting_pubrel.remove(&r.packet_id.get());
                c.send(pubcomp(r.packet_id.get())).await;
                true
            }
            _ => false,
        }
    }

    async fn deliver(&mut self, c: &mut TestClient, p: Publish) {
        let id = p.packet_id.map(|id| id.get());
        let new = match (p.qos, id) {
            (QoS::AtLeastOnce, Some(id)) => {
                c.send(puback(id)).await;
                true
            }
            (QoS::ExactlyOnce, Some(id)) => {
                c.send(pubrec(id)).await;
                self.awaiting_pubrel.insert(id)
            }
            _ => true,
        };
        if new {
            let e = self.seen.entry(text(&p.payload)).or_insert((
                0,
                p.qos,
                p.topic.to_string(),
                p.retain,
            ));
            e.0 += 1;
        }
    }

    fn has_all<'a>(&self, mut expected: impl Iterator<Item = &'a String>) -> bool {
        expected.all(|m| self.seen.contains_key(m))
    }

    /// Payloads delivered more than once, with their counts.
    fn duplicates(&self, prefix: &str) -> Vec<(String, u32)> {
        self.seen
            .iter()
            .filter(|(m, (n, ..))| m.starts_with(prefix) && *n > 1)
            .map(|(m, (n, ..))| (m.clone(), *n))
            .collect()
    }
}

/// Reads deliveries until every payload of `expected` has arrived and then nothing more for
/// [`QUIET`] (duplicates would show up then), or until `limit` passes.
async fn drain(
    c: &mut TestClient,
    broker: &VaneProcess,
    inbox: &mut Inbox,
    expected: &BTreeSet<String>,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let complete = inbox.has_all(expected.iter());
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let wait = if complete {
            QUIET
        } else {
            (deadline - now).min(WAIT)
        };
        match c.next_event(wait).await {
            Received::Packet(p) => {
                let shown = format!("{p:?}");
                assert!(
                    inbox.take(c, p).await,
                    "unexpected packet while draining: {shown}"
                );
            }
            Received::Timeout if complete => return,
            Received::Timeout => {}
            other => panic!(
                "connection lost while draining: {other:?}\n{}",
                problems(broker)
            ),
        }
    }
}

fn first_few(set: &BTreeSet<String>) -> Vec<&String> {
    set.iter().take(10).collect()
}

// ---------------------------------------------------------------------------------------------
// Publishing until the broker is killed
// ---------------------------------------------------------------------------------------------

/// One publisher's view of its flows, by packet id (ids 1..=N are each used once).
#[derive(Default, Debug)]
struct Flows {
    /// PUBLISH sent.
    sent: BTreeSet<u16>,
    /// PUBACK (QoS 1) or PUBREC (QoS 2) received: the broker owns the message.
    acked: BTreeSet<u16>,
    /// PUBCOMP received (QoS 2).
    completed: BTreeSet<u16>,
}

struct Stream {
    qos: u8,
    topic: &'static str,
    prefix: &'static str,
    /// How many messages this publisher has (ids 1..=total).
    total: u16,
    /// PUBLISHes sent and not yet acknowledged, at most.
    window: usize,
    /// Its own acknowledgement count, shared with the test.
    acked: Arc<AtomicUsize>,
    /// The other publisher's count: this one stays at most `lead` messages ahead of it, so
    /// neither finishes before the kill.
    other: Arc<AtomicUsize>,
    lead: usize,
}

fn payload(prefix: &str, id: u16) -> String {
    format!("{prefix}-{id:05}")
}

/// Publishes ids 1..=total with `window` unacknowledged at most, answering PUBREC with PUBREL,
/// until the connection ends (the broker is killed). Returns what was sent and acknowledged.
async fn publish_until_closed(mut c: TestClient, s: Stream) -> Flows {
    let mut f = Flows::default();
    let mut next_id: u16 = 1;
    loop {
        let open = f.sent.len() - f.acked.len();
        let allowed = s.other.load(Ordering::SeqCst) + s.lead;
        let mut batch = Vec::new();
        let mut open_now = open;
        while next_id <= s.total && open_now < s.window && usize::from(next_id) <= allowed {
            batch.extend_from_slice(&encode(
                c.version(),
                &publish(s.topic, s.qos, next_id, payload(s.prefix, next_id)),
            ));
            f.sent.insert(next_id);
            next_id += 1;
            open_now += 1;
        }
        if !batch.is_empty() && c.try_send_raw(&batch).await.is_err() {
            return f;
        }
        // Waiting on the other publisher: look again soon.
        let wait = if open_now == 0 {
            Duration::from_millis(5)
        } else {
            Duration::from_secs(10)
        };
        match c.next_event(wait).await {
            Received::Packet(Packet::PubAck(a)) if s.qos == 1 => {
                if f.acked.insert(a.packet_id.get()) {
                    s.acked.fetch_add(1, Ordering::SeqCst);
                }
            }
            Received::Packet(Packet::PubRec(r)) if s.qos == 2 => {
                let id = r.packet_id.get();
                if f.acked.insert(id) {
                    s.acked.fetch_add(1, Ordering::SeqCst);
                }
                if c.try_send(&pubrel(id)).await.is_err() {
                    return f;
                }
            }
            Received::Packet(Packet::PubComp(p)) if s.qos == 2 => {
                f.completed.insert(p.packet_id.get());
            }
            Received::Timeout if open_now == 0 => {}
            Received::Closed | Received::Error(_) => return f,
            other => panic!("{} publisher: unexpected {other:?}", s.prefix),
        }
    }
}

/// After the restart: resends, with their original packet ids, every PUBLISH not yet
/// acknowledged (DUP = 1) and every PUBREL not yet completed, then waits for the broker to
/// finish each flow ([MQTT-4.4.0-1]; QoS 2 sender rules [MQTT-4.3.3-1]).
async fn complete_flows(
    c: &mut TestClient,
    broker: &VaneProcess,
    qos: u8,
    s_topic: &str,
    prefix: &str,
    f: &mut Flows,
) {
    let mut out = Vec::new();
    for &id in &f.sent {
        if !f.acked.contains(&id) {
            let mut p = publish_packet(s_topic, qos, id, payload(prefix, id), false);
            p.dup = true;
            out.extend_from_slice(&encode(c.version(), &Packet::Publish(p)));
        } else if qos == 2 && !f.completed.contains(&id) {
            out.extend_from_slice(&encode(c.version(), &pubrel(id)));
        }
    }
    if !out.is_empty() {
        c.send_raw(&out).await;
    }
    let done = |f: &Flows| {
        if qos == 1 {
            f.acked.len() == f.sent.len()
        } else {
            f.completed.len() == f.sent.len()
        }
    };
    while !done(f) {
        match next(c, broker, &format!("{prefix} flows after the restart")).await {
            Packet::PubAck(a) if qos == 1 => {
                f.acked.insert(a.packet_id.get());
            }
            Packet::PubRec(r) if qos == 2 => {
                let id = r.packet_id.get();
                assert!(
                    f.sent.contains(&id),
                    "PUBREC for packet id {id}, never sent"
                );
                f.acked.insert(id);
                c.send(pubrel(id)).await;
            }
            Packet::PubComp(p) if qos == 2 => {
                let id = p.packet_id.get();
                assert!(
                    f.acked.contains(&id),
                    "PUBCOMP for packet id {id} before its PUBREC"
                );
                f.completed.insert(id);
            }
            other => panic!("{prefix} publisher after the restart: unexpected {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_message_and_duplicates_no_qos2_message() {
    // Rule: with durability = "sync", a message the broker acknowledged (PUBACK, or PUBREC for
    // QoS 2) reaches a persistent subscriber even if the broker is killed right after; QoS 2
    // messages arrive exactly once across the crash, including those whose flows were cut
    // short and are finished after the restart ([MQTT-4.3.3], [MQTT-4.4.0-1]).
    const N: u16 = 500;
    const WINDOW: usize = 64;
    let (_dir, mut broker) = durable_broker("crash");

    // A persistent subscriber, then offline: everything from here on is queued for it.
    let sub_id = unique_id("crash-sub");
    let (mut sub, present) = connect(&broker, connect_v311_persistent(&sub_id)).await;
    assert!(!present, "a new session is not present");
    sub.send(subscribe(1, "crash/#", 2)).await;
    sub.expect(suback(1, &[2])).await;
    sub.disconnect().await;

    let q1_id = unique_id("crash-pub1");
    let q2_id = unique_id("crash-pub2");
    let (p1, _) = connect(&broker, connect_v311_persistent(&q1_id)).await;
    let (p2, _) = connect(&broker, connect_v311_persistent(&q2_id)).await;
    let acked1 = Arc::new(AtomicUsize::new(0));
    let acked2 = Arc::new(AtomicUsize::new(0));
    let t1 = tokio::spawn(publish_until_closed(
        p1,
        Stream {
            qos: 1,
            topic: "crash/q1",
            prefix: "q1",
            total: N,
            window: WINDOW,
            acked: acked1.clone(),
            other: acked2.clone(),
            lead: 2 * WINDOW,
        },
    ));
    let t2 = tokio::spawn(publish_until_closed(
        p2,
        Stream {
            qos: 2,
            topic: "crash/q2",
            prefix: "q2",
            total: N,
            window: WINDOW,
            acked: acked2.clone(),
            other: acked1.clone(),
            lead: 2 * WINDOW,
        },
    ));

    // Kill mid-stream: both publishers are past half-way, with full windows of unfinished
    // flows, and (held in step with each other) neither is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked1.load(Ordering::SeqCst) < usize::from(N / 2)
        || acked2.load(Ordering::SeqCst) < usize::from(N / 2)
    {
        assert!(
            Instant::now() < deadline,
            "publishers stalled at {} QoS 1 and {} QoS 2 acknowledgements\n{}",
            acked1.load(Ordering::SeqCst),
            acked2.load(Ordering::SeqCst),
            problems(&broker)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    broker.kill();
    let mut f1 = tokio::time::timeout(WAIT, t1)
        .await
        .expect("QoS 1 publisher sees the close")
        .expect("QoS 1 publisher task");
    let mut f2 = tokio::time::timeout(WAIT, t2)
        .await
        .expect("QoS 2 publisher sees the close")
        .expect("QoS 2 publisher task");
    let acked_before: BTreeSet<String> = f1
        .acked
        .iter()
        .map(|&id| payload("q1", id))
        .chain(f2.acked.iter().map(|&id| payload("q2", id)))
        .collect();
    println!(
        "before SIGKILL: QoS 1 sent {} acked {}; QoS 2 sent {} PUBREC {} PUBCOMP {}",
        f1.sent.len(),
        f1.acked.len(),
        f2.sent.len(),
        f2.acked.len(),
        f2.completed.len()
    );
    for f in [&f1, &f2] {
        assert!(
            !f.acked.is_empty() && f.acked.len() < usize::from(N),
            "killed mid-stream: {f:?}"
        );
    }

    broker.restart(START);

    // (a) The publishers resume their sessions and finish what the kill cut short.
    let (mut p2, present) = connect(&broker, connect_v311_persistent(&q2_id)).await;
    assert!(
        present,
        "[MQTT-3.2.2-2] the QoS 2 publisher's session survives SIGKILL\n{}",
        problems(&broker)
    );
    let unreleased = f2.acked.difference(&f2.completed).count();
    let unreceived = f2.sent.difference(&f2.acked).count();
    println!("QoS 2 publisher resends {unreceived} PUBLISH (DUP) and {unreleased} PUBREL");
    complete_flows(&mut p2, &broker, 2, "crash/q2", "q2", &mut f2).await;
    p2.disconnect().await;

    let (mut p1, present) = connect(&broker, connect_v311_persistent(&q1_id)).await;
    assert!(present, "the QoS 1 publisher's session survives SIGKILL");
    complete_flows(&mut p1, &broker, 1, "crash/q1", "q1", &mut f1).await;
    p1.disconnect().await;

    // (b) The subscriber's session and queue survived; every acknowledged message arrives.
    let (mut sub, present) = connect(&broker, connect_v311_persistent(&sub_id)).await;
    assert!(
        present,
        "[MQTT-3.2.2-2] the subscriber's session survives SIGKILL\n{}",
        problems(&broker)
    );
    let expected: BTreeSet<String> = f1
        .sent
        .iter()
        .map(|&id| payload("q1", id))
        .chain(f2.sent.iter().map(|&id| payload("q2", id)))
        .collect();
    let mut inbox = Inbox::default();
    drain(
        &mut sub,
        &broker,
        &mut inbox,
        &expected,
        Duration::from_secs(30),
    )
    .await;

    let lost_acked: BTreeSet<String> = acked_before
        .iter()
        .filter(|m| !inbox.seen.contains_key(*m))
        .cloned()
        .collect();
    let missing: BTreeSet<String> = expected
        .iter()
        .filter(|m| !inbox.seen.contains_key(*m))
        .cloned()
        .collect();
    let unknown: Vec<&String> = inbox
        .seen
        .keys()
        .filter(|m| !expected.contains(*m))
        .collect();
    let dup1 = inbox.duplicates("q1-");
    let dup2 = inbox.duplicates("q2-");
    println!(
        "after restart: expected {}, received {} distinct; acknowledged before the kill and lost {}; \
         missing {}; QoS 1 duplicates {} {:?}; QoS 2 duplicates {} {:?}",
        expected.len(),
        inbox.seen.len(),
        lost_acked.len(),
        missing.len(),
        dup1.len(),
        dup1.iter().take(10).collect::<Vec<_>>(),
        dup2.len(),
        dup2.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        lost_acked.is_empty(),
        "{} messages acknowledged before SIGKILL never arrived, e.g. {:?}\n{}",
        lost_acked.len(),
        first_few(&lost_acked),
        problems(&broker)
    );
    assert!(
        missing.is_empty(),
        "{} messages acknowledged after the restart never arrived, e.g. {:?}\n{}",
        missing.len(),
        first_few(&missing),
        problems(&broker)
    );
    assert!(unknown.is_empty(), "messages nobody sent: {unknown:?}");
    assert!(
        dup2.is_empty(),
        "[MQTT-4.3.3] QoS 2 messages delivered more than once: {dup2:?}"
    );
    for (m, (_, q, _, _)) in &inbox.seen {
        let want = if m.starts_with("q1-") {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        assert_eq!(*q, want, "{m} delivered at the QoS it was published with");
    }
    sub.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_every_acknowledged_retained_message() {
    // Rule: a retained message the broker acknowledged survives SIGKILL: a new subscriber
    // receives it, with its payload and RETAIN set ([MQTT-3.3.1-5], [MQTT-3.3.1-8]).
    const R: u16 = 200;
    const WINDOW: usize = 32;
    let (_dir, mut broker) = durable_broker("retained");
    let (mut c, _) = connect(&broker, connect_v311(&unique_id("ret-pub"))).await;

    let mut f = Flows::default();
    let mut next_id: u16 = 1;
    while f.acked.len() < usize::from(R / 2) {
        let mut batch = Vec::new();
        while next_id <= R && f.sent.len() - f.acked.len() < WINDOW {
            batch.extend_from_slice(&encode(
                c.version(),
                &publish_retained(
                    &format!("retained/{next_id}"),
                    1,
                    next_id,
                    payload("r", next_id),
                ),
            ));
            f.sent.insert(next_id);
            next_id += 1;
        }
        if !batch.is_empty() {
            c.send_raw(&batch).await;
        }
        match next(&mut c, &broker, "retained publisher").await {
            Packet::PubAck(a) => {
                f.acked.insert(a.packet_id.get());
            }
            other => panic!("retained publisher: unexpected {other:?}"),
        }
    }
    // Kill with a window of publishes outstanding; PUBACKs already on their way still count.
    broker.kill();
    while let Received::Packet(p) = c.next_event(WAIT).await {
        match p {
            Packet::PubAck(a) => {
                f.acked.insert(a.packet_id.get());
            }
            other => panic!("retained publisher: unexpected {other:?}"),
        }
    }
    drop(c);
    println!(
        "retained: sent {}, acknowledged {} before SIGKILL",
        f.sent.len(),
        f.acked.len()
    );
    assert!(f.acked.len() < usize::from(R), "killed mid-stream");

    broker.restart(START);
    let (mut s, _) = connect(&broker, connect_v311(&unique_id("ret-sub"))).await;
    s.send(subscribe(1, "#", 1)).await;
    s.expect(suback(1, &[1])).await;
    let expected: BTreeSet<String> = f.acked.iter().map(|&id| payload("r", id)).collect();
    let mut inbox = Inbox::default();
    drain(
        &mut s,
        &broker,
        &mut inbox,
        &expected,
        Duration::from_secs(20),
    )
    .await;

    let missing: BTreeSet<String> = expected
        .iter()
        .filter(|m| !inbox.seen.contains_key(*m))
        .cloned()
        .collect();
    println!(
        "retained after restart: {} of {} acknowledged present, {} unacknowledged present",
        expected.len() - missing.len(),
        expected.len(),
        inbox.seen.len() - (expected.len() - missing.len())
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged retained messages lost, e.g. {:?}\n{}",
        missing.len(),
        first_few(&missing),
        problems(&broker)
    );
    for (m, (n, _, topic, retain)) in &inbox.seen {
        let id: u16 = m[2..].parse().expect("payload r-NNNNN");
        assert!(f.sent.contains(&id), "retained message nobody sent: {m}");
        assert_eq!(topic, &format!("retained/{id}"), "{m} on its own topic");
        assert!(retain, "[MQTT-3.3.1-8] {m} is sent with RETAIN set");
        assert_eq!(*n, 1, "{m} delivered {n} times");
    }
    s.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_acknowledged_subscriptions_of_persistent_sessions() {
    // Rule: a subscription the broker acknowledged (SUBACK) is part of the session state
    // [MQTT-3.1.2-4] and survives SIGKILL: the client resumes with Session Present = 1
    // [MQTT-3.2.2-2] and, without subscribing again, receives matching publishes at the QoS
    // granted, min(granted, published) [MQTT-3.8.4-6]. Both for a client connected at the kill
    // and for one that was offline.
    let (_dir, mut broker) = durable_broker("subs");
    let filters = [("subs/zero/#", 0), ("subs/one/+", 1), ("subs/two", 2)];
    let online_id = unique_id("subs-online");
    let offline_id = unique_id("subs-offline");
    let (mut online, _) = connect(&broker, connect_v311_persistent(&online_id)).await;
    online.send(subscribe_many(1, &filters)).await;
    online.expect(suback(1, &[0, 1, 2])).await;
    let (mut offline, _) = connect(&broker, connect_v311_persistent(&offline_id)).await;
    offline.send(subscribe_many(7, &filters)).await;
    offline.expect(suback(7, &[0, 1, 2])).await;
    offline.disconnect().await;

    broker.kill();
    drop(online);
    broker.restart(START);

    let mut clients = Vec::new();
    for id in [&online_id, &offline_id] {
        let (c, present) = connect(&broker, connect_v311_persistent(id)).await;
        assert!(
            present,
            "[MQTT-3.2.2-2] session of {id} survives SIGKILL\n{}",
            problems(&broker)
        );
        clients.push(c);
    }
    for (topic, body) in [
        ("subs/zero/a/b", "to-zero"),
        ("subs/one/x", "to-one"),
        ("subs/two", "to-two"),
        ("subs/other", "to-nobody"),
    ] {
        publish_qos2(&broker, topic, body).await;
    }
    for c in &mut clients {
        let mut got = BTreeSet::new();
        let mut inbox = Inbox::default();
        while got.len() < 3 {
            let p = next(c, &broker, "delivery on a restored subscription").await;
            if let Packet::Publish(p) = &p {
                got.insert((p.topic.to_string(), text(&p.payload), p.qos));
            }
            assert!(inbox.take(c, p).await, "only deliveries expected");
        }
        let want: BTreeSet<(String, String, QoS)> = [
            ("subs/zero/a/b", "to-zero", QoS::AtMostOnce),
            ("subs/one/x", "to-one", QoS::AtLeastOnce),
            ("subs/two", "to-two", QoS::ExactlyOnce),
        ]
        .into_iter()
        .map(|(t, b, q)| (t.to_owned(), b.to_owned(), q))
        .collect();
        assert_eq!(got, want, "deliveries at the granted QoS");
        // The PUBREL of the QoS 2 delivery, then nothing: "subs/other" matches no filter.
        loop {
            match c.next_event(QUIET).await {
                Received::Packet(p @ Packet::PubRel(_)) => {
                    inbox.take(c, p).await;
                }
                Received::Timeout => break,
                other => panic!("expected nothing more, got {other:?}"),
            }
        }
    }
    for c in clients {
        c.disconnect().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_v5_clients_with_0x8b_exits_0_and_keeps_sessions() {
    // Rule: a graceful shutdown tells MQTT 5.0 clients why, DISCONNECT 0x8B Server shutting
    // down ((5.0) 3.14.2.1), exits 0, and leaves persistent sessions (subscriptions and queued
    // messages) on disk for the next start.
    let (_dir, mut broker) = durable_broker("sigterm");
    let v5_id = unique_id("term-v5");
    let v3_id = unique_id("term-v3");
    let (mut v5, _) = connect(&broker, connect_v5_persistent(&v5_id)).await;
    v5.send(subscribe(1, "graceful/#", 1)).await;
    v5.expect(Packet::SubAck(test_support::vane_proto::SubAck {
        packet_id: pid(1),
        properties: Default::default(),
        reasons: vec![test_support::vane_proto::SubAckReason::GrantedQoS1],
    }))
    .await;
    let (mut v3, _) = connect(&broker, connect_v311_persistent(&v3_id)).await;
    v3.send(subscribe(1, "graceful/#", 1)).await;
    v3.expect(suback(1, &[1])).await;
    v3.disconnect().await;

    // A message queued for the offline v3 session (and delivered to the online v5 one).
    let (mut p, _) = connect(&broker, connect_v311(&unique_id("term-pub"))).await;
    p.send(publish("graceful/a", 1, 1, "before-shutdown")).await;
    p.expect(puback(1)).await;
    p.disconnect().await;
    let m = v5.recv_publish().await;
    assert_eq!(text(&m.payload), "before-shutdown");
    v5.send(puback(m.packet_id.expect("QoS 1").get())).await;
    // A round trip, so the broker has handled the PUBACK before it is told to stop.
    v5.send(pingreq()).await;
    v5.expect(Packet::PingResp).await;

    broker.terminate();
    v5.set_timeout(Duration::from_secs(10));
    v5.expect_closed_with(DisconnectReason::ServerShuttingDown)
        .await;
    let status = broker
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "vane still running 15 s after SIGTERM; log:\n{}",
                broker.log()
            )
        });
    assert!(
        status.success(),
        "vane exited with {status} after SIGTERM; log:\n{}",
        broker.log()
    );

    broker.restart(START);
    let (mut v5, present) = connect(&broker, connect_v5_persistent(&v5_id)).await;
    assert!(
        present,
        "(5.0) [MQTT-3.2.2-2] the v5 session survives a graceful restart\n{}",
        problems(&broker)
    );
    let (mut v3, present) = connect(&broker, connect_v311_persistent(&v3_id)).await;
    assert!(
        present,
        "[MQTT-3.2.2-2] the v3 session survives a graceful restart\n{}",
        problems(&broker)
    );
    publish_qos2(&broker, "graceful/b", "after-restart").await;

    let mut inbox = Inbox::default();
    let want: BTreeSet<String> = ["before-shutdown", "after-restart"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    drain(&mut v3, &broker, &mut inbox, &want, Duration::from_secs(10)).await;
    assert_eq!(
        inbox.seen.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "the offline session's queued message and the new one"
    );
    let mut inbox = Inbox::default();
    let want: BTreeSet<String> = ["after-restart".to_owned()].into();
    drain(&mut v5, &broker, &mut inbox, &want, Duration::from_secs(10)).await;
    assert_eq!(
        inbox.seen.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "the restored subscription delivers; the acknowledged message is not resent"
    );
    v3.disconnect().await;
    v5.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_as_soon_as_the_port_accepts_is_a_graceful_shutdown() {
    // Rule: once a supervisor can see the broker (its port accepts connections), SIGTERM is a
    // graceful shutdown: exit 0, store closed. Opening a store with queued messages takes
    // long enough (100+ ms here) to show whether the handler is in place that early.
    let (dir, mut broker) = durable_broker("early-term");
    let sub_id = unique_id("early-sub");
    let (mut sub, _) = connect(&broker, connect_v311_persistent(&sub_id)).await;
    sub.send(subscribe(1, "early/#", 1)).await;
    sub.expect(suback(1, &[1])).await;
    sub.disconnect().await;
    let (mut p, _) = connect(&broker, connect_v311(&unique_id("early-pub"))).await;
    let mut batch = Vec::new();
    for id in 1..=2000u16 {
        batch.extend_from_slice(&encode(p.version(), &publish("early/x", 1, id, "queued")));
    }
    p.send_raw(&batch).await;
    for _ in 0..2000 {
        assert!(matches!(
            next(&mut p, &broker, "PUBACK").await,
            Packet::PubAck(_)
        ));
    }
    broker.terminate();
    assert!(broker
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));

    let options = broker.options().clone();
    drop(broker);
    let mut child = std::process::Command::new(VANE)
        .args(options.args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start vane");
    let deadline = std::time::Instant::now() + START;
    while std::net::TcpStream::connect(options.addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "vane never listened");
        std::thread::sleep(Duration::from_millis(2));
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = child.wait().expect("wait for vane");
    drop(dir);
    assert!(
        exit.success(),
        "SIGTERM right after the port accepted connections: vane exited with {exit}"
    );
}
