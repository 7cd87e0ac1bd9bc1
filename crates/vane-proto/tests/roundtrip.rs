//! Property tests: every valid packet of each version survives encode then decode, a stream of
//! them survives any split, and no input makes the decoder panic or break the fuzz check.
//!
//! The strategies generate only packets the codec must carry unchanged in that version: MQTT 3.x
//! packets have no properties, reason codes only where 3.x has return codes, SUBSCRIBE options
//! only the QoS; packet ids are non-zero and present exactly for QoS > 0; topic names have no
//! wildcards; strings have no U+0000; SUBSCRIBE and UNSUBSCRIBE lists are non-empty; property
//! values stay in their ranges (Receive Maximum, Maximum Packet Size and Subscription
//! Identifiers non-zero, Maximum QoS 0 or 1, Authentication Data only with a method).

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use vane_proto::{
    AckProperties, Auth, AuthProperties, AuthReason, ByteString, ConnAck, ConnAckProperties,
    ConnAckReason, Connect, ConnectProperties, Decoder, Disconnect, DisconnectProperties,
    DisconnectReason, LastWill, Packet, PacketId, ProtocolVersion, PubAck, PubAckReason, PubComp,
    PubCompReason, PubRec, PubRecReason, PubRel, PubRelReason, Publish, PublishProperties, QoS,
    RetainHandling, SubAck, SubAckReason, Subscribe, SubscribeProperties, SubscriptionOptions,
    UnsubAck, UnsubAckReason, Unsubscribe, UserProperty, WillProperties, DEFAULT_MAX_PACKET_SIZE,
};

use ProtocolVersion::{V3_1, V3_1_1, V5};

const VARINT_MAX: u32 = 268_435_455;

// --- Leaves -----------------------------------------------------------------------------------

/// Any character but U+0000 [MQTT-1.5.3-2], weighted towards the ones that matter to topics.
fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => select(vec!['a', 'b', '/', '$', ' ', 'é', '€', '😀']),
        1 => any::<char>().prop_filter("no NUL", |c| *c != '\0'),
    ]
}

fn text(max: usize) -> impl Strategy<Value = ByteString> {
    vec(any_char(), 0..=max).prop_map(|cs| ByteString::from(cs.into_iter().collect::<String>()))
}

/// A valid topic name: non-empty [MQTT-4.7.3-1], no wildcards [MQTT-4.7.1-1].
fn topic_name() -> impl Strategy<Value = ByteString> {
    vec(
        any_char().prop_filter("no wildcards", |c| *c != '+' && *c != '#'),
        1..=8,
    )
    .prop_map(|cs| ByteString::from(cs.into_iter().collect::<String>()))
}

/// A topic filter as SUBSCRIBE carries it: any string (filters are validated by the broker).
fn topic_filter() -> impl Strategy<Value = ByteString> {
    prop_oneof![
        select(vec!["#", "+", "a/+/c", "a/#", "$share/g/a/#", "", "a+b"])
            .prop_map(ByteString::from_static),
        text(8),
    ]
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| PacketId::new(id).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

/// Every code `from_u8` accepts.
fn reason<T: Clone + Debug + 'static>(from_u8: fn(u8) -> Option<T>) -> impl Strategy<Value = T> {
    select((0..=u8::MAX).filter_map(from_u8).collect::<Vec<_>>())
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> {
    vec(
        (text(4), text(4)).prop_map(|(name, value)| UserProperty { name, value }),
        0..=2,
    )
}

fn non_zero_u16() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn non_zero_u32() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn subscription_id() -> impl Strategy<Value = u32> {
    prop_oneof![
        select(vec![
            1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX
        ]),
        1..=VARINT_MAX
    ]
}

/// `v5` for MQTT 5.0, the default (no properties) for 3.x.
fn v5_or_default<T: Default + Clone + Debug + 'static>(
    v: ProtocolVersion,
    v5: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if v.is_v5() {
        v5.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

// --- Properties (MQTT 5.0) ----------------------------------------------------------------

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        (
            of(any::<u32>()),
            of(non_zero_u16()),
            of(non_zero_u32()),
            of(any::<u16>()),
        ),
        (
            of(any::<bool>()),
            of(any::<bool>()),
            users(),
            of(text(6)),
            of(binary(6)),
        ),
    )
        .prop_map(
            |((sei, rm, mps, tam), (rri, rpi, user_properties, method, data))| ConnectProperties {
                session_expiry_interval: sei,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                user_properties,
                // §3.1.2.11.10: no Authentication Data without a method.
                authentication_data: method.as_ref().and(data),
                authentication_method: method,
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        of(any::<u32>()),
        of(any::<bool>()),
        of(any::<u32>()),
        of(text(6)),
        of(topic_name()),
        of(binary(6)),
        users(),
    )
        .prop_map(
            |(wdi, pfi, mei, ct, rt, cd, user_properties)| WillProperties {
                will_delay_interval: wdi,
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            of(any::<u32>()),
            of(non_zero_u16()),
            of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
            of(any::<bool>()),
            of(non_zero_u32()),
            of(text(6)),
            of(any::<u16>()),
            of(text(6)),
        ),
        (
            users(),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<bool>()),
            of(any::<u16>()),
            of(text(6)),
            of(text(6)),
            (of(text(6)), of(binary(6))),
        ),
    )
        .prop_map(
            |((sei, rm, mq, ra, mps, aci, tam, rs), (up, wsa, sia, ssa, ska, ri, sr, (am, ad)))| {
                ConnAckProperties {
                    session_expiry_interval: sei,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    user_properties: up,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                }
            },
        )
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        of(any::<bool>()),
        of(any::<u32>()),
        of(any::<u16>()),
        of(topic_name()),
        of(binary(6)),
        users(),
        vec(subscription_id(), 0..=3),
        of(text(6)),
    )
        .prop_map(
            |(pfi, mei, ta, rt, cd, user_properties, sids, ct)| PublishProperties {
                payload_format_indicator: pfi,
                message_expiry_interval: mei,
                topic_alias: ta,
                response_topic: rt,
                correlation_data: cd,
                user_properties,
                subscription_identifiers: sids,
                content_type: ct,
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (of(text(6)), users()).prop_map(|(reason_string, user_properties)| AckProperties {
        reason_string,
        user_properties,
    })
}

fn subscribe_properties() -> impl Strategy<Value = SubscribeProperties> {
    (of(subscription_id()), users()).prop_map(|(subscription_identifier, user_properties)| {
        SubscribeProperties {
            subscription_identifier,
            user_properties,
        }
    })
}

fn disconnect_properties() -> impl Strategy<Value = DisconnectProperties> {
    (of(any::<u32>()), of(text(6)), users(), of(text(6))).prop_map(
        |(sei, rs, user_properties, sr)| DisconnectProperties {
            session_expiry_interval: sei,
            reason_string: rs,
            user_properties,
            server_reference: sr,
        },
    )
}

fn auth_properties() -> impl Strategy<Value = AuthProperties> {
    (of(text(6)), of(binary(6)), of(text(6)), users()).prop_map(|(am, ad, rs, user_properties)| {
        AuthProperties {
            authentication_method: am,
            authentication_data: ad,
            reason_string: rs,
            user_properties,
        }
    })
}

// --- Packets ----------------------------------------------------------------------------------

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        topic_name(),
        binary(8),
        qos(),
        any::<bool>(),
        v5_or_default(v, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| LastWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        any::<bool>(),
        any::<u16>(),
        text(8),
        of(will),
        of(text(8)),
        of(binary(8)),
        v5_or_default(v, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // [MQTT-3.1.2-22]: before 5.0 a password needs a user name.
                let password = if v.is_v5() {
                    password
                } else {
                    username.as_ref().and(password)
                };
                Packet::Connect(Box::new(Connect {
                    protocol: v,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if v.is_v5() {
        reason(ConnAckReason::from_u8).boxed()
    } else {
        // The MQTT 5.0 reasons 3.x return codes 0 to 5 decode to.
        reason(ConnAckReason::from_v3_return_code).boxed()
    };
    (
        any::<bool>(),
        reasons,
        v5_or_default(v, connack_properties()),
    )
        .prop_map(|(session_present, reason, properties)| {
            // [MQTT-3.2.2-4] / [MQTT-3.2.2-6]: no session on a refused connection.
            let session_present = session_present && !reason.is_error();
            Packet::ConnAck(ConnAck {
                session_present,
                reason,
                properties,
            })
        })
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if v.is_v5() {
        // MQTT 5.0 §3.3.2.3.4: an empty topic name stands for a Topic Alias.
        prop_oneof![9 => topic_name(), 1 => Just(ByteString::new())].boxed()
    } else {
        topic_name().boxed()
    };
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic,
        packet_id(),
        v5_or_default(v, publish_properties()),
        binary(32),
    )
        .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
            let has_id = qos != QoS::AtMostOnce;
            Packet::Publish(Publish {
                // [MQTT-3.3.1-2]: DUP is 0 for QoS 0.
                dup: dup && has_id,
                qos,
                retain,
                topic,
                packet_id: has_id.then_some(id),
                properties,
                payload,
            })
        })
}

macro_rules! ack_strategy {
    ($fn:ident, $packet:ident, $reason:ident) => {
        fn $fn(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
            let reasons = if v.is_v5() {
                reason($reason::from_u8).boxed()
            } else {
                Just($reason::Success).boxed()
            };
            (packet_id(), reasons, v5_or_default(v, ack_properties())).prop_map(
                |(packet_id, reason, properties)| {
                    Packet::$packet($packet {
                        packet_id,
                        reason,
                        properties,
                    })
                },
            )
        }
    };
}

ack_strategy!(puback, PubAck, PubAckReason);
ack_strategy!(pubrec, PubRec, PubRecReason);
ack_strategy!(pubrel, PubRel, PubRelReason);
ack_strategy!(pubcomp, PubComp, PubCompReason);

fn subscription_options(v: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNew,
        RetainHandling::DoNotSend,
    ]);
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if v.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions::qos(qos)
            }
        },
    )
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        v5_or_default(v, subscribe_properties()),
        vec((topic_filter(), subscription_options(v)), 1..=4),
    )
        .prop_map(|(packet_id, properties, filters)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if v.is_v5() {
        reason(SubAckReason::from_u8).boxed()
    } else {
        // MQTT 3.1.1 §3.9.3: 0, 1, 2 and 0x80.
        select(vec![
            SubAckReason::GrantedQoS0,
            SubAckReason::GrantedQoS1,
            SubAckReason::GrantedQoS2,
            SubAckReason::UnspecifiedError,
        ])
        .boxed()
    };
    (
        packet_id(),
        v5_or_default(v, ack_properties()),
        vec(reasons, 0..=4),
    )
        .prop_map(|(packet_id, properties, reasons)| {
            Packet::SubAck(SubAck {
                packet_id,
                properties,
                reasons,
            })
        })
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        v5_or_default(v, users()),
        vec(topic_filter(), 1..=4),
    )
        .prop_map(|(packet_id, user_properties, filters)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                user_properties,
                filters,
            })
        })
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // MQTT 3.1.1 §3.11: no reason codes.
    let reasons = v5_or_default(v, vec(reason(UnsubAckReason::from_u8), 0..=4));
    (packet_id(), v5_or_default(v, ack_properties()), reasons).prop_map(
        |(packet_id, properties, reasons)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                properties,
                reasons,
            })
        },
    )
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reasons = if v.is_v5() {
        reason(DisconnectReason::from_u8).boxed()
    } else {
        Just(DisconnectReason::NormalDisconnection).boxed()
    };
    (reasons, v5_or_default(v, disconnect_properties()))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(AuthReason::from_u8), auth_properties())
        .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
}

/// Any valid packet of version `v`.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v),
        connack(v),
        publish(v),
        puback(v),
        pubrec(v),
        pubrel(v),
        pubcomp(v),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v),
    ];
    if v.is_v5() {
        prop_oneof![14 => common, 1 => auth()].boxed()
    } else {
        common.boxed()
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(vec![V3_1, V3_1_1, V5])
}

/// A version and packets of that version.
fn session() -> impl Strategy<Value = (ProtocolVersion, Vec<Packet>)> {
    version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..=8)))
}

// --- Properties -------------------------------------------------------------------------------

fn round_trip(v: ProtocolVersion, p: &Packet) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf)
        .map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
    let encoded = buf.clone();
    let decoded = Decoder::with_version(v, DEFAULT_MAX_PACKET_SIZE).decode(&mut buf);
    prop_assert_eq!(decoded, Ok(Some(p.clone())), "bytes {:02x?}", &encoded[..]);
    prop_assert!(buf.is_empty(), "{} bytes left", buf.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_v3_1(p in packet(V3_1)) {
        round_trip(V3_1, &p)?;
    }

    #[test]
    fn round_trip_v3_1_1(p in packet(V3_1_1)) {
        round_trip(V3_1_1, &p)?;
    }

    #[test]
    fn round_trip_v5(p in packet(V5)) {
        round_trip(V5, &p)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// A session (CONNECT first, on a decoder of unknown version) fed in arbitrary pieces yields
    /// the same packets.
    #[test]
    fn stream_survives_any_split(
        (v, mut packets) in session(),
        cuts in vec(any::<prop::sample::Index>(), 0..=10),
    ) {
        let mut first = Connect::new(v, "c");
        first.keep_alive = 10;
        packets.insert(0, Packet::Connect(Box::new(first)));
        let mut stream = BytesMut::new();
        for p in &packets {
            p.encode(v, &mut stream).map_err(|e| TestCaseError::fail(format!("encode: {e}")))?;
        }
        let mut splits: Vec<usize> = cuts.iter().map(|i| i.index(stream.len())).collect();
        splits.sort_unstable();
        splits.push(stream.len());
        let mut decoder = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut start = 0;
        for end in splits {
            buf.extend_from_slice(&stream[start..end]);
            start = end;
            while let Some(p) = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(format!("decode: {e}")))? {
                decoded.push(p);
            }
        }
        prop_assert_eq!(decoded, packets);
        prop_assert!(buf.is_empty());
    }

    /// Arbitrary bytes, with any decoder configuration, never make the decoder panic, and whatever
    /// they decode to passes the fuzz check (same result in chunks, survives re-encoding).
    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..=256)) {
        vane_proto::fuzzing::check(&data);
    }

    /// Valid encodings with a few bytes changed reach deeper than random bytes; same checks.
    #[test]
    fn mutated_packets_never_panic(
        selector in any::<u8>(),
        v in version(),
        packets in vec(packet(V5), 1..=3),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..=4),
    ) {
        let mut data = vec![selector];
        for p in &packets {
            // A v5 packet encoded for `v` may drop what `v` cannot carry; AUTH has no 3.x form.
            if let Ok(bytes) = p.to_bytes(v) {
                data.extend_from_slice(&bytes);
            }
        }
        if data.len() > 1 {
            for (index, byte) in mutations {
                let i = 1 + index.index(data.len() - 1);
                data[i] = byte;
            }
        }
        vane_proto::fuzzing::check(&data);
    }
}
