//! CONNECT (MQTT 3.1.1 section 3.1, MQTT 5.0 section 3.1).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::{
    check_field_len, field_len, read_binary, read_string, read_u16, read_u8, write_binary,
};
use crate::properties::{ConnectProperties, EncodeProperties, WillProperties};
use crate::qos::QoS;
use crate::topic::validate_name;
use crate::version::ProtocolVersion;

/// A will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will topic, a valid topic name.
    pub topic: ByteString,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (MQTT 5.0).
    pub properties: WillProperties,
}

/// The CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version requested.
    pub protocol: ProtocolVersion,
    /// Clean Session (3.x) or Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: ByteString,
    /// Will message.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<ByteString>,
    /// Password.
    pub password: Option<Bytes>,
    /// Properties (MQTT 5.0).
    pub properties: ConnectProperties,
}

impl Connect {
    /// A CONNECT with defaults: clean start, 60 s keep alive, no will or credentials.
    pub fn new(protocol: ProtocolVersion, client_id: impl Into<ByteString>) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    pub(crate) fn decode(buf: &mut Bytes) -> Result<Connect, DecodeError> {
        let name = read_binary(buf)?;
        let level = read_u8(buf)?;
        let protocol = match (&name[..], level) {
            (b"MQTT", 4) => ProtocolVersion::V3_1_1,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQIsdp", 3) => ProtocolVersion::V3_1,
            (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolLevel),
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = read_u8(buf)?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos = QoS::from_u8((flags >> 3) & 0x03).ok_or(DecodeError::InvalidQoS)?;
        let will_retain = flags & 0x20 != 0;
        let password_flag = flags & 0x40 != 0;
        let username_flag = flags & 0x80 != 0;
        if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::WillFlagsWithoutWill);
        }
        if protocol != ProtocolVersion::V5 && password_flag && !username_flag {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = read_u16(buf)?;
        let properties = if protocol.is_v5() {
            ConnectProperties::decode(buf)?
        } else {
            ConnectProperties::default()
        };
        let client_id = read_string(buf)?;
        let will = if will_flag {
            let properties = if protocol.is_v5() {
                WillProperties::decode(buf)?
            } else {
                WillProperties::default()
            };
            let topic = read_string(buf)?;
            validate_name(&topic).map_err(|_| DecodeError::InvalidWillTopic)?;
            let payload = read_binary(buf)?;
            Some(LastWill {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = username_flag.then(|| read_string(buf)).transpose()?;
        let password = password_flag.then(|| read_binary(buf)).transpose()?;
        Ok(Connect {
            protocol,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.protocol.is_v5();
        let name = self.protocol.protocol_name().as_bytes();
        let mut len = field_len(name) + 1 + 1 + 2 + field_len(self.client_id.as_bytes());
        check_field_len(self.client_id.len())?;
        if v5 {
            len += self.properties.encoded_len()?;
        }
        if let Some(w) = &self.will {
            check_field_len(w.topic.len())?;
            check_field_len(w.payload.len())?;
            len += field_len(w.topic.as_bytes()) + field_len(&w.payload);
            if v5 {
                len += w.properties.encoded_len()?;
            }
        }
        if let Some(u) = &self.username {
            check_field_len(u.len())?;
            len += field_len(u.as_bytes());
        }
        if let Some(p) = &self.password {
            check_field_len(p.len())?;
            len += field_len(p);
        }
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos.as_u8() << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        write_packet(buf, 0x10, len, |buf| {
            write_binary(buf, name);
            buf.put_u8(self.protocol.level());
            buf.put_u8(flags);
            buf.put_u16(self.keep_alive);
            if v5 {
                self.properties.write(buf);
            }
            write_binary(buf, self.client_id.as_bytes());
            if let Some(w) = &self.will {
                if v5 {
                    w.properties.write(buf);
                }
                write_binary(buf, w.topic.as_bytes());
                write_binary(buf, &w.payload);
            }
            if let Some(u) = &self.username {
                write_binary(buf, u.as_bytes());
            }
            if let Some(p) = &self.password {
                write_binary(buf, p);
            }
        })
    }
}
