//! Framing: the fixed header, and an incremental decoder that takes packets out of a growing
//! read buffer, refusing oversized packets from their header before the body is buffered.

use bytes::{Buf, BytesMut};

use crate::error::DecodeError;
use crate::packet::Packet;
use crate::primitives::parse_varint;
use crate::version::ProtocolVersion;

/// The largest packet MQTT can express: 268,435,455 bytes of body plus a 5-byte header.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 268_435_460;

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type and flags.
    pub first_byte: u8,
    /// The remaining length.
    pub remaining_length: usize,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Size of the whole packet.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_length
    }
}

/// Parses the fixed header at the front of `bytes` without consuming it; `Ok(None)` when more
/// bytes are needed. `strict` refuses non-minimal remaining lengths (MQTT 5.0 [MQTT-1.5.5-1]).
pub fn decode_fixed_header(bytes: &[u8], strict: bool) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first_byte) = bytes.first() else {
        return Ok(None);
    };
    Ok(
        parse_varint(&bytes[1..], strict)?.map(|(len, n)| FixedHeader {
            first_byte,
            remaining_length: len as usize,
            header_len: 1 + n,
        }),
    )
}

/// Takes whole packets out of a read buffer.
///
/// Until a CONNECT has been decoded the protocol version is unknown; CONNECT sets it, and every
/// later packet is decoded by that version's rules.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: usize,
}

impl Decoder {
    /// A decoder that refuses packets larger than `max_packet_size` bytes in total.
    pub fn new(max_packet_size: usize) -> Decoder {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    /// A decoder for a connection whose version is already known (a client's).
    pub fn with_version(version: ProtocolVersion, max_packet_size: usize) -> Decoder {
        Decoder {
            version: Some(version),
            max_packet_size,
        }
    }

    /// The protocol version in force, once known.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Sets the protocol version.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = Some(version);
    }

    /// Changes the largest packet accepted.
    pub fn set_max_packet_size(&mut self, max_packet_size: usize) {
        self.max_packet_size = max_packet_size;
    }

    /// Decodes the next whole packet at the front of `buf`, consuming it. Returns `Ok(None)`
    /// when `buf` holds only part of a packet; the caller reads more and calls again. After an
    /// error the stream cannot be resynchronised and the connection must end.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let strict = self.version == Some(ProtocolVersion::V5);
        let Some(header) = decode_fixed_header(buf, strict)? else {
            return Ok(None);
        };
        let total = header.packet_len();
        if total > self.max_packet_size {
            return Err(DecodeError::PacketTooLarge);
        }
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total).freeze();
        frame.advance(header.header_len);
        let version = self.version.unwrap_or(ProtocolVersion::V3_1_1);
        let packet = Packet::decode_body(header.first_byte, frame, version)?;
        if let (None, Packet::Connect(connect)) = (self.version, &packet) {
            self.version = Some(connect.protocol);
        }
        Ok(Some(packet))
    }
}
