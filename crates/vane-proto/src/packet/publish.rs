//! PUBLISH (MQTT 3.1.1 section 3.3, MQTT 5.0 section 3.3).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::{check_field_len, field_len, read_packet_id, read_string, write_binary, PacketId};
use crate::properties::{EncodeProperties, PublishProperties};
use crate::qos::QoS;
use crate::version::ProtocolVersion;

/// The PUBLISH packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this is a redelivery.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name; empty only when a topic alias stands for it (MQTT 5.0).
    pub topic: ByteString,
    /// Packet identifier, present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// Properties (MQTT 5.0).
    pub properties: PublishProperties,
    /// Application payload.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 publish with no properties.
    pub fn new(topic: impl Into<ByteString>, payload: impl Into<Bytes>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            properties: PublishProperties::default(),
            payload: payload.into(),
        }
    }

    pub(crate) fn decode(flags: u8, buf: &mut Bytes, v: ProtocolVersion) -> Result<Publish, DecodeError> {
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQoS)?;
        let dup = flags & 0x08 != 0;
        let retain = flags & 0x01 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupOnQoS0);
        }
        let topic = read_string(buf)?;
        if topic.contains(['+', '#']) {
            return Err(DecodeError::PublishTopicHasWildcard);
        }
        // An empty topic is only allowed in MQTT 5.0, where a topic alias must then stand for it;
        // the session checks the alias.
        if topic.is_empty() && !v.is_v5() {
            return Err(DecodeError::EmptyTopicName);
        }
        let packet_id = if qos == QoS::AtMostOnce { None } else { Some(read_packet_id(buf)?) };
        let properties = if v.is_v5() { PublishProperties::decode(buf)? } else { PublishProperties::default() };
        let payload = std::mem::take(buf);
        Ok(Publish { dup, qos, retain, topic, packet_id, properties, payload })
    }

    /// The first byte of the fixed header.
    pub(crate) fn first_byte(&self) -> u8 {
        let mut b = 0x30 | (self.qos.as_u8() << 1);
        if self.dup {
            b |= 0x08;
        }
        if self.retain {
            b |= 0x01;
        }
        b
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        check_field_len(self.topic.len())?;
        let props_len = if v.is_v5() { self.properties.encoded_len()? } else { 0 };
        let id_len = if self.packet_id.is_some() { 2 } else { 0 };
        let len = field_len(self.topic.as_bytes()) + id_len + props_len + self.payload.len();
        write_packet(buf, self.first_byte(), len, |buf| {
            write_binary(buf, self.topic.as_bytes());
            if let Some(id) = self.packet_id {
                buf.put_u16(id.get());
            }
            if v.is_v5() {
                self.properties.write(buf);
            }
            buf.put_slice(&self.payload);
        })
    }
}
