//! The AUTH exchange on a connection (MQTT 5.0 section 4.12): during CONNECT, before CONNACK,
//! and re-authentication once connected.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use vane_auth::{AuthExchange, AuthStep};
use vane_proto::{
    Auth, AuthProperties, AuthReason, ByteString, ConnAckReason, Connect, DisconnectReason, Packet,
};

use super::handshake::{read_packet, refuse, send_packet, HandshakeError, HandshakeIo};
use crate::broker::Broker;

/// Who an AUTH exchange authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub method: ByteString,
    /// Authentication Data for the CONNACK (SCRAM: the server-final-message).
    pub data: Option<Vec<u8>>,
    pub username: String,
}

fn auth_packet(reason: AuthReason, method: &ByteString, data: Option<Vec<u8>>) -> Packet {
    Packet::Auth(Auth {
        reason,
        properties: AuthProperties {
            authentication_method: Some(method.clone()),
            authentication_data: data.map(Bytes::from),
            ..Default::default()
        },
    })
}

/// Runs the exchange a CONNECT started, within `timeout`: AUTH 0x18 back and forth until the
/// method succeeds or fails. A failure, an unknown method (0x8C) or an unexpected packet
/// (0x82) is answered with a refusing CONNACK.
pub(crate) async fn authenticate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    broker: &Broker,
    connect: &Connect,
    method: &ByteString,
    client_id: &str,
    io: &mut HandshakeIo<'_, R, W>,
    timeout: Duration,
) -> Result<Authenticated, HandshakeError> {
    let data = connect.properties.authentication_data.as_deref();
    let (mut exchange, mut step) = match broker.authenticators.begin(method, client_id, data) {
        Ok(started) => started,
        Err(unknown) => {
            return Err(refuse(io.writer, connect, unknown.connack_reason(), None).await)
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match step {
            AuthStep::Success { data, username } => {
                tracing::debug!(client_id, method = %method, %username, "authenticated");
                return Ok(Authenticated {
                    method: method.clone(),
                    data,
                    username,
                });
            }
            AuthStep::Failure(f) => {
                tracing::info!(client_id, method = %method, error = %f, "authentication failed");
                return Err(refuse(io.writer, connect, f.connack_reason(), None).await);
            }
            AuthStep::Continue(data) => {
                let packet = auth_packet(AuthReason::ContinueAuthentication, method, Some(data));
                send_packet(io.writer, connect.protocol, packet).await?;
                let packet = match tokio::time::timeout_at(
                    deadline,
                    read_packet(io.reader, io.read_buf, io.decoder),
                )
                .await
                {
                    Ok(packet) => packet?,
                    Err(_) => return Err(HandshakeError::Closed),
                };
                match packet {
                    Packet::Auth(a)
                        if a.reason == AuthReason::ContinueAuthentication
                            && a.properties.authentication_method.as_ref() == Some(method) =>
                    {
                        step = exchange.step(a.properties.authentication_data.as_deref());
                    }
                    // [MQTT-3.1.2-30] the client may give up with DISCONNECT before CONNACK.
                    Packet::Disconnect(_) => return Err(HandshakeError::Closed),
                    _ => {
                        // MQTT 5.0 section 4.12: only AUTH 0x18 with the same method may follow.
                        return Err(
                            refuse(io.writer, connect, ConnAckReason::ProtocolError, None).await,
                        );
                    }
                }
            }
        }
    }
}

/// Re-authentication of a connected client (MQTT 5.0 section 4.12.1).
pub(crate) struct Reauthentication {
    exchange: Option<Box<dyn AuthExchange>>,
}

impl Reauthentication {
    pub(crate) fn new() -> Self {
        Reauthentication { exchange: None }
    }

    /// Handles one AUTH from the client (same method as CONNECT, checked by the session).
    /// Returns the packet to send, or the reason to end the connection with.
    pub(crate) fn handle(
        &mut self,
        broker: &Broker,
        original: &Authenticated,
        client_id: &str,
        auth: Auth,
    ) -> Result<Packet, DisconnectReason> {
        let method = &original.method;
        let data = auth.properties.authentication_data.as_deref();
        let step = match (auth.reason, self.exchange.as_mut()) {
            (AuthReason::ReAuthenticate, _) => {
                let (exchange, step) = broker
                    .authenticators
                    .begin(method, client_id, data)
                    .map_err(|e| e.disconnect_reason())?;
                self.exchange = Some(exchange);
                step
            }
            (AuthReason::ContinueAuthentication, Some(exchange)) => exchange.step(data),
            // 0x18 with no exchange under way, or 0x00 from a client, break the protocol.
            _ => return Err(DisconnectReason::ProtocolError),
        };
        match step {
            AuthStep::Continue(data) => Ok(auth_packet(
                AuthReason::ContinueAuthentication,
                method,
                Some(data),
            )),
            AuthStep::Success { data, username } => {
                self.exchange = None;
                if username != original.username {
                    // A re-authentication proves the same identity, not a new one.
                    tracing::info!(client_id, %username, original = %original.username, "re-authentication as another user refused");
                    return Err(DisconnectReason::NotAuthorized);
                }
                Ok(auth_packet(AuthReason::Success, method, data))
            }
            AuthStep::Failure(f) => {
                tracing::info!(client_id, method = %method, error = %f, "re-authentication failed");
                Err(f.disconnect_reason())
            }
        }
    }
}
