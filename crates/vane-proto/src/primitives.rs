//! Wire primitives: integers, variable byte integers, UTF-8 strings, binary data, packet ids.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use std::num::NonZeroU16;

use crate::error::{DecodeError, EncodeError};

/// A non-zero packet identifier [MQTT-2.3.1-1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// Wraps a packet identifier; `None` for 0.
    pub fn new(value: u16) -> Option<PacketId> {
        NonZeroU16::new(value).map(PacketId)
    }

    /// The wire value.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    /// The identifier after this one, wrapping from 65535 to 1.
    pub fn next(self) -> PacketId {
        PacketId::new(self.get().wrapping_add(1)).unwrap_or(PacketId(NonZeroU16::MIN))
    }
}

impl std::fmt::Display for PacketId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Largest value a variable byte integer can hold.
pub(crate) const VARINT_MAX: u32 = 268_435_455;

pub(crate) fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.is_empty() {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u8())
}

pub(crate) fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    if buf.remaining() < 2 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u16())
}

pub(crate) fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.remaining() < 4 {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.get_u32())
}

pub(crate) fn read_packet_id(buf: &mut Bytes) -> Result<PacketId, DecodeError> {
    PacketId::new(read_u16(buf)?).ok_or(DecodeError::ZeroPacketId)
}

/// Parses a variable byte integer from the front of `bytes` without consuming it.
/// Returns `Ok(None)` when more bytes are needed, else the value and its encoded length.
pub(crate) fn parse_varint(
    bytes: &[u8],
    strict: bool,
) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&byte) = bytes.get(i) else {
            return Ok(None);
        };
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A zero final byte after the first means a shorter encoding existed.
            if strict && i > 0 && byte == 0 {
                return Err(DecodeError::NonMinimalVarInt);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedVarInt)
}

pub(crate) fn read_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    match parse_varint(buf, true)? {
        Some((value, len)) => {
            buf.advance(len);
            Ok(value)
        }
        None => Err(DecodeError::Truncated),
    }
}

pub(crate) fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    if buf.remaining() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(buf.split_to(len))
}

/// Checks a UTF-8 string field's content rules [MQTT-1.5.3-1], [MQTT-1.5.3-2].
pub(crate) fn validate_utf8(raw: Bytes) -> Result<ByteString, DecodeError> {
    if raw.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)
}

pub(crate) fn read_string(buf: &mut Bytes) -> Result<ByteString, DecodeError> {
    validate_utf8(read_binary(buf)?)
}

pub(crate) fn varint_len(value: u32) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn write_varint(buf: &mut BytesMut, mut value: u32) {
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            break;
        }
    }
}

pub(crate) fn check_field_len(len: usize) -> Result<(), EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong)
    } else {
        Ok(())
    }
}

/// Writes a two-byte length and the bytes; the caller has checked the length.
pub(crate) fn write_binary(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u16(data.len() as u16);
    buf.put_slice(data);
}

/// Encoded size of a string or binary field.
pub(crate) fn field_len(data: &[u8]) -> usize {
    2 + data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for value in [
            0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX,
        ] {
            let mut buf = BytesMut::new();
            write_varint(&mut buf, value);
            assert_eq!(buf.len(), varint_len(value));
            assert_eq!(parse_varint(&buf, true), Ok(Some((value, buf.len()))));
        }
    }

    #[test]
    fn varint_longer_than_four_bytes_is_malformed() {
        // [MQTT-1.5.5] at most four bytes
        assert_eq!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01], true),
            Err(DecodeError::MalformedVarInt)
        );
    }

    #[test]
    fn varint_non_minimal_is_refused_when_strict() {
        // [MQTT-1.5.5-1]
        assert_eq!(
            parse_varint(&[0x80, 0x00], true),
            Err(DecodeError::NonMinimalVarInt)
        );
        assert_eq!(parse_varint(&[0x80, 0x00], false), Ok(Some((0, 2))));
    }

    #[test]
    fn strings_refuse_null_and_bad_utf8() {
        // [MQTT-1.5.3-2]
        assert_eq!(
            validate_utf8(Bytes::from_static(b"a\0b")),
            Err(DecodeError::NullCharacter)
        );
        // [MQTT-1.5.3-1] an encoded UTF-16 surrogate (U+D800) is not well-formed UTF-8
        assert_eq!(
            validate_utf8(Bytes::from_static(&[0xED, 0xA0, 0x80])),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn packet_id_zero_is_refused_and_wraps_past_65535() {
        assert_eq!(PacketId::new(0), None);
        assert_eq!(PacketId::new(65535).map(PacketId::next), PacketId::new(1));
    }
}
