//! The check behind the `session` fuzz target (`fuzz/fuzz_targets/session.rs`), shared with the
//! test that replays its corpus and random inputs (`tests/fuzz_session.rs`). Not part of the
//! supported API.
//!
//! An input drives one [`Session`] the way a connection and the broker around it would. Its
//! first two bytes configure the broker and the client's CONNECT:
//!
//! | byte | bits | meaning |
//! | --- | --- | --- |
//! | 0 | 0-1 | protocol version: 0 MQTT 3.1, 1 MQTT 3.1.1, 2 and 3 MQTT 5.0 |
//! | 0 | 2-4 | the broker's `max_inflight`: 1, 2, 3, 4, 8, 16, 64 or 1024 |
//! | 0 | 5-6 | the broker's Receive Maximum: 1, 2, 4 or 1024 |
//! | 0 | 7 | the broker's Topic Alias Maximum: 4 or 0 |
//! | 1 | | the client's CONNECT (see [`ClientLimits::from_byte`]), also on every reconnect |
//!
//! The rest is a sequence of operations, each an opcode byte and its arguments (see
//! [`Harness::step`]): packets from the client (built from fields, or decoded from raw bytes
//! by a [`Decoder`] of the session's version), deliveries to the client at QoS 0, 1 and 2,
//! moving deliveries that waited for window room, advancing the clock (keep alive, message
//! expiry), dropping and resuming the connection. After every operation everything the session
//! queued is written with [`Session::write_transmits`] and read back as the client would, and
//! [`check`] asserts:
//!
//! - nothing panics, and writing never fails to encode;
//! - every byte written decodes, with the client's protocol version, into whole packets no
//!   larger than the client's Maximum Packet Size [MQTT-3.1.2-24], and only packets a server
//!   may send;
//! - a new QoS 1/2 PUBLISH never reuses a packet identifier still in flight [MQTT-2.3.1-2];
//! - the client never has more unacknowledged QoS 1/2 PUBLISH packets from this connection
//!   than its Receive Maximum or the broker's `max_inflight` [MQTT-4.9.0-2], and the session's
//!   in-flight window never holds more than `max_inflight`;
//! - a server topic alias is between 1 and the client's Topic Alias Maximum [MQTT-3.3.2-17]
//!   and an empty topic uses only an alias set earlier on the same connection.
//!
//! The client's model of what is in flight forgets an identifier whenever the client sends an
//! acknowledgement the broker may take as completing it, so a broken rule in the input never
//! makes a correct session fail the check.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use vane_proto::{
    ByteString, Connect, Decoder, Disconnect, DisconnectReason, Packet, PacketId, ProtocolVersion,
    PubAck, PubAckReason, PubComp, PubRec, PubRecReason, PubRel, Publish, QoS, RetainHandling,
    Subscribe, SubscribeProperties, SubscriptionOptions, Unsubscribe, DEFAULT_MAX_PACKET_SIZE,
};

use crate::message::{Delivery, Message};
use crate::session::{Action, Session, SessionConfig};

/// What one input exercised, for tests that want to know the seeds reach the interesting
/// states.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Operations run.
    pub operations: usize,
    /// Packets the client read from the session.
    pub packets_read: usize,
    /// QoS 1/2 PUBLISH packets the client read.
    pub qos_publishes_read: usize,
    /// The most unacknowledged QoS 1/2 PUBLISH packets the client held at once.
    pub most_unacknowledged: usize,
    /// Deliveries handed back because the window was full.
    pub window_full: usize,
    /// Connections ended by a session error.
    pub session_errors: usize,
    /// Connections resumed on the same session.
    pub resumes: usize,
}

/// The client's CONNECT limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Receive Maximum (MQTT 5.0).
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size (MQTT 5.0).
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum (MQTT 5.0).
    pub topic_alias_maximum: Option<u16>,
    /// Keep alive in seconds.
    pub keep_alive: u16,
}

impl ClientLimits {
    /// Bits 0-1: Receive Maximum none, 1, 2 or 5; bits 2-3: Maximum Packet Size none, 64, 128
    /// or 300 bytes; bits 4-5: Topic Alias Maximum none, 1, 2 or 3; bits 6-7: keep alive 0, 1,
    /// 2 or 60 seconds.
    pub fn from_byte(b: u8) -> ClientLimits {
        ClientLimits {
            receive_maximum: [None, Some(1), Some(2), Some(5)][usize::from(b & 3)],
            maximum_packet_size: [None, Some(64), Some(128), Some(300)][usize::from((b >> 2) & 3)],
            topic_alias_maximum: [None, Some(1), Some(2), Some(3)][usize::from((b >> 4) & 3)],
            keep_alive: [0, 1, 2, 60][usize::from(b >> 6)],
        }
    }
}

/// The input, read a byte at a time; past the end every byte is 0 and [`Input::done`] is true.
struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let start = self.pos.min(self.data.len());
        let end = (self.pos + n).min(self.data.len());
        self.pos += n;
        &self.data[start..end]
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// Where an identifier the client received stands, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// QoS 1 PUBLISH received, PUBACK not sent.
    Qos1,
    /// QoS 2 PUBLISH received, PUBREC not sent.
    Qos2,
    /// PUBREC sent, PUBCOMP not sent.
    Received,
}

const TOPICS: [&str; 5] = [
    "a",
    "a/b",
    "sport/tennis/player1",
    "$SYS/x",
    "a-topic-long-enough-that-an-alias-saves-many-bytes/and/then/some/more/levels/x",
];
const FILTERS: [&str; 8] = [
    "a",
    "a/#",
    "+/b",
    "#",
    "$share/g/a",
    "a/#/b",
    "",
    "sport/+/+",
];

/// One session, the connection around it and the client's view of it.
struct Harness {
    version: ProtocolVersion,
    config: SessionConfig,
    limits: ClientLimits,
    session: Session,
    next_session: u64,
    now: Instant,
    connected: bool,
    /// Deliveries waiting for window room, in order (the client's mailbox).
    waiting: VecDeque<Delivery>,
    next_seq: u64,
    /// Identifiers in flight as the client sees them; kept across reconnects.
    in_flight: BTreeMap<u16, Flow>,
    /// QoS 1/2 PUBLISH packets read on this connection and not yet acknowledged.
    unacknowledged: HashSet<u16>,
    /// Topic aliases the server set on this connection.
    aliases: HashMap<u16, String>,
    stats: Stats,
}

impl Harness {
    fn new(selector: u8, client: u8) -> Harness {
        let version = match selector & 3 {
            0 => ProtocolVersion::V3_1,
            1 => ProtocolVersion::V3_1_1,
            _ => ProtocolVersion::V5,
        };
        let config = SessionConfig {
            max_inflight: [1, 2, 3, 4, 8, 16, 64, 1024][usize::from((selector >> 2) & 7)],
            receive_maximum: [1, 2, 4, 1024][usize::from((selector >> 5) & 3)],
            topic_alias_maximum: if selector & 0x80 == 0 { 4 } else { 0 },
            ..SessionConfig::default()
        };
        let now = Instant::now();
        let mut h = Harness {
            version,
            config: config.clone(),
            limits: ClientLimits::from_byte(client),
            session: Session::new(1, "fuzz".into(), config, now),
            next_session: 2,
            now,
            connected: false,
            waiting: VecDeque::new(),
            next_seq: 1,
            in_flight: BTreeMap::new(),
            unacknowledged: HashSet::new(),
            aliases: HashMap::new(),
            stats: Stats::default(),
        };
        // Persistent, so that a later connection can resume it; the session is new either way.
        h.connect(client, false);
        h
    }

    fn connect_packet(&self, clean_start: bool) -> Connect {
        let mut c = Connect::new(self.version, "fuzz");
        c.clean_start = clean_start;
        c.keep_alive = self.limits.keep_alive;
        if self.version.is_v5() {
            c.properties.receive_maximum = self.limits.receive_maximum;
            c.properties.maximum_packet_size = self.limits.maximum_packet_size;
            c.properties.topic_alias_maximum = self.limits.topic_alias_maximum;
            c.properties.session_expiry_interval = Some(if clean_start { 0 } else { 3600 });
        }
        c
    }

    /// A new connection: a fresh session for a clean start or one that had expired, else the
    /// old one resumed with its in-flight messages resent.
    fn connect(&mut self, client: u8, clean_start: bool) {
        self.limits = ClientLimits::from_byte(client);
        let connect = self.connect_packet(clean_start);
        let fresh = clean_start || self.session.session_expiry() == 0;
        if fresh {
            self.session = Session::new(
                self.next_session,
                "fuzz".into(),
                self.config.clone(),
                self.now,
            );
            self.next_session += 1;
            self.waiting.clear();
            self.in_flight.clear();
        }
        self.session.connect(&connect, self.now);
        if !fresh {
            self.stats.resumes += 1;
            self.session.resend_inflight();
        }
        self.connected = true;
        self.unacknowledged.clear();
        self.aliases.clear();
    }

    fn drop_connection(&mut self) {
        self.connected = false;
        // A will is taken when the connection ends; what matters here is that it can be.
        let _ = self.session.take_will(self.now);
    }

    /// The window the client's Receive Maximum and the broker's `max_inflight` allow.
    fn window(&self) -> usize {
        let client = if self.version.is_v5() {
            self.limits.receive_maximum.unwrap_or(u16::MAX)
        } else {
            u16::MAX
        };
        usize::from(self.config.max_inflight.min(client).max(1))
    }

    /// Hands a packet from the client to the session and does what the broker would.
    fn client_sends(&mut self, packet: Packet, input: &mut Input<'_>) {
        if !self.connected {
            return;
        }
        self.client_model_sends(&packet);
        match self.session.handle_packet(packet, self.now) {
            Err(e) => {
                let _ = e.disconnect_reason();
                self.stats.session_errors += 1;
                self.drop_connection();
            }
            Ok(None) => {}
            Ok(Some(Action::Publish { message, ack })) => {
                let b = input.byte();
                if let Some(ack) = ack {
                    if b & 1 == 0 {
                        self.session.publish_routed(ack, b & 2 == 0);
                    } else {
                        self.session
                            .publish_refused(ack, PubAckReason::NotAuthorized);
                    }
                }
                if b & 4 != 0 {
                    // Routed back to this client, as a subscription of its own would.
                    let qos = message.qos;
                    self.offer(delivery(Arc::new(message), qos, false, Vec::new(), None));
                }
            }
            Ok(Some(Action::Subscribe(subscriptions))) => {
                for s in subscriptions {
                    let n = usize::from(input.byte() % 4);
                    let retained = (0..n)
                        .map(|i| Arc::new(message(TOPICS[i], QoS::ExactlyOnce, 10, self.now)))
                        .collect();
                    self.session.enqueue_retained(
                        retained,
                        s.subscription.options.qos,
                        s.subscription.subscription_id,
                    );
                }
            }
            Ok(Some(Action::Disconnect { .. })) => self.drop_connection(),
            Ok(Some(Action::Unsubscribe(_) | Action::Auth(_))) => {}
        }
    }

    /// What the client's model learns from an acknowledgement it sends: anything that may
    /// complete an identifier forgets it.
    fn client_model_sends(&mut self, packet: &Packet) {
        match packet {
            Packet::PubAck(a) => self.forget(a.packet_id),
            Packet::PubComp(c) => self.forget(c.packet_id),
            Packet::PubRec(r) => {
                let id = r.packet_id.get();
                if !r.reason.is_error() && self.in_flight.get(&id) == Some(&Flow::Qos2) {
                    self.in_flight.insert(id, Flow::Received);
                } else {
                    self.forget(r.packet_id);
                }
            }
            _ => {}
        }
    }

    fn forget(&mut self, id: PacketId) {
        self.in_flight.remove(&id.get());
        self.unacknowledged.remove(&id.get());
    }

    /// A delivery from the broker's routing: in order behind those already waiting.
    fn offer(&mut self, d: Delivery) {
        if !self.connected || !self.waiting.is_empty() {
            self.waiting.push_back(d);
            return;
        }
        if let Err(d) = self.session.deliver(d, self.now) {
            self.stats.window_full += 1;
            self.waiting.push_back(d);
        }
    }

    /// Moves waiting deliveries into the window while it has room.
    fn flush_waiting(&mut self, max: usize) {
        if !self.connected {
            return;
        }
        self.session.flush_backlog(self.now, max);
        for _ in 0..max {
            let Some(d) = self.waiting.pop_front() else {
                return;
            };
            if let Err(d) = self.session.deliver(d, self.now) {
                self.stats.window_full += 1;
                self.waiting.push_front(d);
                return;
            }
        }
    }

    /// One operation; see the opcodes below.
    fn step(&mut self, input: &mut Input<'_>) {
        self.stats.operations += 1;
        match input.byte() % 12 {
            // Raw bytes from the client, decoded with the session's version.
            0 => {
                let n = usize::from(input.byte() % 64);
                let bytes = input.bytes(n).to_vec();
                let mut buf = BytesMut::from(&bytes[..]);
                let mut decoder = Decoder::with_version(self.version, DEFAULT_MAX_PACKET_SIZE);
                while let Ok(Some(packet)) = decoder.decode(&mut buf) {
                    self.client_sends(packet, input);
                }
            }
            // A PUBLISH from the client.
            1 => {
                let p = self.client_publish(input);
                self.client_sends(Packet::Publish(p), input);
            }
            // A SUBSCRIBE.
            2 => {
                let (a, b) = (input.byte(), input.byte());
                let mut filters = vec![(FILTERS[usize::from(a % 8)].into(), options(a >> 3))];
                if b & 1 != 0 {
                    filters.push((FILTERS[usize::from(b >> 1) % 8].into(), options(b >> 4)));
                }
                let subscription_identifier = match b >> 5 {
                    0 | 1 => None,
                    n => Some(u32::from(n)),
                };
                let packet = Packet::Subscribe(Subscribe {
                    packet_id: packet_id(input.byte()),
                    properties: SubscribeProperties {
                        subscription_identifier: subscription_identifier
                            .filter(|_| self.version.is_v5()),
                        user_properties: Vec::new(),
                    },
                    filters,
                });
                self.client_sends(packet, input);
            }
            // An UNSUBSCRIBE.
            3 => {
                let a = input.byte();
                let packet = Packet::Unsubscribe(Unsubscribe {
                    packet_id: packet_id(a >> 3),
                    user_properties: Vec::new(),
                    filters: vec![FILTERS[usize::from(a % 8)].into()],
                });
                self.client_sends(packet, input);
            }
            // The right acknowledgement for an identifier the client holds.
            4 => {
                let (a, b) = (input.byte(), input.byte());
                if self.in_flight.is_empty() {
                    return;
                }
                let index = usize::from(a) % self.in_flight.len();
                let Some((&id, &flow)) = self.in_flight.iter().nth(index) else {
                    return;
                };
                let Some(id) = PacketId::new(id) else {
                    return;
                };
                let packet = match flow {
                    Flow::Qos1 => Packet::PubAck(PubAck::new(id)),
                    Flow::Qos2 if b & 1 == 0 => Packet::PubRec(PubRec::new(id)),
                    Flow::Qos2 => {
                        Packet::PubRec(PubRec::with_reason(id, PubRecReason::UnspecifiedError))
                    }
                    Flow::Received => Packet::PubComp(PubComp::new(id)),
                };
                self.client_sends(packet, input);
            }
            // Any acknowledgement for any small identifier.
            5 => {
                let a = input.byte();
                let id = packet_id(a >> 2);
                let packet = match a & 3 {
                    0 => Packet::PubAck(PubAck::new(id)),
                    1 => Packet::PubRec(PubRec::new(id)),
                    2 => Packet::PubRel(PubRel::new(id)),
                    _ => Packet::PubComp(PubComp::new(id)),
                };
                self.client_sends(packet, input);
            }
            // A message for the client from the broker's routing.
            6 => {
                let (a, b, c) = (input.byte(), input.byte(), input.byte());
                let qos = QoS::from_u8(a % 3).unwrap_or(QoS::AtMostOnce);
                let mut m = message(
                    TOPICS[usize::from(a >> 2) % TOPICS.len()],
                    qos,
                    usize::from(b) * 2,
                    self.now,
                );
                if c & 3 == 3 {
                    m.properties.message_expiry_interval = Some(1 + u32::from(c >> 2) % 4);
                }
                let ids = if c & 4 != 0 {
                    vec![1, u32::from(c)]
                } else {
                    Vec::new()
                };
                let stored = (c & 8 != 0).then(|| {
                    self.next_seq += 1;
                    self.next_seq
                });
                let retain = a & 0x80 != 0;
                self.offer(delivery(Arc::new(m), qos, retain, ids, stored));
            }
            // Deliveries that waited for room move into the window.
            7 => {
                let max = usize::from(input.byte() % 8) + 1;
                self.flush_waiting(max);
            }
            // PINGREQ.
            8 => self.client_sends(Packet::PingReq, input),
            // The clock moves; the keep alive may run out.
            9 => {
                let a = input.byte();
                let step = if a & 0x80 == 0 {
                    Duration::from_millis(u64::from(a) * 20)
                } else {
                    Duration::from_secs(u64::from(a & 0x7F))
                };
                self.now += step;
                if self.connected {
                    let _ = self.session.poll_timeout();
                    if let Err(e) = self.session.handle_timeout(self.now) {
                        let _ = e.disconnect_reason();
                        self.stats.session_errors += 1;
                        self.drop_connection();
                    }
                }
            }
            // The connection ends: dropped, or a DISCONNECT from the client.
            10 => {
                let a = input.byte();
                if a & 1 == 0 {
                    self.drop_connection();
                } else {
                    let mut d = Disconnect::new(if a & 2 == 0 {
                        DisconnectReason::NormalDisconnection
                    } else {
                        DisconnectReason::DisconnectWithWillMessage
                    });
                    if a & 4 != 0 && self.version.is_v5() {
                        d.properties.session_expiry_interval = Some(u32::from(a >> 3));
                    }
                    self.client_sends(Packet::Disconnect(d), input);
                }
            }
            // A new connection for the session, clean or resuming.
            _ => {
                let (a, b) = (input.byte(), input.byte());
                self.drop_connection();
                self.connect(b, a & 1 == 0 && a & 2 == 0);
            }
        }
        let mut events = Vec::new();
        self.session.take_store_events(&mut events);
        self.read_what_is_written();
    }

    fn client_publish(&self, input: &mut Input<'_>) -> Publish {
        let (a, b, c) = (input.byte(), input.byte(), input.byte());
        let qos = QoS::from_u8(a % 3).unwrap_or(QoS::AtMostOnce);
        let mut p = Publish::new(
            TOPICS[usize::from(a >> 2) % TOPICS.len()],
            Bytes::from(vec![b'x'; usize::from(c % 32)]),
        );
        p.qos = qos;
        p.retain = a & 0x80 != 0;
        p.dup = qos != QoS::AtMostOnce && b & 0x40 != 0;
        if qos != QoS::AtMostOnce {
            p.packet_id = Some(packet_id(b));
        }
        if self.version.is_v5() {
            if b & 0x80 != 0 {
                p.properties.topic_alias = Some(u16::from(c >> 5));
                if c & 0x10 != 0 {
                    p.topic = "".into();
                }
            }
            if c & 0x08 != 0 {
                p.properties.payload_format_indicator = Some(true);
                if c & 0x04 != 0 {
                    p.payload = Bytes::from_static(&[0xFF, 0xFE]);
                }
            }
        }
        p
    }

    /// Writes what the session queued and reads it back as the client, checking every
    /// invariant in the module docs.
    fn read_what_is_written(&mut self) {
        assert!(
            self.session.inflight_len() <= usize::from(self.config.max_inflight.max(1)),
            "{} in flight with max_inflight {}",
            self.session.inflight_len(),
            self.config.max_inflight
        );
        if !self.connected {
            return;
        }
        let mut buf = BytesMut::new();
        let written = match self.session.write_transmits(self.now, &mut buf) {
            Ok(n) => n,
            Err(e) => panic!("write_transmits failed to encode: {e}"),
        };
        let max = self
            .limits
            .maximum_packet_size
            .filter(|_| self.version.is_v5())
            .map_or(DEFAULT_MAX_PACKET_SIZE, |m| m as usize);
        let mut decoder = Decoder::with_version(self.version, max);
        let bytes = buf.clone();
        let mut read = 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    read += 1;
                    self.client_reads(packet);
                }
                Ok(None) => break,
                Err(e) => panic!(
                    "the session wrote bytes a {} client cannot decode: {e}; {bytes:02x?}",
                    self.version
                ),
            }
        }
        assert!(
            buf.is_empty(),
            "{} bytes of a partial packet written",
            buf.len()
        );
        assert_eq!(read, written, "packets written and read differ");
        self.stats.packets_read += read;
    }

    fn client_reads(&mut self, packet: Packet) {
        match packet {
            Packet::Publish(p) => self.client_reads_publish(p),
            Packet::PubRel(r) => {
                let id = r.packet_id.get();
                if self.in_flight.get(&id) == Some(&Flow::Qos1) {
                    panic!("PUBREL for packet id {id}, which is a QoS 1 delivery in flight");
                }
            }
            Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubComp(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp
            | Packet::Disconnect(_)
            | Packet::Auth(_) => {}
            other => panic!("the session sent a client-only packet: {other:?}"),
        }
    }

    fn client_reads_publish(&mut self, p: Publish) {
        if self.version.is_v5() {
            let allowed = self.limits.topic_alias_maximum.unwrap_or(0);
            if let Some(alias) = p.properties.topic_alias {
                assert!(
                    alias >= 1 && alias <= allowed,
                    "[MQTT-3.3.2-17] topic alias {alias} with a Topic Alias Maximum of {allowed}"
                );
                if p.topic.is_empty() {
                    assert!(
                        self.aliases.contains_key(&alias),
                        "topic alias {alias} used before it was set"
                    );
                } else {
                    self.aliases.insert(alias, p.topic.to_string());
                }
            } else {
                assert!(!p.topic.is_empty(), "empty topic without a topic alias");
            }
        }
        let Some(id) = p.packet_id else {
            return;
        };
        self.stats.qos_publishes_read += 1;
        let id = id.get();
        if !p.dup {
            assert!(
                !self.in_flight.contains_key(&id),
                "[MQTT-2.3.1-2] packet id {id} reused while in flight ({:?})",
                self.in_flight.get(&id)
            );
        }
        let flow = if p.qos == QoS::AtLeastOnce {
            Flow::Qos1
        } else {
            Flow::Qos2
        };
        // A resent QoS 2 PUBLISH the client already answered with PUBREC stays answered.
        self.in_flight.entry(id).or_insert(flow);
        self.unacknowledged.insert(id);
        let window = self.window();
        assert!(
            self.unacknowledged.len() <= window,
            "[MQTT-4.9.0-2] {} unacknowledged QoS 1/2 PUBLISH packets with a window of {window}",
            self.unacknowledged.len()
        );
        self.stats.most_unacknowledged = self
            .stats
            .most_unacknowledged
            .max(self.unacknowledged.len());
    }
}

fn packet_id(b: u8) -> PacketId {
    // Small identifiers, so that the client's packets collide with the session's.
    PacketId::new(u16::from(b % 16) + 1).unwrap_or_else(|| unreachable!("1 to 16"))
}

fn options(b: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(b % 3).unwrap_or(QoS::AtMostOnce),
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: if b & 16 != 0 {
            RetainHandling::SendIfNew
        } else {
            RetainHandling::SendAtSubscribe
        },
    }
}

fn message(topic: &str, qos: QoS, payload_len: usize, now: Instant) -> Message {
    Message {
        topic: ByteString::from(topic),
        payload: Bytes::from(vec![b'p'; payload_len]),
        qos,
        retain: false,
        properties: Default::default(),
        origin: 0,
        received: now,
    }
}

fn delivery(
    message: Arc<Message>,
    qos: QoS,
    retain: bool,
    subscription_ids: Vec<u32>,
    stored: Option<u64>,
) -> Delivery {
    Delivery {
        message,
        qos,
        retain,
        subscription_ids,
        shared: None,
        stored,
    }
}

/// The fuzz check on one input; see the module docs. Panics on any broken invariant and
/// returns what the input exercised.
pub fn check(data: &[u8]) -> Stats {
    let mut input = Input { data, pos: 0 };
    let selector = input.byte();
    let client = input.byte();
    let mut h = Harness::new(selector, client);
    h.read_what_is_written();
    // Inputs longer than this add nothing a shorter one could not.
    while !input.done() && h.stats.operations < 4096 {
        h.step(&mut input);
    }
    // The end: what still waits goes out to a connected client, acknowledged as it comes.
    for _ in 0..64 {
        if !h.connected || (h.waiting.is_empty() && h.in_flight.is_empty()) {
            break;
        }
        let ids: Vec<u16> = h.in_flight.keys().copied().collect();
        for _ in ids {
            let mut ack = Input {
                data: &[4, 0, 0],
                pos: 0,
            };
            h.step(&mut ack);
        }
        h.flush_waiting(64);
        h.read_what_is_written();
    }
    h.stats
}
