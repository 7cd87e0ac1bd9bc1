//! Shared subscriptions `$share/<group>/<filter>` over real sockets (MQTT 5.0 section 4.8.2).

use std::collections::BTreeSet;
use std::time::Duration;

use test_support::*;
use vane_proto::{Packet, Publish};

async fn member(
    broker: &TestBroker,
    id: &str,
    filter: &str,
    qos: u8,
    persistent: bool,
) -> TestClient {
    let connect = if persistent {
        connect_v5_persistent(id)
    } else {
        connect_v5(id)
    };
    let mut c = TestClient::connect(broker.addr(), connect).await;
    c.send(subscribe(1, filter, qos)).await;
    c.expect(suback(1, &[qos])).await;
    c
}

/// Publishes `count` QoS 1 messages with payloads `0..count`, reading the acknowledgements.
async fn publish_numbered(publisher: &mut TestClient, topic: &str, count: u16) {
    for i in 0..count {
        publisher
            .send(publish(topic, 1, i + 1, i.to_string()))
            .await;
        match publisher.recv().await {
            Some(Packet::PubAck(_)) => {}
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// Receives publishes until nothing arrives for a while, acknowledging QoS 1 when `ack`.
async fn collect(client: &mut TestClient, ack: bool) -> Vec<Publish> {
    let mut got = Vec::new();
    loop {
        match client.next_event(Duration::from_millis(400)).await {
            Received::Packet(Packet::Publish(p)) => {
                if let (true, Some(id)) = (ack, p.packet_id) {
                    client.send(puback(id.get())).await;
                }
                got.push(p);
            }
            Received::Timeout => return got,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn payloads(publishes: &[Publish]) -> BTreeSet<String> {
    publishes
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn each_message_goes_to_exactly_one_member() {
    // MQTT 5.0 section 4.8.2: a message matching a shared subscription is sent to one member.
    let broker = TestBroker::start_default().await;
    let mut a = member(&broker, &unique_id("a"), "$share/g/jobs/+", 1, false).await;
    let mut b = member(&broker, &unique_id("b"), "$share/g/jobs/+", 1, false).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("p"))).await;
    publish_numbered(&mut publisher, "jobs/1", 10).await;
    let (got_a, got_b) = (collect(&mut a, true).await, collect(&mut b, true).await);
    assert_eq!(got_a.len() + got_b.len(), 10, "none lost, none twice");
    assert!(payloads(&got_a).is_disjoint(&payloads(&got_b)));
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "round robin uses both members"
    );
    assert!(got_a.iter().chain(&got_b).all(|p| &*p.topic == "jobs/1"));
}

#[tokio::test]
async fn an_offline_member_is_passed_over() {
    // A member whose persistent session is offline does not hold up the group.
    let broker = TestBroker::start_default().await;
    let offline_id = unique_id("off");
    member(&broker, &offline_id, "$share/g/t", 1, true)
        .await
        .disconnect()
        .await;
    let mut online = member(&broker, &unique_id("on"), "$share/g/t", 1, false).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("p"))).await;
    publish_numbered(&mut publisher, "t", 6).await;
    assert_eq!(collect(&mut online, true).await.len(), 6);
    let (mut back, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v5_persistent(&offline_id)).await;
    assert!(ack.session_present);
    back.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unacknowledged_qos1_goes_to_another_member_when_a_member_leaves() {
    // MQTT 5.0 section 4.8.2: QoS 1 messages a member did not acknowledge may be sent to
    // another member once it loses its connection.
    let broker = TestBroker::start_default().await;
    let mut silent = member(&broker, &unique_id("silent"), "$share/g/w", 1, false).await;
    let mut worker = member(&broker, &unique_id("worker"), "$share/g/w", 1, false).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("p"))).await;
    publish_numbered(&mut publisher, "w", 8).await;
    let unacked = collect(&mut silent, false).await;
    assert!(!unacked.is_empty());
    drop(silent);
    let got = collect(&mut worker, true).await;
    assert_eq!(
        payloads(&got).len(),
        8,
        "the worker ends up with every message: {:?}",
        payloads(&got)
    );
}

#[tokio::test]
async fn persistent_member_going_offline_hands_over_its_unacknowledged_qos1() {
    let broker = TestBroker::start_default().await;
    let mut silent = member(&broker, &unique_id("silent"), "$share/h/w", 1, true).await;
    let mut worker = member(&broker, &unique_id("worker"), "$share/h/w", 1, false).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("p"))).await;
    publish_numbered(&mut publisher, "w", 8).await;
    assert!(!collect(&mut silent, false).await.is_empty());
    drop(silent);
    assert_eq!(payloads(&collect(&mut worker, true).await).len(), 8);
}

#[tokio::test]
async fn no_retained_messages_for_a_shared_subscription() {
    // MQTT 5.0 section 3.8.4: no retained messages are sent for a shared subscription.
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5(&unique_id("p"))).await;
    publisher
        .send(publish_retained("state/x", 0, 0, "on"))
        .await;
    let mut m = member(&broker, &unique_id("m"), "$share/g/state/#", 0, false).await;
    m.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn mqtt_311_clients_can_share_too() {
    let broker = TestBroker::start_default().await;
    let mut members = Vec::new();
    for i in 0..3 {
        let mut c =
            TestClient::connect(broker.addr(), connect_v311(&unique_id(&format!("m{i}")))).await;
        c.send(subscribe(1, "$share/g/s", 0)).await;
        c.expect(suback(1, &[0])).await;
        members.push(c);
    }
    let mut publisher = TestClient::connect(broker.addr(), connect_v311(&unique_id("p"))).await;
    for i in 0..9 {
        publisher.send(publish("s", 0, 0, i.to_string())).await;
    }
    let mut total = 0;
    for m in &mut members {
        let got = collect(m, false).await.len();
        assert_eq!(got, 3, "round robin over three members");
        total += got;
    }
    assert_eq!(total, 9);
}
