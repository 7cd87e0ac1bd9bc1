//! PUBLISH (MQTT 3.1.1 section 3.3, MQTT 5.0 section 3.3).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::{
    check_field_len, field_len, read_packet_id, read_string, write_binary, PacketId,
};
use crate::properties::{EncodeProperties, PublishProperties, Sink};
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

    pub(crate) fn decode(
        flags: u8,
        buf: &mut Bytes,
        v: ProtocolVersion,
    ) -> Result<Publish, DecodeError> {
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
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(read_packet_id(buf)?)
        };
        let properties = if v.is_v5() {
            PublishProperties::decode(buf)?
        } else {
            PublishProperties::default()
        };
        let payload = std::mem::take(buf);
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload,
        })
    }

    /// A borrowed view of this packet, for encoding.
    pub fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            properties: &self.properties,
            topic_alias: self.properties.topic_alias,
            subscription_identifiers: &self.properties.subscription_identifiers,
            message_expiry_interval: self.properties.message_expiry_interval,
            payload: &self.payload,
        }
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        self.as_ref().encode(v, buf)
    }
}

/// A PUBLISH assembled from borrowed parts: a broker encodes one shared message for each
/// subscriber with that subscriber's packet id, QoS, retain flag, topic alias, subscription
/// identifiers and remaining expiry, without copying the message.
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// DUP flag.
    pub dup: bool,
    /// QoS level.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty when the alias stands for a topic the receiver already knows).
    pub topic: &'a str,
    /// Packet identifier, present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// Properties forwarded as they are, except the three overridden below.
    pub properties: &'a PublishProperties,
    /// Topic Alias, replacing `properties.topic_alias`.
    pub topic_alias: Option<u16>,
    /// Subscription Identifiers, replacing `properties.subscription_identifiers`.
    pub subscription_identifiers: &'a [u32],
    /// Message Expiry Interval, replacing `properties.message_expiry_interval`.
    pub message_expiry_interval: Option<u32>,
    /// Application payload.
    pub payload: &'a [u8],
}

struct PublishRefProperties<'a, 'b>(&'b PublishRef<'a>);

impl EncodeProperties for PublishRefProperties<'_, '_> {
    fn visit(&self, s: &mut impl Sink) {
        let p = self.0;
        s.opt_flag(0x01, p.properties.payload_format_indicator);
        s.opt_u32(0x02, p.message_expiry_interval);
        s.opt_u16(0x23, p.topic_alias);
        s.opt_str(0x08, &p.properties.response_topic);
        s.opt_bin(0x09, &p.properties.correlation_data);
        s.users(&p.properties.user_properties);
        for &sid in p.subscription_identifiers {
            s.varint(0x0B, sid);
        }
        s.opt_str(0x03, &p.properties.content_type);
    }
}

impl PublishRef<'_> {
    fn first_byte(&self) -> u8 {
        let mut b = 0x30 | (self.qos.as_u8() << 1);
        if self.dup {
            b |= 0x08;
        }
        if self.retain {
            b |= 0x01;
        }
        b
    }

    /// Appends the encoded PUBLISH to `buf`; properties are written only for MQTT 5.0.
    pub fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if (self.qos == QoS::AtMostOnce) != self.packet_id.is_none() {
            return Err(EncodeError::PacketIdMismatch);
        }
        check_field_len(self.topic.len())?;
        let props = PublishRefProperties(self);
        let props_len = if v.is_v5() { props.encoded_len()? } else { 0 };
        let id_len = if self.packet_id.is_some() { 2 } else { 0 };
        let len = field_len(self.topic.as_bytes()) + id_len + props_len + self.payload.len();
        write_packet(buf, self.first_byte(), len, |buf| {
            write_binary(buf, self.topic.as_bytes());
            if let Some(id) = self.packet_id {
                buf.put_u16(id.get());
            }
            if v.is_v5() {
                props.write(buf);
            }
            buf.put_slice(self.payload);
        })
    }
}
