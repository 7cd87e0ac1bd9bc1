//! CONNACK (MQTT 3.1.1 section 3.2, MQTT 5.0 section 3.2).

use bytes::{BufMut, Bytes, BytesMut};

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::read_u8;
use crate::properties::{ConnAckProperties, EncodeProperties};
use crate::reason::ConnAckReason;
use crate::version::ProtocolVersion;

/// The CONNACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Reason code (mapped to a return code for MQTT 3.x).
    pub reason: ConnAckReason,
    /// Properties (MQTT 5.0).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with no properties.
    pub fn new(reason: ConnAckReason, session_present: bool) -> ConnAck {
        ConnAck {
            session_present,
            reason,
            properties: ConnAckProperties::default(),
        }
    }

    pub(crate) fn decode(buf: &mut Bytes, v: ProtocolVersion) -> Result<ConnAck, DecodeError> {
        let flags = read_u8(buf)?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::ConnAckReservedFlags);
        }
        let code = read_u8(buf)?;
        let reason = if v.is_v5() {
            ConnAckReason::from_u8(code).ok_or(DecodeError::InvalidReasonCode)?
        } else {
            ConnAckReason::from_v3_return_code(code).ok_or(DecodeError::InvalidReturnCode)?
        };
        let properties = if v.is_v5() {
            ConnAckProperties::decode(buf)?
        } else {
            ConnAckProperties::default()
        };
        // [MQTT-3.2.2-4] / [MQTT-3.2.2-6]: a refused connection has no session, whatever the flag
        // says; read it as the encoder writes it.
        let session_present = flags & 1 != 0 && !reason.is_error();
        Ok(ConnAck {
            session_present,
            reason,
            properties,
        })
    }

    pub(crate) fn encode(&self, v: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        // [MQTT-3.2.2-4] / [MQTT-3.2.2-6]: session present is 0 when the connection is refused.
        let session_present = self.session_present && !self.reason.is_error();
        let code = if v.is_v5() {
            self.reason.as_u8()
        } else {
            self.reason.v3_return_code()
        };
        let props_len = if v.is_v5() {
            self.properties.encoded_len()?
        } else {
            0
        };
        write_packet(buf, 0x20, 2 + props_len, |buf| {
            buf.put_u8(u8::from(session_present));
            buf.put_u8(code);
            if v.is_v5() {
                self.properties.write(buf);
            }
        })
    }
}
