//! One task per connection. It owns the client's session with plain `&mut` and selects over:
//! the socket becoming readable or writable, its mailbox, its keep-alive deadline, a takeover
//! request and server shutdown.

mod auth;
mod chain;
mod handshake;
mod slow;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use vane_core::session::{Action, NewSubscription, StoreEvent};
use vane_core::{RouteScratch, Session, SessionError};
use vane_proto::{
    DecodeError, Decoder, Disconnect, DisconnectReason, Packet, PubAckReason, RetainHandling,
};
use vane_store::{Op, Store, Ticket};

use crate::broker::{Broker, Routed, Subscriber};
use crate::limits::{OverBudget, PublishBudget};
use crate::mailbox::{Congestion, Pull, Spill};
use crate::metrics::{PublishRefusedCause, RefusedCause, Tally};
use crate::persistence;
use crate::registry::{Kick, SessionSlot};
pub(crate) use handshake::refuse_busy;
pub(crate) use handshake::Origin;
use handshake::{accept, read_connect, refuse_undecodable, Accepted, HandshakeError, HandshakeIo};

/// Bytes of unwritten output above which the task stops taking deliveries from its mailbox.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Bytes of unwritten output above which the task stops reading: a client that does not read
/// its acknowledgements cannot make the broker buffer without bound.
const READ_PAUSE_WRITE_BACKLOG: usize = 256 * 1024;
/// Read buffer growth step. Every complete packet is decoded after each read, so what stays
/// in the buffer is at most one partial packet (up to `mqtt.max_packet_size`).
const READ_CHUNK: usize = 4 * 1024;
/// A read or write smaller than this that leaves its buffer empty gives the buffer back: an
/// idle connection then holds no buffers, while a busy one keeps reusing its own.
const KEEP_BUFFER_AFTER: usize = 1024;
/// Deliveries taken from the mailbox per lock.
const DRAIN_BATCH: usize = 256;
/// Bytes of packets held back while publishing is paused, above which reading stops.
const DEFERRED_LIMIT: usize = 64 * 1024;
/// Store operations waiting for the disk above which connections stop reading until it
/// catches up: publishers (at any QoS) then wait, instead of the broker buffering their
/// messages' records without bound.
const STORE_PENDING_LIMIT: usize = 64 * 1024;

/// Why a connection ended once accepted.
#[derive(Debug)]
enum End {
    /// The client sent DISCONNECT.
    ClientDisconnect(DisconnectReason),
    /// The client closed the connection, or it broke.
    Closed(Option<std::io::Error>),
    /// The client broke the protocol.
    Decode(DecodeError),
    /// The client broke a session rule.
    Session(SessionError),
    /// Another connection took the session over.
    TakenOver,
    /// The server is shutting down.
    Shutdown,
    /// Re-authentication failed or broke the protocol.
    Auth(DisconnectReason),
    /// A reload removed or changed the client's user in the password file.
    Revoked,
    /// The store failed: what the client is owed an acknowledgement for cannot be made
    /// durable.
    StoreFailed(String),
    /// The client published beyond `limits.publish_rate` or `limits.publish_bandwidth` with
    /// `limits.rate_exceeded = "disconnect"`.
    RateExceeded,
    /// A reloaded ban list bans the client.
    Banned,
    /// The slow-consumer policy disconnected a client that took none of its messages.
    SlowConsumer(String),
    /// Memory overload: an MQTT 3.x client sent a QoS 1/2 publish, which 3.x cannot refuse.
    Overloaded,
}

impl End {
    /// The DISCONNECT reason sent to an MQTT 5.0 client, if the server ends the connection.
    fn server_reason(&self) -> Option<DisconnectReason> {
        match self {
            End::ClientDisconnect(_) | End::Closed(_) => None,
            End::Decode(e) => Some(e.disconnect_reason()),
            End::Session(e) => Some(e.disconnect_reason()),
            End::TakenOver => Some(DisconnectReason::SessionTakenOver),
            End::Shutdown => Some(DisconnectReason::ServerShuttingDown),
            End::Auth(reason) => Some(*reason),
            End::Revoked => Some(DisconnectReason::NotAuthorized),
            End::StoreFailed(_) => Some(DisconnectReason::UnspecifiedError),
            End::RateExceeded => Some(DisconnectReason::MessageRateTooHigh),
            // DISCONNECT has no 0x8A Banned; the ban is the operator's action.
            End::Banned => Some(DisconnectReason::AdministrativeAction),
            // An administratively imposed limit (how long messages may wait for a client)
            // was exceeded.
            End::SlowConsumer(_) => Some(DisconnectReason::QuotaExceeded),
            End::Overloaded => Some(DisconnectReason::ServerBusy),
        }
    }

    /// A reason string for an MQTT 5.0 DISCONNECT.
    fn describe(&self) -> String {
        match self {
            End::ClientDisconnect(_) | End::Closed(_) => String::new(),
            End::Decode(e) => e.to_string(),
            End::Session(e) => e.to_string(),
            End::TakenOver => "another connection took over this session".into(),
            End::Shutdown => "the server is shutting down".into(),
            End::Auth(_) => "re-authentication failed".into(),
            End::Revoked => "credentials revoked".into(),
            End::StoreFailed(_) => "the server cannot store messages".into(),
            End::RateExceeded => "publish rate or bandwidth above the server's limit".into(),
            End::Banned => "banned".into(),
            End::SlowConsumer(why) => why.clone(),
            End::Overloaded => "the server is over its memory budget".into(),
        }
    }

    /// Whether the will is published [MQTT-3.1.2-8]: not after a normal DISCONNECT (the session
    /// has then already dropped it), not on shutdown, and on takeover only for MQTT 5.0.
    fn publishes_will(&self, v5: bool) -> bool {
        match self {
            End::ClientDisconnect(_)
            | End::Closed(_)
            | End::Decode(_)
            | End::Session(_)
            | End::Auth(_)
            | End::RateExceeded
            | End::Banned
            | End::SlowConsumer(_)
            | End::Overloaded
            | End::Revoked => true,
            End::TakenOver => v5,
            End::Shutdown | End::StoreFailed(_) => false,
        }
    }
}

/// A byte stream that can wait until it is readable without being handed a buffer, so an idle
/// connection holds no read buffer while it waits.
pub(crate) trait Readable: AsyncRead + Unpin {
    /// Waits until a read would make progress; a spurious wake-up is fine. It must not wait
    /// while the stream itself holds bytes a read would return (a TLS stream's decrypted
    /// records): the socket may never become readable again for them.
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl Readable for tokio::net::tcp::OwnedReadHalf {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        self.readable()
    }
}

/// Reads into `buf`, taking buffer space only once the stream is readable (when no partial
/// packet is waiting for its rest).
async fn read_when_ready<R: Readable>(
    reader: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.is_empty() {
        reader.wait_readable().await?;
    }
    if buf.capacity() - buf.len() < 512 {
        buf.reserve(READ_CHUNK);
    }
    reader.read_buf(buf).await
}

/// Gives an emptied buffer's memory back when the I/O that emptied it was small.
fn release_if_idle(buf: &mut BytesMut, moved: usize) {
    if buf.is_empty() && moved < KEEP_BUFFER_AFTER && buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// Serves one client connection from its first byte to its close. CONNECT must have arrived
/// by `connect_deadline` (`mqtt.connect_timeout` after the connection was accepted: a TLS
/// handshake before it counts against the same deadline).
pub(crate) async fn serve<R, W>(
    broker: Arc<Broker>,
    origin: Origin,
    mut reader: R,
    mut writer: W,
    connect_deadline: tokio::time::Instant,
    shutdown: watch::Receiver<bool>,
) where
    R: Readable,
    W: AsyncWrite + Unpin,
{
    let _counted = LiveConnection::new(broker.clone());
    let peer = origin.peer;
    let mut read_buf = BytesMut::with_capacity(READ_CHUNK);
    let mut write_buf = BytesMut::new();
    let mut decoder = Decoder::new(broker.config.mqtt.max_packet_size.0);
    let connect_timeout = broker.config.mqtt.connect_timeout;
    let connect = match tokio::time::timeout_at(
        connect_deadline,
        read_connect(&mut reader, &mut read_buf, &mut decoder),
    )
    .await
    {
        Ok(Ok(connect)) => connect,
        Ok(Err(HandshakeError::Decode(e))) => {
            warn!(%peer, error = %e, "invalid CONNECT, closing");
            refuse_undecodable(&mut writer, e).await;
            return;
        }
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "connection closed before CONNECT was accepted");
            return;
        }
        Err(_) => {
            debug!(%peer, timeout = ?connect_timeout, "no CONNECT within the connect timeout, closing");
            return;
        }
    };
    let now = Instant::now();
    let io = HandshakeIo {
        reader: &mut reader,
        writer: &mut writer,
        read_buf: &mut read_buf,
        write_buf: &mut write_buf,
        decoder: &mut decoder,
    };
    // Boxed: the handshake's state (the authentication chain, an HTTP hook request) is large
    // and lives only until CONNACK; unboxed it would widen every connection's task for its
    // whole life (measured: 3.9 KiB more per idle connection).
    let accepted = match Box::pin(accept(&broker, connect, io, origin, now)).await {
        Ok(a) => a,
        // Logged once, with the client id and user name, where it was decided.
        Err(HandshakeError::AuthRefused(reason)) => {
            broker
                .metrics
                .connection_refused(RefusedCause::of_connack(reason));
            return;
        }
        Err(e) => {
            if let HandshakeError::Refused(reason) = e {
                broker
                    .metrics
                    .connection_refused(RefusedCause::of_connack(reason));
            }
            info!(%peer, error = %e, "connection refused");
            return;
        }
    };
    release_if_idle(&mut read_buf, 0);
    release_if_idle(&mut write_buf, 0);
    let broker_limits = broker.config.limits.clone();
    let slow = slow::SlowConsumer::new(&broker.config.slow_consumer);
    let mut conn = Connection {
        broker,
        peer,
        reader,
        writer,
        read_buf,
        write_buf,
        decoder,
        scratch: RouteScratch::with_seed(rand::random()),
        authenticated: None,
        identity: chain::Identity::default(),
        reauth: auth::Reauthentication::new(),
        congested: None,
        deferred: VecDeque::new(),
        deferred_bytes: 0,
        ops: Vec::new(),
        ops_gate: false,
        gate: 0,
        durable: None,
        events: Vec::new(),
        budget: PublishBudget::new(&broker_limits, now),
        throttled_until: None,
        ban_watch: None,
        slow,
        overload_pause: false,
        overload_refuse: false,
        tally: Tally::default(),
    };
    conn.run(accepted, shutdown).await;
}

struct Connection<R, W> {
    broker: Arc<Broker>,
    peer: SocketAddr,
    reader: R,
    writer: W,
    read_buf: BytesMut,
    write_buf: BytesMut,
    decoder: Decoder,
    scratch: RouteScratch<Subscriber>,
    /// Who the CONNECT's AUTH exchange authenticated, for re-authentication.
    authenticated: Option<auth::Authenticated>,
    /// Who the client is: its authenticated user name (none when anonymous), and the topic
    /// permissions its token carries, if any.
    identity: chain::Identity,
    reauth: auth::Reauthentication,
    /// A receiver whose full queue this client's messages went beyond: reading pauses until
    /// it drains (backpressure), so QoS 1/2 messages are not acknowledged and then dropped.
    congested: Option<Subscriber>,
    /// Packets read while publishing is paused, handled in order once it resumes. Only
    /// acknowledgements and pings pass them, so the client's own deliveries keep flowing and
    /// two clients that publish to each other cannot wait on each other forever.
    deferred: VecDeque<Packet>,
    deferred_bytes: usize,
    /// Store operations this connection's packets caused, submitted together.
    ops: Vec<Op>,
    /// Whether what the client hears next depends on `ops` being durable.
    ops_gate: bool,
    /// The store ticket that must be durable before anything more is written to the client:
    /// acknowledgements promise that what they acknowledge is on disk. 0: nothing to wait for.
    gate: Ticket,
    durable: Option<watch::Receiver<Ticket>>,
    events: Vec<StoreEvent>,
    /// The client's publish budget, when `limits.publish_rate` or `publish_bandwidth` is set.
    budget: Option<Box<PublishBudget>>,
    /// Reading is paused until then: the client spent its publish budget.
    throttled_until: Option<tokio::time::Instant>,
    /// Ban list reloads to check this client against, when a ban file is configured.
    ban_watch: Option<Box<BanWatch>>,
    slow: slow::SlowConsumer,
    /// Memory overload: new publishes are held back like under backpressure.
    overload_pause: bool,
    /// Memory overload: QoS 1/2 publishes are refused (MQTT 5.0: 0x97; 3.x: the connection
    /// closes).
    overload_refuse: bool,
    /// Traffic counted since the last turn added it to the broker's metrics.
    tally: Tally,
}

/// What a connected client is checked against the ban list by, when it is reloaded.
struct BanWatch {
    /// Completes at the next reload, handing the receiver back to wait for the one after.
    /// Made once per reload rather than once per turn of the connection's loop: the loop's
    /// select! would otherwise build (and allocate) a new wait at every turn.
    next: BanReload,
    username: Option<String>,
}

type BanReload =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<watch::Receiver<u64>>> + Send>>;

/// Waits for the ban list's next reload; `None` when none can come any more.
fn next_ban_reload(mut reloaded: watch::Receiver<u64>) -> BanReload {
    Box::pin(async move { reloaded.changed().await.ok().map(|()| reloaded) })
}

/// Counts a running connection task for as long as it lives.
struct LiveConnection(Arc<Broker>);

impl LiveConnection {
    fn new(broker: Arc<Broker>) -> LiveConnection {
        broker.connections.fetch_add(1, Ordering::AcqRel);
        LiveConnection(broker)
    }
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<R: Readable, W: AsyncWrite + Unpin> Connection<R, W> {
    async fn run(&mut self, accepted: Accepted, mut shutdown: watch::Receiver<bool>) {
        let Accepted {
            connect,
            slot,
            mut guard,
            mut session,
            seq,
            mut kick,
            session_present,
            authenticated,
            identity,
        } = accepted;
        self.authenticated = authenticated;
        self.identity = identity;
        let dropped = slot.mailbox.set_online(true);
        info!(
            client_id = %session.client_id(),
            peer = %self.peer,
            username = self.identity.username.as_deref().unwrap_or(""),
            auth_method = self.identity.method.unwrap_or("anonymous"),
            token_topic_limits = self.identity.permissions.is_some(),
            version = %connect.protocol,
            clean_start = connect.clean_start,
            keep_alive = connect.keep_alive,
            session_present,
            queued = slot.mailbox.len(),
            dropped_while_offline = dropped,
            "client connected"
        );
        self.broker.metrics.client_connected();
        let problem_info = connect.properties.request_problem_information != Some(false);
        self.ban_watch = self.broker.limits.watch_bans().map(|reloaded| {
            Box::new(BanWatch {
                next: next_ban_reload(reloaded),
                username: connect.username.as_deref().map(str::to_owned),
            })
        });
        drop(connect);
        self.store_connected(&session, &slot, session_present);
        let end = self
            .serve_session(&mut session, &slot, &mut kick, &mut shutdown)
            .await;
        // Boxed: needed once, at the end, it need not widen the task for the whole connection.
        Box::pin(self.finish(&mut session, &end, problem_info)).await;
        let metrics = &self.broker.metrics;
        metrics.add(slot.id, &mut self.tally, session.take_counts());
        metrics.client_disconnected();
        match &end {
            End::SlowConsumer(_) => metrics.slow_consumer_disconnected(),
            End::StoreFailed(_) => metrics.store_failed(),
            _ => {}
        }
        let refused_topics = session.topic_limit_dropped();

        let now = Instant::now();
        let mut will_delay = None;
        if end.publishes_will(session.version().is_v5()) {
            let will = session.take_will(now).filter(|w| {
                // A will is a publish like any other: the ACL in force now decides.
                session
                    .policy()
                    .is_none_or(|p| p.may_publish(&w.message.topic))
            });
            if let Some(will) = will {
                // [MQTT-3.1.3-9] a will with a delay waits for it, or for the end of the
                // session, whichever comes first; a session ending now ends the wait.
                if will.delay > 0 && session.session_expiry() > 0 {
                    // Parked with the slot before the session is released, so a connection
                    // that takes the session over finds it there.
                    will_delay = Some(will.delay);
                    slot.park_will(will);
                } else {
                    debug!(client_id = %session.client_id(), topic = %will.message.topic, "publishing will");
                    self.broker
                        .publish(will.message, &mut self.scratch, &mut self.ops);
                }
            }
        }
        let dropped = slot.mailbox.set_online(false);
        slot.clear_owner(seq);
        let taken_over = matches!(end, End::TakenOver);
        // The session ends with the connection when its expiry interval is 0: MQTT 3.x clean
        // sessions, MQTT 5.0 sessions that asked for it at CONNECT or DISCONNECT.
        let expiry = session.session_expiry();
        if expiry == 0 {
            self.broker.discard_session(&slot, &mut session);
            self.broker.registry.remove_if_latest(&slot, seq);
            self.flush_ops(&mut session);
            self.broker.forget_stored_session(&slot);
            *guard = None;
        } else {
            self.broker
                .hand_over_shared_on_disconnect(&slot, &mut session);
            if persistence::is_persistent(&slot) {
                // Saved before the session is released, so a connection that takes it over
                // writes after this.
                self.ops.push(persistence::session_op(
                    &session,
                    &slot,
                    slot.parked_will(),
                    true,
                ));
            }
            self.flush_ops(&mut session);
            *guard = Some(session);
        }
        drop(guard);
        if expiry != 0 && (expiry != u32::MAX || will_delay.is_some()) {
            tokio::spawn(crate::expiry::park_timers(
                self.broker.clone(),
                slot.clone(),
                seq,
                will_delay,
                expiry,
            ));
        }
        let client_id = &slot.client_id;
        match &end {
            End::ClientDisconnect(reason) => {
                info!(%client_id, peer = %self.peer, ?reason, "client disconnected")
            }
            End::TakenOver => {
                info!(%client_id, peer = %self.peer, "session taken over by a new connection")
            }
            End::Closed(None) => {
                info!(%client_id, peer = %self.peer, "connection closed by client without DISCONNECT")
            }
            End::Closed(Some(e)) => {
                info!(%client_id, peer = %self.peer, error = %e, "connection lost")
            }
            End::Decode(e) => {
                warn!(%client_id, peer = %self.peer, error = %e, "protocol violation, connection closed")
            }
            End::Session(e) => {
                warn!(%client_id, peer = %self.peer, error = %e, "connection closed")
            }
            End::Shutdown => {
                debug!(%client_id, peer = %self.peer, "connection closed for shutdown")
            }
            End::Auth(reason) => {
                warn!(%client_id, peer = %self.peer, ?reason, "re-authentication failed, connection closed")
            }
            End::Revoked => {
                info!(%client_id, peer = %self.peer, "connection closed: the password file was reloaded and no longer holds this user's credentials (MQTT 5.0: DISCONNECT 0x87)")
            }
            End::StoreFailed(why) => {
                warn!(%client_id, peer = %self.peer, error = %why, "connection closed: the store failed, acknowledgements owed to the client cannot be made durable")
            }
            End::RateExceeded => {
                warn!(%client_id, peer = %self.peer, "connection closed: publishing above limits.publish_rate or limits.publish_bandwidth")
            }
            End::Banned => {
                warn!(%client_id, peer = %self.peer, "connection closed: the reloaded ban list bans this client")
            }
            End::Overloaded => {
                info!(%client_id, peer = %self.peer, "connection closed: QoS 1/2 publish while over the memory budget (MQTT 3.x has no refusal code; the client resends it)")
            }
            End::SlowConsumer(why) => {
                warn!(%client_id, peer = %self.peer, reason = %why, dropped_qos0 = slot.mailbox.slow_dropped(), "slow consumer disconnected")
            }
        }
        if dropped > 0 && !taken_over {
            warn!(%client_id, dropped, "messages dropped for this client because its queue was full");
        }
        if refused_topics > 0 {
            warn!(%client_id, dropped = refused_topics, "QoS 0 messages from this client dropped: topic beyond limits.max_topic_length or limits.max_topic_levels");
        }
    }

    /// The main loop: returns why the connection ends.
    async fn serve_session(
        &mut self,
        session: &mut Session,
        slot: &Arc<crate::registry::SessionSlot>,
        kick: &mut tokio::sync::oneshot::Receiver<Kick>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        // Packets that arrived in the same read as CONNECT (a client may send SUBSCRIBE right
        // behind it, or a WebSocket message may hold both [MQTT-6.0.0-3]) are handled now: the
        // loop below only decodes after a read, and no more input may come until they are
        // answered.
        if !self.read_buf.is_empty() {
            if let Some(end) = self.handle_input(session, slot) {
                return end;
            }
        }
        loop {
            self.note_overload();
            let mut space_wait = self.congestion_wait(session);
            if space_wait.is_none() && !self.overload_pause && !self.deferred.is_empty() {
                if let Some(end) = self.handle_deferred(session, slot, false) {
                    return end;
                }
                space_wait = self.congestion_wait(session);
            }
            let now = Instant::now();
            let (pull, progressed) = if self.write_buf.len() < WRITE_HIGH_WATER {
                self.pull_deliveries(session, slot, now)
            } else {
                // Output is backed up: take nothing more until the socket drains.
                (Pull::WindowFull, false)
            };
            // Output not draining, or deliveries held back by a full in-flight window.
            let waiting = self.write_buf.len() >= WRITE_HIGH_WATER
                || (pull == Pull::WindowFull && slot.mailbox.has_queued());
            if self
                .slow
                .observe(now, waiting, progressed, &slot.mailbox, session.client_id())
            {
                return End::SlowConsumer(self.slow.describe());
            }
            let slow_deadline = self.slow.deadline().map(tokio::time::Instant::from_std);
            if let Err(e) = session.write_transmits(now, &mut self.write_buf) {
                warn!(client_id = %session.client_id(), error = %e, "could not encode a packet for the client");
            }
            self.flush_ops(session);
            // Once per turn, not per message: what this turn read, wrote and sent.
            self.broker
                .metrics
                .add(slot.id, &mut self.tally, session.take_counts());
            let gated = !self.gate_open();
            // The store ticket to wait for: output held for acknowledgements, an offline
            // queue on disk not yet readable, or (when the disk is behind) any progress.
            let store_behind = self.store_behind();
            let store_wait = [
                gated.then_some(self.gate),
                match pull {
                    Pull::WaitStore(t) => Some(t),
                    _ => None,
                },
                store_behind,
            ]
            .into_iter()
            .flatten()
            .min();
            if store_wait.is_some() {
                if let Some(why) = self.broker.store.as_ref().and_then(Store::failure) {
                    return End::StoreFailed(why);
                }
            }
            let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
            let want_mailbox = pull == Pull::Empty;
            let want_read = self.write_buf.len() < READ_PAUSE_WRITE_BACKLOG
                && self.deferred_bytes < DEFERRED_LIMIT
                && store_behind.is_none()
                && self.throttled_until.is_none();
            let throttled = self.throttled_until;
            // One timer for the keep alive, the end of a publish-rate pause and the slow-consumer
            // policy's next step: each sleep held in the select! widens every connection's task.
            let timer = [deadline, throttled, slow_deadline]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                kicked = &mut *kick => return match kicked {
                    Ok(Kick::Revoked) => End::Revoked,
                    _ => End::TakenOver,
                },
                _ = shutdown.changed() => return End::Shutdown,
                _ = wait_durable(self.durable.as_mut(), store_wait.unwrap_or(0)), if store_wait.is_some() => {}
                res = self.writer.write_buf(&mut self.write_buf), if !self.write_buf.is_empty() && !gated => {
                    match res {
                        Ok(n) => {
                            self.tally.bytes_sent = self.tally.bytes_sent.wrapping_add(n as u32);
                            release_if_idle(&mut self.write_buf, n);
                        }
                        Err(e) => return End::Closed(Some(e)),
                    }
                }
                res = read_when_ready(&mut self.reader, &mut self.read_buf), if want_read => {
                    match res {
                        Ok(0) => {
                            // What the client sent before closing still counts, a DISCONNECT
                            // above all (no will): handle it even past a congested receiver.
                            if let Some(end) = self.handle_deferred(session, slot, true) {
                                return end;
                            }
                            return End::Closed(None);
                        }
                        Ok(n) => {
                            self.tally.bytes_received = self.tally.bytes_received.wrapping_add(n as u32);
                            if let Some(end) = self.handle_input(session, slot) {
                                return end;
                            }
                            release_if_idle(&mut self.read_buf, n);
                            // One read's worth of input per turn: a publisher that always has
                            // input would otherwise run until tokio's budget is spent and
                            // starve the subscribers sharing its core.
                            tokio::task::yield_now().await;
                        }
                        Err(e) => return End::Closed(Some(e)),
                    }
                }
                _ = slot.mailbox.notified(), if want_mailbox => {}
                _ = wait_for_space(self.congested.as_ref(), space_wait), if space_wait.is_some() => {}
                reloaded = bans_reloaded(self.ban_watch.as_deref_mut()), if self.ban_watch.is_some() => {
                    match (reloaded, self.ban_watch.as_deref_mut()) {
                        (Some(receiver), Some(w)) => {
                            w.next = next_ban_reload(receiver);
                            if self.broker.limits.bans_connected(session.client_id(), w.username.as_deref(), self.peer.ip()) {
                                return End::Banned;
                            }
                        }
                        _ => self.ban_watch = None,
                    }
                }
                _ = sleep_until(timer), if timer.is_some() => {
                    let now = tokio::time::Instant::now();
                    if deadline.is_some_and(|d| d <= now) {
                        if throttled.is_some() {
                            // The broker is the one not reading: what the client sent meanwhile
                            // waits unread, so its keep alive is not held against it.
                            session.note_received(Instant::now());
                        }
                        if let Err(e) = session.handle_timeout(Instant::now()) {
                            return End::Session(e);
                        }
                    }
                    if throttled.is_some_and(|t| t <= now) {
                        self.throttled_until = None;
                    }
                    // A slow-consumer step that is due is taken by the loop's next turn.
                }
                _ = std::future::ready(()), if pull == Pull::More => {}
                // Held back for memory overload: until the level changes.
                _ = overload_changed(&self.broker), if self.overload_pause => {}
            }
        }
    }

    /// Reads the memory overload level for this turn: publishes are held back while the
    /// broker sheds, and refused while it refuses (holding them would keep their memory).
    fn note_overload(&mut self) {
        use crate::overload::Level;
        let level = self.broker.overload.level();
        self.overload_refuse = level == Level::Refusing;
        self.overload_pause = level == Level::Shedding;
    }

    /// Until when reading stays paused for a congested receiver, if it does.
    fn congestion_wait(&mut self, session: &Session) -> Option<Instant> {
        let receiver = self.congested.as_ref()?;
        match receiver.mailbox.congestion() {
            Congestion::Until(until) => return Some(until),
            Congestion::Clear => {}
            Congestion::TimedOut => warn!(
                client_id = %receiver.client_id,
                publisher = %session.client_id(),
                timeout = ?self.broker.config.queue.backpressure_timeout,
                "client is not keeping up: its queue stayed full for the backpressure timeout; publishers go on and its queue's overflow policy applies"
            ),
        }
        self.congested = None;
        None
    }

    /// Moves a batch of deliveries into the session: first what the session itself owes
    /// (retained messages for new subscriptions, messages read back from disk), then what
    /// waits on disk only (the queue kept while the client was offline), then the mailbox,
    /// so order is kept. Also says whether any delivery was taken (for the slow-consumer
    /// policy).
    fn pull_deliveries(
        &mut self,
        session: &mut Session,
        slot: &crate::registry::SessionSlot,
        now: Instant,
    ) -> (Pull, bool) {
        let backlog = session.backlog_len();
        if backlog > 0 {
            let window_full = session.flush_backlog(now, DRAIN_BATCH);
            let progressed = session.backlog_len() < backlog;
            if window_full {
                return (Pull::WindowFull, progressed);
            }
            if session.backlog_len() > 0 {
                return (Pull::More, progressed);
            }
        }
        if let Some(store) = &self.broker.store {
            match slot
                .mailbox
                .take_spilled(DRAIN_BATCH, store.durable_ticket())
            {
                Spill::Empty => {}
                Spill::Wait(ticket) => {
                    self.watch_durable();
                    return (Pull::WaitStore(ticket), false);
                }
                Spill::Taken(seqs) => {
                    match store.load_deliveries(&slot.client_id, &seqs) {
                        Ok((loaded, unreadable)) => {
                            if unreadable > 0 {
                                warn!(client_id = %slot.client_id, unreadable, "queued messages in the store could not be read and were skipped");
                            }
                            for d in loaded {
                                session.enqueue(d);
                            }
                        }
                        Err(e) => {
                            // They stay on disk and come back at the next start.
                            error!(client_id = %slot.client_id, error = %e, messages = seqs.len(), "cannot read queued messages from the store");
                        }
                    }
                    return (Pull::More, true);
                }
            }
        }
        // Called only below the high water mark: what is taken fills the write buffer to about
        // it, so a client's output stays bounded however large its messages are.
        let room = WRITE_HIGH_WATER.saturating_sub(self.write_buf.len());
        let (pull, moved) = slot.mailbox.drain_into(session, now, DRAIN_BATCH, room);
        (pull, moved > 0)
    }

    /// Decodes and handles every complete packet in the read buffer; while publishing is
    /// paused, holds back every packet but acknowledgements and pings.
    fn handle_input(
        &mut self,
        session: &mut Session,
        slot: &Arc<crate::registry::SessionSlot>,
    ) -> Option<End> {
        let now = Instant::now();
        // The level may have changed while the task slept: one load per read.
        self.note_overload();
        loop {
            let before = self.read_buf.len();
            let packet = match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(p)) => p,
                Ok(None) => return None,
                Err(e) => return Some(End::Decode(e)),
            };
            if let Packet::Publish(p) = &packet {
                let count = &mut self.tally.publishes_received[p.qos as usize];
                *count = count.wrapping_add(1);
            }
            if let (Some(budget), Packet::Publish(_)) = (&mut self.budget, &packet) {
                let size = before.saturating_sub(self.read_buf.len());
                match budget.charge(size, now) {
                    OverBudget::No => {}
                    OverBudget::Pause(wait) => {
                        // Handled now, paid for by not reading until the debt is gone.
                        let until = tokio::time::Instant::from_std(now + wait);
                        self.throttled_until =
                            Some(self.throttled_until.map_or(until, |t| t.max(until)));
                    }
                    OverBudget::Disconnect => return Some(End::RateExceeded),
                }
            }
            let paused =
                self.congested.is_some() || self.overload_pause || !self.deferred.is_empty();
            if paused && !passes_deferred(&packet) {
                session.note_received(now);
                self.deferred_bytes += deferred_weight(&packet);
                self.deferred.push_back(packet);
                continue;
            }
            if let Some(end) = self.handle_packet(session, slot, packet, now) {
                return Some(end);
            }
        }
    }

    /// Handles held-back packets in order until none is left or, unless `all`, publishing
    /// pauses again.
    fn handle_deferred(
        &mut self,
        session: &mut Session,
        slot: &Arc<crate::registry::SessionSlot>,
        all: bool,
    ) -> Option<End> {
        let now = Instant::now();
        while all || (self.congested.is_none() && !self.overload_pause) {
            let Some(packet) = self.deferred.pop_front() else {
                break;
            };
            self.deferred_bytes -= deferred_weight(&packet);
            if let Some(end) = self.handle_packet(session, slot, packet, now) {
                return Some(end);
            }
        }
        None
    }

    // Inlined into its callers: a packet is a few hundred bytes, and passing it down one
    // more call by value costs a copy per packet (measured: 1.7% of the broker's time).
    #[inline(always)]
    fn handle_packet(
        &mut self,
        session: &mut Session,
        slot: &Arc<crate::registry::SessionSlot>,
        packet: Packet,
        now: Instant,
    ) -> Option<End> {
        if let Packet::PubRel(p) = &packet {
            self.release_inbound_qos2(slot, p.packet_id);
        }
        match session.handle_packet(packet, now) {
            Ok(None) => None,
            Ok(Some(action)) => self.apply(session, slot, action),
            Err(e) => Some(End::Session(e)),
        }
    }

    /// PUBCOMP frees a QoS 2 packet id for a new message: a restarted broker must not take
    /// that one for a resend of the old, so the id's release is durable before PUBCOMP goes.
    fn release_inbound_qos2(&mut self, slot: &SessionSlot, packet_id: vane_proto::PacketId) {
        if persistence::is_persistent(slot) && self.broker.store.is_some() {
            self.ops.push(Op::DeleteInboundQos2 {
                client_id: slot.client_id.clone(),
                packet_id,
            });
            self.ops_gate = true;
        }
    }

    fn apply(
        &mut self,
        session: &mut Session,
        slot: &Arc<crate::registry::SessionSlot>,
        action: Action,
    ) -> Option<End> {
        match action {
            Action::Publish { message, ack } => {
                if self.overload_refuse {
                    return self.refuse_overloaded(session, ack, &message);
                }
                if let Some(vane_core::session::PendingAck::PubRec(packet_id)) = ack {
                    if persistence::is_persistent(slot) && self.broker.store.is_some() {
                        // [MQTT-4.3.3-9] kept with the message, so that a resend after a
                        // restart is recognised and not forwarded twice.
                        self.ops.push(Op::PutInboundQos2 {
                            client_id: slot.client_id.clone(),
                            packet_id,
                        });
                    }
                }
                let had_ops = !self.ops.is_empty();
                let published = self
                    .broker
                    .publish(message, &mut self.scratch, &mut self.ops);
                if let Some(ticket) = published.ticket {
                    self.hold_output_until(ticket);
                } else if had_ops && !self.ops.is_empty() {
                    self.ops_gate = true;
                }
                if self.congested.is_none() {
                    self.congested = published.congested;
                }
                if let Some(ack) = ack {
                    match published.routed {
                        Routed::Delivered => session.publish_routed(ack, true),
                        Routed::NoReceivers => session.publish_routed(ack, false),
                        // Every receiver's queue is full and refuses new messages: the
                        // publisher hears it (MQTT 5.0; a 3.x publisher gets a plain ack).
                        Routed::Refused => {
                            self.broker
                                .metrics
                                .publish_refused(PublishRefusedCause::QueueFull);
                            session.publish_refused(ack, PubAckReason::QuotaExceeded)
                        }
                    }
                }
            }
            Action::Subscribe(subs) => {
                self.broker
                    .index_subscriptions(slot, subs.iter().map(|s| &s.subscription));
                for s in &subs {
                    self.queue_retained(session, s);
                }
                self.save_session(session, slot);
            }
            Action::Unsubscribe(filters) => {
                {
                    let mut index = self.broker.index.write();
                    for f in &filters {
                        index.unsubscribe(f, slot.id);
                    }
                }
                self.save_session(session, slot);
            }
            Action::Disconnect { reason } => return Some(End::ClientDisconnect(reason)),
            Action::Auth(auth) => {
                let Some(original) = &self.authenticated else {
                    return Some(End::Session(SessionError::UnexpectedAuth));
                };
                match self
                    .reauth
                    .handle(&self.broker, original, session.client_id(), auth)
                {
                    Ok(reply) => session.send(reply),
                    Err(reason) => return Some(End::Auth(reason)),
                }
            }
        }
        None
    }

    /// Refuses a publish while the broker is over its memory budget; counted, not routed.
    /// QoS 1/2: MQTT 5.0 with PUBACK/PUBREC 0x97 Quota exceeded; MQTT 3.x cannot be told, so
    /// its connection is closed with the message unacknowledged (the client resends it). QoS
    /// 0: dropped.
    fn refuse_overloaded(
        &mut self,
        session: &mut Session,
        ack: Option<vane_core::session::PendingAck>,
        message: &vane_core::Message,
    ) -> Option<End> {
        let overload = &self.broker.overload;
        let Some(ack) = ack else {
            overload.dropped_qos0.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        overload.refused_publishes.fetch_add(1, Ordering::Relaxed);
        if !session.version().is_v5() {
            return Some(End::Overloaded);
        }
        debug!(client_id = %session.client_id(), topic = %message.topic, "publish refused with 0x97: memory overload");
        session.publish_refused(ack, PubAckReason::QuotaExceeded);
        None
    }

    /// Queues the retained messages a new subscription receives [MQTT-3.3.1-6], as MQTT 5.0
    /// Retain Handling asks [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11].
    fn queue_retained(&mut self, session: &mut Session, s: &NewSubscription) {
        let sub = &s.subscription;
        if sub.filter.share_group().is_some() {
            // Retained messages are not sent for a shared subscription (MQTT 5.0 section 4.8.2).
            return;
        }
        let send = match sub.options.retain_handling {
            RetainHandling::SendAtSubscribe => true,
            RetainHandling::SendIfNew => !s.existed,
            RetainHandling::DoNotSend => false,
        };
        if !send {
            return;
        }
        let mut matches = Vec::new();
        self.broker
            .retained
            .read()
            .matches_into(&sub.filter, &mut matches);
        // Expired ones are dropped as they come up (`Session::deliver`).
        session.enqueue_retained(matches, sub.options.qos, sub.subscription_id);
    }

    /// Writes (or deletes) the session's store record when a connection begins: a persistent
    /// session is saved; a session that replaced a stored one (Clean Start) deletes it first.
    fn store_connected(&mut self, session: &Session, slot: &SessionSlot, session_present: bool) {
        if self.broker.store.is_none() {
            return;
        }
        let was_stored = persistence::is_persistent(slot);
        if was_stored && (!session_present || session.session_expiry() == 0) {
            self.ops.push(Op::DeleteSession(slot.client_id.clone()));
            slot.persistent.store(false, Ordering::Relaxed);
        }
        if session.session_expiry() > 0 {
            slot.persistent.store(true, Ordering::Relaxed);
            self.ops
                .push(persistence::session_op(session, slot, None, false));
        }
    }

    /// Saves the session's subscriptions; the SUBACK or UNSUBACK waits for it.
    fn save_session(&mut self, session: &Session, slot: &SessionSlot) {
        if self.broker.store.is_some() && persistence::is_persistent(slot) {
            self.ops
                .push(persistence::session_op(session, slot, None, false));
            self.ops_gate = true;
        }
    }

    /// Submits the store operations gathered so far, with those for the session's stored
    /// deliveries; output waits for them when an acknowledgement depends on them.
    fn flush_ops(&mut self, session: &mut Session) {
        let Some(store) = &self.broker.store else {
            self.ops.clear();
            return;
        };
        if session.has_store_events() {
            session.take_store_events(&mut self.events);
            if persistence::event_ops(session.client_id(), &mut self.events, &mut self.ops) {
                self.ops_gate = true;
            }
        }
        if self.ops.is_empty() {
            return;
        }
        let ticket = store.submit(std::mem::take(&mut self.ops));
        if std::mem::take(&mut self.ops_gate) {
            self.hold_output_until(ticket);
        }
    }

    /// Holds everything written to the client from now on until `ticket` is durable.
    fn hold_output_until(&mut self, ticket: Ticket) {
        self.gate = self.gate.max(ticket);
        self.watch_durable();
    }

    /// Subscribes to the store's durable ticket, once per connection that ever waits for it
    /// (most never do, and keep no receiver).
    fn watch_durable(&mut self) {
        if self.durable.is_none() {
            self.durable = self.broker.store.as_ref().map(Store::watch);
        }
    }

    /// When the store has more operations waiting for the disk than it should, the ticket
    /// whose durability means it has made progress: reading pauses until then.
    fn store_behind(&mut self) -> Option<Ticket> {
        let store = self.broker.store.as_ref()?;
        if store.pending_ops() <= STORE_PENDING_LIMIT {
            return None;
        }
        let progress = store.durable_ticket() + 1;
        self.watch_durable();
        Some(progress)
    }

    /// True when nothing written to the client waits for the store.
    fn gate_open(&mut self) -> bool {
        if self.gate == 0 {
            return true;
        }
        let durable = self
            .broker
            .store
            .as_ref()
            .is_none_or(|s| s.is_durable(self.gate));
        if durable {
            self.gate = 0;
        }
        durable
    }

    /// Sends what is owed before the close: pending output and, for MQTT 5.0, a DISCONNECT
    /// with the server's reason. Bounded in time so a stuck client cannot hold the task.
    async fn finish(&mut self, session: &mut Session, end: &End, problem_info: bool) {
        if session.version().is_v5() {
            if let Some(reason) = end.server_reason() {
                let mut disconnect = Disconnect::new(reason);
                let redirect = &self.broker.config.redirect;
                let migrate = redirect.when == vane_config::RedirectWhen::Shutdown
                    && !redirect.server_reference.is_empty();
                if matches!(end, End::Shutdown) && migrate {
                    // MQTT 5.0 section 4.11: send the client on to the configured server.
                    disconnect.reason = if redirect.permanent {
                        DisconnectReason::ServerMoved
                    } else {
                        DisconnectReason::UseAnotherServer
                    };
                    disconnect.properties.server_reference =
                        Some(redirect.server_reference.as_str().into());
                }
                if problem_info {
                    disconnect.properties.reason_string = Some(end.describe().into());
                }
                session.send(Packet::Disconnect(disconnect));
            }
        }
        let _ = session.write_transmits(Instant::now(), &mut self.write_buf);
        self.flush_ops(session);
        if !self.gate_open() {
            let gate = self.gate;
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                wait_durable(self.durable.as_mut(), gate),
            )
            .await;
            if !self.gate_open() {
                // Never acknowledge what is not on disk: the client resends it instead.
                self.write_buf.clear();
            }
        }
        let flush = async {
            while !self.write_buf.is_empty() {
                if self
                    .writer
                    .write_buf(&mut self.write_buf)
                    .await
                    .unwrap_or(0)
                    == 0
                {
                    break;
                }
            }
            let _ = self.writer.shutdown().await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await;
    }
}

/// Packets handled at once even while publishing is paused: they complete flows already under
/// way and never route a message, and order relative to held-back packets does not matter.
fn passes_deferred(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::PingReq
    )
}

/// What a held-back packet counts against [`DEFERRED_LIMIT`].
fn deferred_weight(packet: &Packet) -> usize {
    match packet {
        Packet::Publish(p) => 16 + p.topic.len() + p.payload.len(),
        _ => 64,
    }
}

/// Waits until the store has made `ticket` durable.
/// Also returns after a second, so that a store that failed (and will make nothing durable
/// again) is noticed.
async fn wait_durable(durable: Option<&mut watch::Receiver<Ticket>>, ticket: Ticket) {
    let Some(rx) = durable else {
        return std::future::pending().await;
    };
    let closed = matches!(
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            rx.wait_for(|t| *t >= ticket),
        )
        .await,
        Ok(Err(_))
    );
    if closed {
        // The store is closing: nothing more becomes durable.
        std::future::pending::<()>().await;
    }
}

/// Waits for a congested receiver's queue to drain, or for the deadline.
async fn wait_for_space(receiver: Option<&Subscriber>, until: Option<Instant>) {
    match (receiver, until) {
        // Boxed: the select! holds this future in every connection's task, but it only runs
        // under backpressure.
        (Some(r), Some(until)) => Box::pin(r.mailbox.space_or(until)).await,
        _ => std::future::pending().await,
    }
}

/// Waits for a ban list reload (the receiver, to wait for the next); `None` when none can
/// come any more.
async fn bans_reloaded(watch: Option<&mut BanWatch>) -> Option<watch::Receiver<u64>> {
    match watch {
        Some(w) => w.next.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Waits until the memory overload level is no longer shedding.
async fn overload_changed(broker: &Broker) {
    // Boxed: the select! holds this future in every connection's task, but it only runs
    // under overload.
    Box::pin(
        broker
            .overload
            .changed_from(crate::overload::Level::Shedding),
    )
    .await
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
