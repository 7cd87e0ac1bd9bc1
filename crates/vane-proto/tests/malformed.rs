//! Malformed input: at least one test per `DecodeError` variant, built from raw bytes and run
//! through `Decoder::decode`, each naming the rule it enforces (normative statement numbers are
//! those of MQTT 3.1.1 unless marked 5.0). Also incremental decoding, the packet size limit and
//! the encoder's refusals.

use bytes::BytesMut;
use vane_proto::{
    Auth, AuthProperties, AuthReason, ConnAckReason, DecodeError, Decoder, DisconnectReason,
    EncodeError, Packet, PacketId, ProtocolVersion, PubAck, Publish, QoS, DEFAULT_MAX_PACKET_SIZE,
};

use ProtocolVersion::{V3_1, V3_1_1, V5};

/// Decodes `bytes` with a decoder of `version` (`None`: version unknown, as before CONNECT).
fn decode(version: Option<ProtocolVersion>, bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
    let mut decoder = match version {
        Some(v) => Decoder::with_version(v, DEFAULT_MAX_PACKET_SIZE),
        None => Decoder::new(DEFAULT_MAX_PACKET_SIZE),
    };
    decoder.decode(&mut BytesMut::from(bytes))
}

/// Asserts that `bytes` fail with `expected` in each of `versions`.
#[track_caller]
fn refused(versions: &[ProtocolVersion], bytes: &[u8], expected: DecodeError) {
    for &v in versions {
        assert_eq!(decode(Some(v), bytes), Err(expected), "{v}: {bytes:02x?}");
    }
}

const ALL: &[ProtocolVersion] = &[V3_1, V3_1_1, V5];
const V3: &[ProtocolVersion] = &[V3_1, V3_1_1];

/// A v5 CONNECT with the given properties block (length prefix included) and client id "c".
fn connect_v5_with_properties(properties: &[u8]) -> Vec<u8> {
    let body: Vec<u8> = [
        &b"\x00\x04MQTT\x05\x02\x00\x3c"[..],
        properties,
        b"\x00\x01c",
    ]
    .concat();
    [&[0x10, body.len() as u8][..], &body].concat()
}

/// A CONNECT with the given protocol name, level and flags, keep alive 60, client id "c", then
/// `rest`.
fn connect_raw(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x3c]);
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(b"\x00\x01c");
    body.extend_from_slice(rest);
    [&[0x10, body.len() as u8][..], &body].concat()
}

// --- Fixed header -------------------------------------------------------------------------

#[test]
fn malformed_var_int_five_byte_remaining_length() {
    // MQTT 3.1.1 §2.2.3 / 5.0 §1.5.5: the remaining length takes at most four bytes; a fourth
    // byte with its continuation bit set is refused without waiting for a fifth.
    refused(
        ALL,
        b"\x30\xff\xff\xff\xff\x01",
        DecodeError::MalformedVarInt,
    );
    refused(ALL, b"\x30\xff\xff\xff\xff", DecodeError::MalformedVarInt);
    refused(
        ALL,
        b"\x30\x80\x80\x80\x80\x00",
        DecodeError::MalformedVarInt,
    );
    assert_eq!(
        decode(None, b"\x30\xff\xff\xff\xff"),
        Err(DecodeError::MalformedVarInt)
    );
}

#[test]
fn malformed_var_int_in_property_length() {
    // MQTT 5.0 §1.5.5 applies to every variable byte integer: here the property length of a
    // DISCONNECT.
    refused(
        &[V5],
        b"\xe0\x06\x00\xff\xff\xff\xff\x01",
        DecodeError::MalformedVarInt,
    );
}

#[test]
fn non_minimal_var_int_in_v5() {
    // [MQTT-1.5.5-1] (5.0): "encoded using the minimum number of bytes necessary".
    refused(&[V5], b"\xc0\x80\x00", DecodeError::NonMinimalVarInt);
    // ... also a Subscription Identifier (0x0B) of 1 written in two bytes.
    refused(
        &[V5],
        b"\x30\x07\x00\x01a\x03\x0b\x81\x00",
        DecodeError::NonMinimalVarInt,
    );
    // MQTT 3.1.1 §2.2.3 has no such rule.
    for v in V3 {
        assert_eq!(decode(Some(*v), b"\xc0\x80\x00"), Ok(Some(Packet::PingReq)));
    }
}

#[test]
fn packet_too_large_from_the_fixed_header_alone() {
    // MQTT 5.0 §3.1.2.11.4 / §3.2.2.3.6 (Maximum Packet Size) and reason 0x95: refused as soon
    // as the fixed header is complete, before the body is buffered.
    for version in [None, Some(V3_1_1), Some(V5)] {
        let mut decoder = match version {
            Some(v) => Decoder::with_version(v, 100),
            None => Decoder::new(100),
        };
        // 2 + 98 = 100 bytes: allowed, so the decoder waits for the body.
        let mut buf = BytesMut::from(&b"\x30\x62"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 2, "nothing is consumed while waiting");
        // 2 + 99 = 101 bytes: refused from the two header bytes.
        let mut buf = BytesMut::from(&b"\x30\x63"[..]);
        assert_eq!(decoder.decode(&mut buf), Err(DecodeError::PacketTooLarge));
        // A 4-byte remaining length for a 200 MB packet, header only.
        let mut buf = BytesMut::from(&b"\x30\x80\x80\x80\x60"[..]);
        assert_eq!(decoder.decode(&mut buf), Err(DecodeError::PacketTooLarge));
    }
    assert_eq!(DecodeError::PacketTooLarge.reason_code(), 0x95);
}

#[test]
fn reserved_packet_type() {
    // MQTT 3.1.1 §2.2.1 Table 2.1: type 0 is reserved ("Forbidden").
    refused(ALL, b"\x00\x00", DecodeError::ReservedPacketType);
    // Type 15 is reserved before MQTT 5.0, where it is AUTH (§3.15).
    refused(V3, b"\xf0\x00", DecodeError::ReservedPacketType);
    assert_eq!(
        decode(None, b"\xf0\x00"),
        Err(DecodeError::ReservedPacketType)
    );
}

#[test]
fn invalid_header_flags() {
    // [MQTT-2.2.2-2]: "If invalid flags are received, the receiver MUST close the Network
    // Connection"; 5.0 [MQTT-2.1.3-1].
    refused(ALL, b"\xc1\x00", DecodeError::InvalidHeaderFlags); // PINGREQ flags 0001
    refused(ALL, b"\x41\x02\x00\x01", DecodeError::InvalidHeaderFlags); // PUBACK flags 0001
                                                                        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: PUBREL, SUBSCRIBE and UNSUBSCRIBE flags
                                                                        // MUST be 0010.
    refused(ALL, b"\x60\x02\x00\x01", DecodeError::InvalidHeaderFlags);
    refused(
        ALL,
        b"\x80\x08\x00\x01\x00\x03a/b\x00",
        DecodeError::InvalidHeaderFlags,
    );
    refused(
        ALL,
        b"\xa0\x07\x00\x01\x00\x03a/b",
        DecodeError::InvalidHeaderFlags,
    );
    refused(&[V5], b"\xf2\x00", DecodeError::InvalidHeaderFlags); // AUTH flags 0010
}

// --- PUBLISH ------------------------------------------------------------------------------

#[test]
fn invalid_qos_in_publish() {
    // [MQTT-3.3.1-4]: "A PUBLISH Packet MUST NOT have both QoS bits set to 1".
    refused(ALL, b"\x36\x07\x00\x03a/b\x00\x01", DecodeError::InvalidQoS);
}

#[test]
fn invalid_qos_in_will_and_subscription() {
    // [MQTT-3.1.2-14] (5.0 [MQTT-3.1.2-12]): Will QoS MUST NOT be 3 (flags: will, QoS 3).
    let will_qos3 = connect_raw(b"MQTT", 4, 0x1e, b"\x00\x01t\x00\x00");
    refused(&[V3_1_1], &will_qos3, DecodeError::InvalidQoS);
    // [MQTT-3-8.3-4]: a requested QoS of 3 is malformed.
    refused(
        V3,
        b"\x82\x08\x00\x01\x00\x03a/b\x03",
        DecodeError::InvalidSubscriptionQoS,
    );
    refused(
        &[V5],
        b"\x82\x09\x00\x01\x00\x00\x03a/b\x03",
        DecodeError::InvalidSubscriptionQoS,
    );
    // MQTT 5.0 section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value
    // 3", unlike a PUBLISH or Will QoS of 3, which is malformed.
    assert_eq!(DecodeError::InvalidSubscriptionQoS.reason_code(), 0x82);
    assert_eq!(DecodeError::InvalidQoS.reason_code(), 0x81);
}

#[test]
fn dup_on_qos0() {
    // [MQTT-3.3.1-2]: "The DUP flag MUST be set to 0 for all QoS 0 messages".
    refused(ALL, b"\x38\x05\x00\x03a/b", DecodeError::DupOnQoS0);
}

#[test]
fn zero_packet_id() {
    // [MQTT-2.3.1-1]: SUBSCRIBE, UNSUBSCRIBE and PUBLISH (QoS > 0) MUST contain a non-zero
    // packet identifier; 5.0 [MQTT-2.2.1-3]. The acknowledgements echo one, so 0 is refused there
    // too.
    refused(
        ALL,
        b"\x32\x07\x00\x03a/b\x00\x00",
        DecodeError::ZeroPacketId,
    );
    refused(
        ALL,
        b"\x82\x08\x00\x00\x00\x03a/b\x00",
        DecodeError::ZeroPacketId,
    );
    refused(
        ALL,
        b"\xa2\x07\x00\x00\x00\x03a/b",
        DecodeError::ZeroPacketId,
    );
    refused(ALL, b"\x40\x02\x00\x00", DecodeError::ZeroPacketId);
    refused(ALL, b"\xb0\x02\x00\x00", DecodeError::ZeroPacketId);
}

#[test]
fn publish_topic_has_wildcard() {
    // [MQTT-3.3.2-2]: "The Topic Name in the PUBLISH Packet MUST NOT contain wildcard
    // characters".
    refused(
        ALL,
        b"\x30\x05\x00\x03a/+",
        DecodeError::PublishTopicHasWildcard,
    );
    refused(
        ALL,
        b"\x30\x05\x00\x03a/#",
        DecodeError::PublishTopicHasWildcard,
    );
}

#[test]
fn empty_topic_name() {
    // [MQTT-4.7.3-1]: "All Topic Names and Topic Filters MUST be at least one character long".
    refused(V3, b"\x30\x04\x00\x00hi", DecodeError::EmptyTopicName);
    // MQTT 5.0 §3.3.2.3.4 allows it when a Topic Alias stands for the topic (checked above the
    // codec).
    assert!(matches!(
        decode(Some(V5), b"\x30\x07\x00\x00\x03\x23\x00\x01x"),
        Ok(Some(Packet::Publish(_)))
    ));
}

// --- Lengths and strings ------------------------------------------------------------------

#[test]
fn truncated() {
    // MQTT 3.1.1 §2.2.3 / 5.0 §2.1.4: the remaining length bounds the packet; contents that run
    // past it make the packet malformed (5.0 §4.13.1).
    refused(ALL, b"\x30\x01\x00", DecodeError::Truncated); // half a topic length
    refused(ALL, b"\x30\x04\x00\x05ab", DecodeError::Truncated); // topic longer than the packet
    refused(ALL, b"\x40\x01\x00", DecodeError::Truncated); // half a packet id
    refused(ALL, b"\x20\x01\x00", DecodeError::Truncated); // CONNACK without a return code
    refused(&[V5], b"\xe0\x03\x00\x05\x11", DecodeError::Truncated); // properties past the end
    refused(&[V5], b"\xe0\x03\x00\x01\x11", DecodeError::Truncated); // property value cut short
}

#[test]
fn trailing_bytes() {
    // MQTT 3.1.1 §3.12, §3.13, §3.14: PINGREQ, PINGRESP and DISCONNECT have no variable header
    // or payload; §3.4: PUBACK has remaining length 2. Anything beyond is malformed.
    refused(ALL, b"\xc0\x01\x00", DecodeError::TrailingBytes);
    refused(ALL, b"\xd0\x01\x00", DecodeError::TrailingBytes);
    refused(V3, b"\xe0\x01\x00", DecodeError::TrailingBytes);
    refused(V3, b"\x40\x03\x00\x01\x00", DecodeError::TrailingBytes);
    refused(V3, b"\xb0\x03\x00\x01\x00", DecodeError::TrailingBytes);
    refused(V3, b"\x20\x03\x00\x00\x00", DecodeError::TrailingBytes);
}

#[test]
fn invalid_utf8() {
    // [MQTT-1.5.3-1]: "The character data in a UTF-8 encoded string MUST be well-formed UTF-8
    // ... MUST NOT include encodings of code points between U+D800 and U+DFFF".
    refused(
        ALL,
        b"\x30\x06\x00\x04a\xed\xa0\x80",
        DecodeError::InvalidUtf8,
    );
    refused(ALL, b"\x30\x04\x00\x02a\xff", DecodeError::InvalidUtf8);
    refused(
        V3,
        b"\xa2\x05\x00\x01\x00\x01\xc0",
        DecodeError::InvalidUtf8,
    );
    refused(
        &[V5],
        b"\xa2\x06\x00\x01\x00\x00\x01\xc0",
        DecodeError::InvalidUtf8,
    );
}

#[test]
fn null_character() {
    // [MQTT-1.5.3-2]: "A UTF-8 encoded string MUST NOT include an encoding of the null
    // character U+0000".
    refused(ALL, b"\x30\x05\x00\x03a\x00b", DecodeError::NullCharacter);
    refused(
        V3,
        b"\x82\x06\x00\x01\x00\x01\x00\x00",
        DecodeError::NullCharacter,
    );
    refused(
        &[V5],
        b"\x82\x07\x00\x01\x00\x00\x01\x00\x00",
        DecodeError::NullCharacter,
    );
}

// --- CONNECT ------------------------------------------------------------------------------

#[test]
fn invalid_protocol_name() {
    // [MQTT-3.1.2-1]: "If the protocol name is incorrect the Server MAY disconnect the Client".
    let bytes = connect_raw(b"MQTX", 4, 0x02, b"");
    assert_eq!(decode(None, &bytes), Err(DecodeError::InvalidProtocolName));
    refused(
        ALL,
        &connect_raw(b"mqtt", 4, 0x02, b""),
        DecodeError::InvalidProtocolName,
    );
    assert_eq!(DecodeError::InvalidProtocolName.reason_code(), 0x82);
}

#[test]
fn unsupported_protocol_level() {
    // [MQTT-3.1.2-2]: the Server MUST answer an unsupported level with return code 0x01 (5.0:
    // reason 0x84) and disconnect.
    for (name, level) in [
        (&b"MQTT"[..], 6),
        (b"MQTT", 3),
        (b"MQIsdp", 4),
        (b"MQTT", 0),
    ] {
        let bytes = connect_raw(name, level, 0x02, b"");
        assert_eq!(
            decode(None, &bytes),
            Err(DecodeError::UnsupportedProtocolLevel)
        );
    }
    assert_eq!(
        DecodeError::UnsupportedProtocolLevel.connack_reason(),
        ConnAckReason::UnsupportedProtocolVersion
    );
}

#[test]
fn connect_reserved_flag() {
    // [MQTT-3.1.2-3]: "The Server MUST validate that the reserved flag in the CONNECT Control
    // Packet is set to zero".
    for level in [3, 4] {
        let name: &[u8] = if level == 3 { b"MQIsdp" } else { b"MQTT" };
        let bytes = connect_raw(name, level, 0x03, b"");
        assert_eq!(decode(None, &bytes), Err(DecodeError::ConnectReservedFlag));
    }
    assert_eq!(
        decode(None, &connect_raw(b"MQTT", 5, 0x03, b"")),
        Err(DecodeError::ConnectReservedFlag)
    );
}

#[test]
fn will_flags_without_will() {
    // [MQTT-3.1.2-13]: without the Will Flag, Will QoS MUST be 0 (5.0 [MQTT-3.1.2-11]);
    // [MQTT-3.1.2-15]: ... and Will Retain MUST be 0 (5.0 [MQTT-3.1.2-13]).
    for flags in [0x0a, 0x12, 0x22] {
        assert_eq!(
            decode(None, &connect_raw(b"MQTT", 4, flags, b"")),
            Err(DecodeError::WillFlagsWithoutWill)
        );
        assert_eq!(
            decode(None, &connect_raw(b"MQTT", 5, flags, b"")),
            Err(DecodeError::WillFlagsWithoutWill)
        );
    }
}

#[test]
fn password_without_username() {
    // [MQTT-3.1.2-22]: "If the User Name Flag is set to 0, the Password Flag MUST be set to 0".
    let bytes = connect_raw(b"MQTT", 4, 0x42, b"\x00\x02pw");
    assert_eq!(
        decode(None, &bytes),
        Err(DecodeError::PasswordWithoutUsername)
    );
    let bytes = connect_raw(b"MQIsdp", 3, 0x42, b"\x00\x02pw");
    assert_eq!(
        decode(None, &bytes),
        Err(DecodeError::PasswordWithoutUsername)
    );
    // MQTT 5.0 §3.1.2.9 lifts the rule.
    let bytes = connect_raw(b"MQTT", 5, 0x42, b"\x00\x02pw");
    assert!(matches!(decode(None, &bytes), Ok(Some(Packet::Connect(_)))));
}

#[test]
fn invalid_will_topic() {
    // [MQTT-3.1.3-10] (5.0 [MQTT-3.1.3-11]): the Will Topic is a topic name: not empty
    // [MQTT-4.7.3-1], no wildcards [MQTT-4.7.1-1].
    for topic in [&b"\x00\x03a/#"[..], b"\x00\x01+", b"\x00\x00"] {
        let rest = [topic, b"\x00\x00"].concat();
        let bytes = connect_raw(b"MQTT", 4, 0x06, &rest);
        assert_eq!(
            decode(None, &bytes),
            Err(DecodeError::InvalidWillTopic),
            "{topic:02x?}"
        );
    }
    // v5: the will properties come first (empty here).
    let bytes = connect_raw(b"MQTT", 5, 0x06, b"\x00\x00\x01#\x00\x00");
    assert_eq!(decode(None, &bytes), Err(DecodeError::InvalidWillTopic));
    assert_eq!(DecodeError::InvalidWillTopic.reason_code(), 0x90);
}

// --- SUBSCRIBE and UNSUBSCRIBE ------------------------------------------------------------

#[test]
fn empty_subscribe() {
    // [MQTT-3.8.3-3]: "The payload of a SUBSCRIBE packet MUST contain at least one Topic
    // Filter / QoS pair"; 5.0 [MQTT-3.8.3-2].
    refused(V3, b"\x82\x02\x00\x01", DecodeError::EmptySubscribe);
    refused(&[V5], b"\x82\x03\x00\x01\x00", DecodeError::EmptySubscribe);
    // MQTT 5.0 section 3.8.3: "A SUBSCRIBE packet with no Payload is a Protocol Error".
    assert_eq!(DecodeError::EmptySubscribe.reason_code(), 0x82);
}

#[test]
fn empty_unsubscribe() {
    // [MQTT-3.10.3-2]: "The Payload of an UNSUBSCRIBE packet MUST contain at least one Topic
    // Filter".
    refused(V3, b"\xa2\x02\x00\x01", DecodeError::EmptyUnsubscribe);
    refused(
        &[V5],
        b"\xa2\x03\x00\x01\x00",
        DecodeError::EmptyUnsubscribe,
    );
    // MQTT 5.0 section 3.10.3: "An UNSUBSCRIBE packet with no Payload is a Protocol Error".
    assert_eq!(DecodeError::EmptyUnsubscribe.reason_code(), 0x82);
}

#[test]
fn subscribe_reserved_bits() {
    // [MQTT-3-8.3-4]: the upper six bits of the requested QoS byte are reserved in 3.1.1;
    // 5.0 [MQTT-3.8.3-5]: bits 6 and 7 of the Subscription Options are.
    refused(
        V3,
        b"\x82\x08\x00\x01\x00\x03a/b\x04",
        DecodeError::SubscribeReservedBits,
    );
    refused(
        V3,
        b"\x82\x08\x00\x01\x00\x03a/b\x80",
        DecodeError::SubscribeReservedBits,
    );
    refused(
        &[V5],
        b"\x82\x09\x00\x01\x00\x00\x03a/b\x40",
        DecodeError::SubscribeReservedBits,
    );
    // In 5.0 bit 2 is No Local, not reserved.
    assert!(matches!(
        decode(Some(V5), b"\x82\x09\x00\x01\x00\x00\x03a/b\x04"),
        Ok(Some(_))
    ));
}

#[test]
fn invalid_retain_handling() {
    // MQTT 5.0 §3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3".
    refused(
        &[V5],
        b"\x82\x09\x00\x01\x00\x00\x03a/b\x30",
        DecodeError::InvalidRetainHandling,
    );
    assert_eq!(DecodeError::InvalidRetainHandling.reason_code(), 0x82);
}

// --- Reason and return codes ----------------------------------------------------------------

#[test]
fn invalid_reason_code() {
    // MQTT 5.0 §2.4 and per packet: [MQTT-3.4.2-1] "The Client or Server sending the PUBACK
    // packet MUST use one of the PUBACK Reason Codes", and likewise for each packet.
    refused(
        &[V5],
        b"\x40\x03\x00\x01\x01",
        DecodeError::InvalidReasonCode,
    ); // PUBACK
    refused(
        &[V5],
        b"\x50\x03\x00\x01\x92",
        DecodeError::InvalidReasonCode,
    ); // PUBREC
    refused(
        &[V5],
        b"\x62\x03\x00\x01\x10",
        DecodeError::InvalidReasonCode,
    ); // PUBREL
    refused(
        &[V5],
        b"\x70\x03\x00\x01\x80",
        DecodeError::InvalidReasonCode,
    ); // PUBCOMP
    refused(
        &[V5],
        b"\x20\x03\x00\x01\x00",
        DecodeError::InvalidReasonCode,
    ); // CONNACK
    refused(
        &[V5],
        b"\x90\x04\x00\x01\x00\x03",
        DecodeError::InvalidReasonCode,
    ); // SUBACK
    refused(
        &[V5],
        b"\xb0\x04\x00\x01\x00\x01",
        DecodeError::InvalidReasonCode,
    ); // UNSUBACK
    refused(&[V5], b"\xe0\x01\x01", DecodeError::InvalidReasonCode); // DISCONNECT
    refused(&[V5], b"\xf0\x01\x01", DecodeError::InvalidReasonCode); // AUTH
}

#[test]
fn invalid_return_code() {
    // MQTT 3.1.1 §3.2.2.3: CONNACK return codes 6-255 are reserved.
    refused(V3, b"\x20\x02\x00\x06", DecodeError::InvalidReturnCode);
    refused(V3, b"\x20\x02\x00\x80", DecodeError::InvalidReturnCode);
    // [MQTT-3.9.3-2]: "SUBACK return codes other than 0x00, 0x01, 0x02 and 0x80 are reserved
    // and MUST NOT be used" (0x87 is a 5.0 reason code only).
    refused(V3, b"\x90\x03\x00\x01\x03", DecodeError::InvalidReturnCode);
    refused(V3, b"\x90\x03\x00\x01\x87", DecodeError::InvalidReturnCode);
}

#[test]
fn connack_reserved_flags() {
    // MQTT 3.1.1 §3.2.2.1: "Bits 7-1 are reserved and MUST be set to 0"; 5.0 [MQTT-3.2.2-1].
    refused(V3, b"\x20\x02\x02\x00", DecodeError::ConnAckReservedFlags);
    refused(
        &[V5],
        b"\x20\x03\x80\x00\x00",
        DecodeError::ConnAckReservedFlags,
    );
}

// --- Properties (MQTT 5.0) ----------------------------------------------------------------

#[test]
fn invalid_property() {
    // MQTT 5.0 §2.2.2.2: a property not defined for the packet is a malformed packet. Topic
    // Alias (0x23) in PUBACK:
    refused(
        &[V5],
        b"\x40\x07\x00\x01\x00\x03\x23\x00\x01",
        DecodeError::InvalidProperty,
    );
    // Unknown identifiers 0x00 and 0x80 (a two-byte identifier):
    refused(&[V5], b"\xe0\x03\x00\x01\x00", DecodeError::InvalidProperty);
    refused(
        &[V5],
        b"\xe0\x04\x00\x02\x80\x01",
        DecodeError::InvalidProperty,
    );
    // Subscription Identifier in CONNECT:
    let bytes = connect_v5_with_properties(b"\x02\x0b\x01");
    assert_eq!(decode(None, &bytes), Err(DecodeError::InvalidProperty));
}

#[test]
fn duplicate_property() {
    // MQTT 5.0 §3.3.2.3.4: "It is a Protocol Error to include the Topic Alias value more than
    // once"; §3.1.2.11.2 likewise for Session Expiry Interval.
    refused(
        &[V5],
        b"\x30\x0a\x00\x01a\x06\x23\x00\x01\x23\x00\x02",
        DecodeError::DuplicateProperty,
    );
    let bytes = connect_v5_with_properties(b"\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02");
    assert_eq!(decode(None, &bytes), Err(DecodeError::DuplicateProperty));
    // §3.8.2.1.2: at most one Subscription Identifier in SUBSCRIBE (PUBLISH may carry several).
    refused(
        &[V5],
        b"\x82\x0d\x00\x01\x04\x0b\x01\x0b\x02\x00\x03a/b\x00",
        DecodeError::DuplicateProperty,
    );
    assert!(matches!(
        decode(Some(V5), b"\x30\x08\x00\x01a\x04\x0b\x01\x0b\x02"),
        Ok(Some(_))
    ));
}

#[test]
fn invalid_property_value() {
    // MQTT 5.0 §3.1.2.11.3: "It is a Protocol Error to include the Receive Maximum value more
    // than once or for it to have the value 0".
    let bytes = connect_v5_with_properties(b"\x03\x21\x00\x00");
    assert_eq!(decode(None, &bytes), Err(DecodeError::InvalidPropertyValue));
    // §3.1.2.11.4: Maximum Packet Size 0.
    let bytes = connect_v5_with_properties(b"\x05\x27\x00\x00\x00\x00");
    assert_eq!(decode(None, &bytes), Err(DecodeError::InvalidPropertyValue));
    // §3.1.2.11.10: "It is a Protocol Error to include Authentication Data if there is no
    // Authentication Method".
    let bytes = connect_v5_with_properties(b"\x04\x16\x00\x01\x00");
    assert_eq!(decode(None, &bytes), Err(DecodeError::InvalidPropertyValue));
    // §3.3.2.3.2: Payload Format Indicator is 0 or 1.
    refused(
        &[V5],
        b"\x30\x06\x00\x01a\x02\x01\x02",
        DecodeError::InvalidPropertyValue,
    );
    // §3.3.2.3.8: "It is a Protocol Error if the Subscription Identifier has a value of 0".
    refused(
        &[V5],
        b"\x30\x06\x00\x01a\x02\x0b\x00",
        DecodeError::InvalidPropertyValue,
    );
    // §3.2.2.3.4: Maximum QoS is 0 or 1.
    refused(
        &[V5],
        b"\x20\x05\x00\x00\x02\x24\x02",
        DecodeError::InvalidPropertyValue,
    );
}

// --- Incremental decoding -------------------------------------------------------------------

/// A v5 session: CONNECT, then one of most packet types, some large enough to need a 2-byte
/// remaining length.
fn v5_stream() -> Vec<u8> {
    let mut big = Publish::new("t/big", vec![7u8; 300]);
    big.qos = QoS::AtLeastOnce;
    big.packet_id = PacketId::new(9);
    big.properties
        .user_properties
        .push(vane_proto::UserProperty {
            name: "k".into(),
            value: "v".into(),
        });
    let mut stream = b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02c1".to_vec();
    stream.extend_from_slice(b"\x20\x03\x00\x00\x00");
    stream.extend_from_slice(b"\x30\x08\x00\x03a/b\x00hi");
    stream.extend_from_slice(&Packet::Publish(big).to_bytes(V5).expect("encode"));
    stream.extend_from_slice(b"\x40\x02\x00\x01\x40\x03\x00\x01\x10\x62\x03\x00\x03\x92");
    stream.extend_from_slice(b"\x82\x09\x00\x0a\x00\x00\x03a/+\x2d\x90\x04\x00\x0a\x00\x01");
    stream.extend_from_slice(b"\xa2\x08\x00\x0b\x00\x00\x03a/b\xb0\x04\x00\x0b\x00\x00");
    stream.extend_from_slice(b"\xc0\x00\xd0\x00\xf0\x02\x19\x00\xe0\x01\x04");
    stream
}

fn decode_all(stream: &[u8], splits: &[usize]) -> Vec<Packet> {
    let mut decoder = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let mut start = 0;
    for &end in splits.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        while let Some(p) = decoder.decode(&mut buf).expect("valid stream") {
            packets.push(p);
        }
    }
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
    packets
}

#[test]
fn incremental_one_byte_at_a_time() {
    let stream = v5_stream();
    let whole = decode_all(&stream, &[]);
    assert_eq!(whole.len(), 15);
    assert!(
        matches!(whole.last(), Some(Packet::Disconnect(d)) if d.reason == DisconnectReason::DisconnectWithWillMessage)
    );
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(decode_all(&stream, &every_byte), whole);
}

#[test]
fn incremental_random_splits() {
    let stream = v5_stream();
    let whole = decode_all(&stream, &[]);
    // xorshift64: deterministic, no dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..200 {
        let cuts = (next() % 12) as usize;
        let mut splits: Vec<usize> = (0..cuts)
            .map(|_| (next() % stream.len() as u64) as usize)
            .collect();
        splits.sort_unstable();
        assert_eq!(decode_all(&stream, &splits), whole, "splits {splits:?}");
    }
}

#[test]
fn partial_packet_is_not_consumed() {
    let mut decoder = Decoder::with_version(V3_1_1, DEFAULT_MAX_PACKET_SIZE);
    let full = b"\x30\x07\x00\x03a/bhi";
    for n in 0..full.len() {
        let mut buf = BytesMut::from(&full[..n]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "{n} bytes");
        assert_eq!(&buf[..], &full[..n]);
    }
}

// --- Encoder refusals -----------------------------------------------------------------------

#[test]
fn encode_refusals() {
    // AUTH does not exist before MQTT 5.0.
    let auth = Packet::Auth(Auth {
        reason: AuthReason::Success,
        properties: AuthProperties::default(),
    });
    assert_eq!(auth.to_bytes(V3_1_1), Err(EncodeError::NotInVersion));
    // [MQTT-2.3.1-5]: a QoS 0 PUBLISH has no packet identifier; a QoS > 0 one has one.
    let mut p = Publish::new("a", "x");
    p.packet_id = PacketId::new(1);
    assert_eq!(
        Packet::Publish(p.clone()).to_bytes(V5),
        Err(EncodeError::PacketIdMismatch)
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = None;
    assert_eq!(
        Packet::Publish(p).to_bytes(V5),
        Err(EncodeError::PacketIdMismatch)
    );
    // MQTT 3.1.1 §1.5.3: strings are at most 65,535 bytes.
    let long = Packet::Publish(Publish::new("a".repeat(65_536), "x"));
    assert_eq!(long.to_bytes(V3_1_1), Err(EncodeError::FieldTooLong));
    let mut ack = PubAck::new(PacketId::new(1).expect("non-zero"));
    ack.properties.reason_string = Some("r".repeat(65_536).into());
    assert_eq!(
        Packet::PubAck(ack).to_bytes(V5),
        Err(EncodeError::FieldTooLong)
    );
}
