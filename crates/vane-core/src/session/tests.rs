//! Deterministic state-machine tests of [`Session`], driven by a fake clock (a base instant plus
//! durations). What the session queues for the client is encoded with `write_transmits` and
//! decoded back with the client's [`Decoder`], so assertions compare [`Packet`]s as they would
//! appear on the wire.
//!
//! Each test names the normative statement it checks. Numbers are MQTT 5.0 unless marked
//! "3.1.1".

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use vane_proto::{
    Auth, AuthProperties, AuthReason, ByteString, ConnAck, ConnAckReason, Connect, Decoder,
    Disconnect, DisconnectProperties, DisconnectReason, LastWill, Packet, PacketId, PacketType,
    ProtocolVersion, PubAck, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason, Publish, PublishProperties, QoS, SubAck, SubAckReason, Subscribe,
    SubscribeProperties, SubscriptionOptions, UnsubAck, UnsubAckReason, Unsubscribe,
    WillProperties, DEFAULT_MAX_PACKET_SIZE,
};

use super::{Action, NewSubscription, PendingAck, Session, SessionConfig, SessionError};
use crate::message::{Delivery, Message};

// ---------------------------------------------------------------------------------------------
// Builders and helpers
// ---------------------------------------------------------------------------------------------

/// The id every session under test gets (the origin of the messages it publishes).
const SID: u64 = 7;
/// The origin of messages published by someone else.
const OTHER: u64 = 99;

/// A fake clock: every instant is the base plus a duration.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn at(self, secs: u64) -> Instant {
        self.0 + Duration::from_secs(secs)
    }

    fn at_ms(self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("packet id must be non-zero")
}

fn connect_v311(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V3_1_1, client_id)
}

fn connect_v5(client_id: &str) -> Connect {
    Connect::new(ProtocolVersion::V5, client_id)
}

/// A PUBLISH; `id` is ignored at QoS 0.
fn publish(topic: &str, qos: QoS, id: u16, payload: &'static [u8]) -> Publish {
    Publish {
        qos,
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        ..Publish::new(topic, Bytes::from_static(payload))
    }
}

fn with_alias(mut p: Publish, alias: u16) -> Publish {
    p.properties.topic_alias = Some(alias);
    p
}

fn subscribe(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        properties: SubscribeProperties::default(),
        filters: filters
            .iter()
            .map(|&(f, q)| (ByteString::from(f), SubscriptionOptions::qos(q)))
            .collect(),
    })
}

fn unsubscribe(id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        user_properties: Vec::new(),
        filters: filters.iter().map(|&f| ByteString::from(f)).collect(),
    })
}

fn session_with(connect: &Connect, config: SessionConfig, now: Instant) -> Session {
    let mut s = Session::new(SID, connect.client_id.clone(), config, now);
    s.connect(connect, now);
    s
}

fn v311(clock: Clock) -> Session {
    session_with(&connect_v311("c311"), SessionConfig::default(), clock.at(0))
}

fn v5(clock: Clock) -> Session {
    session_with(&connect_v5("c5"), SessionConfig::default(), clock.at(0))
}

fn message(topic: &str, qos: QoS, payload: &'static [u8], received: Instant) -> Message {
    Message {
        topic: ByteString::from(topic),
        payload: Bytes::from_static(payload),
        qos,
        retain: false,
        properties: PublishProperties::default(),
        origin: OTHER,
        received,
    }
}

fn delivery(topic: &str, qos: QoS, payload: &'static [u8], received: Instant) -> Delivery {
    Delivery {
        message: Arc::new(message(topic, qos, payload, received)),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
        shared: None,
        stored: None,
    }
}

/// Encodes everything the session queued and returns the raw bytes.
fn drain_bytes(s: &mut Session, now: Instant) -> (BytesMut, usize) {
    let mut buf = BytesMut::new();
    let written = s
        .write_transmits(now, &mut buf)
        .expect("queued packets encode");
    (buf, written)
}

/// Encodes everything the session queued and decodes it back as the client would.
fn drain(s: &mut Session, now: Instant) -> Vec<Packet> {
    let (mut buf, written) = drain_bytes(s, now);
    let mut decoder = Decoder::with_version(s.version(), DEFAULT_MAX_PACKET_SIZE);
    let mut packets = Vec::new();
    while let Some(p) = decoder.decode(&mut buf).expect("queued packets decode") {
        packets.push(p);
    }
    assert!(
        buf.is_empty(),
        "trailing bytes after the last packet: {buf:?}"
    );
    assert_eq!(
        written,
        packets.len(),
        "write_transmits counts what it wrote"
    );
    assert!(!s.has_transmits(), "everything was written");
    packets
}

fn expect_publish(result: Result<Option<Action>, SessionError>) -> (Message, Option<PendingAck>) {
    match result {
        Ok(Some(Action::Publish { message, ack })) => (message, ack),
        other => panic!("expected Action::Publish, got {other:?}"),
    }
}

fn expect_subscribe(result: Result<Option<Action>, SessionError>) -> Vec<NewSubscription> {
    match result {
        Ok(Some(Action::Subscribe(subs))) => subs,
        other => panic!("expected Action::Subscribe, got {other:?}"),
    }
}

fn expect_error(result: Result<Option<Action>, SessionError>) -> SessionError {
    match result {
        Err(e) => e,
        Ok(other) => panic!("expected a session error, got {other:?}"),
    }
}

fn puback(id: u16) -> Packet {
    Packet::PubAck(PubAck::new(pid(id)))
}

fn pubrec(id: u16) -> Packet {
    Packet::PubRec(PubRec::new(pid(id)))
}

fn pubrel(id: u16) -> Packet {
    Packet::PubRel(PubRel::new(pid(id)))
}

fn pubcomp(id: u16) -> Packet {
    Packet::PubComp(PubComp::new(pid(id)))
}

/// The PUBLISH a client receives for `delivery(topic, qos, payload, _)` with packet id `id`.
fn out_publish(topic: &str, qos: QoS, id: u16, dup: bool, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        dup,
        ..publish(topic, qos, id, payload)
    })
}

/// Packet ids of the PUBLISH packets among `packets`.
fn publish_ids(packets: &[Packet]) -> Vec<u16> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.packet_id.map(PacketId::get),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Inbound QoS 0/1/2
// ---------------------------------------------------------------------------------------------

#[test]
fn qos0_publish_is_routed_without_acknowledgement() {
    // [MQTT-4.3.1-1] QoS 0: delivered at most once, no response expected.
    let clock = Clock::new();
    let mut s = v311(clock);
    let (msg, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a/b", QoS::AtMostOnce, 0, b"hi")),
        clock.at(3),
    ));
    assert_eq!(ack, None);
    assert_eq!(msg.topic, "a/b");
    assert_eq!(msg.payload, Bytes::from_static(b"hi"));
    assert_eq!(msg.qos, QoS::AtMostOnce);
    assert_eq!(
        msg.origin, SID,
        "origin is the publishing session, for No Local"
    );
    assert_eq!(
        msg.received,
        clock.at(3),
        "received time is the time passed in, for expiry"
    );
    assert!(drain(&mut s, clock.at(3)).is_empty());
}

#[test]
fn qos1_puback_is_sent_once_routed_v311_without_reason() {
    // [MQTT-4.3.2-4] the receiver responds with a PUBACK containing the packet id;
    // MQTT 3.1.1 PUBACK has no reason code, so "no matching subscribers" is not reported.
    let clock = Clock::new();
    let mut s = v311(clock);
    let (_, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::AtLeastOnce, 5, b"x")),
        clock.at(1),
    ));
    assert_eq!(ack, Some(PendingAck::PubAck(pid(5))));
    assert!(
        drain(&mut s, clock.at(1)).is_empty(),
        "no PUBACK before routing"
    );

    s.publish_routed(PendingAck::PubAck(pid(5)), false);
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(
        &bytes[..],
        &[0x40, 0x02, 0x00, 0x05],
        "3.1.1 PUBACK is just the packet id"
    );
}

#[test]
fn qos1_puback_v5_reports_no_matching_subscribers() {
    // MQTT 5.0 §3.4.2.1: 0x10 No matching subscribers; Success may omit the reason byte
    // [MQTT-3.4.2-1] / §3.4.2.1 (Remaining Length 2 means Success).
    let clock = Clock::new();
    let mut s = v5(clock);
    let (_, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::AtLeastOnce, 9, b"x")),
        clock.at(1),
    ));
    let ack = ack.expect("QoS 1 needs an acknowledgement");
    s.publish_routed(ack, false);
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::PubAck(PubAck::with_reason(
            pid(9),
            PubAckReason::NoMatchingSubscribers
        ))]
    );
    s.publish_routed(ack, true);
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0x40, 0x02, 0x00, 0x09]);
}

#[test]
fn qos2_pubrec_is_sent_once_routed() {
    // [MQTT-4.3.3-8] the receiver responds with a PUBREC containing the packet id;
    // v5 reports 0x10 when nobody matched, 3.1.1 has no reason code.
    let clock = Clock::new();
    let mut s = v5(clock);
    let (_, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 3, b"x")),
        clock.at(1),
    ));
    assert_eq!(ack, Some(PendingAck::PubRec(pid(3))));
    assert!(
        drain(&mut s, clock.at(1)).is_empty(),
        "no PUBREC before routing"
    );
    s.publish_routed(PendingAck::PubRec(pid(3)), false);
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::PubRec(PubRec::with_reason(
            pid(3),
            PubRecReason::NoMatchingSubscribers
        ))]
    );

    let mut s = v311(clock);
    let (_, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 3, b"x")),
        clock.at(1),
    ));
    s.publish_routed(ack.expect("QoS 2 needs an acknowledgement"), false);
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0x50, 0x02, 0x00, 0x03]);
}

#[test]
fn qos2_duplicate_before_pubrel_is_acknowledged_but_not_forwarded() {
    // [MQTT-4.3.3-10] until PUBREL, a PUBLISH with the same id is answered with PUBREC and
    // must not cause a duplicate onward delivery. (3.1.1: [MQTT-4.3.3-2], Method B.)
    let clock = Clock::new();
    for mut s in [v311(clock), v5(clock)] {
        let first = publish("a", QoS::ExactlyOnce, 4, b"x");
        let (_, ack) = expect_publish(s.handle_packet(Packet::Publish(first.clone()), clock.at(1)));
        s.publish_routed(ack.expect("PUBREC owed"), true);
        assert_eq!(drain(&mut s, clock.at(1)), vec![pubrec(4)]);

        let dup = Publish {
            dup: true,
            ..first.clone()
        };
        assert_eq!(
            s.handle_packet(Packet::Publish(dup), clock.at(2)),
            Ok(None),
            "no second Action"
        );
        assert_eq!(
            drain(&mut s, clock.at(2)),
            vec![pubrec(4)],
            "PUBREC re-sent"
        );

        // Even without DUP set, the id alone identifies the message.
        assert_eq!(
            s.handle_packet(Packet::Publish(first), clock.at(3)),
            Ok(None)
        );
        assert_eq!(drain(&mut s, clock.at(3)), vec![pubrec(4)]);
        assert_eq!(s.inbound_qos2_pending(), 1);
    }
}

#[test]
fn qos2_pubrel_sends_pubcomp_and_frees_the_id() {
    // [MQTT-4.3.3-11] PUBREL is answered with PUBCOMP with the same id; [MQTT-4.3.3-12] after
    // PUBCOMP a PUBLISH with that id is a new application message.
    let clock = Clock::new();
    let mut s = v5(clock);
    let (_, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 4, b"1")),
        clock.at(1),
    ));
    s.publish_routed(ack.expect("PUBREC owed"), true);
    assert_eq!(s.handle_packet(pubrel(4), clock.at(2)), Ok(None));
    assert_eq!(drain(&mut s, clock.at(2)), vec![pubrec(4), pubcomp(4)]);
    assert_eq!(s.inbound_qos2_pending(), 0);

    let (msg, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 4, b"2")),
        clock.at(3),
    ));
    assert_eq!(msg.payload, Bytes::from_static(b"2"));
    assert_eq!(ack, Some(PendingAck::PubRec(pid(4))));
}

#[test]
fn pubrel_for_unknown_id_gets_pubcomp_not_found() {
    // [MQTT-4.3.3-11] PUBREL is always answered with PUBCOMP; MQTT 5.0 §3.7.2.1 reports
    // 0x92 Packet Identifier not found; 3.1.1 has no reason code.
    let clock = Clock::new();
    let mut s = v5(clock);
    assert_eq!(s.handle_packet(pubrel(77), clock.at(1)), Ok(None));
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::PubComp(PubComp::with_reason(
            pid(77),
            PubCompReason::PacketIdentifierNotFound
        ))]
    );

    let mut s = v311(clock);
    assert_eq!(s.handle_packet(pubrel(77), clock.at(1)), Ok(None));
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0x70, 0x02, 0x00, 77]);
}

#[test]
fn refused_qos2_publish_frees_its_id() {
    // [MQTT-4.3.3-9] after a PUBREC with a reason code of 0x80 or above, a PUBLISH with that
    // id is a new application message.
    let clock = Clock::new();
    let mut s = v5(clock);
    let (_, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 6, b"x")),
        clock.at(1),
    ));
    s.publish_refused(ack.expect("PUBREC owed"), PubAckReason::NotAuthorized);
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::PubRec(PubRec::with_reason(
            pid(6),
            PubRecReason::NotAuthorized
        ))]
    );
    assert_eq!(s.inbound_qos2_pending(), 0);
    let (_, ack) = expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 6, b"x")),
        clock.at(2),
    ));
    assert_eq!(ack, Some(PendingAck::PubRec(pid(6))));
}

#[test]
fn qos2_inbound_state_survives_reconnect() {
    // [MQTT-4.3.3-10] with [MQTT-4.1.0-1]: QoS 2 messages received and not yet released are
    // session state, so a resent PUBLISH on the next connection is still not forwarded again.
    let clock = Clock::new();
    let mut s = v5(clock);
    let p = publish("a", QoS::ExactlyOnce, 8, b"x");
    let (_, ack) = expect_publish(s.handle_packet(Packet::Publish(p.clone()), clock.at(1)));
    s.publish_routed(ack.expect("PUBREC owed"), true);
    // The connection drops before the PUBREC is written.
    s.connect(
        &Connect {
            clean_start: false,
            ..connect_v5("c5")
        },
        clock.at(10),
    );
    assert!(
        drain(&mut s, clock.at(10)).is_empty(),
        "unsent packets of the old connection are forgotten"
    );
    assert_eq!(
        s.handle_packet(Packet::Publish(Publish { dup: true, ..p }), clock.at(11)),
        Ok(None)
    );
    assert_eq!(drain(&mut s, clock.at(11)), vec![pubrec(8)]);
    assert_eq!(s.handle_packet(pubrel(8), clock.at(12)), Ok(None));
    assert_eq!(drain(&mut s, clock.at(12)), vec![pubcomp(8)]);
}

#[test]
fn receive_maximum_counts_qos2_awaiting_pubrel() {
    // MQTT 5.0 §3.3.4 [MQTT-3.3.4-7]: a client sending more than Receive Maximum unacknowledged
    // QoS 2 PUBLISH packets is disconnected with 0x93 Receive Maximum exceeded.
    let clock = Clock::new();
    let config = SessionConfig {
        receive_maximum: 2,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v5("c"), config, clock.at(0));
    for id in [1, 2] {
        expect_publish(s.handle_packet(
            Packet::Publish(publish("a", QoS::ExactlyOnce, id, b"x")),
            clock.at(1),
        ));
    }
    // A duplicate of a pending id is not a new message and does not count.
    assert_eq!(
        s.handle_packet(
            Packet::Publish(publish("a", QoS::ExactlyOnce, 2, b"x")),
            clock.at(1)
        ),
        Ok(None)
    );
    // QoS 0 and QoS 1 are not limited by the QoS 2 count.
    expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::AtLeastOnce, 9, b"x")),
        clock.at(1),
    ));
    expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"x")),
        clock.at(1),
    ));
    // Releasing one makes room for exactly one more.
    assert_eq!(s.handle_packet(pubrel(1), clock.at(2)), Ok(None));
    expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 3, b"x")),
        clock.at(2),
    ));
    let err = expect_error(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 4, b"x")),
        clock.at(3),
    ));
    assert_eq!(err, SessionError::ReceiveMaximumExceeded);
    assert_eq!(
        err.disconnect_reason(),
        DisconnectReason::ReceiveMaximumExceeded
    );
    assert_eq!(err.disconnect_reason().as_u8(), 0x93);
    assert_eq!(
        s.inbound_qos2_pending(),
        2,
        "the refused publish is not recorded"
    );
}

#[test]
fn pingreq_gets_pingresp() {
    // [MQTT-3.12.4-1] the server must send PINGRESP in response to PINGREQ.
    let clock = Clock::new();
    let mut s = v311(clock);
    assert_eq!(s.handle_packet(Packet::PingReq, clock.at(1)), Ok(None));
    assert_eq!(drain(&mut s, clock.at(1)), vec![Packet::PingResp]);
}

// ---------------------------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------------------------

#[test]
fn qos0_delivery_has_no_packet_id_and_takes_no_slot() {
    // [MQTT-2.2.1-2] a QoS 0 PUBLISH must not contain a packet id.
    let clock = Clock::new();
    let config = SessionConfig {
        max_inflight: 1,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v311("c"), config, clock.at(0));
    for _ in 0..3 {
        s.deliver(
            delivery("t", QoS::AtMostOnce, b"p", clock.at(0)),
            clock.at(1),
        )
        .expect("QoS 0 is never refused");
    }
    assert_eq!(s.inflight_len(), 0);
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![out_publish("t", QoS::AtMostOnce, 0, false, b"p"); 3]
    );
}

#[test]
fn qos1_deliveries_get_fresh_packet_ids() {
    // [MQTT-2.2.1-4] (3.1.1: [MQTT-2.3.1-4]) each new QoS > 0 PUBLISH gets an unused non-zero
    // packet id; [MQTT-4.3.2-2] it is sent with DUP 0.
    let clock = Clock::new();
    let mut s = v5(clock);
    for payload in [b"1", b"2", b"3"] {
        s.deliver(
            delivery("t", QoS::AtLeastOnce, payload, clock.at(0)),
            clock.at(1),
        )
        .expect("window has room");
    }
    assert_eq!(s.inflight_len(), 3);
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![
            out_publish("t", QoS::AtLeastOnce, 1, false, b"1"),
            out_publish("t", QoS::AtLeastOnce, 2, false, b"2"),
            out_publish("t", QoS::AtLeastOnce, 3, false, b"3"),
        ]
    );
}

#[test]
fn full_inflight_window_hands_the_delivery_back() {
    // [MQTT-3.3.4-9] the server must not send more QoS 1/2 PUBLISH packets than its window
    // (lowered to the client's Receive Maximum) without acknowledgement; PUBACK frees a slot.
    let clock = Clock::new();
    let config = SessionConfig {
        max_inflight: 2,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v311("c"), config, clock.at(0));
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"1", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("t", QoS::ExactlyOnce, b"2", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    assert!(!s.can_send());
    let third = delivery("t", QoS::AtLeastOnce, b"3", clock.at(0));
    assert_eq!(
        s.deliver(third.clone(), clock.at(1)),
        Err(third.clone()),
        "handed back unchanged"
    );
    // QoS 0 still goes out while the window is full.
    s.deliver(
        delivery("t", QoS::AtMostOnce, b"0", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0 bypasses the window");
    assert_eq!(publish_ids(&drain(&mut s, clock.at(1))), vec![1, 2]);

    assert_eq!(s.handle_packet(puback(1), clock.at(2)), Ok(None));
    assert!(s.can_send());
    assert_eq!(s.inflight_len(), 1);
    s.deliver(third, clock.at(2)).expect("slot freed by PUBACK");
    assert_eq!(
        drain(&mut s, clock.at(2)),
        vec![out_publish("t", QoS::AtLeastOnce, 3, false, b"3")]
    );
}

#[test]
fn acknowledgements_for_unknown_ids_or_wrong_state_are_ignored() {
    // [MQTT-4.3.2-3] a QoS 1 PUBLISH stays unacknowledged until its PUBACK;
    // [MQTT-4.3.3-3] a QoS 2 PUBLISH until its PUBREC: other packets do not free the slot.
    let clock = Clock::new();
    let mut s = v5(clock);
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"1", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("t", QoS::ExactlyOnce, b"2", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    drain(&mut s, clock.at(1));
    assert_eq!(
        s.handle_packet(puback(2), clock.at(2)),
        Ok(None),
        "PUBACK for a QoS 2 message"
    );
    assert_eq!(
        s.handle_packet(pubcomp(2), clock.at(2)),
        Ok(None),
        "PUBCOMP before PUBREC"
    );
    assert_eq!(
        s.handle_packet(pubcomp(1), clock.at(2)),
        Ok(None),
        "PUBCOMP for a QoS 1 message"
    );
    assert_eq!(
        s.handle_packet(puback(40), clock.at(2)),
        Ok(None),
        "unknown id"
    );
    assert_eq!(s.inflight_len(), 2);
    assert!(drain(&mut s, clock.at(2)).is_empty());
}

#[test]
fn qos2_outbound_flow_publish_pubrec_pubrel_pubcomp() {
    // [MQTT-4.3.3-3] unacknowledged until PUBREC; [MQTT-4.3.3-4] PUBREC < 0x80 is answered with
    // PUBREL; [MQTT-4.3.3-5] the PUBREL is unacknowledged until PUBCOMP, so the slot and the
    // packet id stay taken until then.
    let clock = Clock::new();
    let config = SessionConfig {
        max_inflight: 1,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v5("c"), config, clock.at(0));
    s.deliver(
        delivery("t", QoS::ExactlyOnce, b"x", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![out_publish("t", QoS::ExactlyOnce, 1, false, b"x")]
    );

    assert_eq!(s.handle_packet(pubrec(1), clock.at(2)), Ok(None));
    assert_eq!(drain(&mut s, clock.at(2)), vec![pubrel(1)]);
    assert_eq!(s.inflight_len(), 1, "slot held until PUBCOMP");
    assert!(!s.can_send());
    assert_eq!(
        s.handle_packet(puback(1), clock.at(2)),
        Ok(None),
        "PUBACK does not end a QoS 2 flow"
    );
    assert_eq!(s.inflight_len(), 1);

    assert_eq!(s.handle_packet(pubcomp(1), clock.at(3)), Ok(None));
    assert_eq!(s.inflight_len(), 0);
    assert!(
        drain(&mut s, clock.at(3)).is_empty(),
        "nothing answers PUBCOMP"
    );
}

#[test]
fn pubrec_no_matching_subscribers_still_gets_pubrel() {
    // [MQTT-4.3.3-4] PUBREL answers every PUBREC with a reason code below 0x80 (0x10 included).
    let clock = Clock::new();
    let mut s = v5(clock);
    s.deliver(
        delivery("t", QoS::ExactlyOnce, b"x", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    drain(&mut s, clock.at(1));
    let rec = Packet::PubRec(PubRec::with_reason(
        pid(1),
        PubRecReason::NoMatchingSubscribers,
    ));
    assert_eq!(s.handle_packet(rec, clock.at(2)), Ok(None));
    assert_eq!(drain(&mut s, clock.at(2)), vec![pubrel(1)]);
}

#[test]
fn pubrec_with_error_reason_ends_the_flow_without_pubrel() {
    // MQTT 5.0 §4.3.3 / §4.9: a PUBREC with a reason code of 0x80 or above ends the QoS 2 flow;
    // [MQTT-4.3.3-4] PUBREL is only sent for reason codes below 0x80, and the slot is freed.
    let clock = Clock::new();
    let mut s = v5(clock);
    s.deliver(
        delivery("t", QoS::ExactlyOnce, b"x", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    drain(&mut s, clock.at(1));
    let rec = Packet::PubRec(PubRec::with_reason(pid(1), PubRecReason::QuotaExceeded));
    assert_eq!(s.handle_packet(rec, clock.at(2)), Ok(None));
    assert!(drain(&mut s, clock.at(2)).is_empty(), "no PUBREL");
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn repeated_pubrec_repeats_pubrel_and_unknown_pubrec_gets_not_found() {
    // [MQTT-4.3.3-4], [MQTT-4.3.3-5]: a repeated PUBREC is answered with the same PUBREL;
    // MQTT 5.0 §3.6.2.1: PUBREL 0x92 for a PUBREC whose id is not known.
    let clock = Clock::new();
    let mut s = v5(clock);
    s.deliver(
        delivery("t", QoS::ExactlyOnce, b"x", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    drain(&mut s, clock.at(1));
    s.handle_packet(pubrec(1), clock.at(2))
        .expect("PUBREC is valid");
    s.handle_packet(pubrec(1), clock.at(2))
        .expect("PUBREC is valid");
    s.handle_packet(pubrec(50), clock.at(2))
        .expect("PUBREC is valid");
    assert_eq!(
        drain(&mut s, clock.at(2)),
        vec![
            pubrel(1),
            pubrel(1),
            Packet::PubRel(PubRel::with_reason(
                pid(50),
                PubRelReason::PacketIdentifierNotFound
            ))
        ]
    );
    assert_eq!(s.inflight_len(), 1);
}

#[test]
fn packet_ids_are_not_reused_while_in_flight() {
    // [MQTT-2.2.1-4] (3.1.1: [MQTT-2.3.1-4]) a new PUBLISH uses an id that is currently unused:
    // freeing an older id does not make the allocator go back and collide with live ones.
    let clock = Clock::new();
    let config = SessionConfig {
        max_inflight: 3,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v311("c"), config, clock.at(0));
    for _ in 0..3 {
        s.deliver(
            delivery("t", QoS::ExactlyOnce, b"x", clock.at(0)),
            clock.at(1),
        )
        .expect("room");
    }
    s.handle_packet(pubrec(2), clock.at(2)).expect("valid");
    s.handle_packet(pubcomp(2), clock.at(2)).expect("valid");
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"y", clock.at(0)),
        clock.at(2),
    )
    .expect("room");
    let ids = publish_ids(&drain(&mut s, clock.at(2)));
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

/// A v3.1.1 session with an in-flight window of `window`, `held` QoS 1 deliveries in flight
/// (ids 1..=held), whose packet id counter has then gone round to 65535 with every later
/// delivery acknowledged at once.
fn session_wrapped_with_held_ids(window: u16, held: u16, clock: &Clock) -> Session {
    let config = SessionConfig {
        max_inflight: window,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v311("c"), config, clock.at(0));
    for _ in 0..held {
        deliver_qos1(&mut s, b"held", clock);
    }
    let held_ids: Vec<u16> = (1..=held).collect();
    assert_eq!(publish_ids(&drain(&mut s, clock.at(1))), held_ids);
    for expected in held + 1..=u16::MAX {
        deliver_qos1(&mut s, b"", clock);
        assert_eq!(publish_ids(&drain(&mut s, clock.at(1))), vec![expected]);
        s.handle_packet(puback(expected), clock.at(1))
            .expect("valid");
    }
    s
}

fn deliver_qos1(s: &mut Session, payload: &'static [u8], clock: &Clock) {
    s.deliver(
        delivery("t", QoS::AtLeastOnce, payload, clock.at(0)),
        clock.at(1),
    )
    .expect("room");
}

#[test]
fn packet_ids_wrapping_onto_a_run_of_ids_in_flight_skip_all_of_them() {
    // [MQTT-2.2.1-4] (3.1.1: [MQTT-2.3.1-4]): ids 1 and 2 stay in flight while the counter
    // goes round the ring; the allocator must skip both, not just the first.
    let clock = Clock::new();
    let mut s = session_wrapped_with_held_ids(3, 2, &clock);
    deliver_qos1(&mut s, b"after", &clock);
    assert_eq!(publish_ids(&drain(&mut s, clock.at(1))), vec![3]);
}

#[test]
fn packet_ids_wrap_past_65535_and_skip_ids_in_use() {
    // [MQTT-2.2.1-4] (3.1.1: [MQTT-2.3.1-4]); [MQTT-2.3.1-1]/[MQTT-2.2.1-3] ids are non-zero.
    // Id 1 stays in flight for the whole test.
    let clock = Clock::new();
    let mut s = session_wrapped_with_held_ids(2, 1, &clock);
    // The counter wraps to 1, which is still in flight, and so is skipped; 0 is never used.
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"after", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![out_publish("t", QoS::AtLeastOnce, 2, false, b"after")]
    );
    s.handle_packet(puback(1), clock.at(2)).expect("valid");
    s.handle_packet(puback(2), clock.at(2)).expect("valid");
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"next", clock.at(0)),
        clock.at(2),
    )
    .expect("room");
    assert_eq!(publish_ids(&drain(&mut s, clock.at(2))), vec![3]);
}

#[test]
fn resend_inflight_sends_dup_publish_and_pubrel_in_original_order() {
    // [MQTT-4.4.0-1] on a resumed session, unacknowledged PUBLISH and PUBREL packets are resent
    // with their original packet ids; [MQTT-3.3.1-1] a re-delivered PUBLISH has DUP 1;
    // [MQTT-4.6.0-1] resent in the order originally sent; [MQTT-4.3.3-6] a PUBLISH whose PUBREL
    // was sent is not resent.
    let clock = Clock::new();
    let mut s = v5(clock);
    s.deliver(
        delivery("a", QoS::AtLeastOnce, b"1", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("b", QoS::ExactlyOnce, b"2", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("c", QoS::ExactlyOnce, b"3", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("d", QoS::AtLeastOnce, b"4", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    drain(&mut s, clock.at(1));
    s.handle_packet(pubrec(2), clock.at(2)).expect("valid");
    s.handle_packet(puback(4), clock.at(2)).expect("valid");
    assert_eq!(drain(&mut s, clock.at(2)), vec![pubrel(2)]);

    // The connection drops; the client comes back with Clean Start 0.
    s.connect(
        &Connect {
            clean_start: false,
            ..connect_v5("c5")
        },
        clock.at(10),
    );
    s.resend_inflight();
    assert_eq!(
        drain(&mut s, clock.at(10)),
        vec![
            out_publish("a", QoS::AtLeastOnce, 1, true, b"1"),
            pubrel(2),
            out_publish("c", QoS::ExactlyOnce, 3, true, b"3"),
        ]
    );
    // The flows continue from where they were.
    s.handle_packet(pubcomp(2), clock.at(11)).expect("valid");
    s.handle_packet(pubrec(3), clock.at(11)).expect("valid");
    assert_eq!(drain(&mut s, clock.at(11)), vec![pubrel(3)]);
    assert_eq!(s.inflight_len(), 2);
}

#[test]
fn resend_inflight_keeps_retain_and_subscription_ids() {
    // [MQTT-4.4.0-1], [MQTT-3.3.4-3]: the resent PUBLISH is the same message as first sent.
    let clock = Clock::new();
    let mut s = v5(clock);
    let mut d = delivery("a", QoS::AtLeastOnce, b"1", clock.at(0));
    d.retain = true;
    d.subscription_ids = vec![4, 9];
    s.deliver(d, clock.at(1)).expect("room");
    let first = drain(&mut s, clock.at(1));
    s.connect(
        &Connect {
            clean_start: false,
            ..connect_v5("c5")
        },
        clock.at(5),
    );
    s.resend_inflight();
    let again = drain(&mut s, clock.at(5));
    let mut expected = publish("a", QoS::AtLeastOnce, 1, b"1");
    expected.retain = true;
    expected.properties.subscription_identifiers = vec![4, 9];
    assert_eq!(first, vec![Packet::Publish(expected.clone())]);
    assert_eq!(
        again,
        vec![Packet::Publish(Publish {
            dup: true,
            ..expected
        })]
    );
}

#[test]
fn resend_does_not_apply_message_expiry() {
    // [MQTT-4.3.3-7] once a QoS 2 PUBLISH has been sent, message expiry no longer applies: it is
    // resent on the resumed session even though its expiry interval has passed.
    let clock = Clock::new();
    let mut s = v5(clock);
    let mut d = delivery("t", QoS::ExactlyOnce, b"x", clock.at(0));
    Arc::make_mut(&mut d.message)
        .properties
        .message_expiry_interval = Some(10);
    s.deliver(d, clock.at(1)).expect("room");
    drain(&mut s, clock.at(1));
    s.connect(
        &Connect {
            clean_start: false,
            ..connect_v5("c5")
        },
        clock.at(100),
    );
    s.resend_inflight();
    let packets = drain(&mut s, clock.at(100));
    assert_eq!(packets.len(), 1);
    match &packets[0] {
        Packet::Publish(p) => {
            assert!(p.dup);
            assert_eq!(p.packet_id, Some(pid(1)));
        }
        other => panic!("expected the PUBLISH again, got {other:?}"),
    }
    assert_eq!(s.inflight_len(), 1);
}

#[test]
fn resend_respects_a_lowered_client_receive_maximum() {
    // [MQTT-3.3.4-9] the server must not send more than Receive Maximum QoS 1/2 PUBLISH packets
    // awaiting acknowledgement; [MQTT-4.9.0-1] the send quota is re-initialised from the new
    // connection's Receive Maximum and [MQTT-4.9.0-2] sending stops when it reaches zero.
    let clock = Clock::new();
    let mut connect = connect_v5("c");
    connect.properties.receive_maximum = Some(3);
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    for payload in [b"1", b"2", b"3"] {
        s.deliver(
            delivery("t", QoS::AtLeastOnce, payload, clock.at(0)),
            clock.at(1),
        )
        .expect("room");
    }
    drain(&mut s, clock.at(1));
    // The client comes back accepting only one message at a time.
    connect.clean_start = false;
    connect.properties.receive_maximum = Some(1);
    s.connect(&connect, clock.at(10));
    s.resend_inflight();
    assert_eq!(
        publish_ids(&drain(&mut s, clock.at(10))),
        vec![1],
        "only as many as the window allows"
    );
    // The others follow as acknowledgements free the window, in order [MQTT-4.6.0-1].
    s.handle_packet(puback(1), clock.at(11)).expect("valid");
    assert_eq!(publish_ids(&drain(&mut s, clock.at(11))), vec![2]);
}

#[test]
fn client_receive_maximum_lowers_the_window() {
    // MQTT 5.0 §3.1.2.11.3, [MQTT-3.3.4-9]: the server must not send more QoS 1/2 PUBLISH
    // packets awaiting acknowledgement than the client's Receive Maximum.
    let clock = Clock::new();
    let mut connect = connect_v5("c");
    connect.properties.receive_maximum = Some(2);
    let config = SessionConfig {
        max_inflight: 10,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect, config.clone(), clock.at(0));
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"1", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("t", QoS::ExactlyOnce, b"2", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    assert!(s
        .deliver(
            delivery("t", QoS::AtLeastOnce, b"3", clock.at(0)),
            clock.at(1)
        )
        .is_err());
    // A PUBREC with an error code frees a slot too (MQTT 5.0 §4.9).
    let rec = Packet::PubRec(PubRec::with_reason(pid(2), PubRecReason::UnspecifiedError));
    s.handle_packet(rec, clock.at(2)).expect("valid");
    assert!(s.can_send());

    // The broker's own limit applies when it is the lower one.
    connect.properties.receive_maximum = Some(100);
    let mut s = session_with(
        &connect,
        SessionConfig {
            max_inflight: 1,
            ..config
        },
        clock.at(0),
    );
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"1", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    assert!(!s.can_send());
}

#[test]
fn client_maximum_packet_size_drops_too_large_publishes() {
    // [MQTT-3.1.2-24] the server must not send packets larger than the client's Maximum
    // Packet Size; [MQTT-3.1.2-25] it discards such a PUBLISH and behaves as if it had
    // completed sending it.
    let clock = Clock::new();
    let mut connect = connect_v5("c");
    connect.properties.maximum_packet_size = Some(20);
    let config = SessionConfig {
        max_inflight: 1,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect, config, clock.at(0));
    // 0x32, len, topic (2 + 1), id (2), properties (1), payload (16) = 24 bytes: too large.
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"0123456789abcdef", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    assert_eq!(s.inflight_len(), 1);
    s.deliver(
        delivery("t", QoS::AtMostOnce, b"0123456789abcdefghij", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0");
    assert!(drain(&mut s, clock.at(1)).is_empty());
    assert_eq!(s.dropped_oversize(), 2);
    assert_eq!(
        s.inflight_len(),
        0,
        "the dropped QoS 1 message no longer holds a slot"
    );

    // 2 + 3 + 2 + 1 + 12 = 20 bytes: exactly the maximum is allowed.
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"0123456789ab", clock.at(0)),
        clock.at(2),
    )
    .expect("room");
    let (bytes, written) = drain_bytes(&mut s, clock.at(2));
    assert_eq!((bytes.len(), written), (20, 1));
    assert_eq!(s.dropped_oversize(), 2);
}

#[test]
fn expired_messages_are_not_delivered() {
    // [MQTT-3.3.2-5] a message whose expiry interval has passed before onward delivery started
    // is deleted for that subscriber.
    let clock = Clock::new();
    let mut s = v5(clock);
    let mut d = delivery("t", QoS::AtLeastOnce, b"x", clock.at(0));
    Arc::make_mut(&mut d.message)
        .properties
        .message_expiry_interval = Some(10);
    assert_eq!(s.deliver(d.clone(), clock.at(10)), Ok(()));
    assert_eq!(s.deliver(d.clone(), clock.at(60)), Ok(()));
    assert_eq!(s.inflight_len(), 0, "an expired message takes no slot");
    assert!(drain(&mut s, clock.at(60)).is_empty());
    // One millisecond before the end it is still alive (1 s remaining, rounded up).
    s.deliver(d, clock.at_ms(9_999)).expect("room");
    let mut expected = publish("t", QoS::AtLeastOnce, 1, b"x");
    expected.properties.message_expiry_interval = Some(1);
    assert_eq!(
        drain(&mut s, clock.at_ms(9_999)),
        vec![Packet::Publish(expected)]
    );
}

#[test]
fn remaining_expiry_is_what_is_sent() {
    // [MQTT-3.3.2-6] the PUBLISH sent to a client carries the received expiry interval minus
    // the time the message waited in the server.
    let clock = Clock::new();
    let mut s = v5(clock);
    let mut d = delivery("t", QoS::AtMostOnce, b"x", clock.at(0));
    Arc::make_mut(&mut d.message)
        .properties
        .message_expiry_interval = Some(100);
    s.deliver(d, clock.at(30)).expect("QoS 0");
    let mut expected = publish("t", QoS::AtMostOnce, 0, b"x");
    expected.properties.message_expiry_interval = Some(60);
    // Written 40 s after receipt: 60 s remain.
    assert_eq!(drain(&mut s, clock.at(40)), vec![Packet::Publish(expected)]);
}

#[test]
fn v311_clients_get_no_properties() {
    // MQTT 3.1.1 §3.3.2: the PUBLISH variable header is topic and packet id only.
    let clock = Clock::new();
    let mut s = v311(clock);
    let mut d = delivery("t", QoS::AtLeastOnce, b"x", clock.at(0));
    Arc::make_mut(&mut d.message)
        .properties
        .message_expiry_interval = Some(100);
    d.subscription_ids = vec![3];
    s.deliver(d, clock.at(1)).expect("room");
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(
        &bytes[..],
        &[0x32, 0x06, 0x00, 0x01, b't', 0x00, 0x01, b'x']
    );
}

#[test]
fn transmit_queue_gives_back_burst_capacity() {
    // Not a protocol rule: an idle session should not keep the queue a burst grew.
    let clock = Clock::new();
    let mut s = v311(clock);
    for _ in 0..1_000 {
        s.deliver(
            delivery("t", QoS::AtMostOnce, b"", clock.at(0)),
            clock.at(1),
        )
        .expect("QoS 0");
    }
    assert_eq!(drain(&mut s, clock.at(1)).len(), 1_000);
    assert!(
        s.transmit.capacity() <= 256,
        "capacity {} kept after the burst",
        s.transmit.capacity()
    );
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE and UNSUBSCRIBE
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_grants_qos_capped_by_max_qos() {
    // [MQTT-3.8.4-1] SUBACK with [MQTT-3.8.4-2] the same packet id and [MQTT-3.8.4-6] one code
    // per filter; the server may grant a lower maximum QoS than requested (§3.8.4).
    let clock = Clock::new();
    let config = SessionConfig {
        max_qos: QoS::AtLeastOnce,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v5("c"), config, clock.at(0));
    let subs = expect_subscribe(s.handle_packet(
        subscribe(
            12,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtLeastOnce),
                ("c", QoS::ExactlyOnce),
            ],
        ),
        clock.at(1),
    ));
    let granted: Vec<(String, QoS, bool)> = subs
        .iter()
        .map(|n| {
            (
                n.subscription.filter.to_string(),
                n.subscription.options.qos,
                n.existed,
            )
        })
        .collect();
    assert_eq!(
        granted,
        vec![
            ("a".to_owned(), QoS::AtMostOnce, false),
            ("b".to_owned(), QoS::AtLeastOnce, false),
            ("c".to_owned(), QoS::AtLeastOnce, false),
        ]
    );
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::SubAck(SubAck {
            packet_id: pid(12),
            properties: Default::default(),
            reasons: vec![
                SubAckReason::GrantedQoS0,
                SubAckReason::GrantedQoS1,
                SubAckReason::GrantedQoS1
            ],
        })]
    );
    assert_eq!(s.subscriptions().count(), 3);
}

#[test]
fn subscribe_invalid_filter_is_0x8f_and_0x80_in_v311() {
    // MQTT 5.0 §3.9.3: 0x8F Topic Filter invalid; 3.1.1 [MQTT-3.9.3-2]: 0x80 Failure.
    // The valid filters of the same SUBSCRIBE are still granted [MQTT-3.8.4-5].
    let clock = Clock::new();
    let mut s = v5(clock);
    let subs = expect_subscribe(s.handle_packet(
        subscribe(1, &[("a/#/b", QoS::AtLeastOnce), ("ok", QoS::AtLeastOnce)]),
        clock.at(1),
    ));
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].subscription.filter.as_str(), "ok");
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0x90, 0x05, 0x00, 0x01, 0x00, 0x8F, 0x01]);

    let mut s = v311(clock);
    assert_eq!(
        s.handle_packet(subscribe(2, &[("a+", QoS::AtMostOnce)]), clock.at(1)),
        Ok(None)
    );
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0x90, 0x03, 0x00, 0x02, 0x80]);
    assert_eq!(s.subscriptions().count(), 0);
}

#[test]
fn shared_subscriptions_are_granted() {
    // MQTT 5.0 section 4.8.2: `$share/<group>/<filter>` is a subscription like any other for the
    // session; the index shares it.
    let clock = Clock::new();
    let mut s = v5(clock);
    match s.handle_packet(
        subscribe(3, &[("$share/g/a", QoS::AtLeastOnce)]),
        clock.at(1),
    ) {
        Ok(Some(Action::Subscribe(subs))) => {
            assert_eq!(subs.len(), 1);
            assert_eq!(subs[0].subscription.filter.share_group(), Some("g"));
        }
        other => panic!("expected a subscribe action, got {other:?}"),
    }
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::SubAck(SubAck {
            packet_id: pid(3),
            properties: Default::default(),
            reasons: vec![SubAckReason::GrantedQoS1],
        })]
    );
    assert_eq!(s.subscriptions().count(), 1);
}

#[test]
fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    // [MQTT-3.8.3-4]
    let clock = Clock::new();
    let mut s = v5(clock);
    let mut packet = subscribe(3, &[("$share/g/a", QoS::AtLeastOnce)]);
    if let Packet::Subscribe(sub) = &mut packet {
        sub.filters[0].1.no_local = true;
    }
    let err = s
        .handle_packet(packet, clock.at(1))
        .expect_err("protocol error");
    assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
}

#[test]
fn take_shared_returns_queued_and_unacknowledged_qos1_but_not_qos2_in_flight() {
    // MQTT 5.0 section 4.8.2: unacknowledged QoS 1 may go to another member; QoS 2 already
    // sent is completed with this client only [MQTT-4.8.2-4], [MQTT-4.8.2-5].
    let clock = Clock::new();
    let mut s = v5(clock);
    let filter = vane_proto::TopicFilter::parse("$share/g/t").expect("filter");
    let shared = |qos| Delivery {
        shared: Some(Box::new(filter.clone())),
        ..delivery("t", qos, b"x", clock.at(0))
    };
    s.deliver(shared(QoS::AtLeastOnce), clock.at(1))
        .expect("room");
    s.deliver(shared(QoS::ExactlyOnce), clock.at(1))
        .expect("room");
    s.deliver(
        delivery("t", QoS::AtLeastOnce, b"plain", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.enqueue(shared(QoS::ExactlyOnce));
    let taken = s.take_shared();
    assert_eq!(
        taken.iter().map(|d| d.qos).collect::<Vec<_>>(),
        vec![QoS::AtLeastOnce, QoS::ExactlyOnce]
    );
    assert_eq!(
        s.inflight_len(),
        2,
        "the QoS 2 in flight and the plain QoS 1 stay"
    );
    assert_eq!(s.backlog_len(), 0);
}

#[test]
fn resubscribe_replaces_and_reports_existed() {
    // [MQTT-3.8.4-3] a SUBSCRIBE to a filter identical to an existing subscription replaces it.
    let clock = Clock::new();
    let mut s = v5(clock);
    let first =
        expect_subscribe(s.handle_packet(subscribe(1, &[("a/+", QoS::AtMostOnce)]), clock.at(1)));
    assert!(!first[0].existed);
    let mut packet = subscribe(2, &[("a/+", QoS::ExactlyOnce)]);
    if let Packet::Subscribe(sub) = &mut packet {
        sub.properties.subscription_identifier = Some(42);
        sub.filters[0].1.no_local = true;
    }
    let second = expect_subscribe(s.handle_packet(packet, clock.at(2)));
    assert!(second[0].existed);
    // MQTT 5.0 §3.8.2.1.2: the Subscription Identifier belongs to the (replaced) subscription.
    assert_eq!(second[0].subscription.subscription_id, Some(42));
    assert!(second[0].subscription.options.no_local);
    let all: Vec<_> = s.subscriptions().cloned().collect();
    assert_eq!(all, vec![second[0].subscription.clone()]);
    assert_eq!(
        drain(&mut s, clock.at(2)).len(),
        2,
        "one SUBACK per SUBSCRIBE"
    );
}

#[test]
fn v311_subscriptions_drop_v5_only_options() {
    // No Local and Retain As Published exist only in MQTT 5.0 (§3.8.3.1); a 3.1.1 session never
    // applies them.
    let clock = Clock::new();
    let mut s = v311(clock);
    let mut packet = subscribe(1, &[("a", QoS::AtLeastOnce)]);
    if let Packet::Subscribe(sub) = &mut packet {
        sub.filters[0].1.no_local = true;
        sub.filters[0].1.retain_as_published = true;
    }
    let subs = expect_subscribe(s.handle_packet(packet, clock.at(1)));
    assert!(!subs[0].subscription.options.no_local);
    assert!(!subs[0].subscription.options.retain_as_published);
}

#[test]
fn unsubscribe_reports_a_reason_per_filter_v5() {
    // [MQTT-3.10.4-4] UNSUBACK with [MQTT-3.10.4-5] the same packet id; MQTT 5.0 §3.11.3:
    // 0x00 Success, 0x11 No subscription existed, 0x8F Topic Filter invalid.
    let clock = Clock::new();
    let mut s = v5(clock);
    expect_subscribe(s.handle_packet(
        subscribe(1, &[("a", QoS::AtMostOnce), ("b/#", QoS::AtMostOnce)]),
        clock.at(1),
    ));
    drain(&mut s, clock.at(1));
    let action = s.handle_packet(unsubscribe(0x1234, &["a", "zzz", "x/#/y"]), clock.at(2));
    match action {
        Ok(Some(Action::Unsubscribe(filters))) => {
            assert_eq!(
                filters.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                vec!["a"]
            );
        }
        other => panic!("expected Action::Unsubscribe, got {other:?}"),
    }
    assert_eq!(
        drain(&mut s, clock.at(2)),
        vec![Packet::UnsubAck(UnsubAck {
            packet_id: pid(0x1234),
            properties: Default::default(),
            reasons: vec![
                UnsubAckReason::Success,
                UnsubAckReason::NoSubscriptionExisted,
                UnsubAckReason::TopicFilterInvalid
            ],
        })]
    );
    assert_eq!(
        s.subscriptions()
            .map(|sub| sub.filter.as_str().to_owned())
            .collect::<Vec<_>>(),
        vec!["b/#"]
    );
}

#[test]
fn unsuback_is_sent_even_when_nothing_was_removed() {
    // [MQTT-3.10.4-5] even where no subscriptions are deleted, the server responds with an
    // UNSUBACK with the same packet id (3.1.1: [MQTT-3.10.4-4], [MQTT-3.10.4-5]).
    let clock = Clock::new();
    let mut s = v311(clock);
    assert_eq!(
        s.handle_packet(unsubscribe(9, &["nothing/here"]), clock.at(1)),
        Ok(None)
    );
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0xB0, 0x02, 0x00, 0x09]);

    let mut s = v5(clock);
    assert_eq!(
        s.handle_packet(unsubscribe(9, &["nothing/here"]), clock.at(1)),
        Ok(None)
    );
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::UnsubAck(UnsubAck {
            packet_id: pid(9),
            properties: Default::default(),
            reasons: vec![UnsubAckReason::NoSubscriptionExisted],
        })]
    );
}

#[test]
fn restored_subscriptions_are_listed_replaced_and_cleared() {
    // [MQTT-3.8.4-3] a SUBSCRIBE on a filter the (restored) session already has replaces it.
    let clock = Clock::new();
    let mut s = v5(clock);
    let filter = vane_proto::TopicFilter::parse("a/+").expect("valid filter");
    s.restore_subscription(super::SessionSubscription {
        filter,
        options: SubscriptionOptions::qos(QoS::AtMostOnce),
        subscription_id: Some(1),
    });
    assert_eq!(s.subscriptions().count(), 1);
    let subs =
        expect_subscribe(s.handle_packet(subscribe(1, &[("a/+", QoS::AtLeastOnce)]), clock.at(1)));
    assert!(subs[0].existed);
    assert_eq!(subs[0].subscription.subscription_id, None);
    let cleared = s.clear_subscriptions();
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].options.qos, QoS::AtLeastOnce);
    assert_eq!(s.subscriptions().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Keep alive
// ---------------------------------------------------------------------------------------------

#[test]
fn keep_alive_deadline_is_one_and_a_half_periods_after_the_last_packet() {
    // 3.1.1 [MQTT-3.1.2-24] / 5.0 [MQTT-3.1.2-22]: no packet within 1.5 × Keep Alive closes
    // the connection.
    let clock = Clock::new();
    let mut connect = connect_v311("c");
    connect.keep_alive = 10;
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    assert_eq!(s.poll_timeout(), Some(clock.at(15)));
    assert_eq!(s.handle_timeout(clock.at(10)), Ok(()));
    assert_eq!(s.handle_timeout(clock.at_ms(14_999)), Ok(()));
    assert_eq!(
        s.handle_timeout(clock.at(15)),
        Err(SessionError::KeepAliveTimeout)
    );
    assert_eq!(
        s.handle_timeout(clock.at(100)),
        Err(SessionError::KeepAliveTimeout)
    );
    assert_eq!(
        SessionError::KeepAliveTimeout.disconnect_reason(),
        DisconnectReason::KeepAliveTimeout
    );

    // An odd keep alive is not rounded: 1.5 × 3 s = 4.5 s.
    connect.keep_alive = 3;
    let s = session_with(&connect, SessionConfig::default(), clock.at(0));
    assert_eq!(s.poll_timeout(), Some(clock.at_ms(4_500)));
}

#[test]
fn keep_alive_zero_turns_the_mechanism_off() {
    // 3.1.1 §3.1.2.10 / 5.0 §3.1.2.10: a Keep Alive of 0 turns the mechanism off.
    let clock = Clock::new();
    let mut connect = connect_v5("c");
    connect.keep_alive = 0;
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.handle_timeout(clock.at(1_000_000)), Ok(()));
}

#[test]
fn any_packet_resets_the_keep_alive() {
    // 3.1.1 [MQTT-3.1.2-24] / 5.0 [MQTT-3.1.2-22]: any control packet counts, not only PINGREQ.
    let clock = Clock::new();
    let mut connect = connect_v5("c");
    connect.keep_alive = 10;
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    let packets = [
        Packet::PingReq,
        Packet::Publish(publish("a", QoS::AtMostOnce, 0, b"")),
        puback(300),
        pubrel(301),
        subscribe(1, &[("a", QoS::AtMostOnce)]),
        unsubscribe(2, &["a"]),
    ];
    let mut t = 0;
    for p in packets {
        t += 14;
        assert_eq!(s.handle_timeout(clock.at(t)), Ok(()), "still alive at {t}s");
        s.handle_packet(p, clock.at(t)).expect("valid packet");
        assert_eq!(
            s.poll_timeout(),
            Some(clock.at(t) + Duration::from_secs(15))
        );
    }
    assert_eq!(
        s.handle_timeout(clock.at(t + 15)),
        Err(SessionError::KeepAliveTimeout)
    );
}

#[test]
fn connect_restarts_the_keep_alive() {
    // 5.0 [MQTT-3.1.2-22]: the keep alive is measured per connection from the CONNECT.
    let clock = Clock::new();
    let mut connect = connect_v5("c");
    connect.keep_alive = 10;
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    connect.keep_alive = 20;
    s.connect(&connect, clock.at(100));
    assert_eq!(s.poll_timeout(), Some(clock.at(130)));
}

// ---------------------------------------------------------------------------------------------
// Will
// ---------------------------------------------------------------------------------------------

fn connect_with_will(version: ProtocolVersion) -> Connect {
    let mut c = Connect::new(version, "w");
    c.keep_alive = 10;
    c.will = Some(LastWill {
        topic: ByteString::from("last/will"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties::default(),
    });
    c
}

#[test]
fn will_is_kept_when_the_connection_ends_abnormally() {
    // [MQTT-3.1.2-8] the will is published when the connection closes without a DISCONNECT
    // (keep alive timeout, protocol error).
    let clock = Clock::new();
    let mut s = session_with(
        &connect_with_will(ProtocolVersion::V3_1_1),
        SessionConfig::default(),
        clock.at(0),
    );
    assert_eq!(
        s.handle_timeout(clock.at(15)),
        Err(SessionError::KeepAliveTimeout)
    );
    let will = s
        .take_will(clock.at(0))
        .expect("the will survives a keep alive timeout");
    assert_eq!(will.message.topic, "last/will");
    assert_eq!(will.message.payload, Bytes::from_static(b"gone"));
    assert_eq!(will.message.qos, QoS::AtLeastOnce);
    assert!(will.message.retain);
    assert_eq!(will.message.origin, SID);
    assert_eq!(will.delay, 0);
    assert_eq!(s.take_will(clock.at(0)), None, "taken once");

    let mut s = session_with(
        &connect_with_will(ProtocolVersion::V5),
        SessionConfig::default(),
        clock.at(0),
    );
    expect_error(s.handle_packet(Packet::PingResp, clock.at(1)));
    assert!(
        s.take_will(clock.at(0)).is_some(),
        "the will survives a protocol error"
    );
}

#[test]
fn normal_disconnect_discards_the_will() {
    // 3.1.1 [MQTT-3.14.4-3] on DISCONNECT the will is discarded; 5.0 [MQTT-3.14.4-3] on
    // DISCONNECT with 0x00 it is discarded.
    let clock = Clock::new();
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let mut s = session_with(
            &connect_with_will(version),
            SessionConfig::default(),
            clock.at(0),
        );
        let action = s.handle_packet(
            Packet::Disconnect(Disconnect::new(DisconnectReason::NormalDisconnection)),
            clock.at(1),
        );
        assert_eq!(
            action,
            Ok(Some(Action::Disconnect {
                reason: DisconnectReason::NormalDisconnection
            }))
        );
        assert_eq!(s.take_will(clock.at(0)), None, "{version}");
    }
    // Any other v5 reason but 0x04 discards it as well.
    let mut s = session_with(
        &connect_with_will(ProtocolVersion::V5),
        SessionConfig::default(),
        clock.at(0),
    );
    s.handle_packet(
        Packet::Disconnect(Disconnect::new(DisconnectReason::UnspecifiedError)),
        clock.at(1),
    )
    .expect("DISCONNECT is valid");
    assert_eq!(s.take_will(clock.at(0)), None);
}

#[test]
fn disconnect_with_will_message_keeps_the_will() {
    // MQTT 5.0 §3.14.2.1: 0x04 Disconnect with Will Message, the server publishes the will.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_with_will(ProtocolVersion::V5),
        SessionConfig::default(),
        clock.at(0),
    );
    let action = s.handle_packet(
        Packet::Disconnect(Disconnect::new(DisconnectReason::DisconnectWithWillMessage)),
        clock.at(1),
    );
    assert_eq!(
        action,
        Ok(Some(Action::Disconnect {
            reason: DisconnectReason::DisconnectWithWillMessage
        }))
    );
    assert!(s.take_will(clock.at(0)).is_some());
}

#[test]
fn will_properties_and_delay_are_carried() {
    // MQTT 5.0 §3.1.3.2: will properties are sent with the will; the Will Delay Interval is
    // reported for the broker to honour.
    let clock = Clock::new();
    let mut connect = connect_with_will(ProtocolVersion::V5);
    if let Some(w) = &mut connect.will {
        w.properties.will_delay_interval = Some(30);
        w.properties.content_type = Some(ByteString::from("text/plain"));
        w.properties.response_topic = Some(ByteString::from("reply"));
        w.properties.payload_format_indicator = Some(true);
    }
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    let will = s.take_will(clock.at(0)).expect("a will");
    assert_eq!(will.delay, 30);
    assert_eq!(
        will.message.properties.content_type.as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        will.message.properties.response_topic.as_deref(),
        Some("reply")
    );
    assert_eq!(will.message.properties.payload_format_indicator, Some(true));
    assert_eq!(will.message.properties.topic_alias, None);
}

#[test]
fn reconnect_without_a_will_forgets_the_old_one() {
    // [MQTT-3.1.2-8]/§3.1.3.2: the will belongs to the network connection, not to the session.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_with_will(ProtocolVersion::V5),
        SessionConfig::default(),
        clock.at(0),
    );
    s.connect(
        &Connect {
            clean_start: false,
            ..connect_v5("w")
        },
        clock.at(5),
    );
    assert_eq!(s.take_will(clock.at(0)), None);
}

#[test]
fn will_expiry_starts_when_the_will_is_published() {
    // MQTT 5.0 §3.1.3.2.4: the Will's Message Expiry Interval "is the lifetime of the Will
    // Message in seconds and is sent as the Publication Expiry Interval when the Server
    // publishes the Will Message"; [MQTT-3.3.2-6] the subscriber then gets that interval minus
    // the time the message waited in the server.
    let clock = Clock::new();
    let mut connect = connect_with_will(ProtocolVersion::V5);
    connect.keep_alive = 0;
    if let Some(w) = &mut connect.will {
        w.properties.message_expiry_interval = Some(60);
    }
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    // The connection is lost two minutes later and the broker publishes the will then.
    let lost = clock.at(120);
    let will = s.take_will(lost).expect("a will");
    assert_eq!(will.message.remaining_expiry(lost), Some(60));
    let mut subscriber = v5(clock);
    let d = Delivery {
        message: Arc::new(will.message),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: vec![],
        shared: None,
        stored: None,
    };
    subscriber.deliver(d, lost).expect("room");
    let packets = drain(&mut subscriber, lost);
    assert_eq!(packets.len(), 1, "the will reaches the subscriber");
}

// ---------------------------------------------------------------------------------------------
// Protocol errors
// ---------------------------------------------------------------------------------------------

#[test]
fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2] a second CONNECT is a protocol error and closes the connection.
    let clock = Clock::new();
    let mut s = v5(clock);
    let err =
        expect_error(s.handle_packet(Packet::Connect(Box::new(connect_v5("c5"))), clock.at(1)));
    assert_eq!(err, SessionError::SecondConnect);
    assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
}

#[test]
fn server_only_packets_are_protocol_errors() {
    // MQTT 5.0 §2.1.2 (direction of flow): CONNACK, SUBACK, UNSUBACK and PINGRESP go from
    // server to client only; receiving one is a protocol error (§4.13.1).
    let clock = Clock::new();
    let packets = [
        (
            Packet::ConnAck(ConnAck::new(ConnAckReason::Success, false)),
            PacketType::ConnAck,
        ),
        (
            Packet::SubAck(SubAck {
                packet_id: pid(1),
                properties: Default::default(),
                reasons: vec![SubAckReason::GrantedQoS0],
            }),
            PacketType::SubAck,
        ),
        (
            Packet::UnsubAck(UnsubAck {
                packet_id: pid(1),
                properties: Default::default(),
                reasons: vec![],
            }),
            PacketType::UnsubAck,
        ),
        (Packet::PingResp, PacketType::PingResp),
    ];
    for (packet, ptype) in packets {
        let mut s = v5(clock);
        let err = expect_error(s.handle_packet(packet, clock.at(1)));
        assert_eq!(err, SessionError::ServerOnlyPacket(ptype));
        assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
    }
}

#[test]
fn auth_without_an_authentication_method_is_a_protocol_error() {
    // MQTT 5.0 §4.12: AUTH is only valid after a CONNECT with an Authentication Method.
    let clock = Clock::new();
    let mut s = v5(clock);
    let auth = Auth {
        reason: AuthReason::ReAuthenticate,
        properties: AuthProperties::default(),
    };
    let err = expect_error(s.handle_packet(Packet::Auth(auth), clock.at(1)));
    assert_eq!(err, SessionError::UnexpectedAuth);
    assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
}

#[test]
fn publish_above_maximum_qos_is_refused() {
    // MQTT 5.0 §3.2.2.3.4: a PUBLISH above the server's Maximum QoS is answered with
    // DISCONNECT 0x9B QoS not supported.
    let clock = Clock::new();
    let config = SessionConfig {
        max_qos: QoS::AtLeastOnce,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v5("c"), config, clock.at(0));
    expect_publish(s.handle_packet(
        Packet::Publish(publish("a", QoS::AtLeastOnce, 1, b"")),
        clock.at(1),
    ));
    let err = expect_error(s.handle_packet(
        Packet::Publish(publish("a", QoS::ExactlyOnce, 2, b"")),
        clock.at(1),
    ));
    assert_eq!(err, SessionError::QoSNotSupported);
    assert_eq!(err.disconnect_reason(), DisconnectReason::QoSNotSupported);
    assert_eq!(s.inbound_qos2_pending(), 0);
}

#[test]
fn topic_alias_zero_or_above_maximum_is_invalid() {
    // [MQTT-3.3.2-8] a Topic Alias of 0 must not be sent; [MQTT-3.3.2-9] nor one above the
    // server's Topic Alias Maximum; §3.3.2.3.4: DISCONNECT 0x94 Topic Alias invalid.
    let clock = Clock::new();
    let config = SessionConfig {
        topic_alias_maximum: 5,
        ..SessionConfig::default()
    };
    for alias in [0, 6, u16::MAX] {
        for topic in ["a", ""] {
            let mut s = session_with(&connect_v5("c"), config.clone(), clock.at(0));
            let p = with_alias(publish(topic, QoS::AtMostOnce, 0, b""), alias);
            let err = expect_error(s.handle_packet(Packet::Publish(p), clock.at(1)));
            assert_eq!(
                err,
                SessionError::TopicAliasInvalid,
                "alias {alias} topic {topic:?}"
            );
            assert_eq!(err.disconnect_reason(), DisconnectReason::TopicAliasInvalid);
        }
    }
    // A Topic Alias Maximum of 0 means no alias is allowed at all.
    let config = SessionConfig {
        topic_alias_maximum: 0,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v5("c"), config, clock.at(0));
    let p = with_alias(publish("a", QoS::AtMostOnce, 0, b""), 1);
    assert_eq!(
        expect_error(s.handle_packet(Packet::Publish(p), clock.at(1))),
        SessionError::TopicAliasInvalid
    );
    // The maximum itself is allowed.
    let config = SessionConfig {
        topic_alias_maximum: 5,
        ..SessionConfig::default()
    };
    let mut s = session_with(&connect_v5("c"), config, clock.at(0));
    expect_publish(s.handle_packet(
        Packet::Publish(with_alias(publish("a", QoS::AtMostOnce, 0, b""), 5)),
        clock.at(1),
    ));
}

#[test]
fn empty_topic_without_alias_is_a_protocol_error() {
    // MQTT 5.0 §3.3.4: a zero-length Topic Name without a Topic Alias is a protocol error.
    let clock = Clock::new();
    let mut s = v5(clock);
    let err = expect_error(s.handle_packet(
        Packet::Publish(publish("", QoS::AtLeastOnce, 1, b"")),
        clock.at(1),
    ));
    assert_eq!(err, SessionError::EmptyTopic);
    assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
}

#[test]
fn unknown_topic_alias_is_a_protocol_error() {
    // MQTT 5.0 §3.3.2.3.4: an empty topic with an alias the receiver has no mapping for is a
    // protocol error.
    let clock = Clock::new();
    let mut s = v5(clock);
    let p = with_alias(publish("", QoS::AtMostOnce, 0, b""), 3);
    let err = expect_error(s.handle_packet(Packet::Publish(p), clock.at(1)));
    assert_eq!(err, SessionError::TopicAliasUnknown);
    assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
}

// ---------------------------------------------------------------------------------------------
// Topic aliases (inbound, MQTT 5.0)
// ---------------------------------------------------------------------------------------------

#[test]
fn topic_alias_is_set_then_used() {
    // MQTT 5.0 §3.3.2.3.4: a non-empty topic with an alias sets the mapping; an empty topic with
    // that alias stands for the mapped topic. The alias is not forwarded.
    let clock = Clock::new();
    let mut s = v5(clock);
    let (m, _) = expect_publish(s.handle_packet(
        Packet::Publish(with_alias(
            publish("sensors/1", QoS::AtMostOnce, 0, b"a"),
            2,
        )),
        clock.at(1),
    ));
    assert_eq!(m.topic, "sensors/1");
    assert_eq!(m.properties.topic_alias, None);
    let (m, ack) = expect_publish(s.handle_packet(
        Packet::Publish(with_alias(publish("", QoS::AtLeastOnce, 7, b"b"), 2)),
        clock.at(2),
    ));
    assert_eq!(m.topic, "sensors/1");
    assert_eq!(m.payload, Bytes::from_static(b"b"));
    assert_eq!(m.properties.topic_alias, None);
    assert_eq!(ack, Some(PendingAck::PubAck(pid(7))));

    // A new topic for the same alias replaces the mapping.
    expect_publish(s.handle_packet(
        Packet::Publish(with_alias(
            publish("sensors/2", QoS::AtMostOnce, 0, b"c"),
            2,
        )),
        clock.at(3),
    ));
    let (m, _) = expect_publish(s.handle_packet(
        Packet::Publish(with_alias(publish("", QoS::AtMostOnce, 0, b"d"), 2)),
        clock.at(4),
    ));
    assert_eq!(m.topic, "sensors/2");
}

#[test]
fn topic_aliases_reset_on_a_new_connection() {
    // [MQTT-3.3.2-7] topic alias mappings exist only within a network connection.
    let clock = Clock::new();
    let mut s = v5(clock);
    expect_publish(s.handle_packet(
        Packet::Publish(with_alias(publish("t", QoS::AtMostOnce, 0, b""), 1)),
        clock.at(1),
    ));
    s.connect(
        &Connect {
            clean_start: false,
            ..connect_v5("c5")
        },
        clock.at(10),
    );
    let err = expect_error(s.handle_packet(
        Packet::Publish(with_alias(publish("", QoS::AtMostOnce, 0, b""), 1)),
        clock.at(11),
    ));
    assert_eq!(err, SessionError::TopicAliasUnknown);
}

// ---------------------------------------------------------------------------------------------
// Topic aliases (outbound, MQTT 5.0)
// ---------------------------------------------------------------------------------------------

/// A v5 CONNECT with the given Topic Alias Maximum (and optionally a Maximum Packet Size).
fn connect_aliases(topic_alias_maximum: Option<u16>, maximum_packet_size: Option<u32>) -> Connect {
    let mut c = connect_v5("aliases");
    c.properties.topic_alias_maximum = topic_alias_maximum;
    c.properties.maximum_packet_size = maximum_packet_size;
    c
}

/// The PUBLISH a client receives with a topic (empty when the alias stands for it) and an
/// alias.
fn out_aliased(topic: &str, qos: QoS, id: u16, payload: &'static [u8], alias: u16) -> Packet {
    let mut p = publish(topic, qos, id, payload);
    p.properties.topic_alias = Some(alias);
    Packet::Publish(p)
}

/// What a conforming client does with the aliases it receives (MQTT 5.0 §3.3.2.3.4): checks
/// each against its Topic Alias Maximum, records the mapping a non-empty topic sets, and
/// resolves an empty topic through the mapping.
#[derive(Debug, Default)]
struct ClientAliases {
    maximum: u16,
    map: HashMap<u16, ByteString>,
}

impl ClientAliases {
    fn new(maximum: u16) -> ClientAliases {
        ClientAliases {
            maximum,
            map: HashMap::new(),
        }
    }

    /// The topic `p` stands for; panics on anything a client would treat as a protocol error.
    fn resolve(&mut self, p: &Publish) -> ByteString {
        match p.properties.topic_alias {
            None => {
                assert!(!p.topic.is_empty(), "empty topic without an alias");
                p.topic.clone()
            }
            Some(alias) => {
                // [MQTT-3.3.2-8] never 0; [MQTT-3.1.2-26] / [MQTT-3.3.2-11] never above the
                // client's maximum; [MQTT-3.1.2-27] none at all when that is 0.
                assert!(
                    alias >= 1 && alias <= self.maximum,
                    "alias {alias} outside 1..={}",
                    self.maximum
                );
                if p.topic.is_empty() {
                    self.map
                        .get(&alias)
                        .cloned()
                        .unwrap_or_else(|| panic!("alias {alias} used before it was set"))
                } else {
                    self.map.insert(alias, p.topic.clone());
                    p.topic.clone()
                }
            }
        }
    }
}

fn aliases_of(packets: &[Packet]) -> Vec<(String, Option<u16>)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.to_string(), p.properties.topic_alias)),
            _ => None,
        })
        .collect()
}

#[test]
fn no_server_topic_aliases_without_a_client_topic_alias_maximum() {
    // [MQTT-3.1.2-27] Topic Alias Maximum absent or 0: the server must not send any Topic Alias.
    // MQTT 3.1.1 has no topic aliases at all.
    let clock = Clock::new();
    for connect in [
        connect_aliases(None, None),
        connect_aliases(Some(0), None),
        connect_v311("c311"),
    ] {
        let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
        for _ in 0..3 {
            s.deliver(
                delivery("sensors/temperature", QoS::AtMostOnce, b"x", clock.at(0)),
                clock.at(1),
            )
            .expect("QoS 0");
        }
        let packets = drain(&mut s, clock.at(1));
        assert_eq!(
            aliases_of(&packets),
            vec![("sensors/temperature".to_string(), None); 3],
            "{:?} {:?}",
            connect.protocol,
            connect.properties.topic_alias_maximum
        );
        assert_eq!(s.server_topic_aliases(), 0);
    }
}

#[test]
fn first_publish_of_a_topic_sets_an_alias_later_ones_send_an_empty_topic() {
    // MQTT 5.0 §3.3.2.3.4: a PUBLISH with a topic and a Topic Alias sets the mapping; one with a
    // zero-length topic and the alias uses it. [MQTT-3.3.2-11] the alias is within the client's
    // Topic Alias Maximum. Every QoS is aliased alike.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_aliases(Some(4), None),
        SessionConfig::default(),
        clock.at(0),
    );
    s.deliver(
        delivery("sensors/1", QoS::AtMostOnce, b"a", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0");
    s.deliver(
        delivery("sensors/1", QoS::AtLeastOnce, b"b", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("sensors/2", QoS::ExactlyOnce, b"c", clock.at(0)),
        clock.at(1),
    )
    .expect("room");
    s.deliver(
        delivery("sensors/2", QoS::AtMostOnce, b"d", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0");
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![
            out_aliased("sensors/1", QoS::AtMostOnce, 0, b"a", 1),
            out_aliased("", QoS::AtLeastOnce, 1, b"b", 1),
            out_aliased("sensors/2", QoS::ExactlyOnce, 2, b"c", 2),
            out_aliased("", QoS::AtMostOnce, 0, b"d", 2),
        ]
    );
    assert_eq!(s.server_topic_aliases(), 2);
    // The empty-topic form is what makes aliases worth it: 9 topic bytes become 3 alias bytes.
    s.deliver(
        delivery("sensors/1", QoS::AtMostOnce, b"", clock.at(0)),
        clock.at(2),
    )
    .expect("QoS 0");
    let (bytes, _) = drain_bytes(&mut s, clock.at(2));
    assert_eq!(
        &bytes[..],
        &[0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01]
    );
}

#[test]
fn server_topic_aliases_stay_within_the_client_maximum_reusing_the_least_recently_used() {
    // [MQTT-3.1.2-26], [MQTT-3.3.2-11] the server must not send a Topic Alias greater than the
    // client's Topic Alias Maximum. Once all are taken, the least recently used alias is given
    // to the new topic, which §3.3.2.3.4 allows: a PUBLISH with the same alias and a different
    // topic modifies the mapping.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_aliases(Some(2), None),
        SessionConfig::default(),
        clock.at(0),
    );
    let topics = [
        "t/aa", "t/bb", "t/aa", // t/bb is now the least recently used
        "t/cc", // takes alias 2 from t/bb
        "t/bb", // takes alias 1 from t/aa
        "t/cc", // t/bb is the least recently used again
        "t/aa", // takes alias 1 from t/bb
    ];
    for t in topics {
        s.deliver(delivery(t, QoS::AtMostOnce, b"", clock.at(0)), clock.at(1))
            .expect("QoS 0");
    }
    let packets = drain(&mut s, clock.at(1));
    assert_eq!(
        aliases_of(&packets),
        [
            ("t/aa", 1),
            ("t/bb", 2),
            ("", 1),
            ("t/cc", 2),
            ("t/bb", 1),
            ("", 2),
            ("t/aa", 1),
        ]
        .map(|(t, a)| (t.to_string(), Some(a)))
    );
    // What the client makes of them is the topic of every message.
    let mut client = ClientAliases::new(2);
    for (p, t) in packets.iter().zip(topics) {
        let Packet::Publish(p) = p else {
            panic!("expected PUBLISH, got {p:?}")
        };
        assert_eq!(client.resolve(p), t);
    }
    assert_eq!(s.server_topic_aliases(), 2);
}

#[test]
fn server_topic_aliases_start_afresh_on_a_new_connection() {
    // [MQTT-3.3.2-7] a receiver must not carry Topic Alias mappings from one network connection
    // to another, so the server cannot either: after a reconnect the first PUBLISH of a topic,
    // including a resent one [MQTT-4.4.0-1], carries the topic again.
    let clock = Clock::new();
    let connect = Connect {
        clean_start: false,
        ..connect_aliases(Some(3), None)
    };
    let mut s = session_with(&connect, SessionConfig::default(), clock.at(0));
    for payload in [b"1", b"2"] {
        s.deliver(
            delivery("status/door", QoS::AtLeastOnce, payload, clock.at(0)),
            clock.at(1),
        )
        .expect("room");
    }
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![
            out_aliased("status/door", QoS::AtLeastOnce, 1, b"1", 1),
            out_aliased("", QoS::AtLeastOnce, 2, b"2", 1),
        ]
    );

    s.connect(&connect, clock.at(10));
    assert_eq!(s.server_topic_aliases(), 0);
    s.resend_inflight();
    let mut first = out_aliased("status/door", QoS::AtLeastOnce, 1, b"1", 1);
    let mut second = out_aliased("", QoS::AtLeastOnce, 2, b"2", 1);
    for p in [&mut first, &mut second] {
        if let Packet::Publish(p) = p {
            p.dup = true;
        }
    }
    assert_eq!(drain(&mut s, clock.at(10)), vec![first, second]);

    // A new connection without a Topic Alias Maximum gets no aliases, resent or not.
    s.connect(
        &Connect {
            clean_start: false,
            ..connect_aliases(None, None)
        },
        clock.at(20),
    );
    s.resend_inflight();
    assert_eq!(
        aliases_of(&drain(&mut s, clock.at(20))),
        vec![("status/door".to_string(), None); 2]
    );
}

#[test]
fn publish_dropped_for_maximum_packet_size_leaves_the_aliases_unchanged() {
    // [MQTT-3.1.2-25] a PUBLISH over the client's Maximum Packet Size is discarded: the client
    // never sees it, so it must not set an alias, take one from another topic, or count as a
    // use of one.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_aliases(Some(2), Some(20)),
        SessionConfig::default(),
        clock.at(0),
    );
    let big: &'static [u8] = &[b'x'; 30];
    let deliver = |s: &mut Session, topic: &str, payload: &'static [u8]| {
        s.deliver(
            delivery(topic, QoS::AtMostOnce, payload, clock.at(0)),
            clock.at(1),
        )
        .expect("QoS 0");
        aliases_of(&drain(s, clock.at(1)))
    };
    let sent = |t: &str, a: u16| vec![(t.to_string(), Some(a))];

    assert_eq!(deliver(&mut s, "t/aaaa", big), vec![], "dropped");
    assert_eq!(
        s.server_topic_aliases(),
        0,
        "the dropped PUBLISH set nothing"
    );
    assert_eq!(
        deliver(&mut s, "t/aaaa", b"x"),
        sent("t/aaaa", 1),
        "so the topic is sent"
    );
    assert_eq!(deliver(&mut s, "t/bbbb", b"x"), sent("t/bbbb", 2));
    // t/aaaa is the least recently used; a dropped PUBLISH of it does not count as a use...
    assert_eq!(deliver(&mut s, "t/aaaa", big), vec![]);
    // ...so t/cccc takes its alias.
    assert_eq!(deliver(&mut s, "t/cccc", b"x"), sent("t/cccc", 1));
    assert_eq!(deliver(&mut s, "t/bbbb", b"x"), sent("", 2));
    // A dropped PUBLISH of a new topic takes no alias from another topic.
    assert_eq!(deliver(&mut s, "t/dddd", big), vec![]);
    assert_eq!(deliver(&mut s, "t/cccc", b"x"), sent("", 1));
    assert_eq!(deliver(&mut s, "t/bbbb", b"x"), sent("", 2));
    assert_eq!(s.dropped_oversize(), 3);

    // The same holds for a QoS 1 message, which also gives its in-flight slot back.
    s.deliver(
        delivery("t/eeee", QoS::AtLeastOnce, big, clock.at(0)),
        clock.at(2),
    )
    .expect("room");
    assert!(drain(&mut s, clock.at(2)).is_empty());
    assert_eq!(s.inflight_len(), 0);
    assert_eq!(deliver(&mut s, "t/cccc", b"x"), sent("", 1));
}

#[test]
fn new_alias_is_not_sent_when_it_would_exceed_the_maximum_packet_size() {
    // [MQTT-3.1.2-24] the server must not send a packet larger than the client's Maximum Packet
    // Size. The Topic Alias property adds 3 bytes; when only the plain PUBLISH fits, it is sent
    // plainly rather than dropped, and no alias is set.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_aliases(Some(2), Some(16)),
        SessionConfig::default(),
        clock.at(0),
    );
    // 0x30, length, topic (2 + 6), properties length (1), payload: 11 + payload bytes.
    s.deliver(
        delivery("t/aaaa", QoS::AtMostOnce, b"12345", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0");
    let (bytes, written) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(
        (bytes.len(), written),
        (16, 1),
        "plain, exactly the maximum"
    );
    assert_eq!(s.server_topic_aliases(), 0);
    assert_eq!(s.dropped_oversize(), 0);

    // With the alias, 14 + payload bytes: fits with 2.
    s.deliver(
        delivery("t/aaaa", QoS::AtMostOnce, b"12", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0");
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![out_aliased("t/aaaa", QoS::AtMostOnce, 0, b"12", 1)]
    );
    // Once set, the alias makes the packet smaller than the plain one: 8 + payload bytes.
    s.deliver(
        delivery("t/aaaa", QoS::AtMostOnce, b"12345678", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0");
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![out_aliased("", QoS::AtMostOnce, 0, b"12345678", 1)]
    );
}

#[test]
fn topics_of_three_bytes_or_fewer_are_sent_without_an_alias() {
    // Not a protocol rule: §3.3.2.3.4 leaves it to the sender whether to use an alias. The
    // Topic Alias property takes 3 bytes, so it cannot shorten a topic of 3 bytes or fewer.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_aliases(Some(10), None),
        SessionConfig::default(),
        clock.at(0),
    );
    for t in ["a", "a/b", "abc", "a", "abcd", "abcd"] {
        s.deliver(delivery(t, QoS::AtMostOnce, b"", clock.at(0)), clock.at(1))
            .expect("QoS 0");
    }
    assert_eq!(
        aliases_of(&drain(&mut s, clock.at(1))),
        [
            ("a", None),
            ("a/b", None),
            ("abc", None),
            ("a", None),
            ("abcd", Some(1)),
            ("", Some(1)),
        ]
        .map(|(t, a)| (t.to_string(), a))
    );
}

#[test]
fn client_and_server_topic_aliases_are_independent() {
    // MQTT 5.0 §3.3.2.3.4: the Topic Alias mappings used by the client and by the server are
    // independent; alias 1 from the client and alias 1 from the server name different topics.
    let clock = Clock::new();
    let mut s = session_with(
        &connect_aliases(Some(1), None),
        SessionConfig::default(),
        clock.at(0),
    );
    expect_publish(s.handle_packet(
        Packet::Publish(with_alias(publish("in/topic", QoS::AtMostOnce, 0, b""), 1)),
        clock.at(1),
    ));
    s.deliver(
        delivery("out/topic", QoS::AtMostOnce, b"", clock.at(0)),
        clock.at(1),
    )
    .expect("QoS 0");
    assert_eq!(
        aliases_of(&drain(&mut s, clock.at(1))),
        vec![("out/topic".to_string(), Some(1))]
    );
    let (m, _) = expect_publish(s.handle_packet(
        Packet::Publish(with_alias(publish("", QoS::AtMostOnce, 0, b""), 1)),
        clock.at(2),
    ));
    assert_eq!(m.topic, "in/topic");
}

// ---------------------------------------------------------------------------------------------
// Payload Format Indicator (inbound, MQTT 5.0)
// ---------------------------------------------------------------------------------------------

/// A PUBLISH whose Payload Format Indicator says UTF-8.
fn utf8_publish(topic: &str, qos: QoS, id: u16, payload: &'static [u8]) -> Publish {
    let mut p = publish(topic, qos, id, payload);
    p.properties.payload_format_indicator = Some(true);
    p
}

/// Byte strings that are not well-formed UTF-8 (RFC 3629).
const NOT_UTF8: [&[u8]; 6] = [
    b"\xff",             // never valid
    b"\x80abc",          // continuation byte without a lead byte
    b"\xe2\x82",         // truncated sequence
    b"\xc0\xaf",         // overlong encoding of '/'
    b"\xed\xa0\x80",     // UTF-16 surrogate U+D800
    b"\xf4\x90\x80\x80", // above U+10FFFF
];

#[test]
fn qos1_payload_not_utf8_gets_puback_0x99_and_is_not_routed() {
    // MQTT 5.0 §3.3.2.3.2: Payload Format Indicator 1 means the payload is UTF-8; the receiver
    // may check it and, if it is not, answer with PUBACK 0x99 Payload format invalid (§4.13).
    let clock = Clock::new();
    let mut s = v5(clock);
    for (i, payload) in NOT_UTF8.into_iter().enumerate() {
        let id = i as u16 + 1;
        let result = s.handle_packet(
            Packet::Publish(utf8_publish("a/b", QoS::AtLeastOnce, id, payload)),
            clock.at(1),
        );
        assert_eq!(result, Ok(None), "not routed: {payload:?}");
        assert_eq!(
            drain(&mut s, clock.at(1)),
            vec![Packet::PubAck(PubAck::with_reason(
                pid(id),
                PubAckReason::PayloadFormatInvalid
            ))],
            "{payload:?}"
        );
    }
    assert_eq!(s.payload_format_invalid(), NOT_UTF8.len() as u64);
}

#[test]
fn qos2_payload_not_utf8_gets_pubrec_0x99_and_its_id_is_not_kept() {
    // MQTT 5.0 §3.3.2.3.2 / §4.13: PUBREC 0x99 Payload format invalid. A PUBREC with an error
    // code ends the QoS 2 exchange (§4.3.3), so the packet id is not held for a PUBREL and the
    // client may use it again at once.
    let clock = Clock::new();
    let mut s = v5(clock);
    let result = s.handle_packet(
        Packet::Publish(utf8_publish("a/b", QoS::ExactlyOnce, 4, b"\xc3\x28")),
        clock.at(1),
    );
    assert_eq!(result, Ok(None), "not routed");
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::PubRec(PubRec::with_reason(
            pid(4),
            PubRecReason::PayloadFormatInvalid
        ))]
    );
    assert_eq!(s.inbound_qos2_pending(), 0);
    // The id is free: a new message with it is routed.
    let (m, ack) = expect_publish(s.handle_packet(
        Packet::Publish(utf8_publish("a/b", QoS::ExactlyOnce, 4, b"ok")),
        clock.at(2),
    ));
    assert_eq!(m.payload, Bytes::from_static(b"ok"));
    assert_eq!(ack, Some(PendingAck::PubRec(pid(4))));
    assert_eq!(s.inbound_qos2_pending(), 1);

    // [MQTT-4.3.3-10] a resend of an id already awaiting PUBREL is answered as before, whatever
    // its payload: the first PUBLISH with that id was accepted.
    let result = s.handle_packet(
        Packet::Publish(utf8_publish("a/b", QoS::ExactlyOnce, 4, b"\xff")),
        clock.at(3),
    );
    assert_eq!(result, Ok(None));
    assert_eq!(drain(&mut s, clock.at(3)), vec![pubrec(4)]);
    assert_eq!(s.inbound_qos2_pending(), 1);
    assert_eq!(s.payload_format_invalid(), 1);
}

#[test]
fn qos0_payload_not_utf8_ends_the_connection_with_0x99() {
    // MQTT 5.0 §3.3.2.3.2 / §4.13: the receiver may answer a payload that is not of the
    // indicated format with DISCONNECT 0x99; QoS 0 has no acknowledgement that could carry the
    // refusal, so the session does that, and the message is not routed.
    let clock = Clock::new();
    let mut s = v5(clock);
    let err = expect_error(s.handle_packet(
        Packet::Publish(utf8_publish("a/b", QoS::AtMostOnce, 0, b"\xff\xfe")),
        clock.at(1),
    ));
    assert_eq!(err, SessionError::PayloadFormatInvalid);
    assert_eq!(
        err.disconnect_reason(),
        DisconnectReason::PayloadFormatInvalid
    );
    assert_eq!(err.disconnect_reason().as_u8(), 0x99);
    assert!(drain(&mut s, clock.at(1)).is_empty());
    assert_eq!(s.payload_format_invalid(), 1);
}

#[test]
fn payload_format_check_passes_utf8_and_unflagged_payloads() {
    // MQTT 5.0 §3.3.2.3.2: only a payload marked UTF-8 (indicator 1) is checked; indicator 0 or
    // none means unspecified bytes. Well-formed UTF-8 passes, multi-byte and empty included,
    // and the indicator is forwarded unaltered [MQTT-3.3.2-4].
    let clock = Clock::new();
    let mut s = v5(clock);
    for payload in [
        b"" as &'static [u8],
        b"plain ascii",
        "caf\u{e9} \u{20ac} \u{1f600}".as_bytes(),
        b"\xf4\x8f\xbf\xbf", // U+10FFFF, the highest code point
    ] {
        let (m, ack) = expect_publish(s.handle_packet(
            Packet::Publish(utf8_publish("a/b", QoS::AtLeastOnce, 1, payload)),
            clock.at(1),
        ));
        assert_eq!(m.payload, Bytes::from_static(payload));
        assert_eq!(m.properties.payload_format_indicator, Some(true));
        assert_eq!(ack, Some(PendingAck::PubAck(pid(1))));
    }
    for indicator in [None, Some(false)] {
        let mut p = publish("a/b", QoS::AtMostOnce, 0, b"\xff\x00\x80");
        p.properties.payload_format_indicator = indicator;
        let (m, _) = expect_publish(s.handle_packet(Packet::Publish(p), clock.at(1)));
        assert_eq!(m.properties.payload_format_indicator, indicator);
    }
    assert_eq!(s.payload_format_invalid(), 0);
    assert!(drain(&mut s, clock.at(1)).is_empty());
}

#[test]
fn topic_alias_set_by_a_refused_publish_is_kept() {
    // MQTT 5.0 §3.3.2.3.4: a PUBLISH with a topic and an alias sets the mapping. The refusal is
    // about the payload, and the client counts the mapping as set, so it stays.
    let clock = Clock::new();
    let mut s = v5(clock);
    assert_eq!(
        s.handle_packet(
            Packet::Publish(with_alias(
                utf8_publish("alias/me", QoS::AtLeastOnce, 1, b"\xff"),
                3
            )),
            clock.at(1),
        ),
        Ok(None)
    );
    let (m, _) = expect_publish(s.handle_packet(
        Packet::Publish(with_alias(publish("", QoS::AtMostOnce, 0, b"fine"), 3)),
        clock.at(2),
    ));
    assert_eq!(m.topic, "alias/me");
}

// ---------------------------------------------------------------------------------------------
// Property test: random packet sequences
// ---------------------------------------------------------------------------------------------

mod prop {
    use std::collections::{HashMap, HashSet, VecDeque};

    use proptest::prelude::*;

    use super::*;

    const FILTERS: [&str; 6] = ["a/b", "a/+", "#", "a/#/b", "$share/g/a", "+/x"];

    #[derive(Debug, Clone)]
    enum Op {
        /// A PUBLISH from the client.
        Publish {
            qos: u8,
            id: u16,
            dup: bool,
        },
        /// The broker routes the oldest message still owed an acknowledgement.
        Route {
            matched: bool,
        },
        /// The broker refuses the oldest message still owed an acknowledgement.
        Refuse,
        PubRel(u16),
        /// PUBACK / PUBREC / PUBCOMP from the client, for the n-th in-flight id or a raw id.
        PubAck(usize, u16),
        PubRec(usize, u16, bool),
        PubComp(usize, u16),
        Subscribe(u16, usize, u8),
        Unsubscribe(u16, usize),
        PingReq,
        Deliver(u8),
        Write,
        Advance(u64),
        Reconnect,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 1u16..6, any::<bool>()).prop_map(|(qos, id, dup)| Op::Publish { qos, id, dup }),
            2 => any::<bool>().prop_map(|matched| Op::Route { matched }),
            1 => Just(Op::Refuse),
            2 => (1u16..6).prop_map(Op::PubRel),
            2 => (any::<usize>(), 1u16..8).prop_map(|(i, id)| Op::PubAck(i, id)),
            2 => (any::<usize>(), 1u16..8, any::<bool>()).prop_map(|(i, id, e)| Op::PubRec(i, id, e)),
            2 => (any::<usize>(), 1u16..8).prop_map(|(i, id)| Op::PubComp(i, id)),
            1 => (1u16..100, 0..FILTERS.len(), 0u8..3).prop_map(|(id, f, q)| Op::Subscribe(id, f, q)),
            1 => (1u16..100, 0..FILTERS.len()).prop_map(|(id, f)| Op::Unsubscribe(id, f)),
            1 => Just(Op::PingReq),
            4 => (0u8..3).prop_map(Op::Deliver),
            2 => Just(Op::Write),
            1 => (0u64..40).prop_map(Op::Advance),
            1 => Just(Op::Reconnect),
        ]
    }

    fn qos(n: u8) -> QoS {
        QoS::from_u8(n).expect("0..3")
    }

    /// The id to acknowledge: the `index`-th in-flight id when there is one, else `raw`.
    fn ack_id(s: &Session, index: usize, raw: u16) -> PacketId {
        if s.inflight.is_empty() {
            pid(raw)
        } else {
            s.inflight[index % s.inflight.len()].packet_id
        }
    }

    fn check_invariants(s: &Session) {
        assert!(
            s.inflight_len() <= usize::from(s.send_window),
            "in-flight window exceeded"
        );
        assert!(s.send_window <= s.config.max_inflight.max(1));
        let ids: HashSet<PacketId> = s.inflight.iter().map(|f| f.packet_id).collect();
        assert_eq!(
            ids.len(),
            s.inflight.len(),
            "an in-flight packet id is used twice"
        );
    }

    fn run(
        v5: bool,
        max_inflight: u16,
        receive_maximum: u16,
        client_rm: Option<u16>,
        ops: Vec<Op>,
    ) {
        let clock = Clock::new();
        let config = SessionConfig {
            max_inflight,
            receive_maximum,
            ..SessionConfig::default()
        };
        let mut connect = if v5 {
            connect_v5("p")
        } else {
            connect_v311("p")
        };
        connect.keep_alive = 30;
        if v5 {
            connect.properties.receive_maximum = client_rm;
        }
        let mut now = clock.at(0);
        let mut last_packet = now;
        let mut s = session_with(&connect, config, now);
        // QoS 2 ids that got an Action::Publish and were neither released nor refused.
        let mut pending_qos2: HashSet<PacketId> = HashSet::new();
        // Acknowledgements owed, in the order the Actions were returned.
        let mut owed: VecDeque<PendingAck> = VecDeque::new();
        // Filter → granted QoS, as the session should remember them.
        let mut subs: HashMap<&str, QoS> = HashMap::new();

        for op in ops {
            let packet = match op {
                Op::Publish { qos: q, id, dup } => {
                    let q = qos(q);
                    Some(Packet::Publish(Publish {
                        dup: dup && q != QoS::AtMostOnce,
                        ..publish("a/b", q, id, b"p")
                    }))
                }
                Op::PubRel(id) => Some(pubrel(id)),
                Op::PubAck(i, raw) => Some(Packet::PubAck(PubAck::new(ack_id(&s, i, raw)))),
                Op::PubRec(i, raw, error) => {
                    let reason = if error && v5 {
                        PubRecReason::UnspecifiedError
                    } else {
                        PubRecReason::Success
                    };
                    Some(Packet::PubRec(PubRec::with_reason(
                        ack_id(&s, i, raw),
                        reason,
                    )))
                }
                Op::PubComp(i, raw) => Some(Packet::PubComp(PubComp::new(ack_id(&s, i, raw)))),
                Op::Subscribe(id, f, q) => Some(subscribe(id, &[(FILTERS[f], qos(q))])),
                Op::Unsubscribe(id, f) => Some(unsubscribe(id, &[FILTERS[f]])),
                Op::PingReq => Some(Packet::PingReq),
                Op::Route { matched } => {
                    if let Some(ack) = owed.pop_front() {
                        s.publish_routed(ack, matched);
                    }
                    None
                }
                Op::Refuse => {
                    if let Some(ack) = owed.pop_front() {
                        if let PendingAck::PubRec(id) = ack {
                            pending_qos2.remove(&id);
                        }
                        s.publish_refused(ack, PubAckReason::QuotaExceeded);
                    }
                    None
                }
                Op::Deliver(q) => {
                    let q = qos(q);
                    let could_send = s.can_send();
                    let before = s.inflight_len();
                    match s.deliver(delivery("out", q, b"d", now), now) {
                        Ok(()) if q == QoS::AtMostOnce => assert_eq!(s.inflight_len(), before),
                        Ok(()) => {
                            assert!(could_send);
                            assert_eq!(s.inflight_len(), before + 1);
                        }
                        Err(d) => {
                            assert!(!could_send, "handed back with room in the window");
                            assert_ne!(d.qos, QoS::AtMostOnce);
                        }
                    }
                    None
                }
                Op::Write => {
                    // Every queued packet encodes and decodes.
                    drain(&mut s, now);
                    None
                }
                Op::Advance(secs) => {
                    now += Duration::from_secs(secs);
                    let expired = now >= last_packet + Duration::from_secs(45);
                    assert_eq!(s.handle_timeout(now).is_err(), expired, "keep alive");
                    if expired {
                        return;
                    }
                    None
                }
                Op::Reconnect => {
                    connect.clean_start = false;
                    s.connect(&connect, now);
                    last_packet = now;
                    // Unsent acknowledgements are lost with the connection; the client resends
                    // its PUBLISH packets, which covers them.
                    owed.clear();
                    s.resend_inflight();
                    None
                }
            };
            if let Some(packet) = packet {
                last_packet = now;
                let is_qos2_publish =
                    matches!(&packet, Packet::Publish(p) if p.qos == QoS::ExactlyOnce);
                let publish_id = match &packet {
                    Packet::Publish(p) => p.packet_id,
                    _ => None,
                };
                if let Packet::PubRel(r) = &packet {
                    pending_qos2.remove(&r.packet_id);
                }
                match s.handle_packet(packet, now) {
                    Ok(Some(Action::Publish { ack, .. })) => {
                        if let Some(PendingAck::PubRec(id)) = ack {
                            assert!(
                                pending_qos2.insert(id),
                                "QoS 2 id {id} forwarded twice before PUBREL"
                            );
                        }
                        if is_qos2_publish {
                            assert_eq!(ack, publish_id.map(PendingAck::PubRec));
                        }
                        if let Some(ack) = ack {
                            owed.push_back(ack);
                        }
                    }
                    Ok(None) if is_qos2_publish => {
                        let id = publish_id.expect("QoS 2 has an id");
                        assert!(
                            pending_qos2.contains(&id),
                            "a new QoS 2 message was dropped"
                        );
                    }
                    Ok(Some(Action::Subscribe(new))) => {
                        for n in new {
                            let key = FILTERS
                                .iter()
                                .find(|f| **f == n.subscription.filter.as_str())
                                .expect("known filter");
                            let existed = subs.insert(key, n.subscription.options.qos).is_some();
                            assert_eq!(existed, n.existed);
                        }
                    }
                    Ok(Some(Action::Unsubscribe(removed))) => {
                        for f in removed {
                            assert!(
                                subs.remove(f.as_str()).is_some(),
                                "removed a filter never subscribed"
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        assert_eq!(e, SessionError::ReceiveMaximumExceeded);
                        assert!(pending_qos2.len() >= usize::from(receive_maximum));
                        return;
                    }
                }
            }
            assert_eq!(s.inbound_qos2_pending(), pending_qos2.len());
            assert_eq!(s.subscriptions().count(), subs.len());
            check_invariants(&s);
        }
        drain(&mut s, now);
        check_invariants(&s);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_packet_sequences_keep_the_session_consistent(
            v5 in any::<bool>(),
            max_inflight in 0u16..5,
            receive_maximum in 1u16..5,
            client_rm in proptest::option::of(1u16..5),
            ops in proptest::collection::vec(op(), 0..120),
        ) {
            run(v5, max_inflight, receive_maximum, client_rm, ops);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property test: server-to-client topic aliases
// ---------------------------------------------------------------------------------------------

mod alias_prop {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    const TOPICS: [&str; 7] = [
        "a",
        "abc",
        "abcd",
        "sensor/1",
        "sensor/2",
        "sensor/3",
        "some/much/longer/topic/name",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        /// A delivery of `TOPICS[topic]` with `pad` bytes of payload after its index.
        Deliver {
            topic: usize,
            qos1: bool,
            pad: usize,
        },
        /// Write everything queued; the client checks it and acknowledges every QoS 1 PUBLISH.
        Write,
        /// A new connection with these limits, then the in-flight messages are resent.
        Reconnect {
            maximum: Option<u16>,
            size: Option<u32>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..TOPICS.len(), any::<bool>(), 0usize..40)
                .prop_map(|(topic, qos1, pad)| Op::Deliver { topic, qos1, pad }),
            3 => Just(Op::Write),
            1 => (proptest::option::of(0u16..4), proptest::option::of(20u32..70))
                .prop_map(|(maximum, size)| Op::Reconnect { maximum, size }),
        ]
    }

    /// Size of the PUBLISH without an alias (v5, no properties): what must never be dropped when
    /// it fits.
    fn plain_len(topic: &str, qos1: bool, payload: usize) -> usize {
        let remaining = 2 + topic.len() + if qos1 { 2 } else { 0 } + 1 + payload;
        assert!(remaining < 128, "one length byte in this test");
        2 + remaining
    }

    struct Client {
        aliases: ClientAliases,
        size: Option<u32>,
    }

    /// Writes what is queued and checks it as the client: every packet within the Maximum
    /// Packet Size, every alias valid, every topic the one its message was delivered with, and
    /// nothing that fits plainly dropped.
    fn write(
        s: &mut Session,
        client: &mut Client,
        topics: &[&str],
        fresh: &mut Vec<(usize, usize)>,
        now: Instant,
    ) {
        let (mut buf, _) = drain_bytes(s, now);
        let limit = client.size.map_or(DEFAULT_MAX_PACKET_SIZE, |n| n as usize);
        let mut decoder = Decoder::with_version(ProtocolVersion::V5, limit);
        let mut received = HashSet::new();
        while let Some(p) = decoder
            .decode(&mut buf)
            .expect("within the client's limits")
        {
            let Packet::Publish(p) = p else {
                panic!("only PUBLISH expected, got {p:?}")
            };
            let topic = client.aliases.resolve(&p);
            let index: usize = std::str::from_utf8(&p.payload)
                .ok()
                .and_then(|t| t.split(':').next())
                .and_then(|n| n.parse().ok())
                .expect("payload starts with the delivery index");
            assert_eq!(topic, topics[index], "delivery {index}");
            received.insert(index);
            if let Some(id) = p.packet_id {
                s.handle_packet(Packet::PubAck(PubAck::new(id)), now)
                    .expect("valid");
            }
        }
        assert!(buf.is_empty());
        for (index, plain) in fresh.drain(..) {
            let fits = match client.size {
                Some(max) => plain <= max as usize,
                None => true,
            };
            if fits {
                assert!(
                    received.contains(&index),
                    "delivery {index} of {plain} bytes dropped"
                );
            }
        }
    }

    fn run(maximum: Option<u16>, size: Option<u32>, ops: Vec<Op>) {
        let clock = Clock::new();
        let now = clock.at(1);
        let config = SessionConfig {
            max_inflight: u16::MAX,
            ..SessionConfig::default()
        };
        let mut connect = Connect {
            clean_start: false,
            ..connect_aliases(maximum, size)
        };
        let mut s = session_with(&connect, config, clock.at(0));
        let mut client = Client {
            aliases: ClientAliases::new(maximum.unwrap_or(0)),
            size,
        };
        // The topic of each delivery, by index.
        let mut topics: Vec<&str> = Vec::new();
        // Deliveries queued since the last write: (index, plain size).
        let mut fresh: Vec<(usize, usize)> = Vec::new();
        for op in ops {
            match op {
                Op::Deliver { topic, qos1, pad } => {
                    let index = topics.len();
                    let topic = TOPICS[topic];
                    topics.push(topic);
                    let mut payload = format!("{index}:").into_bytes();
                    payload.resize(payload.len() + pad, b'.');
                    fresh.push((index, plain_len(topic, qos1, payload.len())));
                    let qos = if qos1 {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    };
                    let d = Delivery {
                        message: Arc::new(Message {
                            payload: Bytes::from(payload),
                            ..message(topic, qos, b"", clock.at(0))
                        }),
                        qos,
                        retain: false,
                        subscription_ids: Vec::new(),
                        shared: None,
                        stored: None,
                    };
                    s.deliver(d, now).expect("the window is never full here");
                }
                Op::Write => write(&mut s, &mut client, &topics, &mut fresh, now),
                Op::Reconnect { maximum, size } => {
                    connect.properties.topic_alias_maximum = maximum;
                    connect.properties.maximum_packet_size = size;
                    s.connect(&connect, now);
                    client = Client {
                        aliases: ClientAliases::new(maximum.unwrap_or(0)),
                        size,
                    };
                    // Queued packets are lost with the connection; resent ones are checked
                    // for their topic only.
                    fresh.clear();
                    s.resend_inflight();
                }
            }
            assert!(s.server_topic_aliases() <= usize::from(client.aliases.maximum));
        }
        write(&mut s, &mut client, &topics, &mut fresh, now);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn server_topic_aliases_always_resolve_to_the_delivered_topic(
            maximum in proptest::option::of(0u16..4),
            size in proptest::option::of(20u32..70),
            ops in proptest::collection::vec(op(), 0..80),
        ) {
            // [MQTT-3.1.2-26], [MQTT-3.1.2-27], [MQTT-3.3.2-7], [MQTT-3.3.2-8], [MQTT-3.3.2-11],
            // [MQTT-3.1.2-24], [MQTT-3.1.2-25] and §3.3.2.3.4, checked by a client that resolves
            // every alias it receives.
            run(maximum, size, ops);
        }
    }
}

mod store_events {
    //! What a session reports about deliveries that have store records, and how a restarted
    //! broker gives a session back its flows.
    use super::*;
    use crate::session::StoreEvent;

    fn stored(topic: &str, qos: QoS, seq: u64, clock: Clock) -> Delivery {
        Delivery {
            stored: Some(seq),
            ..delivery(topic, qos, b"x", clock.at(0))
        }
    }

    fn events(s: &mut Session) -> Vec<StoreEvent> {
        let mut out = Vec::new();
        s.take_store_events(&mut out);
        out
    }

    #[test]
    fn a_stored_qos1_delivery_is_completed_by_its_puback() {
        let clock = Clock::new();
        let mut s = v311(clock);
        s.deliver(stored("t", QoS::AtLeastOnce, 7, clock), clock.at(1))
            .expect("room");
        assert!(
            events(&mut s).is_empty(),
            "QoS 1 needs no packet id on disk"
        );
        let ids = publish_ids(&drain(&mut s, clock.at(1)));
        s.handle_packet(puback(ids[0]), clock.at(2)).expect("ok");
        assert_eq!(events(&mut s), vec![StoreEvent::Completed { seq: 7 }]);
    }

    #[test]
    fn a_stored_qos2_delivery_reports_its_id_release_and_completion() {
        // Exactly once across a restart needs the packet id before the PUBLISH goes out and
        // the released state before PUBREL does [MQTT-4.3.3-4].
        let clock = Clock::new();
        let mut s = v311(clock);
        s.deliver(stored("t", QoS::ExactlyOnce, 9, clock), clock.at(1))
            .expect("room");
        let id = publish_ids(&drain(&mut s, clock.at(1)))[0];
        let packet_id = pid(id);
        assert_eq!(
            events(&mut s),
            vec![StoreEvent::Assigned { seq: 9, packet_id }]
        );
        s.handle_packet(pubrec(id), clock.at(2)).expect("ok");
        assert_eq!(
            events(&mut s),
            vec![StoreEvent::Released { seq: 9, packet_id }]
        );
        s.handle_packet(pubcomp(id), clock.at(3)).expect("ok");
        assert_eq!(events(&mut s), vec![StoreEvent::Completed { seq: 9 }]);
    }

    #[test]
    fn unstored_deliveries_report_nothing() {
        let clock = Clock::new();
        let mut s = v311(clock);
        s.deliver(
            delivery("t", QoS::ExactlyOnce, b"x", clock.at(0)),
            clock.at(1),
        )
        .expect("room");
        let id = publish_ids(&drain(&mut s, clock.at(1)))[0];
        s.handle_packet(pubrec(id), clock.at(2)).expect("ok");
        s.handle_packet(pubcomp(id), clock.at(3)).expect("ok");
        assert!(!s.has_store_events());
    }

    #[test]
    fn an_expired_stored_delivery_is_completed_without_being_sent() {
        let clock = Clock::new();
        let mut s = v5(clock);
        let mut m = message("t", QoS::AtLeastOnce, b"x", clock.at(0));
        m.properties.message_expiry_interval = Some(5);
        let d = Delivery {
            message: Arc::new(m),
            stored: Some(3),
            ..delivery("t", QoS::AtLeastOnce, b"x", clock.at(0))
        };
        s.deliver(d, clock.at(10))
            .expect("expired ones are dropped");
        assert!(drain(&mut s, clock.at(10)).is_empty());
        assert_eq!(events(&mut s), vec![StoreEvent::Completed { seq: 3 }]);
    }

    #[test]
    fn restored_qos2_flows_resend_under_their_old_ids() {
        // [MQTT-4.4.0-1] a resumed session resends unacknowledged PUBLISH with DUP and
        // PUBREL for released ones, under the packet ids the client knows.
        let clock = Clock::new();
        let mut s = v311(clock);
        s.restore_inflight(stored("a", QoS::ExactlyOnce, 1, clock), pid(40), false);
        s.restore_inflight(stored("b", QoS::ExactlyOnce, 2, clock), pid(12), true);
        s.connect(&connect_v311("c"), clock.at(1));
        s.resend_inflight();
        let packets = drain(&mut s, clock.at(1));
        assert_eq!(packets.len(), 2);
        match &packets[0] {
            Packet::Publish(p) => {
                assert_eq!(p.packet_id, Some(pid(40)));
                assert!(p.dup);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
        assert!(matches!(&packets[1], Packet::PubRel(r) if r.packet_id == pid(12)));
        // New deliveries never reuse an id still in flight [MQTT-2.3.1-2].
        for n in 0..100u64 {
            s.deliver(stored("c", QoS::AtLeastOnce, 100 + n, clock), clock.at(2))
                .expect("room");
        }
        let ids = publish_ids(&drain(&mut s, clock.at(2)));
        assert_eq!(ids.len(), 100);
        assert!(!ids.contains(&40) && !ids.contains(&12), "{ids:?}");
        s.handle_packet(pubcomp(12), clock.at(3)).expect("ok");
        assert_eq!(events(&mut s), vec![StoreEvent::Completed { seq: 2 }]);
    }

    #[test]
    fn a_restored_inbound_qos2_id_is_not_forwarded_twice() {
        // [MQTT-4.3.3-9] a resend of a QoS 2 PUBLISH acknowledged before the restart.
        let clock = Clock::new();
        let mut s = v311(clock);
        s.restore_inbound_qos2(pid(5));
        s.connect(&connect_v311("c"), clock.at(1));
        let mut resend = publish("t", QoS::ExactlyOnce, 5, b"x");
        resend.dup = true;
        let action = s
            .handle_packet(Packet::Publish(resend), clock.at(1))
            .expect("ok");
        assert!(action.is_none(), "not routed again");
        assert!(
            matches!(drain(&mut s, clock.at(1)).as_slice(), [Packet::PubRec(r)] if r.packet_id == pid(5))
        );
    }

    #[test]
    fn shared_deliveries_taken_back_complete_their_records() {
        let clock = Clock::new();
        let mut s = v5(clock);
        let filter = vane_proto::TopicFilter::parse("$share/g/t").expect("filter");
        let d = Delivery {
            shared: Some(Box::new(filter)),
            ..stored("t", QoS::AtLeastOnce, 11, clock)
        };
        s.deliver(d, clock.at(1)).expect("room");
        let taken = s.take_shared();
        assert_eq!(taken.len(), 1);
        assert_eq!(
            taken[0].stored, None,
            "the new member stores its own record"
        );
        assert_eq!(events(&mut s), vec![StoreEvent::Completed { seq: 11 }]);
    }
}

mod retained_runs {
    //! Retained messages for a new subscription wait as a run of shared messages and become
    //! deliveries only as the in-flight window takes them.
    use super::*;

    #[test]
    fn a_retained_run_goes_out_in_order_with_the_granted_qos_and_the_retain_flag() {
        // [MQTT-3.3.1-6] sent to the new subscriber, [MQTT-3.3.1-8] with RETAIN set,
        // [MQTT-3.8.4-8] at most the granted QoS.
        let clock = Clock::new();
        let config = SessionConfig {
            max_inflight: 2,
            ..SessionConfig::default()
        };
        let mut s = session_with(&connect_v5("c"), config, clock.at(0));
        let messages: Vec<Arc<Message>> = (0..5u8)
            .map(|i| {
                let qos = if i == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::ExactlyOnce
                };
                Arc::new(message(&format!("r/{i}"), qos, b"x", clock.at(0)))
            })
            .collect();
        s.enqueue_retained(messages, QoS::AtLeastOnce, Some(9));
        assert_eq!(s.backlog_len(), 5);
        // Window of 2: the QoS 0 one and two QoS 1 ones, then the window is full.
        assert!(
            s.flush_backlog(clock.at(1), 100),
            "some wait for the window"
        );
        assert_eq!(s.backlog_len(), 2);
        let packets = drain(&mut s, clock.at(1));
        let topics: Vec<_> = packets
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => {
                    assert!(p.retain);
                    assert!(p.qos <= QoS::AtLeastOnce);
                    assert_eq!(p.properties.subscription_identifiers, vec![9]);
                    p.topic.to_string()
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            })
            .collect();
        assert_eq!(topics, ["r/0", "r/1", "r/2"]);
        for id in publish_ids(&packets) {
            s.handle_packet(puback(id), clock.at(2)).expect("ok");
        }
        assert!(!s.flush_backlog(clock.at(2), 100));
        assert_eq!(s.backlog_len(), 0);
        assert_eq!(drain(&mut s, clock.at(2)).len(), 2);
    }

    #[test]
    fn taking_shared_deliveries_back_leaves_retained_runs_in_place() {
        let clock = Clock::new();
        let mut s = v5(clock);
        s.enqueue_retained(
            vec![Arc::new(message("r", QoS::AtLeastOnce, b"x", clock.at(0)))],
            QoS::AtLeastOnce,
            None,
        );
        let filter = vane_proto::TopicFilter::parse("$share/g/t").expect("filter");
        s.enqueue(Delivery {
            shared: Some(Box::new(filter)),
            ..delivery("t", QoS::AtLeastOnce, b"y", clock.at(0))
        });
        assert_eq!(s.take_shared().len(), 1);
        assert_eq!(s.backlog_len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Limits (limits.max_subscriptions_per_client, limits.max_topic_length, limits.max_topic_levels)
// ---------------------------------------------------------------------------------------------

fn limited(connect: &Connect, clock: Clock) -> Session {
    let config = SessionConfig {
        max_subscriptions: 2,
        max_topic_length: 16,
        max_topic_levels: 3,
        ..SessionConfig::default()
    };
    session_with(connect, config, clock.at(0))
}

#[test]
fn subscriptions_beyond_the_cap_get_0x97_and_0x80_in_v311() {
    // limits.max_subscriptions_per_client: MQTT 5.0 SUBACK 0x97 Quota exceeded, 3.1.1 0x80;
    // the filters within the cap in the same SUBSCRIBE are still granted [MQTT-3.8.4-5].
    let clock = Clock::new();
    let mut s = limited(&connect_v5("c"), clock);
    let subs = expect_subscribe(s.handle_packet(
        subscribe(
            1,
            &[
                ("a", QoS::AtMostOnce),
                ("b", QoS::AtMostOnce),
                ("c", QoS::AtMostOnce),
            ],
        ),
        clock.at(1),
    ));
    assert_eq!(subs.len(), 2);
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::SubAck(SubAck {
            packet_id: pid(1),
            properties: Default::default(),
            reasons: vec![
                SubAckReason::GrantedQoS0,
                SubAckReason::GrantedQoS0,
                SubAckReason::QuotaExceeded
            ],
        })]
    );
    // Replacing an existing subscription does not count against the cap.
    let subs =
        expect_subscribe(s.handle_packet(subscribe(2, &[("a", QoS::AtLeastOnce)]), clock.at(2)));
    assert!(subs[0].existed);
    // After an unsubscribe there is room for one more.
    s.handle_packet(unsubscribe(3, &["b"]), clock.at(3))
        .expect("unsubscribe");
    expect_subscribe(s.handle_packet(subscribe(4, &[("c", QoS::AtMostOnce)]), clock.at(4)));
    assert_eq!(s.subscriptions().count(), 2);

    let mut s = limited(&connect_v311("c"), clock);
    s.handle_packet(
        subscribe(1, &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce)]),
        clock.at(1),
    )
    .expect("subscribe");
    drain(&mut s, clock.at(1));
    assert_eq!(
        s.handle_packet(subscribe(2, &[("x", QoS::AtMostOnce)]), clock.at(1)),
        Ok(None)
    );
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0x90, 0x03, 0x00, 0x02, 0x80]);
}

#[test]
fn filters_beyond_the_topic_limits_get_0x8f_and_0x80_in_v311() {
    // limits.max_topic_length / max_topic_levels on SUBSCRIBE: MQTT 5.0 0x8F Topic Filter
    // invalid, 3.1.1 0x80.
    let clock = Clock::new();
    let mut s = limited(&connect_v5("c"), clock);
    let subs = expect_subscribe(s.handle_packet(
        subscribe(
            1,
            &[
                ("a/b/c/d", QoS::AtMostOnce),
                ("aaaaaaaaaaaaaaaaa", QoS::AtMostOnce),
                ("a/b/c", QoS::AtMostOnce),
                ("$share/g/a/b/c", QoS::AtMostOnce),
            ],
        ),
        clock.at(1),
    ));
    assert_eq!(subs.len(), 2, "the share prefix does not count as levels");
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(
        &bytes[..],
        &[0x90, 0x07, 0x00, 0x01, 0x00, 0x8F, 0x8F, 0x00, 0x00]
    );

    let mut s = limited(&connect_v311("c"), clock);
    assert_eq!(
        s.handle_packet(subscribe(2, &[("a/b/c/#", QoS::AtMostOnce)]), clock.at(1)),
        Ok(None)
    );
    let (bytes, _) = drain_bytes(&mut s, clock.at(1));
    assert_eq!(&bytes[..], &[0x90, 0x03, 0x00, 0x02, 0x80]);
}

#[test]
fn publish_beyond_the_topic_limits_is_refused_with_0x90() {
    // limits.max_topic_length / max_topic_levels on PUBLISH, MQTT 5.0: QoS 1 PUBACK and QoS 2
    // PUBREC 0x90 Topic Name invalid; QoS 0 dropped and counted; the connection goes on.
    let clock = Clock::new();
    let mut s = limited(&connect_v5("c"), clock);
    for (topic, qos, id) in [
        ("a/b/c/d", QoS::AtLeastOnce, 1),
        ("aaaaaaaaaaaaaaaaa", QoS::ExactlyOnce, 2),
        ("a/b/c/d", QoS::AtMostOnce, 0),
    ] {
        assert_eq!(
            s.handle_packet(Packet::Publish(publish(topic, qos, id, b"x")), clock.at(1)),
            Ok(None),
            "{topic} is not routed"
        );
    }
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![
            Packet::PubAck(PubAck::with_reason(pid(1), PubAckReason::TopicNameInvalid)),
            Packet::PubRec(PubRec::with_reason(pid(2), PubRecReason::TopicNameInvalid)),
        ]
    );
    assert_eq!(s.topic_limit_dropped(), 1);
    assert_eq!(s.inbound_qos2_pending(), 0, "the refused QoS 2 id is free");
    // At the limits exactly, a message goes through.
    expect_publish(s.handle_packet(
        Packet::Publish(publish("a/b/cccccccccccc", QoS::AtLeastOnce, 3, b"x")),
        clock.at(2),
    ));
}

#[test]
fn publish_beyond_the_topic_limits_ends_an_mqtt_3_connection() {
    // MQTT 3.x cannot refuse a single message: the connection ends.
    let clock = Clock::new();
    let mut s = limited(&connect_v311("c"), clock);
    let err = expect_error(s.handle_packet(
        Packet::Publish(publish("a/b/c/d", QoS::AtMostOnce, 0, b"x")),
        clock.at(1),
    ));
    assert_eq!(err, SessionError::TopicLimitExceeded);
    assert_eq!(err.disconnect_reason().as_u8(), 0x90);
}

#[test]
fn topic_level_count_is_exact() {
    let clock = Clock::new();
    let s = limited(&connect_v5("c"), clock);
    assert!(!s.topic_exceeds_limits("a/b/c"));
    assert!(!s.topic_exceeds_limits("//"), "three empty levels");
    assert!(s.topic_exceeds_limits("///"), "four empty levels");
    assert!(!s.topic_exceeds_limits("aaaaaaaaaaaaaaaa"));
    assert!(s.topic_exceeds_limits("aaaaaaaaaaaaaaaaa"));
}

#[test]
fn subscription_identifier_in_a_client_publish_is_a_protocol_error() {
    // [MQTT-3.3.4-6] a PUBLISH from a client MUST NOT contain a Subscription Identifier.
    let clock = Clock::new();
    let mut s = v5(clock);
    let mut p = publish("a", QoS::AtLeastOnce, 1, b"x");
    p.properties.subscription_identifiers = vec![1];
    let err = expect_error(s.handle_packet(Packet::Publish(p), clock.at(1)));
    assert_eq!(err, SessionError::SubscriptionIdentifierFromClient);
    assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
    assert!(drain(&mut s, clock.at(1)).is_empty(), "no PUBACK for it");
}

#[test]
fn response_topic_with_a_wildcard_is_a_protocol_error() {
    // [MQTT-3.3.2-14] the Response Topic MUST NOT contain wildcard characters.
    let clock = Clock::new();
    for topic in ["r/#", "r/+/x", "+"] {
        let mut s = v5(clock);
        let mut p = publish("a", QoS::AtMostOnce, 0, b"x");
        p.properties.response_topic = Some(topic.into());
        let err = expect_error(s.handle_packet(Packet::Publish(p), clock.at(1)));
        assert_eq!(err, SessionError::ResponseTopicHasWildcard, "{topic}");
        assert_eq!(err.disconnect_reason(), DisconnectReason::ProtocolError);
    }
    // A Response Topic without wildcards is routed.
    let mut s = v5(clock);
    let mut p = publish("a", QoS::AtMostOnce, 0, b"x");
    p.properties.response_topic = Some("r/x".into());
    expect_publish(s.handle_packet(Packet::Publish(p), clock.at(1)));
}

mod topic_policy {
    //! The [`TopicPolicy`] hook: what the session refuses by itself once the broker's
    //! authorization says no (MQTT 5.0 sections 3.4.2.1, 3.5.2.1 and 3.9.3: 0x87 Not
    //! authorized; 3.1.1: SUBACK 0x80).
    use super::*;
    use crate::session::{StoreEvent, TopicPolicy};

    /// Allows only topics and filters starting with `ok/`.
    #[derive(Debug)]
    struct OnlyOk;

    impl TopicPolicy for OnlyOk {
        fn may_publish(&self, topic: &str) -> bool {
            topic.starts_with("ok/")
        }
        fn may_subscribe(&self, filter: &vane_proto::TopicFilter) -> bool {
            filter.filter().starts_with("ok/")
        }
        fn may_receive(&self, topic: &str) -> bool {
            topic.starts_with("ok/")
        }
    }

    fn with_policy(mut s: Session) -> Session {
        s.set_policy(Some(Arc::new(OnlyOk)));
        s
    }

    #[test]
    fn refused_publish_gets_0x87_at_qos1_and_qos2_and_is_not_routed_v5() {
        let clock = Clock::new();
        let mut s = with_policy(v5(clock));
        let r = s.handle_packet(
            Packet::Publish(publish("no/x", QoS::AtLeastOnce, 1, b"x")),
            clock.at(1),
        );
        assert_eq!(r, Ok(None), "not routed");
        let r = s.handle_packet(
            Packet::Publish(publish("no/x", QoS::ExactlyOnce, 2, b"x")),
            clock.at(1),
        );
        assert_eq!(r, Ok(None), "not routed");
        let r = s.handle_packet(
            Packet::Publish(publish("no/x", QoS::AtMostOnce, 0, b"x")),
            clock.at(1),
        );
        assert_eq!(r, Ok(None), "QoS 0 dropped");
        assert_eq!(
            drain(&mut s, clock.at(1)),
            vec![
                Packet::PubAck(PubAck::with_reason(pid(1), PubAckReason::NotAuthorized)),
                Packet::PubRec(PubRec::with_reason(pid(2), PubRecReason::NotAuthorized)),
            ]
        );
        // The refused QoS 2 id is free: PUBREL for it is answered "not found" and a new
        // PUBLISH with it is routed.
        let (m, _) = expect_publish(s.handle_packet(
            Packet::Publish(publish("ok/x", QoS::ExactlyOnce, 2, b"x")),
            clock.at(2),
        ));
        assert_eq!(&*m.topic, "ok/x");
    }

    #[test]
    fn refused_publish_gets_a_plain_ack_in_3_1_1() {
        // [MQTT-3.3.5-2] the server acknowledges and drops it (or closes: not chosen).
        let clock = Clock::new();
        let mut s = with_policy(v311(clock));
        let r = s.handle_packet(
            Packet::Publish(publish("no/x", QoS::AtLeastOnce, 1, b"x")),
            clock.at(1),
        );
        assert_eq!(r, Ok(None));
        assert_eq!(drain(&mut s, clock.at(1)), vec![puback(1)]);
    }

    #[test]
    fn refused_filters_get_0x87_v5_and_0x80_v311_others_are_granted() {
        let clock = Clock::new();
        for (mut s, refused) in [
            (with_policy(v5(clock)), SubAckReason::NotAuthorized),
            (with_policy(v311(clock)), SubAckReason::UnspecifiedError),
        ] {
            let subs = expect_subscribe(s.handle_packet(
                subscribe(
                    1,
                    &[
                        ("no/#", QoS::AtLeastOnce),
                        ("ok/#", QoS::AtLeastOnce),
                        ("$share/g/no/x", QoS::AtMostOnce),
                        ("$share/g/ok/x", QoS::AtMostOnce),
                    ],
                ),
                clock.at(1),
            ));
            let filters: Vec<&str> = subs
                .iter()
                .map(|n| n.subscription.filter.as_str())
                .collect();
            assert_eq!(filters, ["ok/#", "$share/g/ok/x"]);
            assert_eq!(s.subscriptions().count(), 2, "refused filters are not kept");
            assert_eq!(
                drain(&mut s, clock.at(1)),
                vec![Packet::SubAck(SubAck {
                    packet_id: pid(1),
                    properties: Default::default(),
                    reasons: vec![
                        refused,
                        SubAckReason::GrantedQoS1,
                        refused,
                        SubAckReason::GrantedQoS0
                    ],
                })]
            );
        }
    }

    #[test]
    fn refused_deliveries_are_dropped_and_their_store_records_completed() {
        let clock = Clock::new();
        let mut s = with_policy(v5(clock));
        let stored = Delivery {
            stored: Some(5),
            ..delivery("no/x", QoS::AtLeastOnce, b"x", clock.at(0))
        };
        s.deliver(stored, clock.at(1))
            .expect("dropped, not handed back");
        s.deliver(
            delivery("no/y", QoS::AtMostOnce, b"y", clock.at(0)),
            clock.at(1),
        )
        .expect("dropped");
        s.enqueue_retained(
            vec![
                Arc::new(message("no/r", QoS::AtLeastOnce, b"r", clock.at(0))),
                Arc::new(message("ok/r", QoS::AtLeastOnce, b"r", clock.at(0))),
            ],
            QoS::AtLeastOnce,
            None,
        );
        s.flush_backlog(clock.at(1), 10);
        let packets = drain(&mut s, clock.at(1));
        let topics: Vec<&str> = packets
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => Some(&*p.topic),
                _ => None,
            })
            .collect();
        assert_eq!(topics, ["ok/r"]);
        let mut events = Vec::new();
        s.take_store_events(&mut events);
        assert_eq!(events, vec![StoreEvent::Completed { seq: 5 }]);
    }

    #[test]
    fn inflight_messages_no_longer_allowed_are_not_resent_on_resume() {
        // Authorization comes before [MQTT-4.4.0-1]: after a reload that revoked a topic,
        // what was in flight on it is not sent again.
        let clock = Clock::new();
        let mut s = v5(clock);
        s.deliver(
            delivery("no/x", QoS::AtLeastOnce, b"x", clock.at(0)),
            clock.at(1),
        )
        .expect("room");
        s.deliver(
            delivery("ok/x", QoS::AtLeastOnce, b"x", clock.at(0)),
            clock.at(1),
        )
        .expect("room");
        assert_eq!(publish_ids(&drain(&mut s, clock.at(1))).len(), 2);
        s.connect(&connect_v5("c5"), clock.at(2));
        s.set_policy(Some(Arc::new(OnlyOk)));
        s.resend_inflight();
        let packets = drain(&mut s, clock.at(2));
        assert_eq!(packets.len(), 1);
        assert!(matches!(&packets[0], Packet::Publish(p) if &*p.topic == "ok/x" && p.dup));
        assert_eq!(s.inflight_len(), 1);
    }
}

#[test]
fn max_session_expiry_caps_connect_disconnect_and_restore() {
    // `SessionConfig::max_session_expiry` is the longest interval granted: at CONNECT (MQTT 5.0
    // asked, or an MQTT 3.x persistent session's "never"), at DISCONNECT and on restore.
    let clock = Clock::new();
    let config = SessionConfig {
        max_session_expiry: 60,
        ..SessionConfig::default()
    };
    let mut v5 = connect_v5("capped");
    v5.properties.session_expiry_interval = Some(3600);
    let mut s = session_with(&v5, config.clone(), clock.at(0));
    assert_eq!(s.session_expiry(), 60);
    let disconnect = Disconnect {
        reason: DisconnectReason::NormalDisconnection,
        properties: DisconnectProperties {
            session_expiry_interval: Some(u32::MAX),
            ..Default::default()
        },
    };
    assert!(s
        .handle_packet(Packet::Disconnect(disconnect), clock.at(1))
        .is_ok());
    assert_eq!(s.session_expiry(), 60);

    v5.properties.session_expiry_interval = Some(30);
    assert_eq!(
        session_with(&v5, config.clone(), clock.at(0)).session_expiry(),
        30,
        "within the cap: as asked"
    );
    let mut v3 = connect_v311("capped-v3");
    v3.clean_start = false;
    assert_eq!(
        session_with(&v3, config.clone(), clock.at(0)).session_expiry(),
        60
    );
    v3.clean_start = true;
    assert_eq!(
        session_with(&v3, config.clone(), clock.at(0)).session_expiry(),
        0
    );
    let mut restored = Session::new(SID, "r".into(), config, clock.at(0));
    restored.restore(ProtocolVersion::V3_1_1, u32::MAX);
    assert_eq!(restored.session_expiry(), 60);
}

/// The counts a connection takes for the broker's metrics: sent PUBLISH packets by QoS, and
/// expired deliveries; taking them starts again from zero.
#[test]
fn session_counts_what_it_sends_and_drops() {
    let clock = Clock::new();
    let mut s = v5(clock);
    s.deliver(
        delivery("a/b", QoS::AtMostOnce, b"x", clock.at(0)),
        clock.at(0),
    )
    .expect("QoS 0 always fits");
    s.deliver(
        delivery("a/b", QoS::AtLeastOnce, b"y", clock.at(0)),
        clock.at(0),
    )
    .expect("room");
    let mut expiring = delivery("a/b", QoS::AtLeastOnce, b"z", clock.at(0));
    Arc::make_mut(&mut expiring.message)
        .properties
        .message_expiry_interval = Some(1);
    s.deliver(expiring, clock.at(5))
        .expect("dropped, not handed back");
    assert_eq!(drain(&mut s, clock.at(5)).len(), 2);
    let counts = s.take_counts();
    assert_eq!(counts.publishes_sent, [1, 1, 0]);
    assert_eq!(counts.expired, 1);
    assert!(
        s.take_counts().is_empty(),
        "taking starts the counts again from zero"
    );
}

/// Only the broker publishes under `$SYS`, with or without a topic policy: MQTT 5.0 hears
/// 0x87; the refusal is counted for the metrics. `$SYSTEM` is an ordinary `$` topic.
#[test]
fn clients_never_publish_to_sys_even_without_a_policy() {
    let clock = Clock::new();
    let mut s = v5(clock);
    let r = s.handle_packet(
        Packet::Publish(publish(
            "$SYS/broker/version",
            QoS::AtLeastOnce,
            1,
            b"forged",
        )),
        clock.at(1),
    );
    assert_eq!(r, Ok(None), "not routed");
    assert_eq!(
        drain(&mut s, clock.at(1)),
        vec![Packet::PubAck(PubAck::with_reason(
            pid(1),
            PubAckReason::NotAuthorized
        ))]
    );
    assert_eq!(s.take_counts().publishes_denied, 1);
    expect_publish(s.handle_packet(
        Packet::Publish(publish("$SYSTEM/x", QoS::AtLeastOnce, 2, b"x")),
        clock.at(1),
    ));
}
