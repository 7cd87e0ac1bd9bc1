//! SUBSCRIBE and SUBACK (MQTT 3.1.1 sections 3.8 and 3.9, MQTT 5.0 sections 3.8 and 3.9).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::{
    check_field_len, field_len, read_packet_id, read_string, read_u8, write_binary, PacketId,
};
use crate::properties::{AckProperties, EncodeProperties, SubscribeProperties};
use crate::qos::QoS;
use crate::reason::SubAckReason;
use crate::version::ProtocolVersion;

/// When retained messages are sent for a new subscription (MQTT 5.0 section 3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// Send them only if the subscription did not exist before.
    SendIfNew = 1,
    /// Do not send them.
    DoNotSend = 2,
}

/// Options of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber wants.
    pub qos: QoS,
    /// Do not deliver the subscriber's own publishes (MQTT 5.0).
    pub no_local: bool,
    /// Keep the retain flag of forwarded messages (MQTT 5.0).
    pub retain_as_published: bool,
    /// Retained message handling (MQTT 5.0).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with a QoS and every MQTT 5.0 option at its default.
    pub fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }

    fn decode(byte: u8, v: ProtocolVersion) -> Result<SubscriptionOptions, DecodeError> {
        let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::InvalidSubscriptionQoS)?;
        if !v.is_v5() {
            if byte & 0xFC != 0 {
                return Err(DecodeError::SubscribeReservedBits);
            }
            return Ok(SubscriptionOptions::qos(qos));
        }
        if byte & 0xC0 != 0 {
            return Err(DecodeError::SubscribeReservedBits);
        }
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn encode(&self, v: ProtocolVersion) -> u8 {
        let mut b = self.qos.as_u8();
        if v.is_v5() {
            b |= u8::from(self.no_local) << 2;
            b |= u8::from(self.retain_as_published) << 3;
            b |= (self.retain_handling as u8) << 4;
        }
        b
    }
}

/// The SUBSCRIBE packet. Filters are checked as UTF-8 here and as topic filters by the broker,
/// which answers an invalid one with a SUBACK failure code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Properties (MQTT 5.0).
    pub properties: SubscribeProperties,
    /// Topic filters with their options, in order.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

impl Subscribe {
    pub(crate) fn decode(buf: &mut Bytes, v: ProtocolVersion) -> Result<Subscribe, DecodeError> {
        let packet_id = read_packet_id(buf)?;
        let properties = if v.is_v5() {
            SubscribeProperties::decode(buf)?
        } else {
            SubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !buf.is_empty() {
            let filter = read_string(buf)?;
            let options = SubscriptionOptions::decode(read_u8(buf)?, v)?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptySubscribe);
        }
        Ok(Subscribe {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let props_len = if v.is_v5() {
            self.properties.encoded_len()?
        } else {
            0
        };
        let mut len = 2 + props_len;
        for (f, _) in &self.filters {
            check_field_len(f.len())?;
            len += field_len(f.as_bytes()) + 1;
        }
        write_packet(buf, 0x82, len, |buf| {
            buf.put_u16(self.packet_id.get());
            if v.is_v5() {
                self.properties.write(buf);
            }
            for (f, o) in &self.filters {
                write_binary(buf, f.as_bytes());
                buf.put_u8(o.encode(v));
            }
        })
    }
}

/// The SUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Properties (MQTT 5.0).
    pub properties: AckProperties,
    /// One reason code per topic filter, in order [MQTT-3.8.4-6].
    pub reasons: Vec<SubAckReason>,
}

impl SubAck {
    pub(crate) fn decode(buf: &mut Bytes, v: ProtocolVersion) -> Result<SubAck, DecodeError> {
        let packet_id = read_packet_id(buf)?;
        let properties = if v.is_v5() {
            AckProperties::decode(buf)?
        } else {
            AckProperties::default()
        };
        let mut reasons = Vec::with_capacity(buf.len());
        while !buf.is_empty() {
            let code = read_u8(buf)?;
            let reason = if v.is_v5() {
                SubAckReason::from_u8(code).ok_or(DecodeError::InvalidReasonCode)?
            } else {
                match code {
                    0..=2 | 0x80 => {
                        SubAckReason::from_u8(code).ok_or(DecodeError::InvalidReturnCode)?
                    }
                    _ => return Err(DecodeError::InvalidReturnCode),
                }
            };
            reasons.push(reason);
        }
        Ok(SubAck {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let props_len = if v.is_v5() {
            self.properties.encoded_len()?
        } else {
            0
        };
        write_packet(buf, 0x90, 2 + props_len + self.reasons.len(), |buf| {
            buf.put_u16(self.packet_id.get());
            if v.is_v5() {
                self.properties.write(buf);
            }
            for r in &self.reasons {
                buf.put_u8(if v.is_v5() {
                    r.as_u8()
                } else {
                    r.v3_return_code()
                });
            }
        })
    }
}
