//! UNSUBSCRIBE and UNSUBACK (MQTT 3.1.1 sections 3.10 and 3.11, MQTT 5.0 sections 3.10, 3.11).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::{
    check_field_len, field_len, read_packet_id, read_string, read_u8, write_binary, PacketId,
};
use crate::properties::{
    decode_user_properties, AckProperties, EncodeProperties, UserProperties, UserProperty,
};
use crate::reason::UnsubAckReason;
use crate::version::ProtocolVersion;

/// The UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// User properties (MQTT 5.0).
    pub user_properties: Vec<UserProperty>,
    /// Topic filters to remove, in order.
    pub filters: Vec<ByteString>,
}

impl Unsubscribe {
    pub(crate) fn decode(buf: &mut Bytes, v: ProtocolVersion) -> Result<Unsubscribe, DecodeError> {
        let packet_id = read_packet_id(buf)?;
        let user_properties = if v.is_v5() {
            decode_user_properties(buf)?
        } else {
            Vec::new()
        };
        let mut filters = Vec::new();
        while !buf.is_empty() {
            filters.push(read_string(buf)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyUnsubscribe);
        }
        Ok(Unsubscribe {
            packet_id,
            user_properties,
            filters,
        })
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let props = UserProperties(&self.user_properties);
        let props_len = if v.is_v5() { props.encoded_len()? } else { 0 };
        let mut len = 2 + props_len;
        for f in &self.filters {
            check_field_len(f.len())?;
            len += field_len(f.as_bytes());
        }
        write_packet(buf, 0xA2, len, |buf| {
            buf.put_u16(self.packet_id.get());
            if v.is_v5() {
                props.write(buf);
            }
            for f in &self.filters {
                write_binary(buf, f.as_bytes());
            }
        })
    }
}

/// The UNSUBACK packet. MQTT 3.x carries no reason codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (MQTT 5.0).
    pub properties: AckProperties,
    /// One reason code per topic filter (MQTT 5.0).
    pub reasons: Vec<UnsubAckReason>,
}

impl UnsubAck {
    pub(crate) fn decode(buf: &mut Bytes, v: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
        let packet_id = read_packet_id(buf)?;
        if !v.is_v5() {
            return Ok(UnsubAck {
                packet_id,
                properties: AckProperties::default(),
                reasons: Vec::new(),
            });
        }
        let properties = AckProperties::decode(buf)?;
        let mut reasons = Vec::with_capacity(buf.len());
        while !buf.is_empty() {
            reasons.push(
                UnsubAckReason::from_u8(read_u8(buf)?).ok_or(DecodeError::InvalidReasonCode)?,
            );
        }
        Ok(UnsubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !v.is_v5() {
            return write_packet(buf, 0xB0, 2, |buf| buf.put_u16(self.packet_id.get()));
        }
        let props_len = self.properties.encoded_len()?;
        write_packet(buf, 0xB0, 2 + props_len + self.reasons.len(), |buf| {
            buf.put_u16(self.packet_id.get());
            self.properties.write(buf);
            for r in &self.reasons {
                buf.put_u8(r.as_u8());
            }
        })
    }
}
