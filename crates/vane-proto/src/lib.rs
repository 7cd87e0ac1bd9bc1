//! Sans-IO MQTT codec: bytes in, [`Packet`]s out and back, for MQTT 3.1, 3.1.1 and 5.0.
//!
//! The packet model is a superset of MQTT 5.0; encoding for an older protocol version drops
//! what that version cannot carry (properties, reason codes that have no v3 return code).
//! Nothing here performs I/O or depends on an async runtime.

#![warn(missing_docs)]

mod codec;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod packet;
mod primitives;
mod properties;
mod qos;
mod reason;
mod topic;
mod version;

pub use codec::{decode_fixed_header, Decoder, FixedHeader, DEFAULT_MAX_PACKET_SIZE};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PacketType, PubAck, PubComp, PubRec,
    PubRel, Publish, PublishRef, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
pub use primitives::PacketId;
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UserProperty, WillProperties,
};
pub use qos::QoS;
pub use reason::{
    AuthReason, ConnAckReason, DisconnectReason, PubAckReason, PubCompReason, PubRecReason,
    PubRelReason, SubAckReason, UnsubAckReason,
};
pub use topic::{filter_matches, TopicError, TopicFilter, TopicName, SHARED_PREFIX};
pub use version::ProtocolVersion;

/// A UTF-8 string shared with the buffer it was decoded from (no copy).
pub use bytestring::ByteString;
