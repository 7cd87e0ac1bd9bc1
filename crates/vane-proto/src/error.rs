//! Decode and encode errors. Every decode error names the spec clause it enforces and maps to the
//! MQTT 5.0 reason code the server reports for it.

use crate::reason::{ConnAckReason, DisconnectReason};

/// Why a byte sequence is not a valid MQTT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The remaining length uses more than four bytes.
    #[error("[MQTT-1.5.5] remaining length or variable byte integer longer than 4 bytes")]
    MalformedVarInt,
    /// A variable byte integer is not in its shortest form (MQTT 5.0).
    #[error("[MQTT-1.5.5-1] variable byte integer not encoded in the minimum number of bytes")]
    NonMinimalVarInt,
    /// The packet is larger than the configured maximum.
    #[error("packet larger than the maximum packet size")]
    PacketTooLarge,
    /// Packet type 0, or 15 before MQTT 5.0.
    #[error("[MQTT-2.2.1] reserved control packet type")]
    ReservedPacketType,
    /// The flags of the fixed header are not those the packet type requires.
    #[error("[MQTT-2.2.2-2] invalid fixed header flags")]
    InvalidHeaderFlags,
    /// A QoS field holds 3.
    #[error("[MQTT-3.3.1-4] QoS 3 is not a QoS level")]
    InvalidQoS,
    /// The Maximum QoS of a subscription holds 3: malformed in MQTT 3.1.1 [MQTT-3-8.3-4], a
    /// Protocol Error in MQTT 5.0 (section 3.8.3.1).
    #[error("[MQTT-3-8.3-4] subscription QoS 3 is not a QoS level")]
    InvalidSubscriptionQoS,
    /// The DUP flag is set on a QoS 0 PUBLISH.
    #[error("[MQTT-3.3.1-2] DUP flag set on a QoS 0 PUBLISH")]
    DupOnQoS0,
    /// A packet identifier is 0 where one is required.
    #[error("[MQTT-2.3.1-1] packet identifier 0")]
    ZeroPacketId,
    /// The packet ends before its contents do.
    #[error("[MQTT-2.1.4] packet shorter than its contents")]
    Truncated,
    /// Bytes remain after the packet's contents.
    #[error("[MQTT-2.1.4] unexpected bytes after the packet contents")]
    TrailingBytes,
    /// A string is not well-formed UTF-8 (this includes UTF-16 surrogates).
    #[error("[MQTT-1.5.3-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A string contains U+0000.
    #[error("[MQTT-1.5.3-2] string contains the null character U+0000")]
    NullCharacter,
    /// The CONNECT protocol name is neither `MQTT` nor `MQIsdp`.
    #[error("[MQTT-3.1.2-1] unknown protocol name")]
    InvalidProtocolName,
    /// The CONNECT protocol level is not 3, 4 or 5.
    #[error("[MQTT-3.1.2-2] unsupported protocol level")]
    UnsupportedProtocolLevel,
    /// The reserved CONNECT flag is set.
    #[error("[MQTT-3.1.2-3] reserved CONNECT flag is set")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain is set without the Will Flag.
    #[error("[MQTT-3.1.2-11] will QoS or will retain set without the will flag")]
    WillFlagsWithoutWill,
    /// The Password Flag is set without the User Name Flag (before MQTT 5.0).
    #[error("[MQTT-3.1.2-22] password flag set without user name flag")]
    PasswordWithoutUsername,
    /// A PUBLISH topic name contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] topic name in PUBLISH contains a wildcard")]
    PublishTopicHasWildcard,
    /// A topic name is empty where one is required.
    #[error("[MQTT-4.7.3-1] topic name is empty")]
    EmptyTopicName,
    /// The will topic is not a valid topic name.
    #[error("[MQTT-3.1.3-11] will topic is not a valid topic name")]
    InvalidWillTopic,
    /// A SUBSCRIBE carries no topic filter.
    #[error("[MQTT-3.8.3-3] SUBSCRIBE with no topic filter")]
    EmptySubscribe,
    /// An UNSUBSCRIBE carries no topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE with no topic filter")]
    EmptyUnsubscribe,
    /// Reserved bits of the subscription options are set.
    #[error("[MQTT-3.8.3-4] reserved bits in subscription options are set")]
    SubscribeReservedBits,
    /// Retain Handling is 3.
    #[error("[MQTT-3.8.3-5] retain handling 3 is reserved")]
    InvalidRetainHandling,
    /// A reason code that is not defined for this packet.
    #[error("[MQTT-2.4] reason code not valid for this packet")]
    InvalidReasonCode,
    /// A return code that is not defined for this packet (MQTT 3.x).
    #[error("[MQTT-3.2.2-6] return code not valid for this packet")]
    InvalidReturnCode,
    /// A property identifier that is not defined, or not allowed in this packet.
    #[error("[MQTT-2.2.2] property not valid for this packet")]
    InvalidProperty,
    /// A property that may appear once appears twice.
    #[error("[MQTT-2.2.2] property included more than once")]
    DuplicateProperty,
    /// A property value outside its allowed range.
    #[error("[MQTT-3.1.2] property value out of range")]
    InvalidPropertyValue,
    /// The CONNACK acknowledge flags have reserved bits set.
    #[error("[MQTT-3.2.2-1] reserved CONNACK acknowledge flags are set")]
    ConnAckReservedFlags,
}

impl DecodeError {
    /// The MQTT 5.0 reason code a server reports for this error.
    pub fn reason_code(self) -> u8 {
        match self {
            DecodeError::PacketTooLarge => 0x95,
            DecodeError::UnsupportedProtocolLevel => 0x84,
            DecodeError::PublishTopicHasWildcard
            | DecodeError::EmptyTopicName
            | DecodeError::InvalidWillTopic => 0x90,
            DecodeError::InvalidRetainHandling
            | DecodeError::InvalidSubscriptionQoS
            // MQTT 5.0 sections 3.8.3 and 3.10.3: a SUBSCRIBE or UNSUBSCRIBE with no payload is
            // a Protocol Error, not a Malformed Packet.
            | DecodeError::EmptySubscribe
            | DecodeError::EmptyUnsubscribe
            | DecodeError::DuplicateProperty
            | DecodeError::InvalidPropertyValue
            | DecodeError::InvalidProtocolName => 0x82,
            DecodeError::MalformedVarInt
            | DecodeError::NonMinimalVarInt
            | DecodeError::ReservedPacketType
            | DecodeError::InvalidHeaderFlags
            | DecodeError::InvalidQoS
            | DecodeError::DupOnQoS0
            | DecodeError::ZeroPacketId
            | DecodeError::Truncated
            | DecodeError::TrailingBytes
            | DecodeError::InvalidUtf8
            | DecodeError::NullCharacter
            | DecodeError::ConnectReservedFlag
            | DecodeError::WillFlagsWithoutWill
            | DecodeError::PasswordWithoutUsername
            | DecodeError::SubscribeReservedBits
            | DecodeError::InvalidReasonCode
            | DecodeError::InvalidReturnCode
            | DecodeError::InvalidProperty
            | DecodeError::ConnAckReservedFlags => 0x81,
        }
    }

    /// The DISCONNECT reason for this error once a connection is established.
    pub fn disconnect_reason(self) -> DisconnectReason {
        DisconnectReason::from_u8(self.reason_code()).unwrap_or(DisconnectReason::ProtocolError)
    }

    /// The CONNACK reason for this error when it occurs in the CONNECT packet.
    pub fn connack_reason(self) -> ConnAckReason {
        ConnAckReason::from_u8(self.reason_code()).unwrap_or(ConnAckReason::ProtocolError)
    }
}

/// Why a packet cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field is longer than 65,535 bytes.
    #[error("string or binary field longer than 65535 bytes")]
    FieldTooLong,
    /// The packet is larger than the 268,435,455 bytes the remaining length can express.
    #[error("packet larger than the remaining length can express")]
    PacketTooLarge,
    /// A QoS > 0 PUBLISH has no packet identifier, or a QoS 0 PUBLISH has one.
    #[error("packet identifier does not match the QoS")]
    PacketIdMismatch,
    /// The packet type does not exist in the protocol version it is encoded for.
    #[error("packet type not available in this protocol version")]
    NotInVersion,
}
