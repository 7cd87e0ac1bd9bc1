//! Backpressure: QoS 1/2 messages meeting a connected subscriber's full queue pause their
//! publishers instead of being acknowledged and dropped; a subscriber stuck past the
//! backpressure timeout stops holding publishers; clients publishing to each other never wait
//! on each other forever.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use test_support::vane_proto::Packet;
use test_support::*;

const MESSAGES: u16 = 200;

/// A broker whose queues hold 10 messages and whose in-flight window is 4, so a few hundred
/// messages overflow any subscriber that does not keep up.
async fn small_queues(backpressure: Duration) -> TestBroker {
    TestBroker::start(|c| {
        c.queue.max_messages = 10;
        c.queue.backpressure_timeout = backpressure;
        c.mqtt.max_inflight = 4;
    })
    .await
}

async fn subscriber(addr: SocketAddr, filter: &str) -> TestClient {
    let mut c = TestClient::connect(addr, connect_v311(&unique_id("bp-sub"))).await;
    c.send(subscribe(1, filter, 1)).await;
    c.expect(suback(1, &[1])).await;
    c
}

/// Sends `MESSAGES` QoS 1 publishes back to back without waiting for acknowledgements.
async fn send_all(c: &mut TestClient, topic: &str) {
    let mut batch = Vec::new();
    for i in 1..=MESSAGES {
        batch.extend_from_slice(&encode(c.version(), &publish(topic, 1, i, i.to_string())));
    }
    c.send_raw(&batch).await;
}

/// Reads until `expect_acked` PUBACKs for this client's publishes and `expect_delivered`
/// deliveries (acknowledged as they come) have arrived; returns the delivered payloads in order.
async fn pump(c: &mut TestClient, expect_acked: usize, expect_delivered: usize) -> Vec<u16> {
    let mut acked = BTreeSet::new();
    let mut delivered = Vec::new();
    while acked.len() < expect_acked || delivered.len() < expect_delivered {
        match c.recv().await {
            Some(Packet::PubAck(a)) => {
                acked.insert(a.packet_id.get());
            }
            Some(Packet::Publish(p)) => {
                let id = p.packet_id.expect("QoS 1 delivery has a packet id").get();
                c.send(puback(id)).await;
                let text = std::str::from_utf8(&p.payload).expect("payload is text");
                delivered.push(text.parse().expect("payload is a number"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    delivered
}

/// Waits for `n` PUBACKs and nothing else.
async fn expect_pubacks(c: &mut TestClient, n: usize) {
    for _ in 0..n {
        match c.recv().await {
            Some(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// PUBACKs that arrive before 300 ms pass without one.
async fn pubacks_while_held(c: &mut TestClient) -> usize {
    let mut acked = 0;
    while let Received::Packet(Packet::PubAck(_)) = c.next_event(Duration::from_millis(300)).await {
        acked += 1;
    }
    acked
}

/// With the subscriber taking none yet, checks the publisher was held back below `limit`
/// acknowledgements; then lets the subscriber take everything, and checks every message
/// arrives in order and every publish is acknowledged.
async fn held_back_then_lossless(publisher: &mut TestClient, sub: &mut TestClient, limit: usize) {
    let acked = pubacks_while_held(publisher).await;
    assert!(
        acked < limit,
        "{acked} publishes acknowledged while the subscriber took none"
    );
    let (delivered, _) = tokio::join!(
        pump(sub, 0, usize::from(MESSAGES)),
        expect_pubacks(publisher, usize::from(MESSAGES) - acked)
    );
    assert_eq!(
        delivered,
        all_in_order(),
        "every acknowledged message arrives, in order"
    );
}

fn all_in_order() -> Vec<u16> {
    (1..=MESSAGES).collect()
}

#[tokio::test]
async fn a_slow_subscriber_pauses_its_publisher_and_loses_nothing() {
    let broker = small_queues(Duration::from_secs(10)).await;
    let mut sub = subscriber(broker.addr(), "bp/slow").await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v311("bp-pub")).await;
    send_all(&mut publisher, "bp/slow").await;

    // The subscriber acknowledges nothing yet: 4 in flight and a queue of 10 (kept up to twice
    // that under backpressure) cannot hold 200 messages, so the broker must hold the publisher
    // back rather than acknowledge all of them.
    held_back_then_lossless(&mut publisher, &mut sub, usize::from(MESSAGES)).await;
    sub.expect_nothing(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_stuck_subscriber_holds_publishers_only_until_the_backpressure_timeout() {
    let broker = small_queues(Duration::from_millis(300)).await;
    let _stuck = subscriber(broker.addr(), "bp/stuck").await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v311("bp-pub2")).await;
    send_all(&mut publisher, "bp/stuck").await;
    // The stuck client never acknowledges; after the timeout its queue's overflow policy
    // applies and the publisher goes on.
    expect_pubacks(&mut publisher, usize::from(MESSAGES)).await;
}

#[tokio::test]
async fn backpressure_timeout_zero_applies_the_overflow_policy_at_once() {
    let broker = small_queues(Duration::ZERO).await;
    let mut sub = subscriber(broker.addr(), "bp/zero").await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v311("bp-pub3")).await;
    send_all(&mut publisher, "bp/zero").await;
    expect_pubacks(&mut publisher, usize::from(MESSAGES)).await;
    // drop-oldest with room for 4 in flight and 10 queued: the first 4 and the newest 10.
    let mut delivered = Vec::new();
    while let Received::Packet(Packet::Publish(p)) =
        sub.next_event(Duration::from_millis(300)).await
    {
        let id = p.packet_id.expect("QoS 1 delivery has a packet id").get();
        sub.send(puback(id)).await;
        delivered.push(std::str::from_utf8(&p.payload).unwrap_or("").to_owned());
    }
    assert!(
        delivered.len() < usize::from(MESSAGES),
        "without backpressure a full queue drops messages, got {}",
        delivered.len()
    );
}

#[tokio::test]
async fn clients_publishing_to_each_other_both_get_everything() {
    // Each client's deliveries need its acknowledgements, which arrive behind its own
    // publishes: acknowledgements pass held-back publishes, so neither waits on the other.
    let broker = small_queues(Duration::from_secs(10)).await;
    let mut a = subscriber(broker.addr(), "bp/to-a").await;
    let mut b = subscriber(broker.addr(), "bp/to-b").await;
    send_all(&mut a, "bp/to-b").await;
    send_all(&mut b, "bp/to-a").await;
    let (to_a, to_b) = tokio::join!(
        pump(&mut a, usize::from(MESSAGES), usize::from(MESSAGES)),
        pump(&mut b, usize::from(MESSAGES), usize::from(MESSAGES))
    );
    assert_eq!(to_a, all_in_order());
    assert_eq!(to_b, all_in_order());
}

#[tokio::test]
async fn backpressure_starts_at_backpressure_above_well_before_the_cap() {
    // A queue cap of 10,000 would swallow all 200 messages; backpressure_above = 10 holds the
    // publisher back long before, and nothing is lost.
    let broker = TestBroker::start(|c| {
        c.queue.max_messages = 10_000;
        c.queue.backpressure_above = 10;
        c.mqtt.max_inflight = 4;
    })
    .await;
    let mut sub = subscriber(broker.addr(), "bp/early").await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v311("bp-pub4")).await;
    send_all(&mut publisher, "bp/early").await;
    held_back_then_lossless(&mut publisher, &mut sub, 100).await;
}
