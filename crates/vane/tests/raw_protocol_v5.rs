//! Raw-packet integration tests of MQTT 5.0 behaviour: session expiry, will delay, flow
//! control, topic aliases, subscription options and message expiry. Clause numbers are
//! MQTT 5.0's.

use std::net::SocketAddr;
use std::time::Duration;

use test_support::vane_proto::{
    ConnAckReason, Disconnect, DisconnectProperties, DisconnectReason, Packet, ProtocolVersion,
    PubAck, Publish, QoS, RetainHandling, Subscribe, SubscribeProperties, SubscriptionOptions,
};
use test_support::*;

const QUIET: Duration = Duration::from_millis(300);

async fn v5(addr: SocketAddr, prefix: &str) -> TestClient {
    TestClient::connect(addr, connect_v5(&unique_id(prefix))).await
}

/// SUBSCRIBE to one filter with full MQTT 5.0 options.
fn subscribe_with(
    packet_id: u16,
    filter: &str,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(packet_id),
        properties: SubscribeProperties {
            subscription_identifier: subscription_id,
            user_properties: Vec::new(),
        },
        filters: vec![(filter.to_owned().into(), options)],
    })
}

fn options(qos_level: u8) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos(qos_level))
}

/// A PUBLISH carrying a topic alias.
fn aliased(topic: &str, alias: u16, payload: &str) -> Packet {
    let mut p = publish_packet(topic, 0, 0, payload, false);
    p.properties.topic_alias = Some(alias);
    Packet::Publish(p)
}

async fn publish_acked(c: &mut TestClient, packet: Publish) {
    let id = packet.packet_id.expect("QoS 1 publish");
    c.send(Packet::Publish(packet)).await;
    match c.recv().await {
        Some(Packet::PubAck(a)) if a.packet_id == id => {}
        other => panic!("expected PUBACK {id}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Session expiry and will delay
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn session_expiry_zero_ends_the_session_with_the_connection() {
    // Section 3.1.2.11.2: an absent Session Expiry Interval means 0, the session ends when the
    // connection closes, so [MQTT-3.2.2-3] a later Clean Start 0 gets Session Present 0.
    let broker = TestBroker::start_default().await;
    let mut c = connect_v5("expiry0");
    c.clean_start = false;
    let first = TestClient::connect(broker.addr(), c.clone()).await;
    first.disconnect().await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), c).await;
    assert_eq!(ack.reason, ConnAckReason::Success);
    assert!(!ack.session_present);
}

#[tokio::test]
async fn session_outlives_the_connection_for_its_expiry_interval() {
    // [MQTT-3.1.2-23] with a Session Expiry Interval > 0 the session is stored after the
    // connection closes; [MQTT-3.2.2-3] Clean Start 0 then gets Session Present 1.
    let broker = TestBroker::start_default().await;
    let first = TestClient::connect(broker.addr(), connect_v5_persistent("expiry-max")).await;
    first.disconnect().await;
    let (_c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v5_persistent("expiry-max")).await;
    assert!(ack.session_present);
}

#[tokio::test]
async fn session_is_discarded_when_its_expiry_interval_passes() {
    // Section 3.1.2.11.2: the session lasts as long as the connection plus the Session Expiry
    // Interval; after that there is no session, so [MQTT-3.2.2-3] Session Present is 0.
    let broker = TestBroker::start_default().await;
    let mut c = connect_v5("expiry1");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(1);
    let first = TestClient::connect(broker.addr(), c.clone()).await;
    first.disconnect().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), c).await;
    assert!(!ack.session_present, "the session expired 0.5 s ago");
}

#[tokio::test]
async fn max_session_expiry_caps_what_a_client_asks_for_and_connack_says_so() {
    // Section 3.2.2.3.2: a server that uses another Session Expiry Interval than the client's
    // sends it in CONNACK; `mqtt.max_session_expiry` caps it. A request within the cap is
    // granted as asked, without the property.
    let broker = TestBroker::start(|c| {
        c.mqtt.max_session_expiry = Some(Duration::from_secs(2));
    })
    .await;
    for (asked, told) in [
        (Some(3600), Some(2)),
        (Some(u32::MAX), Some(2)),
        (Some(1), None),
    ] {
        let mut c = connect_v5(&unique_id("expiry-cap"));
        c.clean_start = false;
        c.properties.session_expiry_interval = asked;
        let (_c, ack) = TestClient::connect_with_ack(broker.addr(), c).await;
        assert_eq!(ack.reason, ConnAckReason::Success);
        assert_eq!(
            ack.properties.session_expiry_interval, told,
            "asked for {asked:?}"
        );
    }
}

#[tokio::test]
async fn a_session_capped_by_max_session_expiry_ends_after_the_cap() {
    // The cap is the interval in force: the session is gone once it has passed, whatever the
    // client asked for, so [MQTT-3.2.2-3] Session Present is 0.
    let broker = TestBroker::start(|c| {
        c.mqtt.max_session_expiry = Some(Duration::from_secs(1));
    })
    .await;
    let mut c = connect_v5("expiry-capped");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    let mut first = TestClient::connect(broker.addr(), c.clone()).await;
    // A DISCONNECT asking for more is held to the cap too.
    first
        .send(Packet::Disconnect(Disconnect {
            reason: DisconnectReason::NormalDisconnection,
            properties: DisconnectProperties {
                session_expiry_interval: Some(7200),
                ..Default::default()
            },
        }))
        .await;
    assert_eq!(first.expect_closed().await, None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), c).await;
    assert!(!ack.session_present, "the cap ran out 0.5 s ago");
}

#[tokio::test]
async fn disconnect_can_end_the_session() {
    // Section 3.14.2.2.2: the client may change the Session Expiry Interval in DISCONNECT; 0
    // ends the session now, so [MQTT-3.2.2-3] a later Clean Start 0 gets Session Present 0.
    let broker = TestBroker::start_default().await;
    let mut first = TestClient::connect(broker.addr(), connect_v5_persistent("dc-expiry")).await;
    first
        .send(Packet::Disconnect(Disconnect {
            reason: DisconnectReason::NormalDisconnection,
            properties: DisconnectProperties {
                session_expiry_interval: Some(0),
                ..Default::default()
            },
        }))
        .await;
    assert_eq!(first.expect_closed().await, None);
    let (_c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v5_persistent("dc-expiry")).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn disconnect_raising_session_expiry_from_zero_is_a_protocol_error() {
    // [MQTT-3.14.2-2] a non-zero Session Expiry Interval in DISCONNECT after CONNECT had 0 is a
    // Protocol Error: not a valid DISCONNECT, so the broker answers DISCONNECT 0x82 and, the
    // connection having ended without a valid DISCONNECT, publishes the will.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "bad-dc/will", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let mut c = TestClient::connect(
        broker.addr(),
        with_will(connect_v5("bad-dc"), "bad-dc/will", "x", 0, false),
    )
    .await;
    c.send(Packet::Disconnect(Disconnect {
        reason: DisconnectReason::NormalDisconnection,
        properties: DisconnectProperties {
            session_expiry_interval: Some(60),
            ..Default::default()
        },
    }))
    .await;
    c.expect_closed_with(DisconnectReason::ProtocolError).await;
    watcher.expect(publish("bad-dc/will", 0, 0, "x")).await;
}

#[tokio::test]
async fn disconnect_with_will_message_publishes_the_will() {
    // [MQTT-3.14.4-3] only DISCONNECT 0x00 discards the will; 0x04 Disconnect with Will
    // Message has it published.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "will5/t", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let mut c = TestClient::connect(
        broker.addr(),
        with_will(connect_v5("will04"), "will5/t", "bye", 0, false),
    )
    .await;
    c.send(Packet::Disconnect(Disconnect::new(
        DisconnectReason::DisconnectWithWillMessage,
    )))
    .await;
    assert_eq!(c.expect_closed().await, None);
    watcher.expect(publish("will5/t", 0, 0, "bye")).await;
}

#[tokio::test]
async fn will_delay_interval_postpones_the_will_and_reconnect_cancels_it() {
    // Section 3.1.3.2.2: the will waits for the Will Delay Interval; [MQTT-3.1.3-9] if the
    // session is reconnected before it passes, the will is not sent.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "delayed/t", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let mut connect = with_will(
        connect_v5_persistent("delayed"),
        "delayed/t",
        "late",
        0,
        false,
    );
    if let Some(will) = connect.will.as_mut() {
        will.properties.will_delay_interval = Some(5);
    }
    let c = TestClient::connect(broker.addr(), connect.clone()).await;
    drop(c);
    watcher.expect_nothing(Duration::from_millis(500)).await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert!(ack.session_present);
    watcher.expect_nothing(QUIET).await;
}

/// A persistent MQTT 5.0 CONNECT with a will on `topic` delayed by an hour.
fn with_delayed_will(client_id: &str, topic: &str) -> test_support::vane_proto::Connect {
    let mut connect = with_will(connect_v5_persistent(client_id), topic, "gone", 0, false);
    if let Some(will) = connect.will.as_mut() {
        will.properties.will_delay_interval = Some(3600);
    }
    connect
}

#[tokio::test]
async fn clean_start_after_a_lost_connection_sends_the_delayed_will_at_once() {
    // Section 3.1.3.2.2: the will waits for the delay "or the Session ends, whichever happens
    // first"; Clean Start ends the old session [MQTT-3.1.2-4], so its will goes now.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "delayed/clean", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let id = unique_id("dc");
    drop(TestClient::connect(broker.addr(), with_delayed_will(&id, "delayed/clean")).await);
    watcher.expect_nothing(QUIET).await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5(&id)).await;
    assert!(!ack.session_present);
    assert_eq!(&watcher.recv_publish().await.payload[..], b"gone");
}

#[tokio::test]
async fn clean_start_taking_over_a_live_connection_sends_its_delayed_will() {
    // [MQTT-3.1.4-3] the old connection is closed (0x8E); its session ends with Clean Start,
    // so the delayed will is published at once rather than forgotten.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "delayed/live", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let id = unique_id("dl");
    let mut old = TestClient::connect(broker.addr(), with_delayed_will(&id, "delayed/live")).await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5(&id)).await;
    assert!(!ack.session_present);
    old.expect_closed_with(DisconnectReason::SessionTakenOver)
        .await;
    assert_eq!(&watcher.recv_publish().await.payload[..], b"gone");
}

#[tokio::test]
async fn resuming_a_live_session_cancels_its_delayed_will() {
    // [MQTT-3.1.3-9] a new connection to the same session within the delay: no will.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "delayed/resume", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let id = unique_id("dr");
    let connect = with_delayed_will(&id, "delayed/resume");
    let mut old = TestClient::connect(broker.addr(), connect.clone()).await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert!(ack.session_present);
    old.expect_closed_with(DisconnectReason::SessionTakenOver)
        .await;
    watcher.expect_nothing(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// CONNACK and limits
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connack_announces_the_broker_limits() {
    // Section 3.2.2.3: Receive Maximum, Maximum QoS [MQTT-3.2.2-9], Maximum Packet Size, Topic
    // Alias Maximum and the features the broker lacks (shared subscriptions).
    let broker = TestBroker::start(|c| {
        c.mqtt.max_qos = 1;
        c.mqtt.receive_maximum = 7;
        c.mqtt.topic_alias_maximum = 3;
        c.mqtt.max_packet_size = vane_config::ByteSize(4096);
    })
    .await;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5("limits")).await;
    let p = ack.properties;
    assert_eq!(p.receive_maximum, Some(7));
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.topic_alias_maximum, Some(3));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.shared_subscription_available, Some(true));
}

#[tokio::test]
async fn publish_above_maximum_qos_gets_disconnect_0x9b() {
    // Section 3.2.2.3.4: a PUBLISH above the announced Maximum QoS is a Protocol Error,
    // answered with DISCONNECT 0x9B QoS not supported.
    let broker = TestBroker::start(|c| c.mqtt.max_qos = 1).await;
    let mut c = v5(broker.addr(), "qos2").await;
    c.send(publish("q/t", 2, 1, "x")).await;
    c.expect_closed_with(DisconnectReason::QoSNotSupported)
        .await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn will_above_maximum_qos_is_refused_with_0x9b() {
    // Section 3.2.2.3.4: a CONNECT whose Will QoS exceeds the broker's capabilities is refused
    // (CONNACK 0x9B QoS not supported), then the connection is closed.
    let broker = TestBroker::start(|c| c.mqtt.max_qos = 0).await;
    let connect = with_will(connect_v5("will-qos"), "w", "x", 1, false);
    let (mut c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert_eq!(ack.reason, ConnAckReason::QoSNotSupported);
    assert_eq!(c.expect_closed().await, None);
}

#[tokio::test]
async fn receive_maximum_exceeded_gets_disconnect_0x93() {
    // [MQTT-3.3.4-7] the client may not have more unacknowledged QoS 2 publishes than the
    // broker's Receive Maximum (mqtt.receive_maximum = 2): DISCONNECT 0x93.
    let broker = TestBroker::start(|c| c.mqtt.receive_maximum = 2).await;
    let mut c = v5(broker.addr(), "flood").await;
    for id in 1..=2 {
        c.send(publish("rm/t", 2, id, "x")).await;
        match c.recv().await {
            Some(Packet::PubRec(r)) if r.packet_id == pid(id) => {}
            other => panic!("expected PUBREC {id}, got {other:?}"),
        }
    }
    c.send(publish("rm/t", 2, 3, "x")).await;
    c.expect_closed_with(DisconnectReason::ReceiveMaximumExceeded)
        .await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn client_receive_maximum_limits_unacknowledged_deliveries() {
    // [MQTT-3.3.4-9] the broker sends no more unacknowledged QoS 1/2 PUBLISHes than the
    // client's Receive Maximum (2 here).
    let broker = TestBroker::start_default().await;
    let mut connect = connect_v5("slow5");
    connect.properties.receive_maximum = Some(2);
    let mut sub = TestClient::connect(broker.addr(), connect).await;
    sub.send(subscribe(1, "rx/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    let mut publisher = v5(broker.addr(), "pub").await;
    for i in 1..=4u16 {
        publish_acked(
            &mut publisher,
            publish_packet("rx/t", 1, i, i.to_string(), false),
        )
        .await;
    }
    let a = sub.recv_publish().await;
    let b = sub.recv_publish().await;
    assert_eq!((&a.payload[..], &b.payload[..]), (&b"1"[..], &b"2"[..]));
    sub.expect_nothing(QUIET).await;
    sub.send(Packet::PubAck(PubAck::new(a.packet_id.expect("id"))))
        .await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"3");
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn messages_larger_than_the_client_maximum_packet_size_are_not_sent() {
    // [MQTT-3.1.2-24] the broker does not send a packet larger than the client's Maximum
    // Packet Size; [MQTT-3.1.2-25] it discards it as if sent, and later ones still flow.
    let broker = TestBroker::start_default().await;
    let mut connect = connect_v5("small");
    connect.properties.maximum_packet_size = Some(64);
    let mut sub = TestClient::connect(broker.addr(), connect).await;
    sub.send(subscribe(1, "mps/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    let mut publisher = v5(broker.addr(), "pub").await;
    publish_acked(
        &mut publisher,
        publish_packet("mps/t", 1, 1, "x".repeat(200), false),
    )
    .await;
    publish_acked(&mut publisher, publish_packet("mps/t", 1, 2, "fits", false)).await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"fits");
    sub.send(Packet::PubAck(PubAck::new(p.packet_id.expect("id"))))
        .await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn non_minimal_remaining_length_closes() {
    // [MQTT-1.5.5-1] a variable byte integer uses the fewest bytes: PINGREQ with remaining
    // length 0 written as 0x80 0x00 is malformed.
    let broker = TestBroker::start_default().await;
    let mut c = v5(broker.addr(), "varint").await;
    c.send_raw(&[0xC0, 0x80, 0x00]).await;
    c.expect_closed_with(DisconnectReason::MalformedPacket)
        .await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn auth_without_authentication_method_closes() {
    // Section 4.12: AUTH when CONNECT named no Authentication Method is a Protocol Error.
    let broker = TestBroker::start_default().await;
    let mut c = v5(broker.addr(), "auth").await;
    c.send_raw(&[0xF0, 0x00]).await;
    c.expect_closed_with(DisconnectReason::ProtocolError).await;
    // [MQTT-4.12.0-1] an unsupported Authentication Method: CONNACK 0x8C, then the close.
    let mut connect = connect_v5("auth-method");
    connect.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let (mut c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert_eq!(ack.reason, ConnAckReason::BadAuthenticationMethod);
    assert_eq!(c.expect_closed().await, None);
}

// ---------------------------------------------------------------------------------------------
// Topic aliases
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn topic_alias_stands_for_its_topic() {
    // Section 3.3.2.3.4: a PUBLISH with a topic and an alias sets the alias; one with an empty
    // topic and the alias uses it. Subscribers see the full topic.
    let broker = TestBroker::start_default().await;
    let mut sub = v5(broker.addr(), "sub").await;
    sub.send(subscribe(1, "alias/t", 0)).await;
    sub.expect(suback(1, &[0])).await;
    let mut publisher = v5(broker.addr(), "pub").await;
    publisher.send(aliased("alias/t", 1, "first")).await;
    publisher.send(aliased("", 1, "second")).await;
    sub.expect(publish("alias/t", 0, 0, "first")).await;
    sub.expect(publish("alias/t", 0, 0, "second")).await;
}

#[tokio::test]
async fn invalid_topic_aliases_close() {
    // [MQTT-3.3.2-8] alias 0 and [MQTT-3.3.2-9] an alias above the Topic Alias Maximum (2
    // here): DISCONNECT 0x94; an empty topic with an alias never set: Protocol Error.
    let broker = TestBroker::start(|c| c.mqtt.topic_alias_maximum = 2).await;
    let mut c = v5(broker.addr(), "alias0").await;
    c.send(aliased("a", 0, "x")).await;
    c.expect_closed_with(DisconnectReason::TopicAliasInvalid)
        .await;
    let mut c = v5(broker.addr(), "alias3").await;
    c.send(aliased("a", 3, "x")).await;
    c.expect_closed_with(DisconnectReason::TopicAliasInvalid)
        .await;
    let mut c = v5(broker.addr(), "unset").await;
    c.send(aliased("", 1, "x")).await;
    c.expect_closed_with(DisconnectReason::ProtocolError).await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn topic_aliases_do_not_survive_the_connection() {
    // [MQTT-3.3.2-7] alias mappings are not carried from one network connection to the next.
    let broker = TestBroker::start_default().await;
    let connect = connect_v5_persistent("alias-reconnect");
    let mut c = TestClient::connect(broker.addr(), connect.clone()).await;
    c.send(aliased("a/b", 1, "x")).await;
    c.disconnect().await;
    let mut c = TestClient::connect(broker.addr(), connect).await;
    c.send(aliased("", 1, "x")).await;
    c.expect_closed_with(DisconnectReason::ProtocolError).await;
}

// ---------------------------------------------------------------------------------------------
// Subscription options
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn no_local_skips_the_subscribers_own_messages() {
    // [MQTT-3.8.3-3] No Local 1: messages are not forwarded to the publishing connection.
    let broker = TestBroker::start_default().await;
    let mut c = v5(broker.addr(), "self").await;
    let opts = SubscriptionOptions {
        no_local: true,
        ..options(0)
    };
    c.send(subscribe_with(1, "nl/t", opts, None)).await;
    c.expect(suback(1, &[0])).await;
    c.send(publish("nl/t", 1, 2, "mine")).await;
    c.expect(Packet::PubAck(PubAck::with_reason(
        pid(2),
        test_support::vane_proto::PubAckReason::NoMatchingSubscribers,
    )))
    .await;
    c.expect_nothing(QUIET).await;
    let mut other = v5(broker.addr(), "other").await;
    other.send(publish("nl/t", 0, 0, "theirs")).await;
    c.expect(publish("nl/t", 0, 0, "theirs")).await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag() {
    // [MQTT-3.3.1-12] Retain As Published 0: forwarded with RETAIN 0; [MQTT-3.3.1-13] 1: with
    // the RETAIN flag as published.
    let broker = TestBroker::start_default().await;
    let mut plain = v5(broker.addr(), "plain").await;
    plain
        .send(subscribe_with(1, "rap/t", options(0), None))
        .await;
    plain.expect(suback(1, &[0])).await;
    let mut rap = v5(broker.addr(), "rap").await;
    rap.send(subscribe_with(
        1,
        "rap/t",
        SubscriptionOptions {
            retain_as_published: true,
            ..options(0)
        },
        None,
    ))
    .await;
    rap.expect(suback(1, &[0])).await;
    let mut publisher = v5(broker.addr(), "pub").await;
    publisher.send(publish_retained("rap/t", 0, 0, "r")).await;
    plain.expect(publish("rap/t", 0, 0, "r")).await;
    rap.expect(publish_retained("rap/t", 0, 0, "r")).await;
}

#[tokio::test]
async fn retain_handling_options() {
    // [MQTT-3.3.1-9] Retain Handling 0: retained messages at every subscribe; [MQTT-3.3.1-10]
    // 1: only if the subscription is new; [MQTT-3.3.1-11] 2: never.
    let broker = TestBroker::start_default().await;
    let mut publisher = v5(broker.addr(), "pub").await;
    publisher.send(publish_retained("rh/t", 0, 0, "kept")).await;
    // A QoS 1 round trip on the publisher's connection orders the retained publish first.
    publish_acked(
        &mut publisher,
        publish_packet("rh/other", 1, 1, "sync", false),
    )
    .await;

    let mut c = v5(broker.addr(), "rh").await;
    let send_if_new = SubscriptionOptions {
        retain_handling: RetainHandling::SendIfNew,
        ..options(0)
    };
    c.send(subscribe_with(1, "rh/t", send_if_new, None)).await;
    c.expect(suback(1, &[0])).await;
    c.expect(publish_retained("rh/t", 0, 0, "kept")).await;
    c.send(subscribe_with(2, "rh/t", send_if_new, None)).await;
    c.expect(suback(2, &[0])).await;
    c.expect_nothing(QUIET).await;
    let never = SubscriptionOptions {
        retain_handling: RetainHandling::DoNotSend,
        ..options(0)
    };
    c.send(subscribe_with(3, "rh/#", never, None)).await;
    c.expect(suback(3, &[0])).await;
    c.expect_nothing(QUIET).await;
    c.send(subscribe_with(4, "rh/+", options(0), None)).await;
    c.expect(suback(4, &[0])).await;
    c.expect(publish_retained("rh/t", 0, 0, "kept")).await;
}

#[tokio::test]
async fn deliveries_carry_subscription_identifiers() {
    // [MQTT-3.3.4-3] a delivery carries the Subscription Identifiers of the matching
    // subscriptions; [MQTT-3.3.4-4] one copy for overlapping ones carries all of them.
    let broker = TestBroker::start_default().await;
    let mut c = v5(broker.addr(), "sid").await;
    c.send(subscribe_with(1, "sid/+", options(0), Some(11)))
        .await;
    c.expect(suback(1, &[0])).await;
    c.send(subscribe_with(2, "sid/#", options(1), Some(22)))
        .await;
    c.expect(suback(2, &[1])).await;
    let mut publisher = v5(broker.addr(), "pub").await;
    publisher.send(publish("sid/x", 1, 1, "m")).await;
    let p = c.recv_publish().await;
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, [11, 22]);
    assert_eq!(p.qos, QoS::AtLeastOnce);
    c.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn malformed_shared_subscription_filters_are_refused() {
    // [MQTT-4.8.2-1] a share name must be followed by `/` and a topic filter and contain no
    // wildcard: otherwise SUBACK 0x8F Topic Filter invalid (MQTT 3.1.1: 0x80).
    let broker = TestBroker::start_default().await;
    let mut c = v5(broker.addr(), "share").await;
    c.send(subscribe_many(
        1,
        &[("$share/g", 1), ("$share/g+/t", 1), ("$share/g/t", 1)],
    ))
    .await;
    c.expect(suback(1, &[0x8F, 0x8F, 1])).await;
    let mut c3 = TestClient::connect(broker.addr(), connect_v311("share3")).await;
    c3.send(subscribe(1, "$share//t", 1)).await;
    c3.expect(suback(1, &[0x80])).await;
}

// ---------------------------------------------------------------------------------------------
// Message expiry
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn message_expiry_interval_is_forwarded_and_enforced() {
    // [MQTT-3.3.2-6] the forwarded Message Expiry Interval is what remains of it;
    // [MQTT-3.3.2-5] a message that expired while queued for an offline session is not sent.
    let broker = TestBroker::start_default().await;
    let mut live = v5(broker.addr(), "live").await;
    live.send(subscribe(1, "exp/t", 1)).await;
    live.expect(suback(1, &[1])).await;
    let mut offline = TestClient::connect(broker.addr(), connect_v5_persistent("exp-off")).await;
    offline.send(subscribe(1, "exp/t", 1)).await;
    offline.expect(suback(1, &[1])).await;
    offline.disconnect().await;

    let mut publisher = v5(broker.addr(), "pub").await;
    let mut short = publish_packet("exp/t", 1, 1, "short", false);
    short.properties.message_expiry_interval = Some(1);
    publish_acked(&mut publisher, short).await;
    let mut long = publish_packet("exp/t", 1, 2, "long", false);
    long.properties.message_expiry_interval = Some(100);
    publish_acked(&mut publisher, long).await;

    let p = live.recv_publish().await;
    assert_eq!(
        (&p.payload[..], p.properties.message_expiry_interval),
        (&b"short"[..], Some(1))
    );
    let p = live.recv_publish().await;
    assert_eq!(&p.payload[..], b"long");
    let remaining = p
        .properties
        .message_expiry_interval
        .expect("expiry is forwarded");
    assert!(
        (99..=100).contains(&remaining),
        "remaining expiry {remaining}"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut offline, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v5_persistent("exp-off")).await;
    assert!(ack.session_present);
    let p = offline.recv_publish().await;
    assert_eq!(&p.payload[..], b"long", "the expired message is skipped");
    offline.expect_nothing(QUIET).await;
    assert_eq!(offline.version(), ProtocolVersion::V5);
}

#[tokio::test]
async fn delayed_will_is_published_when_the_delay_passes() {
    // Section 3.1.3.2.2: without a reconnect, the will is published once the Will Delay
    // Interval has passed.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "delayed/pass", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let mut connect = with_will(
        connect_v5_persistent(&unique_id("dw")),
        "delayed/pass",
        "gone",
        0,
        false,
    );
    if let Some(will) = connect.will.as_mut() {
        will.properties.will_delay_interval = Some(1);
    }
    drop(TestClient::connect(broker.addr(), connect).await);
    watcher.expect_nothing(Duration::from_millis(600)).await;
    let will = watcher.recv_publish().await;
    assert_eq!(&*will.topic, "delayed/pass");
    assert_eq!(&will.payload[..], b"gone");
}

#[tokio::test]
async fn session_expiring_before_the_will_delay_publishes_the_will() {
    // [MQTT-3.1.3-9] the will is published when the will delay passes or the session ends,
    // whichever happens first.
    let broker = TestBroker::start_default().await;
    let mut watcher = v5(broker.addr(), "watcher").await;
    watcher.send(subscribe(1, "delayed/expiry", 0)).await;
    watcher.expect(suback(1, &[0])).await;
    let mut connect = with_will(
        connect_v5_persistent(&unique_id("de")),
        "delayed/expiry",
        "ended",
        0,
        false,
    );
    connect.properties.session_expiry_interval = Some(1);
    if let Some(will) = connect.will.as_mut() {
        will.properties.will_delay_interval = Some(3600);
    }
    drop(TestClient::connect(broker.addr(), connect.clone()).await);
    assert_eq!(&watcher.recv_publish().await.payload[..], b"ended");
    // The session is gone too.
    connect.will = None;
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn will_payload_marked_utf8_that_is_not_is_refused() {
    // MQTT 5.0 section 3.1.3.2.3 and CONNACK reason 0x99 Payload format invalid.
    let broker = TestBroker::start_default().await;
    let mut connect = with_will(connect_v5(&unique_id("pfi")), "w/t", "x", 0, false);
    if let Some(will) = connect.will.as_mut() {
        will.payload = bytes::Bytes::from_static(&[0xFF, 0xFE]);
        will.properties.payload_format_indicator = Some(true);
    }
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert_eq!(ack.reason, vane_proto::ConnAckReason::PayloadFormatInvalid);
}

#[tokio::test]
async fn configured_redirect_turns_clients_away_with_a_server_reference() {
    // MQTT 5.0 section 4.11: CONNACK 0x9C Use another server / 0x9D Server moved with a
    // Server Reference; MQTT 3.1.1 clients get return code 3.
    for (permanent, reason) in [
        (false, ConnAckReason::UseAnotherServer),
        (true, ConnAckReason::ServerMoved),
    ] {
        let broker = TestBroker::start(|c| {
            c.redirect.server_reference = "mqtt2.example.com:1883".into();
            c.redirect.permanent = permanent;
        })
        .await;
        let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5("moved")).await;
        assert_eq!(ack.reason, reason);
        assert_eq!(
            ack.properties.server_reference.as_deref(),
            Some("mqtt2.example.com:1883")
        );
        let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v311("moved3")).await;
        assert_eq!(ack.reason.v3_return_code(), 3);
    }
}

#[tokio::test]
async fn server_keep_alive_caps_the_client_keep_alive() {
    // MQTT 5.0 section 3.2.2.3.14: the server's keep alive replaces the client's.
    let broker = TestBroker::start(|c| c.mqtt.max_keep_alive = 1).await;
    let (mut c, ack) =
        TestClient::connect_with_ack(broker.addr(), with_keep_alive(connect_v5("ka"), 0)).await;
    assert_eq!(ack.properties.server_keep_alive, Some(1));
    // Held to it: silence for 1.5 s ends the connection with 0x8D.
    c.set_timeout(Duration::from_secs(3));
    c.expect_closed_with(DisconnectReason::KeepAliveTimeout)
        .await;
    let (_c, ack) =
        TestClient::connect_with_ack(broker.addr(), with_keep_alive(connect_v5("ka2"), 1)).await;
    assert_eq!(
        ack.properties.server_keep_alive, None,
        "a keep alive within the cap stands"
    );
}

#[tokio::test]
async fn response_information_is_offered_when_requested() {
    // MQTT 5.0 section 4.10 / 3.2.2.3.15: Response Information only when requested.
    let broker = TestBroker::start_default().await;
    let mut connect = connect_v5("requester");
    connect.properties.request_response_information = Some(true);
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect).await;
    assert_eq!(
        ack.properties.response_information.as_deref(),
        Some("reply/requester")
    );
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5("other")).await;
    assert_eq!(ack.properties.response_information, None);
}

#[tokio::test]
async fn reason_strings_follow_request_problem_information() {
    // [MQTT-3.1.2-29] with Request Problem Information 0 a Reason String may still go in
    // CONNACK or DISCONNECT; Vane then leaves it out of those too, and sends one otherwise.
    let broker = TestBroker::start_default().await;
    let mut c = TestClient::connect(broker.addr(), connect_v5("problems")).await;
    c.send(publish("a/+", 0, 0, "x")).await;
    let d = c.expect_closed().await.expect("a DISCONNECT");
    assert!(d.properties.reason_string.is_some());
    let mut quiet = connect_v5("no-problems");
    quiet.properties.request_problem_information = Some(false);
    let mut c = TestClient::connect(broker.addr(), quiet).await;
    c.send(publish("a/+", 0, 0, "x")).await;
    let d = c.expect_closed().await.expect("a DISCONNECT");
    assert_eq!(d.properties.reason_string, None);
}

#[tokio::test]
async fn redirect_at_shutdown_sends_connected_clients_on() {
    // MQTT 5.0 section 4.11: DISCONNECT 0x9C Use another server with a Server Reference.
    let broker = TestBroker::start(|c| {
        c.redirect.server_reference = "mqtt2.example.com:1883".into();
        c.redirect.when = vane_config::RedirectWhen::Shutdown;
    })
    .await;
    let (mut c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5("migrating")).await;
    assert_eq!(
        ack.reason,
        ConnAckReason::Success,
        "clients are served until shutdown"
    );
    broker.stop().await;
    let d = c.expect_closed().await.expect("a DISCONNECT");
    assert_eq!(d.reason, DisconnectReason::UseAnotherServer);
    assert_eq!(
        d.properties.server_reference.as_deref(),
        Some("mqtt2.example.com:1883")
    );
}

#[tokio::test]
async fn publish_refused_by_every_full_queue_gets_0x97() {
    // MQTT 5.0 section 3.4.2.1, PUBACK 0x97 Quota exceeded: with `queue.overflow = drop-newest`,
    // a message no receiver could queue is reported to its publisher instead of acknowledged.
    let broker = TestBroker::start(|c| {
        c.queue.max_messages = 2;
        c.queue.overflow = vane_config::OverflowPolicy::DropNewest;
    })
    .await;
    let mut sub = TestClient::connect(broker.addr(), connect_v5_persistent("quota-sub")).await;
    sub.send(subscribe(1, "quota/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    sub.disconnect().await;
    let mut publisher = v5(broker.addr(), "quota-pub").await;
    for id in 1..=3u16 {
        publisher.send(publish("quota/t", 1, id, "x")).await;
        match publisher.recv().await {
            Some(Packet::PubAck(ack)) => {
                let expected = if id <= 2 {
                    vane_proto::PubAckReason::Success
                } else {
                    vane_proto::PubAckReason::QuotaExceeded
                };
                assert_eq!(ack.reason, expected, "publish {id}");
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}
