//! AUTH, the MQTT 5.0 extended authentication exchange (section 3.15).

use bytes::{BufMut, Bytes, BytesMut};

use super::write_packet;
use crate::error::{DecodeError, EncodeError};
use crate::primitives::read_u8;
use crate::properties::{AuthProperties, EncodeProperties};
use crate::reason::AuthReason;

/// The AUTH packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Reason code.
    pub reason: AuthReason,
    /// Properties.
    pub properties: AuthProperties,
}

impl Auth {
    pub(crate) fn decode(buf: &mut Bytes) -> Result<Auth, DecodeError> {
        let mut a = Auth {
            reason: AuthReason::Success,
            properties: AuthProperties::default(),
        };
        if !buf.is_empty() {
            a.reason = AuthReason::from_u8(read_u8(buf)?).ok_or(DecodeError::InvalidReasonCode)?;
            if !buf.is_empty() {
                a.properties = AuthProperties::decode(buf)?;
            }
        }
        Ok(a)
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let short = self.reason == AuthReason::Success && self.properties.is_empty();
        let props_len = if short {
            0
        } else {
            self.properties.encoded_len()?
        };
        let len = if short { 0 } else { 1 + props_len };
        write_packet(buf, 0xF0, len, |buf| {
            if !short {
                buf.put_u8(self.reason.as_u8());
                self.properties.write(buf);
            }
        })
    }
}
