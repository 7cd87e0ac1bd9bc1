//! Messages from the client: PUBLISH at each QoS, topic aliases, PUBREL, and the
//! acknowledgements owed once a message is routed.

use std::time::Instant;

use vane_proto::{
    Packet, PacketId, ProtocolVersion, PubAck, PubAckReason, PubComp, PubCompReason, PubRec,
    PubRecReason, Publish, QoS,
};

use super::{Action, PendingAck, Session, SessionError};
use crate::message::Message;

impl Session {
    pub(super) fn handle_publish(
        &mut self,
        mut p: Publish,
        now: Instant,
    ) -> Result<Option<Action>, SessionError> {
        if p.qos > self.config.max_qos {
            return Err(SessionError::QoSNotSupported);
        }
        // MQTT 5.0 names no reason code for these two; both are broken rules of the PUBLISH
        // the client sends, so they end the connection as Protocol Errors (section 4.13).
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(SessionError::SubscriptionIdentifierFromClient);
        }
        if p.properties
            .response_topic
            .as_ref()
            .is_some_and(|t| t.contains(['+', '#']))
        {
            return Err(SessionError::ResponseTopicHasWildcard);
        }
        // Before the payload check: an alias set by a refused PUBLISH is still set, since the
        // client counts it as sent.
        self.resolve_topic_alias(&mut p)?;
        let ack = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => None,
            (QoS::AtLeastOnce, Some(id)) => Some(PendingAck::PubAck(id)),
            (QoS::ExactlyOnce, Some(id)) => {
                // [MQTT-4.3.3-9] a resent QoS 2 PUBLISH is acknowledged but not forwarded again
                // until its PUBREL has been received.
                if self.inbound_qos2.contains(&id) {
                    self.send(Packet::PubRec(PubRec::new(id)));
                    return Ok(None);
                }
                if self.inbound_qos2.len() >= usize::from(self.config.receive_maximum) {
                    return Err(SessionError::ReceiveMaximumExceeded);
                }
                Some(PendingAck::PubRec(id))
            }
        };
        if self.topic_exceeds_limits(&p.topic) {
            // MQTT 3.x has no way to refuse one message: the connection ends. MQTT 5.0
            // refuses it with PUBACK/PUBREC 0x90; a QoS 0 message, which has no
            // acknowledgement, is dropped and counted.
            super::SessionCounts::bump(&mut self.counts.publishes_topic_limit);
            if self.version != ProtocolVersion::V5 {
                return Err(SessionError::TopicLimitExceeded);
            }
            return match ack {
                Some(ack) => {
                    self.publish_refused(ack, PubAckReason::TopicNameInvalid);
                    Ok(None)
                }
                None => {
                    self.topic_limit_dropped += 1;
                    Ok(None)
                }
            };
        }
        if self.payload_format_is_invalid(&p) {
            self.payload_format_invalid += 1;
            return match ack {
                // A refused QoS 2 id is not recorded: the error PUBREC ends the exchange.
                Some(ack) => {
                    self.publish_refused(ack, PubAckReason::PayloadFormatInvalid);
                    Ok(None)
                }
                None => Err(SessionError::PayloadFormatInvalid),
            };
        }
        // `$SYS` is the broker's own: no client publishes there, with or without a policy
        // (a forged retained value would otherwise stand until the broker's next change).
        if is_sys_topic(&p.topic)
            || self
                .policy
                .as_ref()
                .is_some_and(|pol| !pol.may_publish(&p.topic))
        {
            // MQTT 5.0: PUBACK/PUBREC 0x87 Not authorized. MQTT 3.x has no refusal code; it
            // gets a plain acknowledgement and the message is dropped, as [MQTT-3.3.5-2]
            // allows (the other choice, closing the connection, would make a client that
            // retries reconnect in a loop). QoS 0 is dropped.
            super::SessionCounts::bump(&mut self.counts.publishes_denied);
            if let Some(ack) = ack {
                self.publish_refused(ack, PubAckReason::NotAuthorized);
            }
            return Ok(None);
        }
        if let Some(PendingAck::PubRec(id)) = ack {
            self.inbound_qos2.insert(id);
        }
        Ok(Some(Action::Publish {
            message: Message::from_publish(p, self.id, now),
            ack,
        }))
    }

    /// True for an MQTT 5.0 PUBLISH whose Payload Format Indicator says UTF-8 and whose payload
    /// is not well-formed UTF-8 (MQTT 5.0 section 3.3.2.3.2; the receiver may check, and does).
    /// Only flagged payloads are scanned.
    fn payload_format_is_invalid(&self, p: &Publish) -> bool {
        self.version == ProtocolVersion::V5
            && p.properties.payload_format_indicator == Some(true)
            && std::str::from_utf8(&p.payload).is_err()
    }

    /// Replaces an aliased empty topic with the topic the alias stands for, and records new
    /// aliases (MQTT 5.0 section 3.3.2.3.4).
    fn resolve_topic_alias(&mut self, p: &mut Publish) -> Result<(), SessionError> {
        let Some(alias) = p.properties.topic_alias else {
            if p.topic.is_empty() {
                return Err(SessionError::EmptyTopic);
            }
            return Ok(());
        };
        if alias == 0 || alias > self.config.topic_alias_maximum {
            return Err(SessionError::TopicAliasInvalid);
        }
        if p.topic.is_empty() {
            p.topic = self
                .client_aliases
                .get(&alias)
                .cloned()
                .ok_or(SessionError::TopicAliasUnknown)?;
        } else {
            self.client_aliases.insert(alias, p.topic.clone());
        }
        Ok(())
    }

    /// Sends the acknowledgement of a routed publish. `matched` says whether any subscriber
    /// received it, reported as 0x10 to MQTT 5.0 publishers.
    pub fn publish_routed(&mut self, ack: PendingAck, matched: bool) {
        let packet = match ack {
            PendingAck::PubAck(id) => {
                let reason = if matched {
                    PubAckReason::Success
                } else {
                    PubAckReason::NoMatchingSubscribers
                };
                Packet::PubAck(PubAck::with_reason(id, reason))
            }
            PendingAck::PubRec(id) => {
                let reason = if matched {
                    PubRecReason::Success
                } else {
                    PubRecReason::NoMatchingSubscribers
                };
                Packet::PubRec(PubRec::with_reason(id, reason))
            }
        };
        self.send(packet);
    }

    /// Refuses a publish with a reason code (MQTT 5.0); MQTT 3.x publishers get a plain
    /// acknowledgement because they have no way to hear a refusal.
    pub fn publish_refused(&mut self, ack: PendingAck, reason: PubAckReason) {
        let packet = match ack {
            PendingAck::PubAck(id) => Packet::PubAck(PubAck::with_reason(id, reason)),
            PendingAck::PubRec(id) => {
                // A refused QoS 2 message is not stored, so its id is free again.
                self.inbound_qos2.remove(&id);
                let reason =
                    PubRecReason::from_u8(reason.as_u8()).unwrap_or(PubRecReason::UnspecifiedError);
                Packet::PubRec(PubRec::with_reason(id, reason))
            }
        };
        self.send(packet);
    }

    pub(super) fn handle_pubrel(&mut self, id: PacketId) {
        // [MQTT-4.3.3-11] the id is released and PUBCOMP sent, also for an unknown id.
        let reason = if self.inbound_qos2.remove(&id) {
            PubCompReason::Success
        } else {
            PubCompReason::PacketIdentifierNotFound
        };
        self.send(Packet::PubComp(PubComp::with_reason(id, reason)));
    }

    /// PUBLISH packets refused because their payload was not the UTF-8 their Payload Format
    /// Indicator announced (MQTT 5.0 section 3.3.2.3.2), at any QoS.
    pub fn payload_format_invalid(&self) -> u64 {
        self.payload_format_invalid
    }

    /// True when a topic name or filter is beyond the configured topic limits (see
    /// [`SessionConfig::topic_exceeds_limits`]).
    pub fn topic_exceeds_limits(&self, topic: &str) -> bool {
        self.config.topic_exceeds_limits(topic)
    }

    /// Takes what was counted since the last call (the counts start again from zero), for the
    /// broker's metrics.
    #[inline]
    pub fn take_counts(&mut self) -> super::SessionCounts {
        std::mem::take(&mut self.counts)
    }

    /// MQTT 5.0 QoS 0 PUBLISH packets dropped because their topic was beyond the topic limits.
    pub fn topic_limit_dropped(&self) -> u64 {
        self.topic_limit_dropped
    }

    /// QoS 2 packet ids received and awaiting PUBREL.
    pub fn inbound_qos2_pending(&self) -> usize {
        self.inbound_qos2.len()
    }
}

/// Whether a topic is under `$SYS`, where only the broker publishes. One byte compare for
/// every other topic.
#[inline]
fn is_sys_topic(topic: &str) -> bool {
    topic.as_bytes().first() == Some(&b'$') && (topic == "$SYS" || topic.starts_with("$SYS/"))
}
