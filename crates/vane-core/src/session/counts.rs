//! What a session counts for the broker's metrics: plain integers on the session it owns,
//! taken (and reset) by its connection at its own batch points, so counting costs the hot
//! path no shared write per message.

/// Events counted since the last [`super::Session::take_counts`]. 32-bit, adding with
/// wrap-around: the broker takes them every turn of the connection's loop, and every session
/// carries them (32 bytes rather than 64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// PUBLISH packets encoded for the client, by QoS (retransmissions included).
    pub publishes_sent: [u32; 3],
    /// Deliveries dropped because their message expired before they could be sent.
    pub expired: u32,
    /// Deliveries dropped because the topic policy (ACL, token) refused them to the client.
    pub deliveries_denied: u32,
    /// PUBLISH packets the topic policy refused (MQTT 5.0: 0x87).
    pub publishes_denied: u32,
    /// Subscriptions the topic policy refused (SUBACK 0x87 / 0x80).
    pub subscriptions_denied: u32,
    /// PUBLISH packets refused or dropped for a topic beyond the topic limits.
    pub publishes_topic_limit: u32,
}

impl SessionCounts {
    /// Adds one to a count (wrapping: a count nobody takes must not panic).
    #[inline]
    pub(crate) fn bump(count: &mut u32) {
        *count = count.wrapping_add(1);
    }

    /// True when nothing was counted.
    #[inline]
    pub fn is_empty(&self) -> bool {
        *self == SessionCounts::default()
    }
}
