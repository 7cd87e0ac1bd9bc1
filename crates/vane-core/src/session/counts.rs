//! What a session counts for the broker's metrics: plain integers on the session it owns,
//! taken (and reset) by its connection at its own batch points, so counting costs the hot
//! path no shared write per message.

/// Events counted since the last [`super::Session::take_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// PUBLISH packets encoded for the client, by QoS (retransmissions included).
    pub publishes_sent: [u64; 3],
    /// Deliveries dropped because their message expired before they could be sent.
    pub expired: u64,
    /// Deliveries dropped because the topic policy (ACL, token) refused them to the client.
    pub deliveries_denied: u64,
    /// PUBLISH packets the topic policy refused (MQTT 5.0: 0x87).
    pub publishes_denied: u64,
    /// Subscriptions the topic policy refused (SUBACK 0x87 / 0x80).
    pub subscriptions_denied: u64,
    /// PUBLISH packets refused or dropped for a topic beyond the topic limits.
    pub publishes_topic_limit: u64,
}

impl SessionCounts {
    /// True when nothing was counted.
    #[inline]
    pub fn is_empty(&self) -> bool {
        *self == SessionCounts::default()
    }
}
