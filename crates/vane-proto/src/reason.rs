//! Per-packet MQTT 5.0 reason codes, and their mapping to MQTT 3.x return codes.
//!
//! Each acknowledgement has its own enum so that a code that is not valid for that packet
//! cannot be written.

macro_rules! reason_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value),+
        }

        impl $name {
            /// Parses a wire value; `None` when the code is not valid for this packet.
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// The wire value.
            pub fn as_u8(self) -> u8 {
                self as u8
            }

            /// True for codes of 0x80 and above, which report a failure.
            pub fn is_error(self) -> bool {
                self.as_u8() >= 0x80
            }
        }
    };
}

reason_enum! {
    /// CONNACK reason codes (MQTT 5.0 section 3.2.2.2).
    ConnAckReason {
        /// The connection is accepted.
        Success = 0x00,
        /// The server does not wish to reveal the reason.
        UnspecifiedError = 0x80,
        /// The CONNECT packet could not be parsed.
        MalformedPacket = 0x81,
        /// The CONNECT packet breaks the protocol.
        ProtocolError = 0x82,
        /// Valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// The protocol version is not supported.
        UnsupportedProtocolVersion = 0x84,
        /// The client identifier is not allowed.
        ClientIdentifierNotValid = 0x85,
        /// User name or password refused.
        BadUserNameOrPassword = 0x86,
        /// Not authorized to connect.
        NotAuthorized = 0x87,
        /// The server is not available.
        ServerUnavailable = 0x88,
        /// The server is busy.
        ServerBusy = 0x89,
        /// This client is banned.
        Banned = 0x8A,
        /// The authentication method is not supported.
        BadAuthenticationMethod = 0x8C,
        /// The will topic is not valid.
        TopicNameInvalid = 0x90,
        /// The CONNECT packet exceeds the maximum packet size.
        PacketTooLarge = 0x95,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// The will payload does not match its payload format indicator.
        PayloadFormatInvalid = 0x99,
        /// The will is retained but retain is not supported.
        RetainNotSupported = 0x9A,
        /// The will QoS is not supported.
        QoSNotSupported = 0x9B,
        /// Use another server, temporarily.
        UseAnotherServer = 0x9C,
        /// Use another server, permanently.
        ServerMoved = 0x9D,
        /// Connection rate limit exceeded.
        ConnectionRateExceeded = 0x9F,
    }
}

impl ConnAckReason {
    /// The MQTT 3.1/3.1.1 CONNACK return code that best expresses this reason.
    pub fn v3_return_code(self) -> u8 {
        match self {
            ConnAckReason::Success => 0,
            ConnAckReason::UnsupportedProtocolVersion => 1,
            ConnAckReason::ClientIdentifierNotValid => 2,
            ConnAckReason::BadUserNameOrPassword | ConnAckReason::BadAuthenticationMethod => 4,
            ConnAckReason::NotAuthorized | ConnAckReason::Banned => 5,
            ConnAckReason::UnspecifiedError
            | ConnAckReason::MalformedPacket
            | ConnAckReason::ProtocolError
            | ConnAckReason::ImplementationSpecificError
            | ConnAckReason::ServerUnavailable
            | ConnAckReason::ServerBusy
            | ConnAckReason::TopicNameInvalid
            | ConnAckReason::PacketTooLarge
            | ConnAckReason::QuotaExceeded
            | ConnAckReason::PayloadFormatInvalid
            | ConnAckReason::RetainNotSupported
            | ConnAckReason::QoSNotSupported
            | ConnAckReason::UseAnotherServer
            | ConnAckReason::ServerMoved
            | ConnAckReason::ConnectionRateExceeded => 3,
        }
    }

    /// Parses an MQTT 3.1/3.1.1 CONNACK return code.
    pub fn from_v3_return_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => ConnAckReason::Success,
            1 => ConnAckReason::UnsupportedProtocolVersion,
            2 => ConnAckReason::ClientIdentifierNotValid,
            3 => ConnAckReason::ServerUnavailable,
            4 => ConnAckReason::BadUserNameOrPassword,
            5 => ConnAckReason::NotAuthorized,
            _ => return None,
        })
    }
}

reason_enum! {
    /// PUBACK reason codes (MQTT 5.0 section 3.4.2.1).
    PubAckReason {
        /// The message is accepted.
        Success = 0x00,
        /// Accepted, but nobody is subscribed.
        NoMatchingSubscribers = 0x10,
        /// Not accepted, no reason given.
        UnspecifiedError = 0x80,
        /// Valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// The publisher may not publish here.
        NotAuthorized = 0x87,
        /// The topic name is not accepted.
        TopicNameInvalid = 0x90,
        /// The packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// The payload does not match its payload format indicator.
        PayloadFormatInvalid = 0x99,
    }
}

reason_enum! {
    /// PUBREC reason codes (MQTT 5.0 section 3.5.2.1).
    PubRecReason {
        /// The message is accepted.
        Success = 0x00,
        /// Accepted, but nobody is subscribed.
        NoMatchingSubscribers = 0x10,
        /// Not accepted, no reason given.
        UnspecifiedError = 0x80,
        /// Valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// The publisher may not publish here.
        NotAuthorized = 0x87,
        /// The topic name is not accepted.
        TopicNameInvalid = 0x90,
        /// The packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// The payload does not match its payload format indicator.
        PayloadFormatInvalid = 0x99,
    }
}

reason_enum! {
    /// PUBREL reason codes (MQTT 5.0 section 3.6.2.1).
    PubRelReason {
        /// The message is released.
        Success = 0x00,
        /// The packet identifier is not known.
        PacketIdentifierNotFound = 0x92,
    }
}

reason_enum! {
    /// PUBCOMP reason codes (MQTT 5.0 section 3.7.2.1).
    PubCompReason {
        /// The exchange is complete.
        Success = 0x00,
        /// The packet identifier is not known.
        PacketIdentifierNotFound = 0x92,
    }
}

reason_enum! {
    /// SUBACK reason codes (MQTT 5.0 section 3.9.3).
    SubAckReason {
        /// Granted at QoS 0.
        GrantedQoS0 = 0x00,
        /// Granted at QoS 1.
        GrantedQoS1 = 0x01,
        /// Granted at QoS 2.
        GrantedQoS2 = 0x02,
        /// Not accepted, no reason given.
        UnspecifiedError = 0x80,
        /// Valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// The client may not subscribe to this filter.
        NotAuthorized = 0x87,
        /// The topic filter is not valid.
        TopicFilterInvalid = 0x8F,
        /// The packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// Shared subscriptions are not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// Subscription identifiers are not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// Wildcard subscriptions are not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

impl SubAckReason {
    /// The success code for a granted QoS.
    pub fn granted(qos: crate::QoS) -> Self {
        match qos {
            crate::QoS::AtMostOnce => SubAckReason::GrantedQoS0,
            crate::QoS::AtLeastOnce => SubAckReason::GrantedQoS1,
            crate::QoS::ExactlyOnce => SubAckReason::GrantedQoS2,
        }
    }

    /// The MQTT 3.1/3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure.
    pub fn v3_return_code(self) -> u8 {
        if self.is_error() {
            0x80
        } else {
            self.as_u8()
        }
    }
}

reason_enum! {
    /// UNSUBACK reason codes (MQTT 5.0 section 3.11.3).
    UnsubAckReason {
        /// The subscription is deleted.
        Success = 0x00,
        /// No matching subscription existed.
        NoSubscriptionExisted = 0x11,
        /// Not accepted, no reason given.
        UnspecifiedError = 0x80,
        /// Valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// The client may not unsubscribe.
        NotAuthorized = 0x87,
        /// The topic filter is not valid.
        TopicFilterInvalid = 0x8F,
        /// The packet identifier is already in use.
        PacketIdentifierInUse = 0x91,
    }
}

reason_enum! {
    /// DISCONNECT reason codes (MQTT 5.0 section 3.14.2.1).
    DisconnectReason {
        /// Normal disconnection; the will is not published.
        NormalDisconnection = 0x00,
        /// The client wants its will published.
        DisconnectWithWillMessage = 0x04,
        /// No reason given.
        UnspecifiedError = 0x80,
        /// A packet could not be parsed.
        MalformedPacket = 0x81,
        /// A packet broke the protocol.
        ProtocolError = 0x82,
        /// Valid, but not accepted by this server.
        ImplementationSpecificError = 0x83,
        /// The request is not authorized.
        NotAuthorized = 0x87,
        /// The server is busy.
        ServerBusy = 0x89,
        /// The server is shutting down.
        ServerShuttingDown = 0x8B,
        /// Nothing was received within 1.5 times the keep alive.
        KeepAliveTimeout = 0x8D,
        /// Another connection took over this session.
        SessionTakenOver = 0x8E,
        /// A topic filter is not valid.
        TopicFilterInvalid = 0x8F,
        /// A topic name is not valid.
        TopicNameInvalid = 0x90,
        /// More QoS > 0 publishes were in flight than Receive Maximum allows.
        ReceiveMaximumExceeded = 0x93,
        /// A topic alias is not valid.
        TopicAliasInvalid = 0x94,
        /// A packet exceeded the maximum packet size.
        PacketTooLarge = 0x95,
        /// Messages arrive too fast.
        MessageRateTooHigh = 0x96,
        /// A quota has been exceeded.
        QuotaExceeded = 0x97,
        /// An administrator ended the connection.
        AdministrativeAction = 0x98,
        /// A payload does not match its payload format indicator.
        PayloadFormatInvalid = 0x99,
        /// Retain is not supported.
        RetainNotSupported = 0x9A,
        /// The QoS is not supported.
        QoSNotSupported = 0x9B,
        /// Use another server, temporarily.
        UseAnotherServer = 0x9C,
        /// Use another server, permanently.
        ServerMoved = 0x9D,
        /// Shared subscriptions are not supported.
        SharedSubscriptionsNotSupported = 0x9E,
        /// Connection rate limit exceeded.
        ConnectionRateExceeded = 0x9F,
        /// The maximum connection time was reached.
        MaximumConnectTime = 0xA0,
        /// Subscription identifiers are not supported.
        SubscriptionIdentifiersNotSupported = 0xA1,
        /// Wildcard subscriptions are not supported.
        WildcardSubscriptionsNotSupported = 0xA2,
    }
}

reason_enum! {
    /// AUTH reason codes (MQTT 5.0 section 3.15.2.1).
    AuthReason {
        /// Authentication succeeded.
        Success = 0x00,
        /// Continue the authentication exchange.
        ContinueAuthentication = 0x18,
        /// Start re-authentication.
        ReAuthenticate = 0x19,
    }
}
