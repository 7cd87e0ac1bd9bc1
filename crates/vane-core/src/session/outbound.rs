//! Messages to the client: the in-flight window of QoS 1/2 deliveries, their
//! acknowledgements, resending on resume, and encoding everything queued into one buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use vane_proto::{
    EncodeError, Packet, PacketId, ProtocolVersion, PubRel, PubRelReason, PublishRef, QoS,
};

use super::topic_alias::AliasChoice;
use super::{Backlogged, Inflight, InflightState, Session, StoreEvent};
use crate::message::{Delivery, Message};

/// Something queued for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "lives briefly in a reused queue; boxing control packets would allocate per PUBACK"
)]
pub enum Transmit {
    /// A control packet.
    Packet(Packet),
    /// A PUBLISH of a shared message, encoded for this client when written.
    Publish {
        /// The message.
        message: Arc<Message>,
        /// QoS to send at.
        qos: QoS,
        /// Packet id, for QoS 1/2.
        packet_id: Option<PacketId>,
        /// DUP flag.
        dup: bool,
        /// Retain flag to send.
        retain: bool,
        /// Subscription identifiers to send (MQTT 5.0).
        subscription_ids: Vec<u32>,
    },
}

impl Session {
    /// True while the in-flight window has room for another QoS 1/2 delivery.
    pub fn can_send(&self) -> bool {
        self.inflight.len() < usize::from(self.send_window)
    }

    /// QoS 1/2 deliveries sent and not yet completed.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Queues a delivery for sending. A QoS 1/2 delivery that does not fit in the in-flight
    /// window is handed back, to be offered again once acknowledgements free room. Expired
    /// messages are dropped.
    pub fn deliver(&mut self, d: Delivery, now: Instant) -> Result<(), Delivery> {
        if d.message.is_expired(now) {
            if let Some(seq) = d.stored {
                self.store_events.push(StoreEvent::Completed { seq });
            }
            super::SessionCounts::bump(&mut self.counts.expired);
            return Ok(());
        }
        // Permissions can change while the client is connected (an ACL reload): every
        // delivery, retained or queued, is checked as it goes out.
        if self.refuses_delivery(&d.message.topic, d.stored) {
            return Ok(());
        }
        if d.qos == QoS::AtMostOnce {
            self.transmit.push_back(Transmit::Publish {
                message: d.message,
                qos: QoS::AtMostOnce,
                packet_id: None,
                dup: false,
                retain: d.retain,
                subscription_ids: d.subscription_ids,
            });
            return Ok(());
        }
        if !self.can_send() {
            return Err(d);
        }
        let packet_id = self.allocate_packet_id();
        let state = if d.qos == QoS::AtLeastOnce {
            InflightState::Qos1Sent
        } else {
            if let Some(seq) = d.stored {
                self.store_events
                    .push(StoreEvent::Assigned { seq, packet_id });
            }
            InflightState::Qos2Sent
        };
        self.inflight.push_back(Inflight {
            packet_id,
            sent: true,
            state,
            message: d.message.clone(),
            retain: d.retain,
            subscription_ids: d.subscription_ids.clone(),
            shared: d.shared.clone(),
            stored: d.stored,
        });
        self.transmit.push_back(Transmit::Publish {
            message: d.message,
            qos: d.qos,
            packet_id: Some(packet_id),
            dup: false,
            retain: d.retain,
            subscription_ids: d.subscription_ids,
        });
        Ok(())
    }

    /// Queues a delivery behind those already waiting in the session, ahead of the mailbox:
    /// used for the retained messages a new subscription receives. Unlike the mailbox, this
    /// queue has no cap: it holds what the retained store already bounds.
    pub fn enqueue(&mut self, d: Delivery) {
        self.backlog.push_back(Backlogged::One(d));
        self.backlog_count += 1;
    }

    /// Queues the retained messages a new subscription receives [MQTT-3.3.1-6], in order,
    /// behind what already waits; each goes out with the retain flag at the lower of its QoS
    /// and the subscription's `qos`.
    pub fn enqueue_retained(
        &mut self,
        messages: Vec<Arc<Message>>,
        qos: QoS,
        subscription_id: Option<u32>,
    ) {
        if messages.is_empty() {
            return;
        }
        self.backlog_count += messages.len();
        self.backlog.push_back(Backlogged::Retained {
            messages: messages.into(),
            qos,
            subscription_id,
        });
    }

    /// Takes the next waiting delivery.
    fn next_backlogged(&mut self) -> Option<Delivery> {
        let d = match self.backlog.front_mut()? {
            Backlogged::One(_) => match self.backlog.pop_front() {
                Some(Backlogged::One(d)) => d,
                _ => return None,
            },
            Backlogged::Retained {
                messages,
                qos,
                subscription_id,
            } => {
                let (qos, subscription_id) = (*qos, *subscription_id);
                let message = messages.pop_front();
                if messages.is_empty() {
                    self.backlog.pop_front();
                }
                let message = message?;
                Delivery {
                    qos: message.qos.min(qos),
                    retain: true,
                    subscription_ids: subscription_id.into_iter().collect(),
                    message,
                    shared: None,
                    stored: None,
                }
            }
        };
        self.backlog_count -= 1;
        Some(d)
    }

    /// Takes back the shared-subscription deliveries this session has not completed, so that
    /// another member of their group can have them (MQTT 5.0 section 4.8.2): those waiting in
    /// the session's queue, and QoS 1 ones sent but not acknowledged. QoS 2 messages already
    /// sent stay: their delivery is completed with this client when it reconnects and never
    /// handed to another member [MQTT-4.8.2-4], [MQTT-4.8.2-5].
    pub fn take_shared(&mut self) -> Vec<Delivery> {
        let mut taken: Vec<Delivery> = Vec::new();
        let mut i = 0;
        while i < self.inflight.len() {
            let f = &self.inflight[i];
            let take = f.shared.is_some()
                && match f.state {
                    InflightState::Qos1Sent => true,
                    InflightState::Qos2Sent | InflightState::Released => false,
                };
            if !take {
                i += 1;
                continue;
            }
            if let Some(f) = self.inflight.remove(i) {
                if !f.sent {
                    self.unsent -= 1;
                }
                taken.push(Delivery {
                    message: f.message,
                    qos: QoS::AtLeastOnce,
                    retain: f.retain,
                    subscription_ids: f.subscription_ids,
                    shared: f.shared,
                    stored: f.stored,
                });
            }
        }
        let mut kept = VecDeque::with_capacity(self.backlog.len());
        for b in self.backlog.drain(..) {
            match b {
                Backlogged::One(d) if d.shared.is_some() => {
                    self.backlog_count -= 1;
                    taken.push(d);
                }
                other => kept.push_back(other),
            }
        }
        self.backlog = kept;
        // They leave this session: its records go, the member that takes them stores its own.
        for d in &mut taken {
            if let Some(seq) = d.stored.take() {
                self.store_events.push(StoreEvent::Completed { seq });
            }
        }
        taken
    }

    /// Deliveries waiting in the session's own queue.
    pub fn backlog_len(&self) -> usize {
        self.backlog_count
    }

    /// Moves up to `max` waiting deliveries into flight. Returns true when some remain because
    /// the in-flight window is full.
    pub fn flush_backlog(&mut self, now: Instant, max: usize) -> bool {
        for _ in 0..max {
            let Some(d) = self.next_backlogged() else {
                return false;
            };
            if let Err(d) = self.deliver(d, now) {
                self.backlog.push_front(Backlogged::One(d));
                self.backlog_count += 1;
                return true;
            }
        }
        false
    }

    /// The next packet id not in use by an in-flight delivery [MQTT-2.3.1-2].
    fn allocate_packet_id(&mut self) -> PacketId {
        // In-flight entries are pushed in allocation order, and ids are handed out going
        // forward round the ring, so every in-flight id lies between the front's and the last
        // one handed out; the next id (the last plus one) can only be in use when that run
        // has wrapped all the way round to the front. Checking the front alone keeps this
        // O(1) with a window of 1024 instead of scanning it per delivery.
        let id = self.next_packet_id;
        self.next_packet_id = id.next();
        if self.irregular_ids && self.inflight.is_empty() {
            self.irregular_ids = false;
        }
        match self.inflight.front() {
            _ if self.irregular_ids => {
                if !self.inflight.iter().any(|f| f.packet_id == id) {
                    return id;
                }
            }
            Some(front) if front.packet_id == id => {}
            _ => return id,
        }
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = id.next();
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    fn inflight_position(&self, id: PacketId, state: InflightState) -> Option<usize> {
        // Acknowledgements nearly always arrive in order, so the front is checked first.
        match self.inflight.front() {
            Some(f) if f.packet_id == id && f.state == state => Some(0),
            _ => self
                .inflight
                .iter()
                .position(|f| f.packet_id == id && f.state == state),
        }
    }

    pub(super) fn handle_puback(&mut self, id: PacketId) {
        if let Some(pos) = self.inflight_position(id, InflightState::Qos1Sent) {
            self.complete_inflight(pos);
        }
    }

    pub(super) fn handle_pubrec(&mut self, id: PacketId, refused: bool) {
        match self.inflight_position(id, InflightState::Qos2Sent) {
            Some(pos) if refused => {
                // A PUBREC with an error code ends the exchange (MQTT 5.0 section 4.3.3).
                self.complete_inflight(pos);
            }
            Some(pos) => {
                if let Some(f) = self.inflight.get_mut(pos) {
                    f.state = InflightState::Released;
                    if let Some(seq) = f.stored {
                        self.store_events
                            .push(StoreEvent::Released { seq, packet_id: id });
                    }
                }
                // [MQTT-4.3.3-4] answer PUBREC with PUBREL.
                self.send(Packet::PubRel(PubRel::new(id)));
            }
            None if self
                .inflight_position(id, InflightState::Released)
                .is_some() =>
            {
                // A repeated PUBREC: repeat the PUBREL.
                self.send(Packet::PubRel(PubRel::new(id)));
            }
            None => {
                self.send(Packet::PubRel(PubRel::with_reason(
                    id,
                    PubRelReason::PacketIdentifierNotFound,
                )));
            }
        }
    }

    pub(super) fn handle_pubcomp(&mut self, id: PacketId) {
        if let Some(pos) = self.inflight_position(id, InflightState::Released) {
            self.complete_inflight(pos);
        }
    }

    /// Restores a QoS 2 delivery that was in flight when the broker stopped, under the packet
    /// id the client knows it by; `released` when PUBREC had come (only PUBREL is resent). It
    /// goes out again with the other in-flight messages on [`Session::resend_inflight`].
    pub fn restore_inflight(&mut self, d: Delivery, packet_id: PacketId, released: bool) {
        self.inflight.push_back(Inflight {
            packet_id,
            sent: true,
            state: if released {
                InflightState::Released
            } else {
                InflightState::Qos2Sent
            },
            message: d.message,
            retain: d.retain,
            subscription_ids: d.subscription_ids,
            shared: d.shared,
            stored: d.stored,
        });
        self.irregular_ids = true;
        self.next_packet_id = packet_id.next();
    }

    /// Queues every unacknowledged delivery again, PUBLISH with DUP set or PUBREL, in the
    /// original order, for a resumed session [MQTT-4.4.0-1]. No more than the current window
    /// (the client's Receive Maximum may have shrunk) is outstanding at once [MQTT-4.9.0-2]; the
    /// rest follow as acknowledgements free the window.
    pub fn resend_inflight(&mut self) {
        if self.policy.is_some() {
            // A message the client may no longer receive is not sent again: authorization
            // comes before redelivery. PUBRELs still go, they carry no message.
            let mut kept = VecDeque::with_capacity(self.inflight.len());
            for f in std::mem::take(&mut self.inflight) {
                if f.state != InflightState::Released
                    && self.refuses_delivery(&f.message.topic, f.stored)
                {
                    continue;
                }
                kept.push_back(f);
            }
            self.inflight = kept;
        }
        for f in &mut self.inflight {
            f.sent = false;
        }
        self.unsent = self.inflight.len();
        self.send_unsent();
    }

    /// Sends in-flight entries held back after a resume, while the window has room.
    fn send_unsent(&mut self) {
        let window = usize::from(self.send_window);
        while self.unsent > 0 && self.inflight.len() - self.unsent < window {
            let Some(f) = self.inflight.iter_mut().find(|f| !f.sent) else {
                self.unsent = 0;
                return;
            };
            f.sent = true;
            let t = match f.state {
                InflightState::Released => {
                    Transmit::Packet(Packet::PubRel(PubRel::new(f.packet_id)))
                }
                InflightState::Qos1Sent | InflightState::Qos2Sent => Transmit::Publish {
                    message: f.message.clone(),
                    qos: if f.state == InflightState::Qos1Sent {
                        QoS::AtLeastOnce
                    } else {
                        QoS::ExactlyOnce
                    },
                    packet_id: Some(f.packet_id),
                    dup: true,
                    retain: f.retain,
                    subscription_ids: f.subscription_ids.clone(),
                },
            };
            self.unsent -= 1;
            self.transmit.push_back(t);
        }
    }

    /// Removes a completed in-flight entry and lets a held-back one go out.
    fn complete_inflight(&mut self, pos: usize) {
        if let Some(f) = self.inflight.remove(pos) {
            if !f.sent {
                self.unsent -= 1;
            }
            if let Some(seq) = f.stored {
                self.store_events.push(StoreEvent::Completed { seq });
            }
        }
        self.send_unsent();
    }

    /// Encodes everything queued for the client into `buf`, in order. A PUBLISH larger than the
    /// client's Maximum Packet Size is dropped, as MQTT 5.0 requires [MQTT-3.1.2-25]. Returns
    /// how many packets were written.
    ///
    /// Server-to-client topic aliases (MQTT 5.0, when the client's Topic Alias Maximum allows
    /// them) are chosen here, since the order packets are written in is the order the client
    /// learns its mappings in; a dropped PUBLISH leaves the alias table unchanged.
    pub fn write_transmits(
        &mut self,
        now: Instant,
        buf: &mut BytesMut,
    ) -> Result<usize, EncodeError> {
        let mut written = 0;
        while let Some(t) = self.transmit.pop_front() {
            let start = buf.len();
            match &t {
                Transmit::Packet(p) => p.encode(self.version, buf)?,
                Transmit::Publish {
                    message,
                    qos,
                    packet_id,
                    dup,
                    retain,
                    subscription_ids,
                } => {
                    let publish = PublishRef {
                        dup: *dup,
                        qos: *qos,
                        retain: *retain,
                        topic: &message.topic,
                        packet_id: *packet_id,
                        properties: &message.properties,
                        topic_alias: None,
                        subscription_identifiers: subscription_ids,
                        message_expiry_interval: message.remaining_expiry(now),
                        payload: &message.payload,
                    };
                    let max = self.client_max_packet_size;
                    let too_large = |len: usize| max.is_some_and(|max| len as u64 > u64::from(max));
                    let mut choice = self.server_aliases.choose(&message.topic);
                    encode_publish(publish, choice, self.version, buf)?;
                    if too_large(buf.len() - start) && matches!(choice, AliasChoice::Assign(_)) {
                        // The three bytes of a new alias may be what pushes the packet over
                        // the limit: send the topic plainly instead. (An alias the client
                        // already knows replaces a topic of at least as many bytes, so the
                        // plain form of such a packet is never smaller.)
                        buf.truncate(start);
                        choice = AliasChoice::Plain;
                        encode_publish(publish, choice, self.version, buf)?;
                    }
                    if too_large(buf.len() - start) {
                        // Dropped before the client saw it: the alias table stays as it was.
                        buf.truncate(start);
                        self.dropped_oversize += 1;
                        if let Some(pos) = packet_id
                            .and_then(|id| self.inflight.iter().position(|f| f.packet_id == id))
                        {
                            self.complete_inflight(pos);
                        }
                        continue;
                    }
                    self.server_aliases.commit(&message.topic, choice);
                    super::SessionCounts::bump(&mut self.counts.publishes_sent[*qos as usize]);
                }
            }
            written += 1;
        }
        if self.transmit.is_empty() && written < 8 {
            // A quiet session gives its queue back (a few entries of a packet's size are about
            // 1 KiB per idle connection); a busy one keeps reusing it.
            self.transmit = VecDeque::new();
        } else if self.transmit.capacity() > 256 {
            // A burst can leave a large queue behind; idle sessions should not keep it.
            self.transmit.shrink_to(16);
        }
        Ok(written)
    }

    /// Messages dropped because they exceeded the client's Maximum Packet Size.
    pub fn dropped_oversize(&self) -> u64 {
        self.dropped_oversize
    }

    /// Topic aliases the server has assigned on the current connection (MQTT 5.0).
    pub fn server_topic_aliases(&self) -> usize {
        self.server_aliases.len()
    }
}

/// Appends `publish` with its topic sent as `choice` says: plainly, as an empty topic with an
/// alias the client knows, or with the alias it (re)defines.
fn encode_publish(
    publish: PublishRef<'_>,
    choice: AliasChoice,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    PublishRef {
        topic: match choice {
            AliasChoice::Known(_) => "",
            AliasChoice::Plain | AliasChoice::Assign(_) => publish.topic,
        },
        topic_alias: choice.alias(),
        ..publish
    }
    .encode(version, buf)
}
