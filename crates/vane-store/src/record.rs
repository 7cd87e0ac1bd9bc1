//! On-disk keys and values: every value is a version byte, a crc32 of the body, then the body.
//! Messages are stored as MQTT 5.0 PUBLISH packets (through `vane_proto`) behind a small header.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use vane_core::session::{SessionSubscription, Will};
use vane_core::{Delivery, Message};
use vane_proto::{
    ByteString, Decoder, Packet, PacketId, ProtocolVersion, PublishRef, QoS, RetainHandling,
    SubscriptionOptions, TopicFilter,
};

/// Version of the value layout written by this build.
pub(crate) const RECORD_VERSION: u8 = 1;
const HEADER: usize = 5;

/// Why a record cannot be read.
pub(crate) type Damage = &'static str;

/// A session as kept in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Client identifier.
    pub client_id: ByteString,
    /// Protocol version of its last connection.
    pub version: ProtocolVersion,
    /// Session Expiry Interval in seconds.
    pub expiry: u32,
    /// Its subscriptions.
    pub subscriptions: Vec<SessionSubscription>,
    /// Its will, if one is pending.
    pub will: Option<Will>,
    /// When its connection ended; `None` while connected.
    pub disconnected_at: Option<SystemTime>,
    /// The user name its client id is bound to (`auth.bind_client_id`), so that a restart does
    /// not hand the session to whoever connects first.
    pub owner: Option<String>,
}

/// The wall clock and the monotonic clock read together, to map one onto the other.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clocks {
    instant: Instant,
    unix_ms: u64,
}

impl Clocks {
    pub(crate) fn now() -> Clocks {
        Clocks {
            instant: Instant::now(),
            unix_ms: system_to_ms(SystemTime::now()),
        }
    }

    /// The wall-clock time (ms since the epoch) that `at` corresponds to.
    pub(crate) fn to_ms(self, at: Instant) -> u64 {
        let age = self.instant.saturating_duration_since(at);
        let ahead = at.saturating_duration_since(self.instant);
        self.unix_ms
            .saturating_sub(duration_ms(age))
            .saturating_add(duration_ms(ahead))
    }

    /// The instant that wall-clock `ms` corresponds to (now, if it is in the future or too
    /// far back for this clock).
    pub(crate) fn to_instant(self, ms: u64) -> Instant {
        let age = Duration::from_millis(self.unix_ms.saturating_sub(ms));
        self.instant.checked_sub(age).unwrap_or(self.instant)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn system_to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(duration_ms).unwrap_or(0)
}

fn ms_to_system(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

// ------------------------------------------------------------------ keys

/// `u16 BE length + client id`, the prefix of every per-client key; `None` past 65,535 bytes.
pub(crate) fn client_key(client_id: &str) -> Option<Vec<u8>> {
    let len = u16::try_from(client_id.len()).ok()?;
    let mut key = Vec::with_capacity(2 + client_id.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
    Some(key)
}

/// Key of a queued delivery and of its outflight state.
pub(crate) fn seq_key(client_id: &str, seq: u64) -> Option<Vec<u8>> {
    let mut key = client_key(client_id)?;
    key.extend_from_slice(&seq.to_be_bytes());
    Some(key)
}

/// Key of an inbound QoS 2 packet id.
pub(crate) fn inbound_key(client_id: &str, packet_id: PacketId) -> Option<Vec<u8>> {
    let mut key = client_key(client_id)?;
    key.extend_from_slice(&packet_id.get().to_be_bytes());
    Some(key)
}

/// Splits a per-client key into (client key prefix, the rest).
pub(crate) fn split_client_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::from(u16::from_be_bytes([*key.first()?, *key.get(1)?]));
    (key.len() >= 2 + len).then(|| key.split_at(2 + len))
}

/// (client key, seq) of a queue or outflight key.
pub(crate) fn parse_seq_key(key: &[u8]) -> Result<(&[u8], u64), Damage> {
    let (client, rest) = split_client_key(key).ok_or("key too short")?;
    let seq: [u8; 8] = rest.try_into().map_err(|_| "key is not client + u64 seq")?;
    Ok((client, u64::from_be_bytes(seq)))
}

/// (client key, packet id) of an inbound key.
pub(crate) fn parse_inbound_key(key: &[u8]) -> Result<(&[u8], PacketId), Damage> {
    let (client, rest) = split_client_key(key).ok_or("key too short")?;
    let id: [u8; 2] = rest
        .try_into()
        .map_err(|_| "key is not client + u16 packet id")?;
    let id = PacketId::new(u16::from_be_bytes(id)).ok_or("packet id 0")?;
    Ok((client, id))
}

// ------------------------------------------------------------------ framing

fn frame(body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut value = vec![RECORD_VERSION, 0, 0, 0, 0];
    body(&mut value);
    let crc = crc32fast::hash(&value[HEADER..]);
    value[1..HEADER].copy_from_slice(&crc.to_be_bytes());
    value
}

/// The body of a value, once its version and checksum are right.
pub(crate) fn unframe(value: &[u8]) -> Result<&[u8], Damage> {
    if value.len() < HEADER {
        return Err("value shorter than its header");
    }
    if value[0] != RECORD_VERSION {
        return Err("unknown record version");
    }
    let crc = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    let body = &value[HEADER..];
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch");
    }
    Ok(body)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damage> {
        if self.0.len() < n {
            return Err("record body too short");
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Damage> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Damage> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Damage> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Damage> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self) -> Result<ByteString, Damage> {
        let len = usize::from(self.u16()?);
        let bytes = bytes::Bytes::copy_from_slice(self.take(len)?);
        ByteString::try_from(bytes).map_err(|_| "string is not UTF-8")
    }
    fn end(&self) -> Result<(), Damage> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes in record")
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) -> Result<(), Damage> {
    let len = u16::try_from(s.len()).map_err(|_| "string longer than 65,535 bytes")?;
    out.put_u16(len);
    out.put_slice(s.as_bytes());
    Ok(())
}

// ------------------------------------------------------------------ messages

/// Appends `message` as an MQTT 5.0 PUBLISH carrying `subscription_ids`.
fn put_publish(
    out: &mut Vec<u8>,
    message: &Message,
    subscription_ids: &[u32],
) -> Result<(), Damage> {
    let placeholder_id = PacketId::new(1).ok_or("packet id")?;
    let packet = PublishRef {
        dup: false,
        qos: message.qos,
        retain: message.retain,
        topic: &message.topic,
        packet_id: (message.qos != QoS::AtMostOnce).then_some(placeholder_id),
        properties: &message.properties,
        topic_alias: None,
        subscription_identifiers: subscription_ids,
        message_expiry_interval: message.properties.message_expiry_interval,
        payload: &message.payload,
    };
    let mut buf = BytesMut::new();
    packet
        .encode(ProtocolVersion::V5, &mut buf)
        .map_err(|_| "message cannot be encoded as a PUBLISH")?;
    out.put_u32(u32::try_from(buf.len()).map_err(|_| "message too large")?);
    out.put_slice(&buf);
    Ok(())
}

/// Reads a PUBLISH written by [`put_publish`]: (message, subscription ids).
fn read_publish(r: &mut Reader<'_>, received: Instant) -> Result<(Message, Vec<u32>), Damage> {
    let len = usize::try_from(r.u32()?).map_err(|_| "length overflow")?;
    let mut buf = BytesMut::from(r.take(len)?);
    let mut decoder = Decoder::with_version(ProtocolVersion::V5, usize::MAX);
    let packet = decoder
        .decode(&mut buf)
        .map_err(|_| "PUBLISH does not decode")?
        .ok_or("PUBLISH is cut short")?;
    if !buf.is_empty() {
        return Err("trailing bytes after the PUBLISH");
    }
    let Packet::Publish(mut publish) = packet else {
        return Err("packet is not a PUBLISH");
    };
    let ids = std::mem::take(&mut publish.properties.subscription_identifiers);
    Ok((Message::from_publish(publish, 0, received), ids))
}

const FLAG_RETAIN: u8 = 1;
const FLAG_SHARED: u8 = 2;

/// Encodes a queued delivery.
pub(crate) fn encode_delivery(delivery: &Delivery, clocks: Clocks) -> Result<Vec<u8>, Damage> {
    let mut result = Ok(());
    let value = frame(|out| {
        let mut flags = 0;
        if delivery.retain {
            flags |= FLAG_RETAIN;
        }
        if delivery.shared.is_some() {
            flags |= FLAG_SHARED;
        }
        out.put_u8(flags);
        out.put_u8(delivery.qos.as_u8());
        out.put_u64(clocks.to_ms(delivery.message.received));
        result = (|| {
            if let Some(shared) = &delivery.shared {
                put_string(out, shared.as_str())?;
            }
            put_publish(out, &delivery.message, &delivery.subscription_ids)
        })();
    });
    result.map(|()| value)
}

/// Decodes a queued delivery stored under `seq`.
pub(crate) fn decode_delivery(value: &[u8], seq: u64, clocks: Clocks) -> Result<Delivery, Damage> {
    let mut r = Reader(unframe(value)?);
    let flags = r.u8()?;
    if flags & !(FLAG_RETAIN | FLAG_SHARED) != 0 {
        return Err("unknown delivery flags");
    }
    let qos = QoS::from_u8(r.u8()?).ok_or("invalid delivery QoS")?;
    let received = clocks.to_instant(r.u64()?);
    let shared = if flags & FLAG_SHARED != 0 {
        Some(TopicFilter::parse(r.string()?).map_err(|_| "invalid shared filter")?)
    } else {
        None
    };
    let (message, subscription_ids) = read_publish(&mut r, received)?;
    r.end()?;
    Ok(Delivery {
        message: Arc::new(message),
        qos,
        retain: flags & FLAG_RETAIN != 0,
        subscription_ids,
        shared: shared.map(Box::new),
        stored: Some(seq),
    })
}

/// Encodes a retained message.
pub(crate) fn encode_retained(message: &Message, clocks: Clocks) -> Result<Vec<u8>, Damage> {
    let mut result = Ok(());
    let value = frame(|out| {
        out.put_u64(clocks.to_ms(message.received));
        result = put_publish(out, message, &[]);
    });
    result.map(|()| value)
}

/// Decodes the retained message stored under `topic`.
pub(crate) fn decode_retained(
    value: &[u8],
    topic: &[u8],
    clocks: Clocks,
) -> Result<Message, Damage> {
    let mut r = Reader(unframe(value)?);
    let received = clocks.to_instant(r.u64()?);
    let (message, _) = read_publish(&mut r, received)?;
    r.end()?;
    if message.topic.as_bytes() != topic {
        return Err("topic differs from its key");
    }
    Ok(message)
}

// ------------------------------------------------------------------ sessions

const SESSION_WILL: u8 = 1;
const SESSION_DISCONNECTED: u8 = 2;
const SESSION_OWNER: u8 = 4;

fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos.as_u8()
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

fn options_from(byte: u8) -> Result<SubscriptionOptions, Damage> {
    if byte & 0xC0 != 0 {
        return Err("reserved subscription option bits set");
    }
    Ok(SubscriptionOptions {
        qos: QoS::from_u8(byte & 0x03).ok_or("invalid subscription QoS")?,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling: match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err("invalid retain handling"),
        },
    })
}

fn version_from(level: u8) -> Result<ProtocolVersion, Damage> {
    match level {
        3 => Ok(ProtocolVersion::V3_1),
        4 => Ok(ProtocolVersion::V3_1_1),
        5 => Ok(ProtocolVersion::V5),
        _ => Err("unknown protocol level"),
    }
}

/// Encodes a session record (its client id is the key).
pub(crate) fn encode_session(s: &SessionRecord, clocks: Clocks) -> Result<Vec<u8>, Damage> {
    let mut result = Ok(());
    let value = frame(|out| {
        out.put_u8(s.version.level());
        out.put_u32(s.expiry);
        let mut flags = 0;
        if s.will.is_some() {
            flags |= SESSION_WILL;
        }
        if s.disconnected_at.is_some() {
            flags |= SESSION_DISCONNECTED;
        }
        if s.owner.is_some() {
            flags |= SESSION_OWNER;
        }
        out.put_u8(flags);
        if let Some(at) = s.disconnected_at {
            out.put_u64(system_to_ms(at));
        }
        result = (|| {
            out.put_u32(
                u32::try_from(s.subscriptions.len()).map_err(|_| "too many subscriptions")?,
            );
            for sub in &s.subscriptions {
                put_string(out, sub.filter.as_str())?;
                out.put_u8(options_byte(&sub.options));
                out.put_u32(sub.subscription_id.unwrap_or(0));
            }
            if let Some(will) = &s.will {
                out.put_u32(will.delay);
                out.put_u64(clocks.to_ms(will.message.received));
                put_publish(out, &will.message, &[])?;
            }
            if let Some(owner) = &s.owner {
                put_string(out, owner)?;
            }
            Ok(())
        })();
    });
    result.map(|()| value)
}

/// Decodes the session record of `client_id`.
pub(crate) fn decode_session(
    value: &[u8],
    client_id: ByteString,
    clocks: Clocks,
) -> Result<SessionRecord, Damage> {
    let mut r = Reader(unframe(value)?);
    let version = version_from(r.u8()?)?;
    let expiry = r.u32()?;
    let flags = r.u8()?;
    if flags & !(SESSION_WILL | SESSION_DISCONNECTED | SESSION_OWNER) != 0 {
        return Err("unknown session flags");
    }
    let disconnected_at = if flags & SESSION_DISCONNECTED != 0 {
        Some(ms_to_system(r.u64()?))
    } else {
        None
    };
    let count = r.u32()?;
    let mut subscriptions = Vec::with_capacity(usize::try_from(count.min(1024)).unwrap_or(0));
    for _ in 0..count {
        let filter = TopicFilter::parse(r.string()?).map_err(|_| "invalid topic filter")?;
        let options = options_from(r.u8()?)?;
        let id = r.u32()?;
        subscriptions.push(SessionSubscription {
            filter,
            options,
            subscription_id: (id != 0).then_some(id),
        });
    }
    let will = if flags & SESSION_WILL != 0 {
        let delay = r.u32()?;
        let received = clocks.to_instant(r.u64()?);
        let (message, _) = read_publish(&mut r, received)?;
        Some(Will { message, delay })
    } else {
        None
    };
    let owner = if flags & SESSION_OWNER != 0 {
        Some(r.string()?.to_string())
    } else {
        None
    };
    r.end()?;
    Ok(SessionRecord {
        client_id,
        version,
        expiry,
        subscriptions,
        will,
        disconnected_at,
        owner,
    })
}

// ------------------------------------------------------------------ small records

/// Encodes an outflight state.
pub(crate) fn encode_outflight(packet_id: PacketId, released: bool) -> Vec<u8> {
    frame(|out| {
        out.put_u16(packet_id.get());
        out.put_u8(u8::from(released));
    })
}

/// Decodes an outflight state.
pub(crate) fn decode_outflight(value: &[u8]) -> Result<(PacketId, bool), Damage> {
    let mut r = Reader(unframe(value)?);
    let id = PacketId::new(r.u16()?).ok_or("packet id 0")?;
    let released = match r.u8()? {
        0 => false,
        1 => true,
        _ => return Err("invalid released flag"),
    };
    r.end()?;
    Ok((id, released))
}

/// Encodes an inbound QoS 2 marker (everything is in the key).
pub(crate) fn encode_empty() -> Vec<u8> {
    frame(|_| {})
}

/// Decodes an inbound QoS 2 marker.
pub(crate) fn decode_empty(value: &[u8]) -> Result<(), Damage> {
    Reader(unframe(value)?).end()
}

/// Encodes a u64 meta value.
pub(crate) fn encode_u64(n: u64) -> Vec<u8> {
    frame(|out| out.put_u64(n))
}

/// Decodes a u64 meta value.
pub(crate) fn decode_u64(value: &[u8]) -> Result<u64, Damage> {
    let mut r = Reader(unframe(value)?);
    let n = r.u64()?;
    r.end()?;
    Ok(n)
}

/// The client id of a `sessions` key (the raw id).
pub(crate) fn client_id_of_raw(key: &[u8]) -> Result<ByteString, Damage> {
    ByteString::try_from(bytes::Bytes::copy_from_slice(key)).map_err(|_| "client id is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random bodies behind a valid header (so the checksum passes) never panic a decoder.
    #[test]
    fn decoders_survive_random_bodies() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let clocks = Clocks::now();
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let value = frame(|out| out.extend_from_slice(&body));
            let _ = decode_delivery(&value, 1, clocks);
            let _ = decode_retained(&value, b"t", clocks);
            let _ = decode_session(&value, ByteString::from("c"), clocks);
            let _ = decode_outflight(&value);
            let _ = decode_u64(&value);
            let _ = decode_empty(&value);
        }
    }

    #[test]
    fn wall_clock_mapping_round_trips() {
        let clocks = Clocks::now();
        let earlier = clocks.instant - Duration::from_secs(5);
        let ms = clocks.to_ms(earlier);
        assert_eq!(clocks.unix_ms - ms, 5_000);
        assert_eq!(clocks.to_instant(ms), earlier);
        assert_eq!(clocks.to_instant(clocks.unix_ms + 10_000), clocks.instant);
    }

    #[test]
    fn keys_split_back() {
        let key = seq_key("ab", 7).expect("key");
        assert_eq!(key, [0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(parse_seq_key(&key), Ok((&key[..4], 7)));
        assert!(parse_seq_key(&key[..5]).is_err());
        assert!(parse_inbound_key(&[0, 9, 1]).is_err());
    }
}
