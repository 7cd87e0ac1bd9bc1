//! The packet model (a superset of MQTT 5.0) and per-packet decode and encode.

mod ack;
mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod subscribe;
mod unsubscribe;

pub use ack::{PubAck, PubComp, PubRec, PubRel};
pub use auth::Auth;
pub use connack::ConnAck;
pub use connect::{Connect, LastWill};
pub use disconnect::Disconnect;
pub use publish::{Publish, PublishRef};
pub use subscribe::{RetainHandling, SubAck, Subscribe, SubscriptionOptions};
pub use unsubscribe::{UnsubAck, Unsubscribe};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::primitives::{varint_len, write_varint, VARINT_MAX};
use crate::version::ProtocolVersion;

/// The control packet types (MQTT section 2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// The type in the upper four bits of the first byte; `None` for reserved 0.
    pub fn from_first_byte(byte: u8) -> Option<PacketType> {
        use PacketType::*;
        Some(match byte >> 4 {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }
}

/// An MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(PubAck),
    PubRec(PubRec),
    PubRel(PubRel),
    PubComp(PubComp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// This packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Decodes one packet from its first byte and its body (the bytes after the remaining
    /// length). CONNECT is decoded by its own protocol level; every other packet by `version`.
    pub fn decode_body(
        first_byte: u8,
        mut body: Bytes,
        version: ProtocolVersion,
    ) -> Result<Packet, DecodeError> {
        let flags = first_byte & 0x0F;
        let ptype =
            PacketType::from_first_byte(first_byte).ok_or(DecodeError::ReservedPacketType)?;
        let required_flags = match ptype {
            PacketType::Publish => None,
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => Some(0b0010),
            _ => Some(0),
        };
        if required_flags.is_some_and(|f| f != flags) {
            return Err(DecodeError::InvalidHeaderFlags);
        }
        let v = version;
        let packet = match ptype {
            PacketType::Connect => Packet::Connect(Box::new(Connect::decode(&mut body)?)),
            PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(&mut body, v)?),
            PacketType::Publish => Packet::Publish(Publish::decode(flags, &mut body, v)?),
            PacketType::PubAck => Packet::PubAck(PubAck::decode(&mut body, v)?),
            PacketType::PubRec => Packet::PubRec(PubRec::decode(&mut body, v)?),
            PacketType::PubRel => Packet::PubRel(PubRel::decode(&mut body, v)?),
            PacketType::PubComp => Packet::PubComp(PubComp::decode(&mut body, v)?),
            PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(&mut body, v)?),
            PacketType::SubAck => Packet::SubAck(SubAck::decode(&mut body, v)?),
            PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(&mut body, v)?),
            PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(&mut body, v)?),
            PacketType::PingReq => Packet::PingReq,
            PacketType::PingResp => Packet::PingResp,
            PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(&mut body, v)?),
            PacketType::Auth if v.is_v5() => Packet::Auth(Auth::decode(&mut body)?),
            PacketType::Auth => return Err(DecodeError::ReservedPacketType),
        };
        if !body.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(packet)
    }

    /// Appends this packet, encoded for `version`, to `buf`. Properties and reason codes that
    /// `version` cannot carry are left out.
    pub fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let v = version;
        match self {
            Packet::Connect(p) => p.encode(buf),
            Packet::ConnAck(p) => p.encode(v, buf),
            Packet::Publish(p) => p.encode(v, buf),
            Packet::PubAck(p) => p.encode(v, buf),
            Packet::PubRec(p) => p.encode(v, buf),
            Packet::PubRel(p) => p.encode(v, buf),
            Packet::PubComp(p) => p.encode(v, buf),
            Packet::Subscribe(p) => p.encode(v, buf),
            Packet::SubAck(p) => p.encode(v, buf),
            Packet::Unsubscribe(p) => p.encode(v, buf),
            Packet::UnsubAck(p) => p.encode(v, buf),
            Packet::PingReq => write_packet(buf, 0xC0, 0, |_| {}),
            Packet::PingResp => write_packet(buf, 0xD0, 0, |_| {}),
            Packet::Disconnect(p) => p.encode(v, buf),
            Packet::Auth(p) if v.is_v5() => p.encode(buf),
            Packet::Auth(_) => Err(EncodeError::NotInVersion),
        }
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self, version: ProtocolVersion) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::new();
        self.encode(version, &mut buf)?;
        Ok(buf.freeze())
    }
}

/// Writes the fixed header and then the body through `write_body`, which must write exactly
/// `body_len` bytes.
pub(crate) fn write_packet(
    buf: &mut BytesMut,
    first_byte: u8,
    body_len: usize,
    write_body: impl FnOnce(&mut BytesMut),
) -> Result<(), EncodeError> {
    let len = u32::try_from(body_len)
        .ok()
        .filter(|&l| l <= VARINT_MAX)
        .ok_or(EncodeError::PacketTooLarge)?;
    buf.reserve(1 + varint_len(len) + body_len);
    buf.put_u8(first_byte);
    write_varint(buf, len);
    let start = buf.len();
    write_body(buf);
    debug_assert_eq!(
        buf.len() - start,
        body_len,
        "body length mismatch for {first_byte:#x}"
    );
    Ok(())
}
