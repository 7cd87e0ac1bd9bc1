//! The broker's record shapes as bytes (queue keys, ~100 B messages, session entries), made
//! deterministically so that a reader can tell a right value from an altered one.

/// Queue key: session id and sequence number, big-endian so that key order is queue order.
pub fn queue_key(session: u32, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(12);
    key.extend_from_slice(&session.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Splits a queue key into session id and sequence number.
pub fn parse_queue_key(key: &[u8]) -> Option<(u32, u64)> {
    let session = u32::from_be_bytes(key.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(key.get(4..12)?.try_into().ok()?);
    (key.len() == 12).then_some((session, seq))
}

/// Key prefix of one session's queue.
pub fn session_prefix(session: u32) -> [u8; 4] {
    session.to_be_bytes()
}

/// A queued QoS 1 message as the broker would store it: a 16-byte header (sequence, expiry,
/// QoS and flags, topic length), the topic, and a 64-byte payload; about 100 bytes. The
/// payload is a function of `(session, seq)`, so any change to a stored value is visible.
pub fn message_value(session: u32, seq: u64) -> Vec<u8> {
    let topic = format!("site/{:05}/dev/temp", session % 100_000);
    let mut value = Vec::with_capacity(16 + topic.len() + 64);
    value.extend_from_slice(&seq.to_be_bytes());
    value.extend_from_slice(&3600u32.to_be_bytes());
    value.push(1); // QoS 1
    value.push(0); // flags
    value.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    value.extend_from_slice(topic.as_bytes());
    let mut rng = Rng::new(u64::from(session) << 40 ^ seq);
    for _ in 0..8 {
        value.extend_from_slice(&rng.next().to_le_bytes());
    }
    value
}

/// Retained topic number `index`.
pub fn retained_topic(index: u32) -> Vec<u8> {
    format!("site/{:03}/dev/{:05}/state", index % 1000, index).into_bytes()
}

/// A retained message for topic `index`, version `version`.
pub fn retained_value(index: u32, version: u64) -> Vec<u8> {
    message_value(index, version)
}

/// Session index entry: the state a persistent session keeps besides its queue.
pub fn session_value(session: u32) -> Vec<u8> {
    let mut value = format!("client-{session:08}").into_bytes();
    value.extend_from_slice(&86_400u32.to_be_bytes()); // session expiry interval
    value.extend_from_slice(&[0u8; 40]); // subscriptions, next packet id, will: placeholders
    value
}

/// A small, fast, seeded generator (SplitMix64); the benchmark needs no better.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0; the bias is negligible here).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_sort_by_session_then_sequence_and_parse_back() {
        assert!(queue_key(1, 255) < queue_key(1, 256));
        assert!(queue_key(1, u64::MAX) < queue_key(2, 0));
        assert_eq!(parse_queue_key(&queue_key(7, 9)), Some((7, 9)));
        assert_eq!(parse_queue_key(b"short"), None);
    }

    #[test]
    fn message_values_are_about_100_bytes_and_depend_on_their_key() {
        let value = message_value(42, 7);
        assert!((95..=105).contains(&value.len()), "{}", value.len());
        assert_eq!(value, message_value(42, 7));
        assert_ne!(value, message_value(42, 8));
    }
}
