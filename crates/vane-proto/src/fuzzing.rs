//! The check behind the `decode` fuzz target (`fuzz/fuzz_targets/decode.rs`), shared with the
//! test that replays its corpus (`tests/fuzz_corpus.rs`) and with the property tests. Not part of
//! the supported API.
//!
//! An input is one selector byte followed by a byte stream. The selector picks the decoder:
//!
//! | bits | meaning |
//! | --- | --- |
//! | 0-1 | protocol version: 0 unknown until a CONNECT, 1 MQTT 3.1, 2 MQTT 3.1.1, 3 MQTT 5.0 |
//! | 2-3 | maximum packet size: 0 the default, 1 16 bytes, 2 128 bytes, 3 1024 bytes |
//! | 4-7 | `n`: the stream is also fed to a second decoder `n + 1` bytes at a time |
//!
//! [`check`] decodes the stream in one piece and in chunks and asserts that both give the same
//! packets and the same error; then every decoded packet is encoded again (for the version it was
//! decoded with), decoded again, and must come back equal, consuming exactly the bytes encoded.
//! Any failed assertion panics, which the fuzzer reports as a crash.

use bytes::BytesMut;

use crate::codec::{Decoder, DEFAULT_MAX_PACKET_SIZE};
use crate::error::DecodeError;
use crate::packet::Packet;
use crate::version::ProtocolVersion;

/// What decoding one input produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The packets decoded, each with the protocol version it was decoded by.
    pub packets: Vec<(ProtocolVersion, Packet)>,
    /// The error that ended decoding, if any.
    pub error: Option<DecodeError>,
}

/// The version the selector byte asks for; `None` leaves it to the first CONNECT.
pub fn selected_version(selector: u8) -> Option<ProtocolVersion> {
    match selector & 0x03 {
        1 => Some(ProtocolVersion::V3_1),
        2 => Some(ProtocolVersion::V3_1_1),
        3 => Some(ProtocolVersion::V5),
        _ => None,
    }
}

/// The maximum packet size the selector byte asks for.
pub fn selected_max_packet_size(selector: u8) -> usize {
    match (selector >> 2) & 0x03 {
        1 => 16,
        2 => 128,
        3 => 1024,
        _ => DEFAULT_MAX_PACKET_SIZE,
    }
}

/// A decoder configured by the selector byte.
pub fn decoder_for(selector: u8) -> Decoder {
    let max = selected_max_packet_size(selector);
    match selected_version(selector) {
        Some(version) => Decoder::with_version(version, max),
        None => Decoder::new(max),
    }
}

/// Decodes `stream` with the decoder `selector` configures, handing it `chunk` bytes at a time
/// (at least one) and taking out every whole packet after each, until the end or an error.
pub fn decode_stream(selector: u8, stream: &[u8], chunk: usize) -> Outcome {
    let mut decoder = decoder_for(selector);
    let mut buf = BytesMut::new();
    let mut outcome = Outcome::default();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let version = decoder.version().unwrap_or(ProtocolVersion::V3_1_1);
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    // CONNECT is decoded by its own protocol level, whatever the decoder's.
                    let version = match &packet {
                        Packet::Connect(connect) => connect.protocol,
                        _ => version,
                    };
                    outcome.packets.push((version, packet));
                }
                Ok(None) => break,
                Err(error) => {
                    // The error maps to a reason code whatever it is.
                    let _ = (error.disconnect_reason(), error.connack_reason());
                    outcome.error = Some(error);
                    return outcome;
                }
            }
        }
    }
    outcome
}

/// Encodes `packet` for `version`, decodes the bytes with a decoder of that version and asserts
/// that the same packet comes back from exactly those bytes. Panics otherwise.
pub fn assert_round_trip(version: ProtocolVersion, packet: &Packet) {
    let mut encoded = BytesMut::new();
    if let Err(error) = packet.encode(version, &mut encoded) {
        panic!("decoded packet does not encode for {version}: {error}: {packet:?}");
    }
    let bytes = encoded.clone().freeze();
    let mut decoder = Decoder::with_version(version, DEFAULT_MAX_PACKET_SIZE);
    match decoder.decode(&mut encoded) {
        Ok(Some(again)) => assert_eq!(
            &again, packet,
            "re-encoded packet decodes differently for {version}; bytes {bytes:02x?}"
        ),
        other => panic!(
            "re-encoded packet does not decode for {version}: {other:?}; \
             packet {packet:?}, bytes {bytes:02x?}"
        ),
    }
    assert!(
        encoded.is_empty(),
        "{} bytes left after re-decoding {packet:?}",
        encoded.len()
    );
}

/// The fuzz check on one input (selector byte, then the stream); see the module docs. Panics on
/// any inconsistency and returns what the whole-buffer decode produced.
pub fn check(data: &[u8]) -> Outcome {
    let Some((&selector, stream)) = data.split_first() else {
        return Outcome::default();
    };
    let whole = decode_stream(selector, stream, stream.len());
    let chunk = usize::from(selector >> 4) + 1;
    let chunked = decode_stream(selector, stream, chunk);
    assert_eq!(
        whole, chunked,
        "feeding the stream {chunk} bytes at a time changes the result"
    );
    for (version, packet) in &whole.packets {
        assert_round_trip(*version, packet);
    }
    whole
}
