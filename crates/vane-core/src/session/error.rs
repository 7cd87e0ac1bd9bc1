//! Protocol violations a client can commit against its session, each with its clause and the
//! DISCONNECT reason code the broker answers with.

use vane_proto::{DisconnectReason, PacketType};

/// Why a session ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A second CONNECT on the same connection.
    #[error("[MQTT-3.1.0-2] second CONNECT on a connection")]
    SecondConnect,
    /// A packet only a server may send.
    #[error("[MQTT-2.1.2] {0:?} may only be sent by a server")]
    ServerOnlyPacket(PacketType),
    /// AUTH without an authentication method in CONNECT.
    #[error(
        "MQTT 5.0 section 4.12: AUTH on a connection whose CONNECT named no authentication method"
    )]
    UnexpectedAuth,
    /// AUTH with another method than the CONNECT's.
    #[error("[MQTT-4.12.1-1] AUTH with a different authentication method than CONNECT")]
    AuthMethodChanged,
    /// Nothing received for one and a half keep-alive periods.
    #[error("[MQTT-3.1.2-24] keep alive timed out")]
    KeepAliveTimeout,
    /// A topic alias of 0 or above the maximum the broker allows.
    #[error("[MQTT-3.3.2-8] topic alias 0 or greater than the topic alias maximum")]
    TopicAliasInvalid,
    /// An empty topic with a topic alias the client never set.
    #[error("[MQTT-3.3.4-?] topic alias not set on this connection")]
    TopicAliasUnknown,
    /// An empty topic name without a topic alias.
    #[error("[MQTT-4.7.3-1] empty topic name without a topic alias")]
    EmptyTopic,
    /// A PUBLISH from the client carries a Subscription Identifier.
    #[error("[MQTT-3.3.4-6] PUBLISH from a client carries a Subscription Identifier")]
    SubscriptionIdentifierFromClient,
    /// A PUBLISH Response Topic holds a wildcard.
    #[error("[MQTT-3.3.2-14] Response Topic contains a wildcard character")]
    ResponseTopicHasWildcard,
    /// More QoS 2 publishes awaiting PUBREL than the broker's Receive Maximum.
    #[error("[MQTT-3.3.4-7] receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// No Local set on a shared subscription.
    #[error("[MQTT-3.8.3-4] No Local on a shared subscription")]
    NoLocalOnSharedSubscription,
    /// DISCONNECT sets a session expiry on a session that had none.
    #[error("[MQTT-3.14.2-2] DISCONNECT sets a session expiry interval after CONNECT set 0")]
    SessionExpiryRaised,
    /// A publish at a QoS above the broker's maximum.
    #[error("[MQTT-3.2.2-11] QoS above the maximum QoS")]
    QoSNotSupported,
    /// A QoS 0 PUBLISH whose Payload Format Indicator says UTF-8 but whose payload is not
    /// well-formed UTF-8. MQTT 5.0 section 3.3.2.3.2 lets the receiver refuse such a payload with
    /// PUBACK, PUBREC or DISCONNECT 0x99 (Payload format invalid). At QoS 1 and 2 the session
    /// answers with PUBACK or PUBREC 0x99 and the connection goes on; QoS 0 has no
    /// acknowledgement to carry the refusal, so the message is not routed and the connection
    /// ends with DISCONNECT 0x99, which at least tells the client why its message was lost.
    #[error(
        "[MQTT-5.0 3.3.2.3.2] payload is not UTF-8 though its Payload Format Indicator says so"
    )]
    PayloadFormatInvalid,
    /// An MQTT 3.x PUBLISH whose topic is longer or deeper than the configured topic limits
    /// (`limits.max_topic_length`, `limits.max_topic_levels`); MQTT 3.x cannot refuse one
    /// message, so the connection ends.
    #[error("topic name beyond the broker's topic length or level limit")]
    TopicLimitExceeded,
}

impl SessionError {
    /// The DISCONNECT reason code for this violation (MQTT 5.0).
    pub fn disconnect_reason(self) -> DisconnectReason {
        match self {
            SessionError::SecondConnect
            | SessionError::ServerOnlyPacket(_)
            | SessionError::UnexpectedAuth
            | SessionError::AuthMethodChanged
            | SessionError::TopicAliasUnknown
            | SessionError::EmptyTopic
            | SessionError::SessionExpiryRaised
            | SessionError::SubscriptionIdentifierFromClient
            | SessionError::ResponseTopicHasWildcard
            | SessionError::NoLocalOnSharedSubscription => DisconnectReason::ProtocolError,
            SessionError::KeepAliveTimeout => DisconnectReason::KeepAliveTimeout,
            SessionError::TopicAliasInvalid => DisconnectReason::TopicAliasInvalid,
            SessionError::ReceiveMaximumExceeded => DisconnectReason::ReceiveMaximumExceeded,
            SessionError::QoSNotSupported => DisconnectReason::QoSNotSupported,
            SessionError::PayloadFormatInvalid => DisconnectReason::PayloadFormatInvalid,
            SessionError::TopicLimitExceeded => DisconnectReason::TopicNameInvalid,
        }
    }
}
