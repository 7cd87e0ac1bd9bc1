//! Persistent sessions with the embedded store, in process: offline queues kept on disk and
//! read back in order, and everything a session holds surviving a graceful restart on the
//! same store directory (the SIGKILL cases are in `durability.rs`).

use std::path::Path;
use std::time::Duration;

use test_support::*;
use vane_proto::{Packet, Publish};

async fn start(dir: &Path) -> TestBroker {
    let dir = dir.display().to_string();
    TestBroker::start(move |c| {
        c.store.durability = vane_config::Durability::Sync;
        c.store.dir = dir;
    })
    .await
}

async fn persistent_subscriber(broker: &TestBroker, id: &str, filter: &str, qos: u8) {
    let mut c = TestClient::connect(broker.addr(), connect_v311_persistent(id)).await;
    c.send(subscribe(1, filter, qos)).await;
    c.expect(suback(1, &[qos])).await;
    c.disconnect().await;
}

/// Publishes `count` QoS 1 messages numbered from `first`, waiting for each PUBACK.
async fn publish_numbered(broker: &TestBroker, topic: &str, first: u32, count: u32) {
    let mut p = TestClient::connect(broker.addr(), connect_v311(&unique_id("pub"))).await;
    for i in first..first + count {
        let id = u16::try_from(i % 60_000 + 1).expect("fits");
        p.send(publish(topic, 1, id, i.to_string())).await;
        match p.recv().await {
            Some(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    p.disconnect().await;
}

/// Receives publishes until none comes for a while, acknowledging QoS 1 ones.
async fn collect(client: &mut TestClient) -> Vec<Publish> {
    let mut got = Vec::new();
    loop {
        match client.next_event(Duration::from_millis(500)).await {
            Received::Packet(Packet::Publish(p)) => {
                if p.qos == qos(1) {
                    if let Some(id) = p.packet_id {
                        client.send(puback(id.get())).await;
                    }
                }
                got.push(p);
            }
            Received::Timeout => return got,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn numbers(publishes: &[Publish]) -> Vec<u32> {
    publishes
        .iter()
        .map(|p| {
            String::from_utf8_lossy(&p.payload)
                .parse()
                .expect("numbered payload")
        })
        .collect()
}

#[tokio::test]
async fn an_offline_queue_kept_on_disk_comes_back_in_order() {
    // [MQTT-3.1.2-5] QoS 1 messages for an offline persistent session are kept, and
    // [MQTT-4.6.0-6] delivered in the order they were published.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    persistent_subscriber(&broker, "disk-q", "q/#", 1).await;
    publish_numbered(&broker, "q/a", 0, 1500).await;
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("disk-q")).await;
    assert!(ack.session_present);
    // More arrive while the queue on disk is read back: they come after it.
    let late = tokio::spawn({
        let addr_broker = broker.addr();
        async move {
            let mut p = TestClient::connect(addr_broker, connect_v311("late-pub")).await;
            for i in 1500..1600u32 {
                p.send(publish("q/b", 1, (i - 1499) as u16, i.to_string()))
                    .await;
                match p.recv().await {
                    Some(Packet::PubAck(_)) => {}
                    other => panic!("expected PUBACK, got {other:?}"),
                }
            }
        }
    });
    let got = collect(&mut sub).await;
    late.await.expect("late publisher");
    let mut got = numbers(&got);
    got.extend(numbers(&collect(&mut sub).await));
    assert_eq!(got, (0..1600).collect::<Vec<_>>());
    broker.stop().await;
}

#[tokio::test]
async fn a_graceful_restart_keeps_sessions_queues_and_retained_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    persistent_subscriber(&broker, "keeper", "k/+", 1).await;
    publish_numbered(&broker, "k/x", 0, 50).await;
    let mut p = TestClient::connect(broker.addr(), connect_v311("retainer")).await;
    p.send(publish_retained("r/1", 1, 1, "kept")).await;
    p.expect(puback(1)).await;
    p.disconnect().await;
    broker.stop().await;

    let broker = start(dir.path()).await;
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("keeper")).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2] the session survived");
    assert_eq!(
        numbers(&collect(&mut sub).await),
        (0..50).collect::<Vec<_>>()
    );
    // The subscription survived too: a new message reaches it without a new SUBSCRIBE.
    publish_numbered(&broker, "k/y", 50, 1).await;
    assert_eq!(numbers(&collect(&mut sub).await), vec![50]);
    let mut r = TestClient::connect(broker.addr(), connect_v311("reader")).await;
    r.send(subscribe(1, "r/#", 1)).await;
    r.expect(suback(1, &[1])).await;
    let retained = r.recv_publish().await;
    assert_eq!(&retained.payload[..], b"kept");
    assert!(retained.retain, "[MQTT-3.3.1-8] sent with the retain flag");
    broker.stop().await;
}

#[tokio::test]
async fn qos2_flows_resume_under_their_packet_ids_after_a_restart() {
    // Exactly once across a restart [MQTT-4.3.3], [MQTT-4.4.0-1]: an unacknowledged QoS 2
    // PUBLISH is resent with DUP under the same packet id; after PUBREC only PUBREL is.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("q2")).await;
    sub.send(subscribe(1, "x/#", 2)).await;
    sub.expect(suback(1, &[2])).await;
    let mut p = TestClient::connect(broker.addr(), connect_v311("q2-pub")).await;
    p.send(publish("x/1", 2, 1, "once")).await;
    p.expect(pubrec(1)).await;
    let first = sub.recv_publish().await;
    let id = first.packet_id.expect("QoS 2 has an id");
    assert!(!first.dup);
    drop(sub); // gone without PUBREC
    broker.stop().await;

    let broker = start(dir.path()).await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("q2")).await;
    let again = sub.recv_publish().await;
    assert_eq!(again.packet_id, Some(id), "same packet id");
    assert!(again.dup, "[MQTT-3.3.1-1] DUP on a resend");
    sub.send(pubrec(id.get())).await;
    sub.expect(pubrel(id.get())).await;
    drop(sub); // gone without PUBCOMP
    broker.stop().await;

    let broker = start(dir.path()).await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("q2")).await;
    // Only PUBREL again: the message itself was received once [MQTT-4.3.3-2].
    sub.expect(pubrel(id.get())).await;
    sub.send(pubcomp(id.get())).await;
    sub.expect_nothing(Duration::from_millis(500)).await;
    broker.stop().await;
}

#[tokio::test]
async fn an_inbound_qos2_id_survives_a_restart() {
    // [MQTT-4.3.3-9] a QoS 2 PUBLISH resent after PUBREC is not forwarded again, also when
    // the broker restarted in between.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    persistent_subscriber(&broker, "watcher", "in/#", 1).await;
    let mut p = TestClient::connect(broker.addr(), connect_v311_persistent("q2-in")).await;
    p.send(publish("in/1", 2, 7, "only-once")).await;
    p.expect(pubrec(7)).await;
    drop(p);
    broker.stop().await;

    let broker = start(dir.path()).await;
    let mut p = TestClient::connect(broker.addr(), connect_v311_persistent("q2-in")).await;
    let Packet::Publish(mut resend) = publish("in/1", 2, 7, "only-once") else {
        unreachable!("publish builds a PUBLISH")
    };
    resend.dup = true;
    p.send(Packet::Publish(resend)).await;
    p.expect(pubrec(7)).await;
    p.send(pubrel(7)).await;
    p.expect(pubcomp(7)).await;
    let mut w = TestClient::connect(broker.addr(), connect_v311_persistent("watcher")).await;
    assert_eq!(
        collect(&mut w)
            .await
            .iter()
            .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
            .collect::<Vec<_>>(),
        vec!["only-once".to_string()]
    );
    broker.stop().await;
}

/// A v5 client with a session of `expiry` seconds and a QoS 1 will on `topic` delayed by
/// `delay` seconds, which then loses its connection without DISCONNECT.
async fn vanish_with_delayed_will(
    broker: &TestBroker,
    id: &str,
    topic: &str,
    delay: u32,
    expiry: u32,
) {
    let mut connect = with_will(connect_v5(id), topic, "gone", 1, false);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(expiry);
    if let Some(will) = connect.will.as_mut() {
        will.properties.will_delay_interval = Some(delay);
    }
    let c = TestClient::connect(broker.addr(), connect).await;
    drop(c);
    // The broker notices the closed socket and parks the will with the session.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_will_delay_that_ran_out_while_the_broker_was_down_publishes_the_will_at_start() {
    // [MQTT-3.1.3-9] the will goes when the delay has passed; the delay counts from the
    // disconnect, not from the restart.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    persistent_subscriber(&broker, "will-watcher", "wills/#", 1).await;
    vanish_with_delayed_will(&broker, "mortal", "wills/mortal", 1, 3600).await;
    broker.stop().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let broker = start(dir.path()).await;
    let mut w = TestClient::connect(broker.addr(), connect_v311_persistent("will-watcher")).await;
    let got = collect(&mut w).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&got[0].topic[..], "wills/mortal");
    broker.stop().await;
}

#[tokio::test]
async fn a_will_delay_still_running_at_restart_waits_for_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let mut w = TestClient::connect(broker.addr(), connect_v311("early-watcher")).await;
    w.send(subscribe(1, "wills/#", 1)).await;
    w.expect(suback(1, &[1])).await;
    vanish_with_delayed_will(&broker, "slow", "wills/slow", 3, 3600).await;
    drop(w);
    broker.stop().await;
    let broker = start(dir.path()).await;
    let mut w = TestClient::connect(broker.addr(), connect_v311("late-watcher")).await;
    w.send(subscribe(1, "wills/#", 1)).await;
    w.expect(suback(1, &[1])).await;
    w.expect_nothing(Duration::from_millis(1000)).await;
    w.set_timeout(Duration::from_secs(5));
    let will = w.recv_publish().await;
    assert_eq!(&will.topic[..], "wills/slow");
    broker.stop().await;
}

#[tokio::test]
async fn a_session_that_expired_while_the_broker_was_down_is_gone() {
    // [MQTT-3.1.2-23] the session lasts its expiry interval after the disconnect, broker
    // downtime included.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    let mut connect = connect_v5("short-lived");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(1);
    let mut c = TestClient::connect(broker.addr(), connect.clone()).await;
    c.send(subscribe(1, "s/#", 1)).await;
    c.expect(suback(1, &[1])).await;
    c.disconnect().await;
    broker.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let broker = start(dir.path()).await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert!(
        !ack.session_present,
        "the session expired during the downtime"
    );
    broker.stop().await;
}

#[tokio::test]
async fn max_session_expiry_ends_stored_v3_sessions_after_a_restart_too() {
    // MQTT 3.1.1 persistent sessions never expire by the protocol; `mqtt.max_session_expiry`
    // caps them, including sessions stored before the cap was configured.
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start(dir.path()).await;
    persistent_subscriber(&broker, "v3-capped", "capped/#", 1).await;
    broker.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store_dir = dir.path().display().to_string();
    let broker = TestBroker::start(move |c| {
        c.store.durability = vane_config::Durability::Sync;
        c.store.dir = store_dir;
        c.mqtt.max_session_expiry = Some(Duration::from_secs(1));
    })
    .await;
    let (_c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("v3-capped")).await;
    assert!(
        !ack.session_present,
        "offline for longer than the cap, the session is gone"
    );
    broker.stop().await;
}
