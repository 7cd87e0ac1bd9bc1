//! The start of a connection: CONNECT within the timeout, client identifier rules, taking
//! the session over from an older connection, and CONNACK.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use vane_core::Session;
use vane_proto::{
    ByteString, ConnAck, ConnAckProperties, ConnAckReason, Connect, DecodeError, Decoder, Packet,
    ProtocolVersion, QoS,
};

use super::chain::Identity;
use crate::broker::Broker;
use crate::registry::{Bind, Kick, SessionGuard, SessionSlot};

/// Why a connection ended before it was accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("connection closed before CONNECT")]
    Closed,
    #[error("[MQTT-3.1.0-1] first packet was {0:?}, not CONNECT")]
    NotConnect(vane_proto::PacketType),
    #[error("invalid CONNECT: {0}")]
    Decode(#[from] DecodeError),
    #[error("CONNECT refused: {0:?}")]
    Refused(ConnAckReason),
    #[error("CONNECT refused by authentication: {0:?}")]
    AuthRefused(ConnAckReason),
    #[error("a newer connection took the session over during the handshake")]
    Superseded,
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// A connection whose CONNECT was accepted and whose session is now owned by its task.
pub(crate) struct Accepted {
    pub connect: Box<Connect>,
    pub slot: Arc<SessionSlot>,
    pub guard: SessionGuard,
    pub session: Box<Session>,
    pub seq: u64,
    pub kick: oneshot::Receiver<Kick>,
    pub session_present: bool,
    /// Who the AUTH exchange authenticated, if the CONNECT used one.
    pub authenticated: Option<super::auth::Authenticated>,
    /// Who the client is (AUTH exchange or the listener's chain).
    pub identity: Identity,
}

/// Where a connection came from, for the decisions and log lines of the handshake.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    pub peer: std::net::SocketAddr,
    /// How the listener authenticates clients.
    pub listener: Arc<crate::auth::ListenerAuth>,
    /// The name of the verified client certificate that the listener's `tls.identity`
    /// picked, if any.
    pub cert_name: Option<String>,
}

/// Reads until a whole packet is decoded.
pub(super) async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<Packet, HandshakeError> {
    loop {
        if let Some(packet) = decoder.decode(read_buf)? {
            return Ok(packet);
        }
        if reader.read_buf(read_buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

/// Reads the first packet, which must be CONNECT [MQTT-3.1.0-1].
pub(crate) async fn read_connect<R: AsyncRead + Unpin>(
    reader: &mut R,
    read_buf: &mut BytesMut,
    decoder: &mut Decoder,
) -> Result<Box<Connect>, HandshakeError> {
    match read_packet(reader, read_buf, decoder).await? {
        Packet::Connect(c) => Ok(c),
        other => Err(HandshakeError::NotConnect(other.packet_type())),
    }
}

/// Answers a CONNECT that failed to decode, where the spec asks for an answer.
pub(crate) async fn refuse_undecodable<W: AsyncWrite + Unpin>(writer: &mut W, err: DecodeError) {
    if err == DecodeError::UnsupportedProtocolLevel {
        // [MQTT-3.1.2-2] CONNACK with return code 0x01, in the 3.1.1 layout since the client's
        // version is not one we speak.
        let _ = writer.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
    }
}

/// Answers a connection refused before its CONNECT is handled (memory overload) with CONNACK
/// 0x89 Server busy (MQTT 3.x: return code 3, server unavailable), then closes it. A CONNECT
/// larger than 64 KiB is not read to the end: the connection is just closed.
pub(crate) async fn refuse_busy(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    deadline: tokio::time::Instant,
    max_packet_size: usize,
) {
    let (mut reader, mut writer) = stream.into_split();
    let mut read_buf = BytesMut::new();
    let mut decoder = Decoder::new(max_packet_size.min(64 * 1024));
    let read = tokio::time::timeout_at(
        deadline,
        read_connect(&mut reader, &mut read_buf, &mut decoder),
    );
    if let Ok(Ok(connect)) = read.await {
        tracing::debug!(%peer, client_id = %connect.client_id, "CONNECT refused with 0x89: memory overload");
        refuse(&mut writer, &connect, ConnAckReason::ServerBusy, None).await;
    }
    let _ = writer.shutdown().await;
}

/// Validates the client identifier, or assigns one [MQTT-3.1.3-6]. Returns the id and whether
/// it was assigned.
fn client_identifier(
    broker: &Broker,
    connect: &Connect,
) -> Result<(ByteString, bool), ConnAckReason> {
    let id = &connect.client_id;
    if id.len() > broker.config.mqtt.max_client_id_len {
        return Err(ConnAckReason::ClientIdentifierNotValid);
    }
    match connect.protocol {
        // MQTT 3.1: 1 to 23 characters.
        ProtocolVersion::V3_1 if id.is_empty() || id.chars().count() > 23 => {
            Err(ConnAckReason::ClientIdentifierNotValid)
        }
        // [MQTT-3.1.3-8] an empty id needs a clean session in 3.1.1.
        ProtocolVersion::V3_1_1 if id.is_empty() && !connect.clean_start => {
            Err(ConnAckReason::ClientIdentifierNotValid)
        }
        _ if id.is_empty() => {
            let n = broker.registry.next_assigned_id();
            let salt: u32 = rand::random();
            Ok((ByteString::from(format!("vane-{n:x}-{salt:08x}")), true))
        }
        // A copy: the CONNECT shares the read buffer, which must not live as long as the id.
        _ => Ok((vane_core::detach(id), false)),
    }
}

/// Refusals that depend on the CONNECT's content, before any session is touched.
fn check_connect(broker: &Broker, connect: &Connect) -> Result<(), ConnAckReason> {
    if broker.store.as_ref().is_some_and(|s| s.failure().is_some()) {
        // The store stopped after a failed write (disk full, I/O error): nothing could be
        // acknowledged, so clients are sent away until an operator fixes it.
        return Err(ConnAckReason::ServerUnavailable);
    }
    if let Some(will) = &connect.will {
        if will.qos > broker.session_config.max_qos {
            return Err(ConnAckReason::QoSNotSupported);
        }
        // limits.max_topic_length / max_topic_levels hold for the will topic too.
        if broker.session_config.topic_exceeds_limits(&will.topic) {
            return Err(ConnAckReason::TopicNameInvalid);
        }
        // MQTT 5.0 section 3.1.3.2.3: a will payload marked UTF-8 must be UTF-8.
        if will.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&will.payload).is_err()
        {
            return Err(ConnAckReason::PayloadFormatInvalid);
        }
    }
    Ok(())
}

/// Writes a refusing CONNACK and returns the error that ends the connection. MQTT 5.0 clients
/// that allow it (Request Problem Information, default on) get a reason string.
/// Encodes one packet for the client's version and writes it.
pub(super) async fn send_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    version: ProtocolVersion,
    packet: Packet,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    packet
        .encode(version, &mut buf)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    writer.write_all(&buf).await
}

pub(super) async fn refuse<W: AsyncWrite + Unpin>(
    writer: &mut W,
    connect: &Connect,
    reason: ConnAckReason,
    server_reference: Option<ByteString>,
) -> HandshakeError {
    let mut connack = ConnAck::new(reason, false);
    connack.properties.server_reference = server_reference;
    if connect.properties.request_problem_information != Some(false) {
        connack.properties.reason_string = Some(ByteString::from(refusal_text(reason)));
    }
    let _ = send_packet(writer, connect.protocol, Packet::ConnAck(connack)).await;
    HandshakeError::Refused(reason)
}

fn refusal_text(reason: ConnAckReason) -> &'static str {
    match reason {
        ConnAckReason::ClientIdentifierNotValid => "client identifier not valid",
        ConnAckReason::BadAuthenticationMethod => "authentication method not supported",
        ConnAckReason::BadUserNameOrPassword => "bad user name or password",
        ConnAckReason::NotAuthorized => "not authorized",
        ConnAckReason::ServerBusy => "server busy",
        ConnAckReason::QoSNotSupported => "will QoS above the server's maximum QoS",
        ConnAckReason::PayloadFormatInvalid => "will payload is marked UTF-8 but is not",
        ConnAckReason::UseAnotherServer => "use another server",
        ConnAckReason::ServerMoved => "server moved",
        ConnAckReason::Banned => "banned",
        ConnAckReason::TopicNameInvalid => "will topic beyond the server's topic limits",
        _ => "connection refused",
    }
}

/// The configured redirect, if any: the refusal reason and the Server Reference.
fn redirect(broker: &Broker) -> Option<(ConnAckReason, ByteString)> {
    let r = &broker.config.redirect;
    if r.server_reference.is_empty() || r.when != vane_config::RedirectWhen::Connect {
        return None;
    }
    let reason = if r.permanent {
        ConnAckReason::ServerMoved
    } else {
        ConnAckReason::UseAnotherServer
    };
    Some((reason, ByteString::from(r.server_reference.as_str())))
}

/// Takes ownership of the client's session: kicks an older connection, waits for it to let go,
/// resumes or discards the session as Clean Start asks, and sends CONNACK.
/// The connection's transport and buffers, for the steps of the handshake that read.
pub(crate) struct HandshakeIo<'a, R, W> {
    pub reader: &'a mut R,
    pub writer: &'a mut W,
    pub read_buf: &'a mut BytesMut,
    pub write_buf: &'a mut BytesMut,
    pub decoder: &'a mut Decoder,
}

pub(crate) async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    broker: &Broker,
    connect: Box<Connect>,
    io: HandshakeIo<'_, R, W>,
    origin: Origin,
    now: Instant,
) -> Result<Accepted, HandshakeError> {
    let mut io = io;
    let version = connect.protocol;
    // MQTT 5.0 section 4.11: a configured redirect turns every client away with its reference.
    if let Some((reason, reference)) = redirect(broker) {
        return Err(refuse(io.writer, &connect, reason, Some(reference)).await);
    }
    if let Err(reason) = check_connect(broker, &connect) {
        return Err(refuse(io.writer, &connect, reason, None).await);
    }
    let (client_id, assigned) = match client_identifier(broker, &connect) {
        Ok(id) => id,
        Err(reason) => return Err(refuse(io.writer, &connect, reason, None).await),
    };
    // Bans and flapping detection come before authentication: a banned client costs no
    // password hashing.
    let username = connect.username.as_deref();
    if let Err(why) = broker.limits.check_connect(&client_id, username) {
        tracing::info!(
            peer = %origin.peer,
            %client_id,
            username = username.unwrap_or(""),
            ?why,
            "CONNECT refused: banned"
        );
        refuse(io.writer, &connect, ConnAckReason::Banned, None).await;
        return Err(HandshakeError::AuthRefused(ConnAckReason::Banned));
    }
    // MQTT 5.0 section 4.12: the AUTH exchange completes before the session is touched.
    let authenticated = match &connect.properties.authentication_method {
        None => None,
        Some(method) => {
            let timeout = broker.config.mqtt.connect_timeout;
            Some(
                super::auth::authenticate(broker, &connect, method, &client_id, &mut io, timeout)
                    .await?,
            )
        }
    };
    // The listener's chain (certificate, user name and password, JWT, HTTP hook), or its
    // rule for anonymous clients, when no AUTH exchange authenticated the client.
    let identity = match &authenticated {
        Some(a) => Identity {
            username: Some(a.username.clone()),
            method: Some("scram"),
            permissions: None,
        },
        None => match super::chain::authenticate(broker, &connect, &client_id, &origin).await {
            Ok(identity) => identity,
            Err(reason) => {
                refuse(io.writer, &connect, reason, None).await;
                return Err(HandshakeError::AuthRefused(reason));
            }
        },
    };
    // A user name that authentication established but CONNECT did not carry (a certificate's
    // CN, a token's subject) was not seen by the ban check above.
    if let Some(user) = identity.username.as_deref() {
        if connect.username.as_deref() != Some(user) && broker.limits.bans_user(user).is_some() {
            tracing::info!(
                peer = %origin.peer,
                %client_id,
                username = user,
                "CONNECT refused: banned (the authenticated user name)"
            );
            refuse(io.writer, &connect, ConnAckReason::Banned, None).await;
            return Err(HandshakeError::AuthRefused(ConnAckReason::Banned));
        }
    }
    let (slot, guard, seq) = loop {
        let slot = broker
            .registry
            .get_or_create(&client_id, || broker.new_mailbox());
        // Checked before the takeover starts: a refused client must not kick the owner.
        if broker.binds_client_ids {
            if let Bind::Refused { owner } = slot.bind(identity.username.as_deref()) {
                tracing::info!(
                    peer = %origin.peer,
                    %client_id,
                    username = identity.username.as_deref().unwrap_or(""),
                    owner = %owner,
                    "CONNECT refused: the client id is bound to another user name while its session exists"
                );
                let reason = ConnAckReason::NotAuthorized;
                refuse(io.writer, &connect, reason, None).await;
                return Err(HandshakeError::AuthRefused(reason));
            }
        }
        let seq = slot.begin_takeover();
        let guard = slot.acquire().await;
        if !slot.is_latest(seq) {
            return Err(HandshakeError::Superseded);
        }
        // The old session may have ended and removed its slot while we waited.
        if broker.registry.is_current(&slot) {
            break (slot, guard, seq);
        }
    };
    let (kick_tx, kick) = oneshot::channel();
    if !slot.set_owner(seq, kick_tx) {
        return Err(HandshakeError::Superseded);
    }
    // A password file reload that removes or changes this user ends the connection.
    slot.set_owner_user(
        identity
            .username
            .clone()
            .filter(|_| identity.method == Some(vane_config::AuthMethod::PasswordFile.name())),
    );
    let mut guard = guard;
    let existing = guard.take();
    let parked_will = slot.take_will();
    let (mut session, session_present) = match existing {
        Some(old) if !connect.clean_start => {
            if parked_will.is_some() {
                // [MQTT-3.1.3-9] the session resumed within the will delay: no will.
                tracing::debug!(%client_id, "delayed will cancelled by reconnection");
            }
            (old, true)
        }
        old => {
            if let Some(will) = parked_will {
                // Clean Start ends the old session, and a session that ends sends its delayed
                // will at once (MQTT 5.0 section 3.1.3.2.2).
                crate::expiry::publish_will(broker, &slot, will);
            }
            if let Some(mut old) = old {
                // [MQTT-3.1.2-6] Clean Session discards the previous session.
                broker.discard_session(&slot, &mut old);
            }
            (
                Box::new(Session::new(
                    slot.id,
                    client_id.clone(),
                    broker.session_config.clone(),
                    now,
                )),
                false,
            )
        }
    };
    session.connect(&connect, now);
    // Before anything is resent or delivered: the permissions are this connection's, and a
    // session taken over from another identity must not keep that one's.
    // A token's permission claims narrow whatever the ACL allows.
    let policy = broker.topic_policy(
        identity.username.as_deref(),
        &client_id,
        origin.peer,
        identity.permissions.clone(),
    );
    slot.set_policy(policy.clone());
    session.set_policy(policy);
    let mut connack = ConnAck::new(ConnAckReason::Success, session_present);
    if version.is_v5() {
        let mut properties = connack_properties(broker);
        let max_keep_alive = broker.config.mqtt.max_keep_alive;
        if max_keep_alive != 0 && (connect.keep_alive == 0 || connect.keep_alive > max_keep_alive) {
            // MQTT 5.0 section 3.2.2.3.14: the client must use the Server Keep Alive instead.
            session.set_keep_alive(max_keep_alive);
            properties.server_keep_alive = Some(max_keep_alive);
        }
        let requested = connect.properties.session_expiry_interval.unwrap_or(0);
        if requested > session.session_expiry() {
            // MQTT 5.0 section 3.2.2.3.2: the server tells the client the Session Expiry
            // Interval it uses when it is not the one asked for (`mqtt.max_session_expiry`).
            properties.session_expiry_interval = Some(session.session_expiry());
        }
        let prefix = &broker.config.mqtt.response_topic_prefix;
        if connect.properties.request_response_information == Some(true) && !prefix.is_empty() {
            // MQTT 5.0 section 4.10: the basis for the client's response topics.
            properties.response_information =
                Some(ByteString::from(format!("{prefix}/{client_id}")));
        }
        properties.assigned_client_identifier = assigned.then_some(client_id);
        if let Some(a) = &authenticated {
            properties.authentication_method = Some(a.method.clone());
            properties.authentication_data = a.data.clone().map(bytes::Bytes::from);
        }
        connack.properties = properties;
    }
    // [MQTT-3.2.0-1] CONNACK is the first packet the server sends.
    session.send(Packet::ConnAck(connack));
    // [MQTT-4.4.0-1] a resumed session resends what was in flight.
    session.resend_inflight();
    session
        .write_transmits(now, io.write_buf)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(Accepted {
        connect,
        slot,
        guard,
        session,
        seq,
        kick,
        session_present,
        authenticated,
        identity,
    })
}

/// What a MQTT 5.0 client must know about this server (MQTT 5.0 section 3.2.2.3).
fn connack_properties(broker: &Broker) -> ConnAckProperties {
    let c = &broker.session_config;
    ConnAckProperties {
        receive_maximum: Some(c.receive_maximum),
        maximum_qos: (c.max_qos < QoS::ExactlyOnce).then_some(c.max_qos),
        maximum_packet_size: u32::try_from(broker.config.mqtt.max_packet_size.0).ok(),
        topic_alias_maximum: Some(c.topic_alias_maximum),
        wildcard_subscription_available: Some(true),
        subscription_identifiers_available: Some(true),
        shared_subscription_available: Some(true),
        ..Default::default()
    }
}
