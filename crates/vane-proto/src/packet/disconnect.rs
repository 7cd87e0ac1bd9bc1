//! DISCONNECT (MQTT 3.1.1 section 3.14, MQTT 5.0 section 3.14).

use bytes::{BufMut, Bytes, BytesMut};

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::read_u8;
use crate::properties::{DisconnectProperties, EncodeProperties};
use crate::reason::DisconnectReason;
use crate::version::ProtocolVersion;

/// The DISCONNECT packet. MQTT 3.x carries no reason: it is always a normal disconnection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// Reason code (MQTT 5.0).
    pub reason: DisconnectReason,
    /// Properties (MQTT 5.0).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with a reason and no properties.
    pub fn new(reason: DisconnectReason) -> Disconnect {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(buf: &mut Bytes, v: ProtocolVersion) -> Result<Disconnect, DecodeError> {
        let mut d = Disconnect::new(DisconnectReason::NormalDisconnection);
        if v.is_v5() && !buf.is_empty() {
            d.reason =
                DisconnectReason::from_u8(read_u8(buf)?).ok_or(DecodeError::InvalidReasonCode)?;
            if !buf.is_empty() {
                d.properties = DisconnectProperties::decode(buf)?;
            }
        }
        Ok(d)
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !v.is_v5() {
            return write_packet(buf, 0xE0, 0, |_| {});
        }
        let with_props = !self.properties.is_empty();
        let with_reason = with_props || self.reason != DisconnectReason::NormalDisconnection;
        let props_len = if with_props {
            self.properties.encoded_len()?
        } else {
            0
        };
        write_packet(buf, 0xE0, usize::from(with_reason) + props_len, |buf| {
            if with_reason {
                buf.put_u8(self.reason.as_u8());
            }
            if with_props {
                self.properties.write(buf);
            }
        })
    }
}
