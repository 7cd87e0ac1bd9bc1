//! Routing through the public API: a [`SubscriptionIndex`] finds the matches of a topic and
//! [`RouteScratch::deliver_matches`] turns them into one delivery per subscriber; the last test
//! carries a routed delivery through a [`Session`] onto the wire.
//!
//! Clause numbers are MQTT 5.0.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use vane_core::{
    Delivery, Message, RouteScratch, Session, SessionConfig, Subscription, SubscriptionIndex,
};
use vane_proto::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, Publish, PublishProperties, QoS,
    SubscriptionOptions, TopicFilter, DEFAULT_MAX_PACKET_SIZE,
};

const PUBLISHER: u64 = 1;

fn filter(f: &str) -> TopicFilter {
    TopicFilter::parse(f).expect("valid filter")
}

fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

/// Subscribes session `session` (which is also its subscriber handle) to `f`.
fn sub(
    index: &mut SubscriptionIndex<u64>,
    f: &str,
    session: u64,
    options: SubscriptionOptions,
    id: Option<u32>,
) {
    index.subscribe(
        &filter(f),
        Subscription {
            subscriber: session,
            session_id: session,
            options,
            subscription_id: id,
        },
    );
}

fn message(topic: &str, qos: QoS, retain: bool, origin: u64) -> Arc<Message> {
    Arc::new(Message {
        topic: topic.into(),
        payload: Bytes::from_static(b"m"),
        qos,
        retain,
        properties: PublishProperties::default(),
        origin,
        received: Instant::now(),
    })
}

/// Routes `message` and returns the deliveries sorted by subscriber, subscription ids sorted.
fn route(
    index: &SubscriptionIndex<u64>,
    scratch: &mut RouteScratch<u64>,
    message: &Arc<Message>,
) -> Vec<(u64, Delivery)> {
    index.matches_into(&message.topic, &mut scratch.matches);
    let mut out = Vec::new();
    let count = scratch.deliver_matches(message, |s, mut d| {
        d.subscription_ids.sort_unstable();
        out.push((s, d));
    });
    assert_eq!(count, out.len(), "returns the number of subscribers");
    assert!(scratch.matches.is_empty(), "matches are consumed");
    out.sort_by_key(|(s, _)| *s);
    out
}

fn subscribers(deliveries: &[(u64, Delivery)]) -> Vec<u64> {
    deliveries.iter().map(|(s, _)| *s).collect()
}

#[test]
fn no_local_skips_the_publishers_own_messages() {
    // [MQTT-3.8.3-3] with No Local set, messages must not be forwarded to the connection that
    // published them.
    let mut index = SubscriptionIndex::new();
    let mut scratch = RouteScratch::default();
    sub(
        &mut index,
        "a/b",
        PUBLISHER,
        SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtLeastOnce)
        },
        None,
    );
    sub(
        &mut index,
        "a/b",
        2,
        SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtLeastOnce)
        },
        None,
    );
    sub(&mut index, "a/b", 3, options(QoS::AtLeastOnce), None);
    let own = route(
        &index,
        &mut scratch,
        &message("a/b", QoS::AtLeastOnce, false, PUBLISHER),
    );
    assert_eq!(subscribers(&own), vec![2, 3]);
    let from_2 = route(
        &index,
        &mut scratch,
        &message("a/b", QoS::AtLeastOnce, false, 2),
    );
    assert_eq!(subscribers(&from_2), vec![PUBLISHER, 3]);
    // Without No Local a publisher gets its own messages.
    let from_3 = route(
        &index,
        &mut scratch,
        &message("a/b", QoS::AtLeastOnce, false, 3),
    );
    assert_eq!(subscribers(&from_3), vec![PUBLISHER, 2, 3]);
}

#[test]
fn no_local_on_one_overlapping_subscription_leaves_the_others() {
    // [MQTT-3.8.3-3] applies per subscription: an overlapping subscription without No Local
    // still delivers, at its own QoS.
    let mut index = SubscriptionIndex::new();
    let mut scratch = RouteScratch::default();
    sub(
        &mut index,
        "a/#",
        PUBLISHER,
        SubscriptionOptions {
            no_local: true,
            ..options(QoS::ExactlyOnce)
        },
        Some(1),
    );
    sub(
        &mut index,
        "a/+",
        PUBLISHER,
        options(QoS::AtMostOnce),
        Some(2),
    );
    let out = route(
        &index,
        &mut scratch,
        &message("a/b", QoS::ExactlyOnce, false, PUBLISHER),
    );
    assert_eq!(subscribers(&out), vec![PUBLISHER]);
    assert_eq!(out[0].1.qos, QoS::AtMostOnce);
    assert_eq!(out[0].1.subscription_ids, vec![2]);
}

#[test]
fn broker_messages_are_not_subject_to_no_local() {
    // [MQTT-3.8.3-3] concerns the publishing connection; origin 0 is the broker itself.
    let mut index = SubscriptionIndex::new();
    let mut scratch = RouteScratch::default();
    sub(
        &mut index,
        "$SYS/x",
        0,
        SubscriptionOptions {
            no_local: true,
            ..options(QoS::AtMostOnce)
        },
        None,
    );
    let out = route(
        &index,
        &mut scratch,
        &message("$SYS/x", QoS::AtMostOnce, false, 0),
    );
    assert_eq!(subscribers(&out), vec![0]);
}

#[test]
fn overlapping_subscriptions_merge_into_one_delivery() {
    // [MQTT-3.3.4-2] one delivery at the highest QoS of the matching subscriptions;
    // [MQTT-3.3.4-3] carrying every matching Subscription Identifier.
    let mut index = SubscriptionIndex::new();
    let mut scratch = RouteScratch::default();
    sub(&mut index, "a/b", 5, options(QoS::AtMostOnce), Some(10));
    sub(&mut index, "a/+", 5, options(QoS::AtLeastOnce), Some(20));
    sub(&mut index, "#", 5, options(QoS::AtMostOnce), None);
    sub(&mut index, "a/#", 6, options(QoS::ExactlyOnce), Some(30));
    sub(&mut index, "+/b", 4, options(QoS::AtMostOnce), Some(40));
    let m = message("a/b", QoS::ExactlyOnce, false, PUBLISHER);
    let out = route(&index, &mut scratch, &m);
    assert_eq!(subscribers(&out), vec![4, 5, 6]);
    assert_eq!(
        (out[0].1.qos, out[0].1.subscription_ids.clone()),
        (QoS::AtMostOnce, vec![40])
    );
    assert_eq!(
        (out[1].1.qos, out[1].1.subscription_ids.clone()),
        (QoS::AtLeastOnce, vec![10, 20])
    );
    assert_eq!(
        (out[2].1.qos, out[2].1.subscription_ids.clone()),
        (QoS::ExactlyOnce, vec![30])
    );
    // The scratch buffers are reusable: a second routing gives the same result.
    let again = route(&index, &mut scratch, &m);
    assert_eq!(again, out);
}

#[test]
fn delivery_qos_is_the_lower_of_published_and_granted() {
    // [MQTT-3.8.4-8] the QoS of a delivered message is the minimum of the published QoS and the
    // granted maximum QoS.
    let mut index = SubscriptionIndex::new();
    let mut scratch = RouteScratch::default();
    sub(&mut index, "t", 2, options(QoS::AtMostOnce), None);
    sub(&mut index, "t", 3, options(QoS::AtLeastOnce), None);
    sub(&mut index, "t", 4, options(QoS::ExactlyOnce), None);
    for (published, expected) in [
        (
            QoS::AtMostOnce,
            [QoS::AtMostOnce, QoS::AtMostOnce, QoS::AtMostOnce],
        ),
        (
            QoS::AtLeastOnce,
            [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::AtLeastOnce],
        ),
        (
            QoS::ExactlyOnce,
            [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce],
        ),
    ] {
        let out = route(
            &index,
            &mut scratch,
            &message("t", published, false, PUBLISHER),
        );
        let got: Vec<QoS> = out.iter().map(|(_, d)| d.qos).collect();
        assert_eq!(got, expected, "published at {published:?}");
    }
}

#[test]
fn retain_flag_is_cleared_unless_retain_as_published() {
    // [MQTT-3.3.1-12] with Retain As Published 0 the server sets RETAIN to 0 when forwarding;
    // [MQTT-3.3.1-13] with 1 it keeps the flag as published.
    let mut index = SubscriptionIndex::new();
    let mut scratch = RouteScratch::default();
    sub(&mut index, "t", 2, options(QoS::AtMostOnce), None);
    sub(
        &mut index,
        "t",
        3,
        SubscriptionOptions {
            retain_as_published: true,
            ..options(QoS::AtMostOnce)
        },
        None,
    );
    let out = route(
        &index,
        &mut scratch,
        &message("t", QoS::AtMostOnce, true, PUBLISHER),
    );
    assert_eq!(
        out.iter().map(|(s, d)| (*s, d.retain)).collect::<Vec<_>>(),
        vec![(2, false), (3, true)]
    );
    let out = route(
        &index,
        &mut scratch,
        &message("t", QoS::AtMostOnce, false, PUBLISHER),
    );
    assert!(
        out.iter().all(|(_, d)| !d.retain),
        "a non-retained message never gains the flag"
    );

    // Overlap: Retain As Published on any matching subscription keeps the flag.
    sub(
        &mut index,
        "#",
        2,
        SubscriptionOptions {
            retain_as_published: true,
            ..options(QoS::AtMostOnce)
        },
        None,
    );
    let out = route(
        &index,
        &mut scratch,
        &message("t", QoS::AtMostOnce, true, PUBLISHER),
    );
    assert_eq!(
        out.iter().map(|(s, d)| (*s, d.retain)).collect::<Vec<_>>(),
        vec![(2, true), (3, true)]
    );
}

#[test]
fn routed_delivery_reaches_the_wire_with_subscription_ids() {
    // [MQTT-3.3.4-3] the PUBLISH sent carries every matching Subscription Identifier, at the
    // merged QoS [MQTT-3.3.4-2].
    let now = Instant::now();
    let mut index = SubscriptionIndex::new();
    let mut scratch = RouteScratch::default();
    sub(&mut index, "a/+", 9, options(QoS::AtLeastOnce), Some(3));
    sub(&mut index, "a/b", 9, options(QoS::AtMostOnce), Some(8));
    let mut session = Session::new(9, "sub".into(), SessionConfig::default(), now);
    session.connect(&Connect::new(ProtocolVersion::V5, "sub"), now);
    let out = route(
        &index,
        &mut scratch,
        &message("a/b", QoS::ExactlyOnce, true, PUBLISHER),
    );
    for (_, d) in out {
        session.deliver(d, now).expect("room in the window");
    }
    let mut buf = BytesMut::new();
    session.write_transmits(now, &mut buf).expect("encodes");
    let packet = Decoder::with_version(ProtocolVersion::V5, DEFAULT_MAX_PACKET_SIZE)
        .decode(&mut buf)
        .expect("decodes")
        .expect("a whole packet");
    let mut expected = Publish::new("a/b", Bytes::from_static(b"m"));
    expected.qos = QoS::AtLeastOnce;
    expected.packet_id = PacketId::new(1);
    expected.properties.subscription_identifiers = vec![3, 8];
    assert_eq!(packet, Packet::Publish(expected));
    assert!(buf.is_empty());
}
