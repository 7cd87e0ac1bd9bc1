//! The per-client session state machine: QoS flows in both directions, subscriptions, keep
//! alive, will. Driven by `handle_*` calls with the current time; what it wants sent is taken
//! out with [`Session::write_transmits`], what it wants the broker to do is returned as an
//! [`Action`].

mod counts;
mod error;
mod inbound;
mod outbound;
mod policy;
mod subscriptions;
mod topic_alias;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vane_proto::{
    ByteString, Connect, DisconnectReason, Packet, PacketId, ProtocolVersion, QoS,
    SubscriptionOptions, TopicFilter,
};

pub use counts::SessionCounts;
pub use error::SessionError;
pub use outbound::Transmit;
pub use policy::TopicPolicy;

use topic_alias::TopicAliases;

use crate::message::Message;

/// Broker-wide settings a session follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most QoS 1/2 messages in flight to the client at once (lowered to the client's Receive
    /// Maximum in MQTT 5.0).
    pub max_inflight: u16,
    /// Highest QoS the broker grants and accepts.
    pub max_qos: QoS,
    /// Most QoS 2 publishes from the client awaiting PUBREL (the broker's Receive Maximum).
    pub receive_maximum: u16,
    /// Most topic aliases the client may set (MQTT 5.0).
    pub topic_alias_maximum: u16,
    /// Most subscriptions the client may hold; more get SUBACK 0x97 (MQTT 3.x: 0x80).
    /// 0: no limit.
    pub max_subscriptions: usize,
    /// Longest topic name or filter, in bytes (see [`Session::topic_exceeds_limits`]).
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter. 0: no limit.
    pub max_topic_levels: usize,
    /// Longest Session Expiry Interval, in seconds, the broker grants (`mqtt.max_session_expiry`);
    /// `u32::MAX`: no cap. Also ends MQTT 3.x persistent sessions, which would otherwise never
    /// expire.
    pub max_session_expiry: u32,
}

impl SessionConfig {
    /// True when a topic name or filter is longer than `max_topic_length` bytes or has more
    /// than `max_topic_levels` levels.
    pub fn topic_exceeds_limits(&self, topic: &str) -> bool {
        if topic.len() > self.max_topic_length {
            return true;
        }
        // A topic of n bytes has at most n + 1 levels: short topics, the usual case, are not
        // scanned.
        self.max_topic_levels != 0
            && topic.len() >= self.max_topic_levels
            && topic.bytes().filter(|&b| b == b'/').count() + 1 > self.max_topic_levels
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_inflight: 1024,
            max_qos: QoS::ExactlyOnce,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_subscriptions: 0,
            max_topic_length: 65_535,
            max_topic_levels: 0,
            max_session_expiry: u32::MAX,
        }
    }
}

/// A subscription as the session remembers it (to restore, to list, to remove on session end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSubscription {
    /// The filter.
    pub filter: TopicFilter,
    /// Its options, with the QoS as granted.
    pub options: SubscriptionOptions,
    /// Its subscription identifier (MQTT 5.0).
    pub subscription_id: Option<u32>,
}

/// The will message of the current connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The message to publish.
    pub message: Message,
    /// Will Delay Interval in seconds (MQTT 5.0).
    pub delay: u32,
}

/// The acknowledgement owed to a publisher once its message is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingAck {
    /// Send PUBACK for a QoS 1 publish.
    PubAck(PacketId),
    /// Send PUBREC for a QoS 2 publish.
    PubRec(PacketId),
}

/// What the broker must do after a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Route this message; then call [`Session::publish_routed`] with `ack` if there is one.
    Publish {
        /// The message.
        message: Message,
        /// The acknowledgement to send once routed.
        ack: Option<PendingAck>,
    },
    /// Add these subscriptions to the index and send matching retained messages. The SUBACK
    /// is already queued.
    Subscribe(Vec<NewSubscription>),
    /// Remove these filters from the index. The UNSUBACK is already queued.
    Unsubscribe(Vec<TopicFilter>),
    /// The client continues or starts (re-)authentication with the connection's method; the
    /// broker runs the exchange and answers with AUTH or DISCONNECT (MQTT 5.0 section 4.12).
    Auth(vane_proto::Auth),
    /// The client disconnected normally; end the connection.
    Disconnect {
        /// The client's reason (always normal in MQTT 3.x).
        reason: DisconnectReason,
    },
}

/// A subscription made by a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    /// The subscription.
    pub subscription: SessionSubscription,
    /// True when it replaced an existing subscription on the same filter.
    pub existed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InflightState {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    Qos1Sent,
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    Qos2Sent,
    /// PUBREL sent, PUBCOMP awaited.
    Released,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inflight {
    packet_id: PacketId,
    /// False for an entry waiting to be resent after a resume, while the window is full.
    sent: bool,
    state: InflightState,
    message: Arc<Message>,
    retain: bool,
    subscription_ids: Vec<u32>,
    shared: Option<Box<TopicFilter>>,
    /// The delivery's store record, for a persistent session.
    stored: Option<u64>,
}

/// What happened to a delivery that has a store record (see [`crate::Delivery::stored`]), for
/// the store to follow: taken out with [`Session::take_store_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreEvent {
    /// A QoS 2 delivery was given this packet id; the id must be durable before the PUBLISH
    /// goes out, so that a restarted broker resends it under the same id (exactly once).
    Assigned {
        /// The record.
        seq: u64,
        /// Its packet id.
        packet_id: PacketId,
    },
    /// PUBREC came for a QoS 2 delivery: from now on only PUBREL is resent, never the PUBLISH.
    Released {
        /// The record.
        seq: u64,
        /// Its packet id.
        packet_id: PacketId,
    },
    /// The delivery is complete (acknowledged, expired, refused or handed to another member
    /// of its shared group): its record can go.
    Completed {
        /// The record.
        seq: u64,
    },
}

/// Something waiting in the session's own queue.
#[derive(Debug)]
enum Backlogged {
    /// One delivery.
    One(crate::message::Delivery),
    /// The retained messages a new subscription receives, turned into deliveries only as the
    /// in-flight window takes them: a `#` subscription to a million retained messages costs a
    /// pointer per message while it waits, not a whole delivery.
    Retained {
        messages: VecDeque<Arc<Message>>,
        /// The QoS granted to the subscription.
        qos: QoS,
        subscription_id: Option<u32>,
    },
}

/// The state of one client session: everything that outlives a single packet.
#[derive(Debug)]
pub struct Session {
    id: u64,
    client_id: ByteString,
    version: ProtocolVersion,
    config: SessionConfig,
    keep_alive: Duration,
    last_received: Instant,
    subscriptions: HashMap<ByteString, SessionSubscription>,
    inflight: VecDeque<Inflight>,
    /// The Authentication Method of the current connection's CONNECT, if it used one.
    auth_method: Option<ByteString>,
    /// In-flight entries not (re)sent yet on this connection.
    unsent: usize,
    send_window: u16,
    next_packet_id: PacketId,
    inbound_qos2: HashSet<PacketId>,
    /// Topic aliases the client set (client to server).
    client_aliases: HashMap<u16, ByteString>,
    /// Topic aliases the server assigned (server to client), reset on every connection.
    server_aliases: TopicAliases,
    client_max_packet_size: Option<u32>,
    transmit: VecDeque<Transmit>,
    /// Deliveries owed to the client ahead of its mailbox (retained messages for a new
    /// subscription); kept with the session across reconnects.
    backlog: VecDeque<Backlogged>,
    /// Deliveries in `backlog`, counting each retained message of a run.
    backlog_count: usize,
    /// Session Expiry Interval in seconds: 0 ends the session with the connection, `u32::MAX`
    /// never expires. MQTT 3.x: 0 for a clean session, `u32::MAX` otherwise.
    session_expiry: u32,
    // Boxed: most sessions have no will, and a Message is a few hundred bytes.
    will: Option<Box<Will>>,
    dropped_oversize: u64,
    payload_format_invalid: u64,
    /// MQTT 5.0 QoS 0 PUBLISH packets dropped for a topic beyond the topic limits.
    topic_limit_dropped: u64,
    /// Events counted for the broker's metrics since its connection last took them.
    counts: SessionCounts,
    /// What happened to stored deliveries since the store last looked.
    store_events: Vec<StoreEvent>,
    /// In-flight packet ids restored from the store need not follow allocation order: until
    /// the window empties, allocation checks every in-flight id.
    irregular_ids: bool,
    /// The topic permissions of the current connection; `None` when nothing is checked.
    policy: Option<Arc<dyn policy::TopicPolicy>>,
}

impl Session {
    /// A new, empty session. `id` is unique among the broker's sessions.
    pub fn new(id: u64, client_id: ByteString, config: SessionConfig, now: Instant) -> Session {
        let send_window = config.max_inflight.max(1);
        Session {
            id,
            client_id,
            version: ProtocolVersion::V3_1_1,
            config,
            keep_alive: Duration::ZERO,
            last_received: now,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            unsent: 0,
            auth_method: None,
            send_window,
            next_packet_id: PacketId::new(1).unwrap_or_else(|| unreachable!("1 is non-zero")),
            inbound_qos2: HashSet::new(),
            client_aliases: HashMap::new(),
            server_aliases: TopicAliases::new(),
            client_max_packet_size: None,
            transmit: VecDeque::new(),
            backlog: VecDeque::new(),
            backlog_count: 0,
            session_expiry: 0,
            will: None,
            dropped_oversize: 0,
            payload_format_invalid: 0,
            topic_limit_dropped: 0,
            counts: SessionCounts::default(),
            store_events: Vec::new(),
            irregular_ids: false,
            policy: None,
        }
    }

    /// Binds the session to a new connection's CONNECT: protocol version, keep alive, will,
    /// flow-control limits. Topic aliases (both directions) and unsent packets of an earlier
    /// connection are forgotten [MQTT-3.3.2-7]; in-flight messages stay and are resent by
    /// [`Session::resend_inflight`]. The client's Topic Alias Maximum (MQTT 5.0) bounds the
    /// aliases the server uses on PUBLISH packets to it (see `topic_alias.rs`).
    pub fn connect(&mut self, connect: &Connect, now: Instant) {
        self.version = connect.protocol;
        self.keep_alive = Duration::from_secs(u64::from(connect.keep_alive));
        self.last_received = now;
        self.client_aliases.clear();
        self.server_aliases.reset(match connect.protocol {
            ProtocolVersion::V5 => connect.properties.topic_alias_maximum.unwrap_or(0),
            _ => 0,
        });
        self.transmit.clear();
        let client_window = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        self.send_window = self.config.max_inflight.min(client_window).max(1);
        self.client_max_packet_size = connect.properties.maximum_packet_size;
        // Detached: the CONNECT shares its connection's read buffer, which must not live on
        // for as long as the session does.
        self.auth_method = connect
            .properties
            .authentication_method
            .as_deref()
            .map(crate::message::detach);
        self.session_expiry = match connect.protocol {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            _ if connect.clean_start => 0,
            _ => u32::MAX,
        }
        .min(self.config.max_session_expiry);
        self.will = connect.will.as_ref().map(|w| {
            Box::new(Will {
                message: Message {
                    topic: w.topic.clone(),
                    payload: w.payload.clone(),
                    qos: w.qos,
                    retain: w.retain,
                    properties: vane_proto::PublishProperties {
                        payload_format_indicator: w.properties.payload_format_indicator,
                        message_expiry_interval: w.properties.message_expiry_interval,
                        content_type: w.properties.content_type.clone(),
                        response_topic: w.properties.response_topic.clone(),
                        correlation_data: w.properties.correlation_data.clone(),
                        user_properties: w.properties.user_properties.clone(),
                        ..Default::default()
                    },
                    origin: self.id,
                    received: now,
                }
                .detached(),
                delay: w.properties.will_delay_interval.unwrap_or(0),
            })
        });
    }

    /// Restores what a persistent session had when the broker stopped: protocol version and
    /// session expiry (its subscriptions come back with [`Session::restore_subscription`], its
    /// flows with [`Session::restore_inflight`] and [`Session::restore_inbound_qos2`]).
    pub fn restore(&mut self, version: ProtocolVersion, session_expiry: u32) {
        self.version = version;
        self.session_expiry = session_expiry.min(self.config.max_session_expiry);
    }

    /// Restores a QoS 2 packet id received and acknowledged with PUBREC before a restart: a
    /// resent PUBLISH with it is not forwarded again [MQTT-4.3.3-9].
    pub fn restore_inbound_qos2(&mut self, id: PacketId) {
        self.inbound_qos2.insert(id);
    }

    /// Takes what happened to stored deliveries since the last call, in order.
    pub fn take_store_events(&mut self, out: &mut Vec<StoreEvent>) {
        out.append(&mut self.store_events);
    }

    /// True when stored deliveries changed state since [`Session::take_store_events`].
    pub fn has_store_events(&self) -> bool {
        !self.store_events.is_empty()
    }

    /// The broker-unique session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client identifier.
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// The protocol version of the current (or last) connection.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Overrides the client's keep alive (the server's Server Keep Alive, MQTT 5.0 section
    /// 3.2.2.3.14): the connection is then held to `seconds`.
    pub fn set_keep_alive(&mut self, seconds: u16) {
        self.keep_alive = Duration::from_secs(u64::from(seconds));
    }

    /// The Session Expiry Interval in force: 0 means the session ends with the connection.
    pub fn session_expiry(&self) -> u32 {
        self.session_expiry
    }

    /// The session's settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Takes the will message to publish it at `now`, if the connection has one; after this it
    /// will not be sent. Its Message Expiry Interval counts from `now`, the moment the server
    /// publishes it (MQTT 5.0 section 3.1.3.2.4).
    pub fn take_will(&mut self, now: Instant) -> Option<Will> {
        let mut will = *self.will.take()?;
        will.message.received = now;
        Some(will)
    }

    /// Notes that a packet arrived at `now` (for the keep alive) that the connection holds to
    /// handle later, in order.
    pub fn note_received(&mut self, now: Instant) {
        self.last_received = now;
    }

    /// Handles one packet from the client.
    pub fn handle_packet(
        &mut self,
        packet: Packet,
        now: Instant,
    ) -> Result<Option<Action>, SessionError> {
        self.last_received = now;
        match packet {
            Packet::Publish(p) => self.handle_publish(p, now),
            Packet::PubAck(p) => {
                self.handle_puback(p.packet_id);
                Ok(None)
            }
            Packet::PubRec(p) => {
                self.handle_pubrec(p.packet_id, p.reason.is_error());
                Ok(None)
            }
            Packet::PubRel(p) => {
                self.handle_pubrel(p.packet_id);
                Ok(None)
            }
            Packet::PubComp(p) => {
                self.handle_pubcomp(p.packet_id);
                Ok(None)
            }
            Packet::Subscribe(s) => self.handle_subscribe(s),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u),
            Packet::PingReq => {
                self.send(Packet::PingResp);
                Ok(None)
            }
            Packet::Disconnect(d) => {
                if let Some(expiry) = d.properties.session_expiry_interval {
                    // [MQTT-3.14.2-2] a session that was to end with the connection cannot be
                    // given a lifetime at DISCONNECT.
                    if self.session_expiry == 0 && expiry != 0 {
                        return Err(SessionError::SessionExpiryRaised);
                    }
                    self.session_expiry = expiry.min(self.config.max_session_expiry);
                }
                // [MQTT-3.14.4-3] a normal DISCONNECT discards the will; v5 0x04 keeps it.
                if d.reason != DisconnectReason::DisconnectWithWillMessage {
                    self.will = None;
                }
                Ok(Some(Action::Disconnect { reason: d.reason }))
            }
            Packet::Connect(_) => Err(SessionError::SecondConnect),
            Packet::Auth(a) => {
                let Some(method) = &self.auth_method else {
                    return Err(SessionError::UnexpectedAuth);
                };
                // [MQTT-4.12.1-1] re-authentication uses the method of the CONNECT.
                if a.properties.authentication_method.as_ref() != Some(method) {
                    return Err(SessionError::AuthMethodChanged);
                }
                Ok(Some(Action::Auth(a)))
            }
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => Err(SessionError::ServerOnlyPacket(other.packet_type())),
        }
    }

    /// The instant by which [`Session::handle_timeout`] must be called: one and a half times
    /// the keep alive after the last packet [MQTT-3.1.2-24]. `None` when keep alive is off.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.keep_alive.is_zero() {
            None
        } else {
            Some(self.last_received + self.keep_alive * 3 / 2)
        }
    }

    /// Checks the keep alive; an error means the connection must be closed.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(SessionError::KeepAliveTimeout),
            _ => Ok(()),
        }
    }

    /// Queues a packet for the client.
    pub fn send(&mut self, packet: Packet) {
        self.transmit.push_back(Transmit::Packet(packet));
    }

    /// True when packets wait to be written.
    pub fn has_transmits(&self) -> bool {
        !self.transmit.is_empty()
    }
}

#[cfg(test)]
mod tests;
