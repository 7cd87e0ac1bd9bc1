//! The sans-IO authentication interface: an [`Authenticator`] per method, an [`AuthExchange`]
//! per connection attempt, and the [`AuthStep`] each client message leads to.

use vane_proto::{AuthReason, ConnAckReason, DisconnectReason};

/// One authentication method (the MQTT 5.0 Authentication Method property), shared by all
/// connections.
pub trait Authenticator: Send + Sync {
    /// The Authentication Method name this authenticator answers to, compared exactly
    /// (for example `"SCRAM-SHA-256"`).
    fn method(&self) -> &str;

    /// Starts a new exchange for one connection, or for one re-authentication of it.
    ///
    /// The exchange has not seen any data yet: pass it the CONNECT's (or the AUTH 0x19's)
    /// Authentication Data with [`AuthExchange::step`] first, then the data of each AUTH 0x18
    /// the client sends. [`Authenticators::begin`](crate::Authenticators::begin) does the
    /// look-up, the start and the first step in one call.
    fn start(&self, client_id: &str) -> Box<dyn AuthExchange>;
}

/// The state of one authentication exchange with one client.
///
/// An exchange ends with the first [`AuthStep::Success`] or [`AuthStep::Failure`]; any step
/// after that fails with [`AuthFailure::OutOfOrder`].
pub trait AuthExchange: Send {
    /// Consumes the Authentication Data of the client's latest packet (`None` when the packet
    /// had no Authentication Data property) and tells the server what to answer.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// What the server answers after one [`AuthExchange::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// The exchange goes on: send AUTH with reason 0x18 (Continue authentication) and this
    /// Authentication Data, then pass the client's next AUTH data to the exchange.
    Continue(Vec<u8>),
    /// The client is authenticated: send CONNACK 0x00 (or AUTH 0x00 when re-authenticating)
    /// with this Authentication Data, if any.
    Success {
        /// Authentication Data for the CONNACK or AUTH packet.
        data: Option<Vec<u8>>,
        /// The authenticated user name, as the credential store knows it.
        username: String,
    },
    /// Authentication failed: send CONNACK (or DISCONNECT when re-authenticating) with the
    /// failure's reason code and close the connection.
    Failure(AuthFailure),
}

impl AuthStep {
    /// The reason code of the AUTH packet the server sends for this step during
    /// re-authentication (or [`AuthStep::Continue`] during CONNECT); `None` for a failure,
    /// which is answered with DISCONNECT or CONNACK instead.
    pub fn auth_reason(&self) -> Option<AuthReason> {
        match self {
            AuthStep::Continue(_) => Some(AuthReason::ContinueAuthentication),
            AuthStep::Success { .. } => Some(AuthReason::Success),
            AuthStep::Failure(_) => None,
        }
    }

    /// The CONNACK reason code for this step when it ends a CONNECT exchange; `None` for
    /// [`AuthStep::Continue`], which is answered with AUTH.
    pub fn connack_reason(&self) -> Option<ConnAckReason> {
        match self {
            AuthStep::Continue(_) => None,
            AuthStep::Success { .. } => Some(ConnAckReason::Success),
            AuthStep::Failure(failure) => Some(failure.connack_reason()),
        }
    }
}

/// Why an authentication exchange failed.
///
/// The [`Display`](std::fmt::Display) text is meant for the server's log. It never tells an
/// unknown user from a wrong password, but it may still be more than a client should see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The user is unknown or the proof of the password is wrong (the two are not told
    /// apart, so that user names cannot be probed).
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// The credentials are right but the client may not connect.
    #[error("not authorized")]
    NotAuthorized,
    /// The client's Authentication Data does not follow the method's syntax.
    #[error("malformed authentication data: {0}")]
    Malformed(&'static str),
    /// The client asked for a feature of the method that this server does not offer
    /// (for SCRAM: channel binding, an authorization identity, a mandatory extension).
    #[error("unsupported authentication feature: {0}")]
    Unsupported(&'static str),
    /// The exchange was stepped after it had already ended.
    #[error("authentication exchange stepped after it ended")]
    OutOfOrder,
}

impl AuthFailure {
    /// The CONNACK reason code that reports this failure: 0x86 (Bad User Name or Password) for
    /// [`AuthFailure::InvalidCredentials`], 0x87 (Not authorized) for everything else.
    pub fn connack_reason(&self) -> ConnAckReason {
        match self {
            AuthFailure::InvalidCredentials => ConnAckReason::BadUserNameOrPassword,
            AuthFailure::NotAuthorized
            | AuthFailure::Malformed(_)
            | AuthFailure::Unsupported(_)
            | AuthFailure::OutOfOrder => ConnAckReason::NotAuthorized,
        }
    }

    /// The DISCONNECT reason code that reports this failure when re-authentication fails
    /// (MQTT 5.0 section 4.12.1): always 0x87 (Not authorized), as DISCONNECT has no 0x86.
    pub fn disconnect_reason(&self) -> DisconnectReason {
        DisconnectReason::NotAuthorized
    }
}
