//! PUBACK, PUBREC, PUBREL and PUBCOMP: a packet identifier, and in MQTT 5.0 a reason code and
//! properties that may be left out when they are Success and empty (MQTT 5.0 section 3.4.2.1).

use bytes::{BufMut, Bytes, BytesMut};

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::{read_packet_id, read_u8, PacketId};
use crate::properties::{AckProperties, EncodeProperties};
use crate::reason::{PubAckReason, PubCompReason, PubRecReason, PubRelReason};
use crate::version::ProtocolVersion;

macro_rules! ack_packet {
    ($(#[$meta:meta])* $name:ident, $reason:ident, $first_byte:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// Packet identifier of the exchange.
            pub packet_id: PacketId,
            /// Reason code (MQTT 5.0; always Success before).
            pub reason: $reason,
            /// Properties (MQTT 5.0).
            pub properties: AckProperties,
        }

        impl $name {
            /// A successful acknowledgement with no properties.
            pub fn new(packet_id: PacketId) -> $name {
                $name { packet_id, reason: $reason::Success, properties: AckProperties::default() }
            }

            /// An acknowledgement with a reason code and no properties.
            pub fn with_reason(packet_id: PacketId, reason: $reason) -> $name {
                $name { packet_id, reason, properties: AckProperties::default() }
            }

            pub(crate) fn decode(buf: &mut Bytes, v: ProtocolVersion) -> Result<$name, DecodeError> {
                let packet_id = read_packet_id(buf)?;
                let mut ack = $name::new(packet_id);
                if v.is_v5() && !buf.is_empty() {
                    ack.reason = $reason::from_u8(read_u8(buf)?).ok_or(DecodeError::InvalidReasonCode)?;
                    if !buf.is_empty() {
                        ack.properties = AckProperties::decode(buf)?;
                    }
                }
                Ok(ack)
            }

            pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
                let with_props = v.is_v5() && !self.properties.is_empty();
                let with_reason = v.is_v5() && (with_props || self.reason != $reason::Success);
                let props_len = if with_props { self.properties.encoded_len()? } else { 0 };
                let len = 2 + usize::from(with_reason) + props_len;
                write_packet(buf, $first_byte, len, |buf| {
                    buf.put_u16(self.packet_id.get());
                    if with_reason {
                        buf.put_u8(self.reason.as_u8());
                    }
                    if with_props {
                        self.properties.write(buf);
                    }
                })
            }
        }
    };
}

ack_packet!(
    /// PUBACK: acknowledges a QoS 1 PUBLISH.
    PubAck, PubAckReason, 0x40
);
ack_packet!(
    /// PUBREC: first acknowledgement of a QoS 2 PUBLISH.
    PubRec, PubRecReason, 0x50
);
ack_packet!(
    /// PUBREL: releases a QoS 2 PUBLISH.
    PubRel, PubRelReason, 0x62
);
ack_packet!(
    /// PUBCOMP: completes a QoS 2 exchange.
    PubComp, PubCompReason, 0x70
);
