//! Raw-packet integration tests: a real broker on 127.0.0.1:0, clients that send exactly the
//! bytes each case needs. Every test names the normative statement it checks; clause numbers
//! are MQTT 3.1.1's unless marked "(5.0)". Every hostile case ends by checking the broker still
//! serves a well-behaved client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use test_support::vane_config::OverflowPolicy;
use test_support::vane_proto::{
    ConnAckReason, DisconnectReason, Packet, ProtocolVersion, PubAck, PubAckReason, PubComp,
    PubCompReason, Publish, QoS, UnsubAck, UnsubAckReason,
};
use test_support::*;

/// How long "nothing arrives" is watched for. Deliveries on loopback take well under 10 ms.
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn connected(addr: SocketAddr, prefix: &str) -> TestClient {
    TestClient::connect(addr, connect_v311(&unique_id(prefix))).await
}

/// A fresh MQTT 3.1.1 client subscribed to `filter` at `qos`.
async fn subscribed(addr: SocketAddr, filter: &str, qos: u8) -> TestClient {
    let mut c = connected(addr, "sub").await;
    c.send(subscribe(1, filter, qos)).await;
    c.expect(suback(1, &[qos])).await;
    c
}

/// Publishes at QoS 1 and waits for the PUBACK, so the message has been routed.
async fn publish_acked(c: &mut TestClient, topic: &str, packet_id: u16, payload: &str) {
    c.send(publish(topic, 1, packet_id, payload)).await;
    c.expect(puback(packet_id)).await;
}

/// A PUBLISH as the broker sends it.
fn delivered(
    topic: &str,
    qos: u8,
    packet_id: u16,
    payload: &str,
    retain: bool,
    dup: bool,
) -> Packet {
    let mut p = publish_packet(topic, qos, packet_id, payload, retain);
    p.dup = dup;
    Packet::Publish(p)
}

/// A packet from its first byte and body, with the remaining length encoded.
fn raw(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    let mut len = body.len();
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// A length-prefixed string or binary field.
fn field(data: &[u8]) -> Vec<u8> {
    let mut out = (data.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// A CONNECT in the 3.x layout (no properties) with the given name, level and flags.
fn raw_connect(name: &[u8], level: u8, flags: u8, client_id: &str) -> Vec<u8> {
    let mut body = field(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&60u16.to_be_bytes());
    body.extend(field(client_id.as_bytes()));
    raw(0x10, &body)
}

/// A PUBLISH whose topic is given as raw bytes.
fn raw_publish(first_byte: u8, topic: &[u8], packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = field(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    raw(first_byte, &body)
}

/// Connects a fresh client of `version`, sends `bytes`, checks the broker closes the connection
/// (for MQTT 5.0 with `v5_reason`) and still serves others afterwards.
async fn connected_then_closed_by(
    addr: SocketAddr,
    version: ProtocolVersion,
    bytes: &[u8],
    v5_reason: DisconnectReason,
) {
    let id = unique_id("hostile");
    let connect = match version {
        ProtocolVersion::V5 => connect_v5(&id),
        ProtocolVersion::V3_1_1 => connect_v311(&id),
        ProtocolVersion::V3_1 => connect_v31(&id[..id.len().min(23)]),
    };
    let mut c = TestClient::connect(addr, connect).await;
    c.send_raw(bytes).await;
    c.expect_closed_with(v5_reason).await;
    assert_broker_healthy(addr).await;
}

/// Opens a socket, sends `bytes` before any CONNECT, checks the broker closes it without a
/// CONNACK, and still serves others afterwards.
async fn closed_before_connack(addr: SocketAddr, bytes: &[u8]) {
    let mut c = TestClient::open(addr, ProtocolVersion::V3_1_1).await;
    c.send_raw(bytes).await;
    assert_eq!(c.expect_closed().await, None);
    assert_broker_healthy(addr).await;
}

// ---------------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn first_packet_must_be_connect() {
    // [MQTT-3.1.0-1] the first packet is CONNECT; anything else closes the connection.
    let broker = TestBroker::start_default().await;
    closed_before_connack(broker.addr(), &[0xC0, 0x00]).await; // PINGREQ
    closed_before_connack(
        broker.addr(),
        &encode(ProtocolVersion::V3_1_1, &subscribe(1, "a", 0)),
    )
    .await;
    closed_before_connack(
        broker.addr(),
        &encode(ProtocolVersion::V3_1_1, &publish("a", 0, 0, "x")),
    )
    .await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_violation() {
    // [MQTT-3.1.0-2] a second CONNECT is a protocol violation: the client is disconnected.
    let broker = TestBroker::start_default().await;
    let again = encode(
        ProtocolVersion::V3_1_1,
        &Packet::Connect(Box::new(connect_v311("again"))),
    );
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V3_1_1,
        &again,
        DisconnectReason::ProtocolError,
    )
    .await;
    // (5.0) [MQTT-3.1.0-2] the same, with DISCONNECT 0x82 Protocol Error first.
    let again = encode(
        ProtocolVersion::V5,
        &Packet::Connect(Box::new(connect_v5("again"))),
    );
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V5,
        &again,
        DisconnectReason::ProtocolError,
    )
    .await;
}

#[tokio::test]
async fn connect_timeout_closes_a_silent_socket() {
    // Slowloris guard (mqtt.connect_timeout): a socket that sends no CONNECT is closed.
    let broker = TestBroker::start(|c| c.mqtt.connect_timeout = Duration::from_millis(200)).await;
    let start = Instant::now();
    let mut silent = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
    assert_eq!(silent.expect_closed().await, None);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150) && elapsed < Duration::from_millis(1500),
        "closed after {elapsed:?}"
    );

    // Half a CONNECT is no better than none.
    let start = Instant::now();
    let mut partial = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
    let connect = raw_connect(b"MQTT", 4, 0x02, "partial");
    partial.send_raw(&connect[..5]).await;
    assert_eq!(partial.expect_closed().await, None);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "closed after {:?}",
        start.elapsed()
    );
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_then_close() {
    // [MQTT-3.1.2-2] an unsupported protocol level is answered with CONNACK 0x01 (unacceptable
    // protocol version) and the connection is closed.
    let broker = TestBroker::start_default().await;
    for (name, level) in [(&b"MQTT"[..], 6u8), (b"MQTT", 3), (b"MQIsdp", 4)] {
        let mut c = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
        c.send_raw(&raw_connect(name, level, 0x02, "level")).await;
        match c.recv().await {
            Some(Packet::ConnAck(ack)) => {
                assert_eq!(
                    ack.reason,
                    ConnAckReason::UnsupportedProtocolVersion,
                    "level {level}"
                );
                // [MQTT-3.2.2-4] a refusing CONNACK has Session Present 0.
                assert!(!ack.session_present);
            }
            other => panic!("level {level}: expected CONNACK 0x01, got {other:?}"),
        }
        assert_eq!(c.expect_closed().await, None);
    }
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn bad_protocol_name_closes() {
    // [MQTT-3.1.2-1] an unknown protocol name: the broker disconnects (no CONNACK).
    let broker = TestBroker::start_default().await;
    closed_before_connack(broker.addr(), &raw_connect(b"MQTX", 4, 0x02, "name")).await;
    closed_before_connack(broker.addr(), &raw_connect(b"", 4, 0x02, "name")).await;
}

#[tokio::test]
async fn reserved_connect_flag_closes() {
    // [MQTT-3.1.2-3] the reserved CONNECT flag must be 0, else the client is disconnected.
    let broker = TestBroker::start_default().await;
    closed_before_connack(broker.addr(), &raw_connect(b"MQTT", 4, 0x03, "reserved")).await;
}

#[tokio::test]
async fn will_qos_or_retain_without_will_flag_closes() {
    // [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-15] without the Will Flag, Will QoS and Will
    // Retain must be 0; [MQTT-3.1.4-1] a non-conforming CONNECT is closed without CONNACK.
    let broker = TestBroker::start_default().await;
    closed_before_connack(
        broker.addr(),
        &raw_connect(b"MQTT", 4, 0x02 | 0x08, "will-qos"),
    )
    .await;
    closed_before_connack(
        broker.addr(),
        &raw_connect(b"MQTT", 4, 0x02 | 0x20, "will-retain"),
    )
    .await;
    // Will QoS 3 with the Will Flag set.
    closed_before_connack(
        broker.addr(),
        &raw_connect(b"MQTT", 4, 0x02 | 0x04 | 0x18, "will-qos3"),
    )
    .await;
}

#[tokio::test]
async fn password_without_user_name_closes() {
    // [MQTT-3.1.2-22] with the User Name Flag 0 the Password Flag must be 0.
    let broker = TestBroker::start_default().await;
    closed_before_connack(
        broker.addr(),
        &raw_connect(b"MQTT", 4, 0x02 | 0x40, "password"),
    )
    .await;
}

#[tokio::test]
async fn empty_client_id_with_clean_session_is_accepted() {
    // [MQTT-3.1.3-6] a zero-byte client id with Clean Session 1 is accepted with a unique id.
    let broker = TestBroker::start_default().await;
    let (mut a, ack) = TestClient::connect_with_ack(broker.addr(), connect_v311("")).await;
    assert_eq!(ack.reason, ConnAckReason::Success);
    // [MQTT-3.2.2-1] Clean Session 1 means Session Present 0.
    assert!(!ack.session_present);
    // Two such clients get distinct sessions: the second does not take the first over.
    let mut b = TestClient::connect(broker.addr(), connect_v311("")).await;
    a.send(subscribe(1, "anon/t", 0)).await;
    a.expect(suback(1, &[0])).await;
    b.send(publish("anon/t", 0, 0, "hi")).await;
    a.expect(publish("anon/t", 0, 0, "hi")).await;

    // (5.0) [MQTT-3.2.2-16] the CONNACK carries the Assigned Client Identifier.
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v5("")).await;
    assert_eq!(ack.reason, ConnAckReason::Success);
    let assigned = ack
        .properties
        .assigned_client_identifier
        .expect("assigned client identifier");
    assert!(!assigned.is_empty());
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn empty_client_id_with_persistent_session_is_rejected() {
    // [MQTT-3.1.3-8] a zero-byte client id with Clean Session 0 gets CONNACK 0x02 (identifier
    // rejected), then [MQTT-3.1.3-9] the connection is closed.
    let broker = TestBroker::start_default().await;
    let (mut c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("")).await;
    assert_eq!(ack.reason, ConnAckReason::ClientIdentifierNotValid);
    assert!(!ack.session_present);
    assert_eq!(c.expect_closed().await, None);
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn mqtt31_client_id_longer_than_23_characters_is_rejected() {
    // MQTT 3.1 section 3.1: the client id is 1 to 23 characters, else CONNACK 2 (identifier
    // rejected); [MQTT-3.1.3-9] a rejected id is followed by the close.
    let broker = TestBroker::start_default().await;
    let (mut c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v31(&"x".repeat(24))).await;
    assert_eq!(ack.reason, ConnAckReason::ClientIdentifierNotValid);
    assert_eq!(c.expect_closed().await, None);
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v31("")).await;
    assert_eq!(ack.reason, ConnAckReason::ClientIdentifierNotValid);
    // [MQTT-3.1.3-5] 23 characters are always accepted.
    let (_c, ack) = TestClient::connect_with_ack(broker.addr(), connect_v31(&"y".repeat(23))).await;
    assert_eq!(ack.reason, ConnAckReason::Success);
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn client_id_longer_than_configured_maximum_is_rejected() {
    // [MQTT-3.1.3-9] a rejected client id gets CONNACK 0x02 and the close; (5.0) 0x85.
    let broker = TestBroker::start(|c| c.mqtt.max_client_id_len = 30).await;
    let (mut c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311(&"z".repeat(31))).await;
    assert_eq!(ack.reason, ConnAckReason::ClientIdentifierNotValid);
    assert_eq!(c.expect_closed().await, None);
    let (mut c, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v5(&"z".repeat(31))).await;
    assert_eq!(ack.reason, ConnAckReason::ClientIdentifierNotValid);
    assert_eq!(c.expect_closed().await, None);
    TestClient::connect(broker.addr(), connect_v311(&"z".repeat(30))).await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn mqtt31_clients_publish_and_subscribe() {
    // MQTT 3.1 (`MQIsdp`, level 3) is served like 3.1.1.
    let broker = TestBroker::start_default().await;
    let mut sub = TestClient::connect(broker.addr(), connect_v31("v31-sub")).await;
    sub.send(subscribe(1, "v31/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v31("v31-pub")).await;
    publish_acked(&mut publisher, "v31/t", 5, "old").await;
    sub.expect(publish("v31/t", 1, 1, "old")).await;
    sub.send(puback(1)).await;
}

// ---------------------------------------------------------------------------------------------
// Keep alive and will
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keep_alive_expiry_closes_the_connection_and_publishes_the_will() {
    // [MQTT-3.1.2-24] nothing received for 1.5 x keep alive: the broker disconnects the client
    // as if the network had failed, so [MQTT-3.1.2-8] its will is published.
    let broker = TestBroker::start_default().await;
    let mut watcher = subscribed(broker.addr(), "will/ka", 1).await;
    let connect = with_keep_alive(
        with_will(connect_v311("ka-silent"), "will/ka", "gone", 1, false),
        1,
    );
    let mut silent = TestClient::connect(broker.addr(), connect).await;
    let start = Instant::now();
    silent.set_timeout(Duration::from_secs(4));
    assert_eq!(silent.expect_closed().await, None);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1300) && elapsed <= Duration::from_millis(2500),
        "closed after {elapsed:?}, expected about 1.5 s"
    );
    watcher.expect(publish("will/ka", 1, 1, "gone")).await;
    watcher.send(puback(1)).await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn keep_alive_expiry_v5_sends_disconnect_0x8d() {
    // (5.0) [MQTT-3.1.2-22] keep alive expiry; the broker says why with DISCONNECT 0x8D.
    let broker = TestBroker::start_default().await;
    let mut silent =
        TestClient::connect(broker.addr(), with_keep_alive(connect_v5("ka-v5"), 1)).await;
    silent.set_timeout(Duration::from_secs(4));
    silent
        .expect_closed_with(DisconnectReason::KeepAliveTimeout)
        .await;
}

#[tokio::test]
async fn pingreq_gets_pingresp_and_keeps_the_connection_alive() {
    // [MQTT-3.12.4-1] PINGREQ is answered with PINGRESP; [MQTT-3.1.2-24] any packet resets the
    // keep-alive timer, so a client that pings every 0.6 s outlives 1.5 x its 1 s keep alive.
    let broker = TestBroker::start_default().await;
    let mut c =
        TestClient::connect(broker.addr(), with_keep_alive(connect_v311("pinger"), 1)).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.send(pingreq()).await;
        c.expect(Packet::PingResp).await;
    }
    c.send(subscribe(1, "still/here", 0)).await;
    c.expect(suback(1, &[0])).await;
}

#[tokio::test]
async fn will_is_not_published_after_disconnect() {
    // [MQTT-3.1.2-10] [MQTT-3.14.4-3] DISCONNECT discards the will without publishing it.
    let broker = TestBroker::start_default().await;
    let mut watcher = subscribed(broker.addr(), "will/dc", 0).await;
    let c = TestClient::connect(
        broker.addr(),
        with_will(connect_v311("polite"), "will/dc", "gone", 0, false),
    )
    .await;
    c.disconnect().await;
    watcher.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn will_is_published_on_abrupt_close() {
    // [MQTT-3.1.2-8] the will is published when the connection closes without DISCONNECT.
    let broker = TestBroker::start_default().await;
    let mut watcher = subscribed(broker.addr(), "will/drop", 0).await;
    let c = TestClient::connect(
        broker.addr(),
        with_will(connect_v311("dropper"), "will/drop", "gone", 0, false),
    )
    .await;
    drop(c);
    watcher.expect(publish("will/drop", 0, 0, "gone")).await;
}

#[tokio::test]
async fn will_is_published_on_protocol_error() {
    // [MQTT-3.1.2-8] a connection the broker closes for a protocol error publishes the will;
    // [MQTT-4.8.0-1] the violation (reserved packet type 0) closes the connection.
    let broker = TestBroker::start_default().await;
    let mut watcher = subscribed(broker.addr(), "will/err", 0).await;
    let mut c = TestClient::connect(
        broker.addr(),
        with_will(connect_v311("rude"), "will/err", "gone", 0, false),
    )
    .await;
    c.send_raw(&[0x00, 0x00]).await;
    assert_eq!(c.expect_closed().await, None);
    watcher.expect(publish("will/err", 0, 0, "gone")).await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn will_with_retain_is_published_as_retained() {
    // [MQTT-3.1.2-17] Will Retain 1: the will is published as a retained message.
    let broker = TestBroker::start_default().await;
    let c = TestClient::connect(
        broker.addr(),
        with_will(connect_v311("retainer"), "will/ret", "gone", 0, true),
    )
    .await;
    drop(c);
    // Wait until the will has been routed, then a late subscriber gets it as retained.
    let mut late = connected(broker.addr(), "late").await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut packet_id = 1;
    loop {
        late.send(subscribe(packet_id, "will/ret", 0)).await;
        late.expect(suback(packet_id, &[0])).await;
        match late.next_event(Duration::from_millis(100)).await {
            Received::Packet(p) => {
                assert_eq!(p, publish_retained("will/ret", 0, 0, "gone"));
                break;
            }
            Received::Timeout if Instant::now() < deadline => packet_id += 1,
            other => panic!("expected the retained will, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session takeover
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn takeover_closes_the_first_connection() {
    // [MQTT-3.1.4-2] a CONNECT with the client id of a connected client disconnects the
    // existing one; (5.0) [MQTT-3.1.4-3]. [MQTT-3.2.2-2] the persistent session is resumed.
    let broker = TestBroker::start_default().await;
    let mut first = TestClient::connect(broker.addr(), connect_v311_persistent("twin")).await;
    first.send(subscribe(1, "twin/t", 1)).await;
    first.expect(suback(1, &[1])).await;
    let (mut second, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("twin")).await;
    assert_eq!(ack.reason, ConnAckReason::Success);
    assert!(ack.session_present, "the persistent session is taken over");
    assert_eq!(first.expect_closed().await, None);
    // The subscription moved with the session.
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "twin/t", 1, "to second").await;
    second.expect(publish("twin/t", 1, 1, "to second")).await;
    second.send(puback(1)).await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn takeover_v5_sends_disconnect_0x8e() {
    // (5.0) [MQTT-3.1.4-3] the existing client gets DISCONNECT 0x8E Session taken over, then
    // its connection is closed.
    let broker = TestBroker::start_default().await;
    let mut first = TestClient::connect(broker.addr(), connect_v5("twin5")).await;
    let mut second = TestClient::connect(broker.addr(), connect_v5("twin5")).await;
    first
        .expect_closed_with(DisconnectReason::SessionTakenOver)
        .await;
    second.send(pingreq()).await;
    second.expect(Packet::PingResp).await;
}

// ---------------------------------------------------------------------------------------------
// Malformed and forbidden packets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wildcard_in_publish_topic_closes() {
    // [MQTT-3.3.2-2] a PUBLISH topic name must not contain wildcards.
    let broker = TestBroker::start_default().await;
    let v = ProtocolVersion::V3_1_1;
    for topic in ["a/+", "a/#", "#", "+"] {
        let bytes = raw_publish(0x30, topic.as_bytes(), None, b"x");
        connected_then_closed_by(broker.addr(), v, &bytes, DisconnectReason::TopicNameInvalid)
            .await;
    }
    // (5.0) DISCONNECT 0x90 Topic Name invalid.
    let bytes = raw_publish(0x30, b"a/#", None, &[0x00, b'x']);
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V5,
        &bytes,
        DisconnectReason::TopicNameInvalid,
    )
    .await;
}

#[tokio::test]
async fn publish_with_qos_3_closes() {
    // [MQTT-3.3.1-4] a PUBLISH with both QoS bits set closes the connection.
    let broker = TestBroker::start_default().await;
    let bytes = raw_publish(0x36, b"a", Some(1), b"x");
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V3_1_1,
        &bytes,
        DisconnectReason::MalformedPacket,
    )
    .await;
    let bytes = raw_publish(0x36, b"a", Some(1), &[0x00, b'x']);
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V5,
        &bytes,
        DisconnectReason::MalformedPacket,
    )
    .await;
}

#[tokio::test]
async fn publish_qos0_with_dup_closes() {
    // [MQTT-3.3.1-2] DUP must be 0 on a QoS 0 PUBLISH.
    let broker = TestBroker::start_default().await;
    let bytes = raw_publish(0x38, b"a", None, b"x");
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V3_1_1,
        &bytes,
        DisconnectReason::MalformedPacket,
    )
    .await;
}

#[tokio::test]
async fn publish_with_empty_topic_closes() {
    // [MQTT-4.7.3-1] a topic name is at least one character long.
    let broker = TestBroker::start_default().await;
    let bytes = raw_publish(0x30, b"", None, b"x");
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V3_1_1,
        &bytes,
        DisconnectReason::TopicNameInvalid,
    )
    .await;
}

#[tokio::test]
async fn packet_id_zero_closes() {
    // [MQTT-2.3.1-1] SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH carry a non-zero packet id.
    let broker = TestBroker::start_default().await;
    let v = ProtocolVersion::V3_1_1;
    let malformed = DisconnectReason::MalformedPacket;
    connected_then_closed_by(
        broker.addr(),
        v,
        &raw_publish(0x32, b"a", Some(0), b"x"),
        malformed,
    )
    .await;
    connected_then_closed_by(
        broker.addr(),
        v,
        &raw_publish(0x34, b"a", Some(0), b"x"),
        malformed,
    )
    .await;
    let mut sub = vec![0x00, 0x00];
    sub.extend(field(b"a"));
    sub.push(0);
    connected_then_closed_by(broker.addr(), v, &raw(0x82, &sub), malformed).await;
    let mut unsub = vec![0x00, 0x00];
    unsub.extend(field(b"a"));
    connected_then_closed_by(broker.addr(), v, &raw(0xA2, &unsub), malformed).await;
}

#[tokio::test]
async fn invalid_utf8_in_topic_closes() {
    // [MQTT-1.5.3-1] strings must be well-formed UTF-8, without UTF-16 surrogates.
    let broker = TestBroker::start_default().await;
    let v = ProtocolVersion::V3_1_1;
    let malformed = DisconnectReason::MalformedPacket;
    connected_then_closed_by(
        broker.addr(),
        v,
        &raw_publish(0x30, b"a\xFFb", None, b"x"),
        malformed,
    )
    .await;
    connected_then_closed_by(
        broker.addr(),
        v,
        &raw_publish(0x30, b"a\xED\xA0\x80", None, b"x"),
        malformed,
    )
    .await;
    // The same in a SUBSCRIBE topic filter.
    let mut sub = vec![0x00, 0x01];
    sub.extend(field(b"\xC3\x28"));
    sub.push(0);
    connected_then_closed_by(broker.addr(), v, &raw(0x82, &sub), malformed).await;
}

#[tokio::test]
async fn null_character_in_topic_closes() {
    // [MQTT-1.5.3-2] strings must not contain U+0000.
    let broker = TestBroker::start_default().await;
    let v = ProtocolVersion::V3_1_1;
    let malformed = DisconnectReason::MalformedPacket;
    connected_then_closed_by(
        broker.addr(),
        v,
        &raw_publish(0x30, b"a\0b", None, b"x"),
        malformed,
    )
    .await;
    let mut sub = vec![0x00, 0x01];
    sub.extend(field(b"a/\0"));
    sub.push(0);
    connected_then_closed_by(broker.addr(), v, &raw(0x82, &sub), malformed).await;
    // In the client id of CONNECT, before any session exists.
    closed_before_connack(broker.addr(), &raw_connect(b"MQTT", 4, 0x02, "nul\0id")).await;
}

#[tokio::test]
async fn remaining_length_longer_than_four_bytes_closes() {
    // Section 2.2.3: the remaining length takes at most four bytes; [MQTT-4.8.0-1] a malformed
    // packet closes the connection.
    let broker = TestBroker::start_default().await;
    let bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V3_1_1,
        &bytes,
        DisconnectReason::MalformedPacket,
    )
    .await;
    closed_before_connack(broker.addr(), &[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]).await;
}

#[tokio::test]
async fn oversized_packet_closes() {
    // mqtt.max_packet_size: a larger packet ends the connection as soon as its fixed header is
    // read; (5.0) section 3.1.2.11.4 DISCONNECT 0x95 Packet too large.
    let broker = TestBroker::start(|c| c.mqtt.max_packet_size = vane_config::ByteSize(128)).await;
    // A PUBLISH announcing 1000 bytes; only its header is sent.
    let header = [0x30, 0xE8, 0x07];
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V3_1_1,
        &header,
        DisconnectReason::PacketTooLarge,
    )
    .await;
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V5,
        &header,
        DisconnectReason::PacketTooLarge,
    )
    .await;
    // An oversized CONNECT is refused before any session exists.
    closed_before_connack(broker.addr(), &[0x10, 0xE8, 0x07]).await;
    // A packet at the limit still passes: 128 bytes in all.
    let mut c = connected(broker.addr(), "limit").await;
    let payload = "p".repeat(128 - 2 - 2 - 5 - 2);
    c.send(publish("limit", 1, 1, &payload)).await;
    c.expect(puback(1)).await;
}

#[tokio::test]
async fn reserved_or_server_only_packet_types_close() {
    // [MQTT-4.8.0-1] reserved packet type 0, AUTH (15) before MQTT 5.0, and packets only a
    // server sends (CONNACK, SUBACK) are protocol violations that close the connection.
    let broker = TestBroker::start_default().await;
    let v = ProtocolVersion::V3_1_1;
    let reason = DisconnectReason::MalformedPacket;
    connected_then_closed_by(broker.addr(), v, &[0x00, 0x00], reason).await;
    connected_then_closed_by(broker.addr(), v, &[0xF0, 0x00], reason).await;
    connected_then_closed_by(broker.addr(), v, &[0x20, 0x02, 0x00, 0x00], reason).await;
    connected_then_closed_by(broker.addr(), v, &[0x90, 0x03, 0x00, 0x01, 0x00], reason).await;
    connected_then_closed_by(broker.addr(), v, &[0xD0, 0x00], reason).await;
}

#[tokio::test]
async fn wrong_fixed_header_flags_close() {
    // [MQTT-2.2.2-2] invalid flags close the connection: SUBSCRIBE [MQTT-3.8.1-1], UNSUBSCRIBE
    // [MQTT-3.10.1-1] and PUBREL [MQTT-3.6.1-1] must have flags 0010; PINGREQ 0000.
    let broker = TestBroker::start_default().await;
    let v = ProtocolVersion::V3_1_1;
    let reason = DisconnectReason::MalformedPacket;
    let mut sub = vec![0x00, 0x01];
    sub.extend(field(b"a"));
    sub.push(0);
    connected_then_closed_by(broker.addr(), v, &raw(0x80, &sub), reason).await;
    connected_then_closed_by(broker.addr(), v, &raw(0x83, &sub), reason).await;
    let mut unsub = vec![0x00, 0x01];
    unsub.extend(field(b"a"));
    connected_then_closed_by(broker.addr(), v, &raw(0xA0, &unsub), reason).await;
    connected_then_closed_by(broker.addr(), v, &[0x60, 0x02, 0x00, 0x01], reason).await;
    connected_then_closed_by(broker.addr(), v, &[0xC1, 0x00], reason).await;
}

#[tokio::test]
async fn empty_subscribe_or_unsubscribe_closes() {
    // [MQTT-3.8.3-3] SUBSCRIBE carries at least one filter; [MQTT-3.10.3-2] so does UNSUBSCRIBE.
    let broker = TestBroker::start_default().await;
    let v = ProtocolVersion::V3_1_1;
    let reason = DisconnectReason::MalformedPacket;
    connected_then_closed_by(broker.addr(), v, &[0x82, 0x02, 0x00, 0x01], reason).await;
    connected_then_closed_by(broker.addr(), v, &[0xA2, 0x02, 0x00, 0x01], reason).await;
}

#[tokio::test]
async fn subscribe_reserved_option_bits_close() {
    // [MQTT-3.8.3-4] the upper six bits of the requested QoS byte are reserved; and a
    // requested QoS of 3 is malformed.
    let broker = TestBroker::start_default().await;
    for options in [0x04u8, 0x80, 0x03] {
        let mut sub = vec![0x00, 0x01];
        sub.extend(field(b"a"));
        sub.push(options);
        connected_then_closed_by(
            broker.addr(),
            ProtocolVersion::V3_1_1,
            &raw(0x82, &sub),
            DisconnectReason::MalformedPacket,
        )
        .await;
    }
}

#[tokio::test]
async fn truncated_packet_body_closes() {
    // [MQTT-4.8.0-1] a packet whose fields run past its remaining length is malformed: a
    // SUBSCRIBE whose filter claims 9 bytes but has 1.
    let broker = TestBroker::start_default().await;
    let bytes = [0x82, 0x05, 0x00, 0x01, 0x00, 0x09, b'a'];
    connected_then_closed_by(
        broker.addr(),
        ProtocolVersion::V3_1_1,
        &bytes,
        DisconnectReason::MalformedPacket,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn suback_return_codes_are_the_granted_qos_in_order() {
    // [MQTT-3.8.4-1] SUBACK with the same packet id; [MQTT-3.8.4-5] one code per filter, the
    // granted QoS; [MQTT-3.9.3-1] in the order of the filters.
    let broker = TestBroker::start_default().await;
    let mut c = connected(broker.addr(), "suback").await;
    c.send(subscribe_many(42, &[("a/2", 2), ("a/0", 0), ("a/1", 1)]))
        .await;
    c.expect(suback(42, &[2, 0, 1])).await;
}

#[tokio::test]
async fn granted_qos_is_capped_by_max_qos() {
    // [MQTT-3.8.4-6] the broker may grant a lower QoS than requested (mqtt.max_qos = 1), and
    // delivers at the lower of published and granted QoS.
    let broker = TestBroker::start(|c| c.mqtt.max_qos = 1).await;
    let mut sub = connected(broker.addr(), "capped").await;
    sub.send(subscribe(1, "cap/t", 2)).await;
    sub.expect(suback(1, &[1])).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "cap/t", 1, "m").await;
    sub.expect(publish("cap/t", 1, 1, "m")).await;
}

#[tokio::test]
async fn invalid_topic_filter_gets_failure_code() {
    // [MQTT-4.7.1-2] `#` must be last, [MQTT-4.7.1-3] `+` must fill its level; an invalid
    // filter fails on its own: SUBACK 0x80 [MQTT-3.9.3-2], (5.0) 0x8F Topic Filter invalid.
    let broker = TestBroker::start_default().await;
    let mut c = connected(broker.addr(), "badfilter").await;
    c.send(subscribe_many(
        1,
        &[("a/#/b", 1), ("ok/+", 1), ("a+", 0), ("", 0)],
    ))
    .await;
    c.expect(suback(1, &[0x80, 1, 0x80, 0x80])).await;
    // The valid filter in the same packet works.
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "ok/x", 1, "m").await;
    c.expect(publish("ok/x", 1, 1, "m")).await;

    let mut c5 = TestClient::connect(broker.addr(), connect_v5("badfilter5")).await;
    c5.send(subscribe_many(1, &[("a/#/b", 1), ("ok/+", 1)]))
        .await;
    c5.expect(suback(1, &[0x8F, 1])).await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn unsuback_for_a_subscription_that_does_not_exist() {
    // [MQTT-3.10.4-4] UNSUBACK with the same packet id; [MQTT-3.10.4-5] even when nothing was
    // deleted. (5.0) reason 0x11 No subscription existed.
    let broker = TestBroker::start_default().await;
    let mut c = connected(broker.addr(), "unsub").await;
    c.send(unsubscribe(9, "never/subscribed")).await;
    c.expect(unsuback(9)).await;
    let mut c5 = TestClient::connect(broker.addr(), connect_v5("unsub5")).await;
    c5.send(subscribe(1, "yes", 0)).await;
    c5.expect(suback(1, &[0])).await;
    c5.send(Packet::Unsubscribe(test_support::vane_proto::Unsubscribe {
        packet_id: pid(2),
        user_properties: Vec::new(),
        filters: vec!["never".into(), "yes".into()],
    }))
    .await;
    c5.expect(Packet::UnsubAck(UnsubAck {
        packet_id: pid(2),
        properties: Default::default(),
        reasons: vec![
            UnsubAckReason::NoSubscriptionExisted,
            UnsubAckReason::Success,
        ],
    }))
    .await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    // [MQTT-3.10.4-1] a filter equal to a subscription's deletes it; [MQTT-3.10.4-2] the broker
    // then stops adding new messages for the client.
    let broker = TestBroker::start_default().await;
    let mut sub = subscribed(broker.addr(), "un/t", 0).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "un/t", 1, "before").await;
    sub.expect(publish("un/t", 0, 0, "before")).await;
    sub.send(unsubscribe(2, "un/t")).await;
    sub.expect(unsuback(2)).await;
    publish_acked(&mut publisher, "un/t", 2, "after").await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn resubscribe_replaces_the_subscription_and_resends_retained() {
    // [MQTT-3.8.4-3] a SUBSCRIBE to an existing filter replaces that subscription (new QoS) and
    // the retained messages are sent again.
    let broker = TestBroker::start_default().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publisher.send(publish_retained("re/t", 1, 1, "kept")).await;
    publisher.expect(puback(1)).await;
    let mut sub = connected(broker.addr(), "resub").await;
    sub.send(subscribe(1, "re/t", 0)).await;
    sub.expect(suback(1, &[0])).await;
    sub.expect(publish_retained("re/t", 0, 0, "kept")).await;
    sub.send(subscribe(2, "re/t", 1)).await;
    sub.expect(suback(2, &[1])).await;
    sub.expect(publish_retained("re/t", 1, 1, "kept")).await;
    sub.send(puback(1)).await;
    publish_acked(&mut publisher, "re/t", 2, "live").await;
    sub.expect(publish("re/t", 1, 2, "live")).await;
    sub.expect_nothing(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dollar_topics_are_not_matched_by_leading_wildcards() {
    // [MQTT-4.7.2-1] `#` and `+/...` do not match topics starting with `$`; `$app/#` does.
    // (`$SYS` itself is the broker's: clients cannot publish there, see tests/metrics.rs.)
    let broker = TestBroker::start_default().await;
    let mut wild = connected(broker.addr(), "wild").await;
    wild.send(subscribe_many(1, &[("#", 0), ("+/x", 0), ("+/+", 0)]))
        .await;
    wild.expect(suback(1, &[0, 0, 0])).await;
    let mut sys = subscribed(broker.addr(), "$app/#", 0).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "$app/x", 1, "s").await;
    sys.expect(publish("$app/x", 0, 0, "s")).await;
    wild.expect_nothing(QUIET).await;
    // Retained `$` topics are not sent to a new `#` subscription either.
    publisher.send(publish_retained("$app/r", 1, 2, "r")).await;
    publisher.expect(puback(2)).await;
    let mut late = connected(broker.addr(), "late").await;
    late.send(subscribe(1, "#", 0)).await;
    late.expect(suback(1, &[0])).await;
    late.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    // [MQTT-3.3.5-1] overlapping subscriptions: the message is delivered respecting the highest
    // QoS of the matches; (5.0) [MQTT-3.3.4-2] as one copy.
    let broker = TestBroker::start_default().await;
    let mut sub = connected(broker.addr(), "overlap").await;
    sub.send(subscribe_many(1, &[("ov/+", 0), ("ov/#", 1), ("ov/a", 0)]))
        .await;
    sub.expect(suback(1, &[0, 1, 0])).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publisher.send(publish("ov/a", 2, 7, "once")).await;
    publisher.expect(pubrec(7)).await;
    sub.expect(publish("ov/a", 1, 1, "once")).await;
    sub.send(puback(1)).await;
    sub.expect_nothing(QUIET).await;
    publisher.send(pubrel(7)).await;
    publisher.expect(pubcomp(7)).await;
}

#[tokio::test]
async fn delivery_qos_is_the_lower_of_published_and_granted() {
    // [MQTT-3.8.4-6] the QoS of a delivery is the minimum of the published and the granted QoS.
    let broker = TestBroker::start_default().await;
    let mut sub = connected(broker.addr(), "downgrade").await;
    sub.send(subscribe_many(1, &[("dg/0", 0), ("dg/1", 1), ("dg/2", 2)]))
        .await;
    sub.expect(suback(1, &[0, 1, 2])).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publisher.send(publish("dg/0", 2, 1, "a")).await;
    publisher.send(publish("dg/1", 2, 2, "b")).await;
    publisher.send(publish("dg/2", 1, 3, "c")).await;
    publisher.send(publish("dg/2", 0, 0, "d")).await;
    sub.expect(publish("dg/0", 0, 0, "a")).await;
    sub.expect(publish("dg/1", 1, 1, "b")).await;
    sub.expect(publish("dg/2", 1, 2, "c")).await;
    sub.expect(publish("dg/2", 0, 0, "d")).await;
    publisher.expect(pubrec(1)).await;
    publisher.expect(pubrec(2)).await;
    publisher.expect(puback(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_one_publisher_arrive_in_order() {
    // [MQTT-4.6.0-6] a topic is ordered: 1000 QoS 1 messages reach the subscriber in the order
    // published; [MQTT-4.6.0-2] the PUBACKs come back in the order of the PUBLISHes.
    const N: u16 = 1000;
    let broker = TestBroker::start_default().await;
    let mut sub = subscribed(broker.addr(), "order/t", 1).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    let mut burst = Vec::new();
    for i in 1..=N {
        burst.extend_from_slice(&encode(
            ProtocolVersion::V3_1_1,
            &publish("order/t", 1, i, i.to_string()),
        ));
    }
    publisher.send_raw(&burst).await;
    for i in 1..=N {
        let p = sub.recv_publish().await;
        assert_eq!(
            (&p.payload[..], p.qos),
            (i.to_string().as_bytes(), QoS::AtLeastOnce),
            "message {i}"
        );
        sub.send(Packet::PubAck(PubAck::new(
            p.packet_id.expect("QoS 1 has a packet id"),
        )))
        .await;
    }
    for i in 1..=N {
        publisher.expect(puback(i)).await;
    }
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn inflight_window_caps_unacknowledged_deliveries() {
    // mqtt.max_inflight: at most 4 QoS 1 messages are unacknowledged at once; each PUBACK lets
    // exactly one more through, and nothing is lost or reordered.
    let broker = TestBroker::start(|c| c.mqtt.max_inflight = 4).await;
    let mut sub = subscribed(broker.addr(), "win/t", 1).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    for i in 1..=10u16 {
        publisher.send(publish("win/t", 1, i, i.to_string())).await;
    }
    for i in 1..=10u16 {
        publisher.expect(puback(i)).await;
    }
    let mut ids = Vec::new();
    for i in 1..=4u16 {
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], i.to_string().as_bytes());
        ids.push(p.packet_id.expect("packet id"));
    }
    sub.expect_nothing(QUIET).await;
    sub.send(Packet::PubAck(PubAck::new(ids[0]))).await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"5");
    ids.push(p.packet_id.expect("packet id"));
    sub.expect_nothing(QUIET).await;
    for id in &ids[1..] {
        sub.send(Packet::PubAck(PubAck::new(*id))).await;
    }
    for i in 6..=10u16 {
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], i.to_string().as_bytes());
        sub.send(Packet::PubAck(PubAck::new(p.packet_id.expect("packet id"))))
            .await;
    }
    sub.expect_nothing(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// QoS 1 and 2 flows
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn qos2_inbound_duplicate_before_pubrel_is_forwarded_once() {
    // [MQTT-4.3.3-2] (5.0 [MQTT-4.3.3-10]) until PUBREL, a PUBLISH with the same packet id is
    // answered with PUBREC and not forwarded again; PUBREL gets PUBCOMP (5.0 [MQTT-4.3.3-11]);
    // after PUBCOMP the id starts a new message (5.0 [MQTT-4.3.3-12]).
    let broker = TestBroker::start_default().await;
    let mut sub = subscribed(broker.addr(), "q2/in", 0).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publisher.send(publish("q2/in", 2, 7, "once")).await;
    publisher.expect(pubrec(7)).await;
    sub.expect(publish("q2/in", 0, 0, "once")).await;
    let mut dup = publish_packet("q2/in", 2, 7, "once", false);
    dup.dup = true;
    publisher.send(Packet::Publish(dup.clone())).await;
    publisher.expect(pubrec(7)).await;
    publisher.send(Packet::Publish(dup)).await;
    publisher.expect(pubrec(7)).await;
    sub.expect_nothing(QUIET).await;
    publisher.send(pubrel(7)).await;
    publisher.expect(pubcomp(7)).await;
    sub.expect_nothing(QUIET).await;
    publisher.send(publish("q2/in", 2, 7, "again")).await;
    publisher.expect(pubrec(7)).await;
    sub.expect(publish("q2/in", 0, 0, "again")).await;
    publisher.send(pubrel(7)).await;
    publisher.expect(pubcomp(7)).await;
}

#[tokio::test]
async fn pubrel_for_an_unknown_packet_id_gets_pubcomp() {
    // [MQTT-4.3.3-2] PUBREL is answered with PUBCOMP with the same packet id; (5.0)
    // [MQTT-4.3.3-11] with reason 0x92 Packet Identifier not found when the id is unknown.
    let broker = TestBroker::start_default().await;
    let mut c = connected(broker.addr(), "pubrel").await;
    c.send(pubrel(321)).await;
    c.expect(pubcomp(321)).await;
    let mut c5 = TestClient::connect(broker.addr(), connect_v5("pubrel5")).await;
    c5.send(pubrel(321)).await;
    c5.expect(Packet::PubComp(PubComp::with_reason(
        pid(321),
        PubCompReason::PacketIdentifierNotFound,
    )))
    .await;
}

#[tokio::test]
async fn qos2_outbound_flow() {
    // [MQTT-4.3.3-1] the broker as QoS 2 sender: PUBLISH QoS 2 DUP 0 with a fresh packet id,
    // PUBREL on PUBREC with the same id, done on PUBCOMP.
    let broker = TestBroker::start_default().await;
    let mut sub = subscribed(broker.addr(), "q2/out", 2).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    for (n, payload) in [(1u16, "first"), (2, "second")] {
        publisher.send(publish("q2/out", 2, n, payload)).await;
        publisher.expect(pubrec(n)).await;
        publisher.send(pubrel(n)).await;
        publisher.expect(pubcomp(n)).await;
        let p = sub.recv_publish().await;
        assert_eq!(
            (p.qos, p.dup, &p.payload[..]),
            (QoS::ExactlyOnce, false, payload.as_bytes())
        );
        let id = p.packet_id.expect("packet id").get();
        sub.send(pubrec(id)).await;
        sub.expect(pubrel(id)).await;
        sub.send(pubcomp(id)).await;
    }
    sub.expect_nothing(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// Persistent sessions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn resumed_session_resends_unacknowledged_qos1_with_dup() {
    // [MQTT-4.4.0-1] on reconnect with Clean Session 0 the broker resends unacknowledged
    // PUBLISH packets with their original packet ids; [MQTT-3.3.1-1] with DUP 1.
    let broker = TestBroker::start_default().await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("resume")).await;
    sub.send(subscribe(1, "res/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "res/t", 1, "a").await;
    publish_acked(&mut publisher, "res/t", 2, "b").await;
    sub.expect(publish("res/t", 1, 1, "a")).await;
    sub.expect(publish("res/t", 1, 2, "b")).await;
    sub.send(puback(1)).await;
    // "b" is left unacknowledged; the connection drops.
    drop(sub);
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("resume")).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2] session present");
    sub.expect(delivered("res/t", 1, 2, "b", false, true)).await;
    sub.send(puback(2)).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn resumed_session_resends_pubrel() {
    // [MQTT-4.4.0-1] unacknowledged PUBREL packets are resent on reconnect.
    let broker = TestBroker::start_default().await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("resume2")).await;
    sub.send(subscribe(1, "res2/t", 2)).await;
    sub.expect(suback(1, &[2])).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publisher.send(publish("res2/t", 2, 1, "x")).await;
    publisher.expect(pubrec(1)).await;
    sub.expect(publish("res2/t", 2, 1, "x")).await;
    sub.send(pubrec(1)).await;
    sub.expect(pubrel(1)).await;
    drop(sub);
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("resume2")).await;
    assert!(ack.session_present);
    sub.expect(pubrel(1)).await;
    sub.send(pubcomp(1)).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn inbound_qos2_state_survives_reconnect() {
    // [MQTT-4.3.3-2] [MQTT-4.4.0-1] a QoS 2 message received (PUBREC sent) before the publisher
    // reconnected is not forwarded again when the publisher resends it.
    let broker = TestBroker::start_default().await;
    let mut sub = subscribed(broker.addr(), "q2/re", 0).await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v311_persistent("q2-pub")).await;
    publisher.send(publish("q2/re", 2, 9, "once")).await;
    publisher.expect(pubrec(9)).await;
    sub.expect(publish("q2/re", 0, 0, "once")).await;
    drop(publisher);
    let (mut publisher, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("q2-pub")).await;
    assert!(ack.session_present);
    let mut dup = publish_packet("q2/re", 2, 9, "once", false);
    dup.dup = true;
    publisher.send(Packet::Publish(dup)).await;
    publisher.expect(pubrec(9)).await;
    publisher.send(pubrel(9)).await;
    publisher.expect(pubcomp(9)).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_queues_qos1() {
    // [MQTT-3.1.2-4] Clean Session 0 resumes the session; [MQTT-3.1.2-5] QoS 1 and 2 messages
    // matching its subscriptions are stored while offline; QoS 0 ones are not (default
    // queue.queue_qos0_offline = false).
    let broker = TestBroker::start_default().await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("keeper")).await;
    sub.send(subscribe_many(1, &[("keep/1", 1), ("keep/0", 0)]))
        .await;
    sub.expect(suback(1, &[1, 0])).await;
    sub.disconnect().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "keep/1", 1, "q1").await;
    publish_acked(&mut publisher, "keep/0", 2, "q0").await;
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("keeper")).await;
    assert!(ack.session_present, "[MQTT-3.2.2-2] session present");
    sub.expect(publish("keep/1", 1, 1, "q1")).await;
    sub.send(puback(1)).await;
    sub.expect_nothing(QUIET).await;
    // The subscriptions are still there.
    publish_acked(&mut publisher, "keep/0", 3, "live").await;
    sub.expect(publish("keep/0", 0, 0, "live")).await;
}

#[tokio::test]
async fn max_session_expiry_ends_a_v3_persistent_session() {
    // MQTT 3.1.1 has no session expiry: a Clean Session 0 session lasts until a Clean Session
    // 1 connection [MQTT-3.1.2-4]. `mqtt.max_session_expiry` is the operator's cap on that, so
    // abandoned devices do not hold sessions for ever; after it [MQTT-3.2.2-1] Session Present
    // is 0 and the messages queued for the session are gone with it.
    let broker = TestBroker::start(|c| {
        c.mqtt.max_session_expiry = Some(Duration::from_secs(1));
    })
    .await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("capped-v3")).await;
    sub.send(subscribe(1, "capped/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    sub.disconnect().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "capped/t", 1, "queued").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("capped-v3")).await;
    assert!(!ack.session_present, "the cap ran out 0.5 s ago");
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn clean_session_discards_the_previous_session() {
    // [MQTT-3.1.2-6] Clean Session 1 discards the stored session; [MQTT-3.2.2-1] Session
    // Present 0. Its state is not reused by a later persistent connection either.
    let broker = TestBroker::start_default().await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("cleaner")).await;
    sub.send(subscribe(1, "clean/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    sub.disconnect().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "clean/t", 1, "queued").await;
    let (mut sub, ack) = TestClient::connect_with_ack(broker.addr(), connect_v311("cleaner")).await;
    assert!(!ack.session_present);
    sub.expect_nothing(QUIET).await;
    sub.disconnect().await;
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("cleaner")).await;
    assert!(!ack.session_present);
    publish_acked(&mut publisher, "clean/t", 2, "unsubscribed").await;
    sub.expect_nothing(QUIET).await;
}

async fn offline_queue_keeps(policy: OverflowPolicy, expected: std::ops::RangeInclusive<u16>) {
    let broker = TestBroker::start(|c| {
        c.queue.max_messages = 5;
        c.queue.overflow = policy;
    })
    .await;
    let id = unique_id("offline");
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent(&id)).await;
    sub.send(subscribe(1, "off/t", 1)).await;
    sub.expect(suback(1, &[1])).await;
    sub.disconnect().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    for i in 1..=10u16 {
        publish_acked(&mut publisher, "off/t", i, &i.to_string()).await;
    }
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent(&id)).await;
    assert!(ack.session_present);
    for (n, i) in expected.enumerate() {
        let n = n as u16 + 1;
        sub.expect(publish("off/t", 1, n, i.to_string())).await;
        sub.send(puback(n)).await;
    }
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn offline_queue_drop_oldest_keeps_the_newest() {
    // queue.max_messages = 5, overflow = drop-oldest: of 10 messages queued offline, the newest
    // 5 are delivered, in order.
    offline_queue_keeps(OverflowPolicy::DropOldest, 6..=10).await;
}

#[tokio::test]
async fn offline_queue_drop_newest_keeps_the_oldest() {
    // queue.overflow = drop-newest: the first 5 stay, later ones are refused.
    offline_queue_keeps(OverflowPolicy::DropNewest, 1..=5).await;
}

// ---------------------------------------------------------------------------------------------
// Retained messages
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn retained_messages_are_set_replaced_and_cleared() {
    // [MQTT-3.3.1-5] RETAIN 1 stores the message, replacing the previous one; [MQTT-3.3.1-6]
    // a new subscription gets it, [MQTT-3.3.1-8] with RETAIN 1; [MQTT-3.3.1-9] established
    // subscriptions get RETAIN 0; [MQTT-3.3.1-10] a zero-byte retained message is forwarded
    // normally and clears the topic, [MQTT-3.3.1-11] and is not stored.
    let broker = TestBroker::start_default().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publisher.send(publish_retained("ret/a", 1, 1, "v1")).await;
    publisher.expect(puback(1)).await;

    let mut first = connected(broker.addr(), "first").await;
    first.send(subscribe(1, "ret/#", 1)).await;
    first.expect(suback(1, &[1])).await;
    first.expect(publish_retained("ret/a", 1, 1, "v1")).await;
    first.send(puback(1)).await;

    publisher.send(publish_retained("ret/a", 0, 0, "v2")).await;
    first.expect(publish("ret/a", 0, 0, "v2")).await;

    let mut second = connected(broker.addr(), "second").await;
    second.send(subscribe(1, "ret/#", 1)).await;
    second.expect(suback(1, &[1])).await;
    // Delivered at the lower of its QoS (0) and the subscription's (1).
    second.expect(publish_retained("ret/a", 0, 0, "v2")).await;

    publisher.send(publish_retained("ret/a", 0, 0, "")).await;
    first.expect(publish("ret/a", 0, 0, "")).await;
    second.expect(publish("ret/a", 0, 0, "")).await;

    let mut third = connected(broker.addr(), "third").await;
    third.send(subscribe(1, "ret/#", 1)).await;
    third.expect(suback(1, &[1])).await;
    third.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn retained_messages_match_wildcard_filters() {
    // [MQTT-3.3.1-6] every matching retained topic is sent to a new subscription.
    let broker = TestBroker::start_default().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    for (i, topic) in ["w/a/x", "w/b/x", "w/a/y", "other"].into_iter().enumerate() {
        publisher
            .send(publish_retained(topic, 1, i as u16 + 1, topic))
            .await;
        publisher.expect(puback(i as u16 + 1)).await;
    }
    let mut sub = connected(broker.addr(), "wild").await;
    sub.send(subscribe(1, "w/+/x", 0)).await;
    sub.expect(suback(1, &[0])).await;
    let mut topics = vec![sub.recv_publish().await, sub.recv_publish().await]
        .into_iter()
        .map(|p: Publish| {
            assert!(p.retain);
            p.topic.to_string()
        })
        .collect::<Vec<_>>();
    topics.sort();
    assert_eq!(topics, ["w/a/x", "w/b/x"]);
    sub.expect_nothing(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// Point-to-point messages (a Vane extension: `<first-level>/p2p/<client id>`)
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn p2p_message_reaches_its_target_without_a_subscription() {
    let broker = TestBroker::start_default().await;
    let target_id = unique_id("dev");
    let topic = format!("cmd/p2p/{target_id}");
    let mut target = TestClient::connect(broker.addr(), connect_v311(&target_id)).await;
    let mut wildcard = subscribed(broker.addr(), "#", 1).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, &topic, 1, "do it").await;
    target.expect(publish(&topic, 1, 1, "do it")).await;
    target.send(puback(1)).await;
    // Nobody else sees it, not even `#`.
    wildcard.expect_nothing(QUIET).await;
    // It is not retained either.
    publisher
        .send(publish_retained(&topic, 1, 2, "retained?"))
        .await;
    publisher.expect(puback(2)).await;
    target.expect(publish(&topic, 1, 2, "retained?")).await;
    let mut late = connected(broker.addr(), "late").await;
    late.send(subscribe(1, "#", 0)).await;
    late.expect(suback(1, &[0])).await;
    late.expect_nothing(QUIET).await;
    wildcard.expect_nothing(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn p2p_message_is_queued_for_an_offline_persistent_session() {
    let broker = TestBroker::start_default().await;
    let target_id = unique_id("sleepy");
    let topic = format!("cmd/p2p/{target_id}");
    let target = TestClient::connect(broker.addr(), connect_v311_persistent(&target_id)).await;
    target.disconnect().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, &topic, 1, "while you were out").await;
    let (mut target, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent(&target_id)).await;
    assert!(ack.session_present);
    target
        .expect(publish(&topic, 1, 1, "while you were out"))
        .await;
    target.send(puback(1)).await;
    target.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn p2p_to_an_unknown_client_is_dropped_and_v5_says_no_subscribers() {
    // (5.0) PUBACK 0x10 No matching subscribers when nobody received it.
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5("p2p-pub5")).await;
    publisher
        .send(publish("cmd/p2p/nobody-home", 1, 1, "x"))
        .await;
    publisher
        .expect(Packet::PubAck(PubAck::with_reason(
            pid(1),
            PubAckReason::NoMatchingSubscribers,
        )))
        .await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn p2p_disabled_routes_normally() {
    // p2p.enabled = false: `cmd/p2p/<id>` is an ordinary topic.
    let broker = TestBroker::start(|c| c.p2p.enabled = false).await;
    let target_id = unique_id("plain");
    let topic = format!("cmd/p2p/{target_id}");
    let mut target = TestClient::connect(broker.addr(), connect_v311(&target_id)).await;
    let mut wildcard = subscribed(broker.addr(), "#", 1).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, &topic, 1, "broadcast").await;
    wildcard.expect(publish(&topic, 1, 1, "broadcast")).await;
    wildcard.send(puback(1)).await;
    target.expect_nothing(QUIET).await;
}

// ---------------------------------------------------------------------------------------------
// MQTT 5.0 specifics
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn v5_puback_reports_no_matching_subscribers() {
    // (5.0) section 3.4.2.1: PUBACK 0x10 No matching subscribers when the message went nowhere,
    // 0x00 Success when it was delivered; the same for PUBREC.
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::connect(broker.addr(), connect_v5("v5-pub")).await;
    publisher.send(publish("v5/none", 1, 1, "x")).await;
    publisher
        .expect(Packet::PubAck(PubAck::with_reason(
            pid(1),
            PubAckReason::NoMatchingSubscribers,
        )))
        .await;
    let mut sub = TestClient::connect(broker.addr(), connect_v5("v5-sub")).await;
    sub.send(subscribe(1, "v5/some", 1)).await;
    sub.expect(suback(1, &[1])).await;
    publisher.send(publish("v5/some", 1, 2, "y")).await;
    publisher.expect(puback(2)).await;
    sub.expect(publish("v5/some", 1, 1, "y")).await;
}

// ---------------------------------------------------------------------------------------------
// Framing and hostile traffic
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn packets_split_into_single_bytes_are_reassembled() {
    // Section 2.2.3 / 4.2: the byte stream carries packets whatever the segmentation; a client
    // that writes one byte at a time is served normally.
    let broker = TestBroker::start_default().await;
    let mut c = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
    let v = ProtocolVersion::V3_1_1;
    let mut bytes = encode(v, &Packet::Connect(Box::new(connect_v311("drip")))).to_vec();
    bytes.extend_from_slice(&encode(v, &subscribe(1, "split/t", 0)));
    bytes.extend_from_slice(&encode(v, &publish("split/t", 0, 0, "whole")));
    for b in bytes {
        c.send_raw(&[b]).await;
        tokio::task::yield_now().await;
    }
    c.expect(Packet::ConnAck(test_support::vane_proto::ConnAck::new(
        ConnAckReason::Success,
        false,
    )))
    .await;
    c.expect(suback(1, &[0])).await;
    c.expect(publish("split/t", 0, 0, "whole")).await;
}

#[tokio::test]
async fn garbage_after_connect_closes_and_leaves_the_broker_healthy() {
    // [MQTT-4.8.0-1] 64 KiB of noise after CONNECT (starting with reserved packet type 0) is a
    // protocol violation: the connection is closed, the broker carries on.
    let broker = TestBroker::start_default().await;
    let mut watcher = subscribed(broker.addr(), "noise/will", 0).await;
    let mut c = TestClient::connect(
        broker.addr(),
        with_will(connect_v311("noisy"), "noise/will", "x", 0, false),
    )
    .await;
    let mut state = 0x2545_F491_u32;
    let mut garbage: Vec<u8> = (0..65_536)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect();
    garbage[0] = 0x00;
    // The broker may close while the noise is still being written.
    let _ = c.try_send_raw(&garbage).await;
    assert_eq!(c.expect_closed().await, None);
    watcher.expect(publish("noise/will", 0, 0, "x")).await;
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test]
async fn abandoned_sockets_leave_the_broker_healthy() {
    // Connections dropped before, during and right after CONNECT leave nothing behind that
    // disturbs other clients.
    let broker = TestBroker::start_default().await;
    let connect = encode(
        ProtocolVersion::V3_1_1,
        &Packet::Connect(Box::new(connect_v311("abandon"))),
    );
    for i in 0..60 {
        let mut c = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
        match i % 3 {
            0 => {}
            1 => c.send_raw(&connect[..connect.len() / 2]).await,
            _ => c.send_raw(&connect).await,
        }
        drop(c);
    }
    assert_broker_healthy(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_does_not_hold_up_others() {
    // A slow consumer fills its socket and its own queue; publishers and other subscribers are
    // not slowed down (each delivery goes into the subscriber's own bounded queue).
    const N: usize = 6000;
    let broker = TestBroker::start_default().await;
    let mut stalled = connected(broker.addr(), "stalled").await;
    stalled.send(subscribe(1, "fan/t", 0)).await;
    stalled.expect(suback(1, &[0])).await;
    let mut fast = subscribed(broker.addr(), "fan/t", 0).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    let payload = "p".repeat(1024);
    let sender = tokio::spawn(async move {
        for chunk in 0..N / 100 {
            let mut burst = Vec::new();
            for i in 0..100 {
                let n = chunk * 100 + i;
                let body = format!("{n:06}{}", &payload[6..]);
                burst.extend_from_slice(&encode(
                    ProtocolVersion::V3_1_1,
                    &publish("fan/t", 0, 0, body),
                ));
            }
            publisher.send_raw(&burst).await;
        }
        publisher.send(pingreq()).await;
        publisher.expect(Packet::PingResp).await;
        publisher
    });
    for n in 0..N {
        let p = fast.recv_publish().await;
        assert_eq!(&p.payload[..6], format!("{n:06}").as_bytes(), "message {n}");
    }
    let mut publisher = tokio::time::timeout(Duration::from_secs(5), sender)
        .await
        .expect("publisher finished")
        .expect("publisher task");
    publish_acked(&mut publisher, "other/t", 1, "still served").await;
    drop(stalled);
    assert_broker_healthy(broker.addr()).await;
}

// ---------------------------------------------------------------------------------------------
// Session cleanup
// ---------------------------------------------------------------------------------------------

/// Publishes at QoS 1 from an MQTT 5.0 client and returns whether anyone received it (PUBACK
/// 0x00 rather than 0x10 No matching subscribers).
async fn anyone_subscribed(addr: SocketAddr, topic: &str) -> bool {
    let mut c = TestClient::connect(addr, connect_v5(&unique_id("probe"))).await;
    c.send(publish(topic, 1, 1, "probe")).await;
    match c.recv().await {
        Some(Packet::PubAck(a)) => a.reason == PubAckReason::Success,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn a_clean_session_leaves_no_subscription_behind() {
    // [MQTT-3.1.2-6] a Clean Session 1 session lasts as long as its connection: once it ends,
    // by DISCONNECT or by a dropped socket, its subscriptions no longer match anything.
    let broker = TestBroker::start_default().await;
    let mut polite = subscribed(broker.addr(), "gone/polite", 1).await;
    assert!(anyone_subscribed(broker.addr(), "gone/polite").await);
    polite.expect(publish("gone/polite", 1, 1, "probe")).await;
    polite.send(puback(1)).await;
    polite.disconnect().await;
    assert!(!anyone_subscribed(broker.addr(), "gone/polite").await);

    let dropped = subscribed(broker.addr(), "gone/dropped", 0).await;
    drop(dropped);
    let deadline = Instant::now() + Duration::from_secs(2);
    while anyone_subscribed(broker.addr(), "gone/dropped").await {
        assert!(
            Instant::now() < deadline,
            "the dropped client's subscription is still matched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn takeover_with_clean_session_does_not_inherit_subscriptions() {
    // [MQTT-3.1.2-6] a new connection with Clean Session 1 starts from an empty session, even
    // when it takes over a live connection with subscriptions (clean or persistent).
    let broker = TestBroker::start_default().await;
    for first_connect in [connect_v311("heir"), connect_v311_persistent("heir")] {
        let mut first = TestClient::connect(broker.addr(), first_connect).await;
        first.send(subscribe(1, "heir/t", 0)).await;
        first.expect(suback(1, &[0])).await;
        let (mut second, ack) =
            TestClient::connect_with_ack(broker.addr(), connect_v311("heir")).await;
        assert!(!ack.session_present);
        assert_eq!(first.expect_closed().await, None);
        let mut publisher = connected(broker.addr(), "pub").await;
        publish_acked(&mut publisher, "heir/t", 1, "for the old session").await;
        second.expect_nothing(QUIET).await;
        second.disconnect().await;
    }
}

#[tokio::test]
async fn the_same_filter_twice_in_one_subscribe_is_one_subscription() {
    // [MQTT-3.8.4-3] a filter equal to an existing subscription's replaces it, also within one
    // SUBSCRIBE [MQTT-3.8.4-4]: one SUBACK code per filter, one delivery at the last QoS.
    let broker = TestBroker::start_default().await;
    let mut sub = connected(broker.addr(), "twice").await;
    sub.send(subscribe_many(1, &[("twice/t", 0), ("twice/t", 1)]))
        .await;
    sub.expect(suback(1, &[0, 1])).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "twice/t", 1, "m").await;
    sub.expect(publish("twice/t", 1, 1, "m")).await;
    sub.send(puback(1)).await;
    sub.expect_nothing(QUIET).await;
}

#[tokio::test]
async fn unsubscribe_compares_filters_character_by_character() {
    // [MQTT-3.10.4-1] UNSUBSCRIBE removes only a subscription whose filter is the same string:
    // `u/+` does not remove `u/b`; (5.0) it gets 0x11 No subscription existed.
    let broker = TestBroker::start_default().await;
    let mut sub = TestClient::connect(broker.addr(), connect_v5("exact")).await;
    sub.send(subscribe(1, "u/b", 0)).await;
    sub.expect(suback(1, &[0])).await;
    sub.send(unsubscribe(2, "u/+")).await;
    sub.expect(Packet::UnsubAck(UnsubAck {
        packet_id: pid(2),
        properties: Default::default(),
        reasons: vec![UnsubAckReason::NoSubscriptionExisted],
    }))
    .await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "u/b", 1, "still subscribed").await;
    sub.expect(publish("u/b", 0, 0, "still subscribed")).await;
}

#[tokio::test]
async fn p2p_client_ids_may_contain_slashes() {
    // The p2p target is everything after `<first-level>/p2p/`, slashes included.
    let broker = TestBroker::start_default().await;
    let mut target = TestClient::connect(broker.addr(), connect_v311("site-7/dev-1")).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publish_acked(&mut publisher, "cmd/p2p/site-7/dev-1", 1, "reboot").await;
    target
        .expect(publish("cmd/p2p/site-7/dev-1", 1, 1, "reboot"))
        .await;
}

#[tokio::test]
async fn queue_qos0_offline_keeps_qos0_for_an_offline_session() {
    // queue.queue_qos0_offline = true: [MQTT-3.1.2-5] allows QoS 0 messages to be stored for an
    // offline session too, and they are delivered on reconnect.
    let broker = TestBroker::start(|c| c.queue.queue_qos0_offline = true).await;
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("q0-keeper")).await;
    sub.send(subscribe(1, "q0/t", 0)).await;
    sub.expect(suback(1, &[0])).await;
    sub.disconnect().await;
    let mut publisher = connected(broker.addr(), "pub").await;
    publisher.send(publish("q0/t", 0, 0, "kept")).await;
    // A QoS 1 round trip on the same connection: the QoS 0 message was routed before it.
    publish_acked(&mut publisher, "q0/other", 1, "sync").await;
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("q0-keeper")).await;
    assert!(ack.session_present);
    sub.expect(publish("q0/t", 0, 0, "kept")).await;
}

#[tokio::test]
async fn retained_messages_owed_to_a_persistent_session_survive_a_reconnect() {
    // [MQTT-4.1.0-1] the session state, including QoS 1 messages pending transmission, lasts as
    // long as the session; [MQTT-3.3.1-6] every matching retained message is sent for a new
    // subscription. With max_inflight 2, five retained QoS 1 messages are owed: two are sent,
    // then the connection drops; after reconnect all five must arrive.
    let broker = TestBroker::start(|c| c.mqtt.max_inflight = 2).await;
    let mut publisher = connected(broker.addr(), "pub").await;
    for i in 1..=5u16 {
        publisher
            .send(publish_retained(&format!("owed/{i}"), 1, i, "r"))
            .await;
        publisher.expect(puback(i)).await;
    }
    let mut sub = TestClient::connect(broker.addr(), connect_v311_persistent("owed")).await;
    sub.send(subscribe(1, "owed/#", 1)).await;
    sub.expect(suback(1, &[1])).await;
    let mut topics = vec![
        sub.recv_publish().await.topic.to_string(),
        sub.recv_publish().await.topic.to_string(),
    ];
    sub.expect_nothing(QUIET).await;
    drop(sub);
    let (mut sub, ack) =
        TestClient::connect_with_ack(broker.addr(), connect_v311_persistent("owed")).await;
    assert!(ack.session_present);
    let mut resent = 0;
    loop {
        match sub.next_event(QUIET).await {
            Received::Packet(Packet::Publish(p)) => {
                if p.dup {
                    resent += 1;
                } else {
                    topics.push(p.topic.to_string());
                }
                sub.send(Packet::PubAck(PubAck::new(p.packet_id.expect("packet id"))))
                    .await;
            }
            Received::Timeout => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    topics.sort();
    assert_eq!(resent, 2, "the two unacknowledged ones are resent");
    assert_eq!(topics, ["owed/1", "owed/2", "owed/3", "owed/4", "owed/5"]);
}

#[tokio::test]
async fn packets_sent_in_the_same_write_as_connect_are_handled_at_once() {
    // Clients need not wait for CONNACK before sending more (3.1.1 section 3.1.4, non-normative
    // text): when such packets arrive in the same read as CONNECT, the broker answers them
    // without waiting for more input (it once left them unread until the next bytes came).
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::open(broker.addr(), ProtocolVersion::V3_1_1).await;
    let v = ProtocolVersion::V3_1_1;
    let mut bytes = encode(
        v,
        &Packet::Connect(Box::new(connect_v311(&unique_id("pipelined")))),
    )
    .to_vec();
    bytes.extend_from_slice(&encode(v, &subscribe(1, "pipelined/t", 0)));
    bytes.extend_from_slice(&encode(v, &Packet::PingReq));
    client.send_raw(&bytes).await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    assert_eq!(client.recv().await, Some(Packet::PingResp));
}
