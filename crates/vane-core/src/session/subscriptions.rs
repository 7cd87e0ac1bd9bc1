//! SUBSCRIBE and UNSUBSCRIBE: validating filters, granting QoS, remembering subscriptions.

use vane_proto::{
    ByteString, Packet, ProtocolVersion, SubAck, SubAckReason, Subscribe, TopicFilter, UnsubAck,
    UnsubAckReason, Unsubscribe,
};

use super::{Action, NewSubscription, Session, SessionError, SessionSubscription};

impl Session {
    pub(super) fn handle_subscribe(
        &mut self,
        s: Subscribe,
    ) -> Result<Option<Action>, SessionError> {
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut added = Vec::with_capacity(s.filters.len());
        for (raw, mut options) in s.filters {
            let filter = match TopicFilter::parse(raw.clone()) {
                Ok(f) => f,
                Err(_) => {
                    reasons.push(SubAckReason::TopicFilterInvalid);
                    continue;
                }
            };
            if filter.share_group().is_some()
                && options.no_local
                && self.version == ProtocolVersion::V5
            {
                // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
                return Err(SessionError::NoLocalOnSharedSubscription);
            }
            if self.topic_exceeds_limits(filter.filter()) {
                reasons.push(SubAckReason::TopicFilterInvalid);
                continue;
            }
            let max = self.config.max_subscriptions;
            if max != 0 && self.subscriptions.len() >= max && !self.subscriptions.contains_key(&raw)
            {
                // limits.max_subscriptions_per_client: replacing a subscription is always
                // allowed, a new one only below the cap.
                reasons.push(SubAckReason::QuotaExceeded);
                continue;
            }
            if self
                .policy
                .as_ref()
                .is_some_and(|p| !p.may_subscribe(&filter))
            {
                // MQTT 5.0 section 3.9.3: 0x87 Not authorized; MQTT 3.x: 0x80 Failure.
                super::SessionCounts::bump(&mut self.counts.subscriptions_denied);
                reasons.push(SubAckReason::NotAuthorized);
                continue;
            }
            if self.version != ProtocolVersion::V5 {
                options.no_local = false;
                options.retain_as_published = false;
            }
            // [MQTT-3.8.4-8] the granted QoS may be lower than requested.
            options.qos = options.qos.min(self.config.max_qos);
            reasons.push(SubAckReason::granted(options.qos));
            let subscription = SessionSubscription {
                filter,
                options,
                subscription_id: s.properties.subscription_identifier,
            };
            let existed = self
                .subscriptions
                .insert(raw, subscription.clone())
                .is_some();
            added.push(NewSubscription {
                subscription,
                existed,
            });
        }
        // [MQTT-3.8.4-1] SUBACK with the same packet id, one code per filter [MQTT-3.8.4-6].
        self.send(Packet::SubAck(SubAck {
            packet_id: s.packet_id,
            properties: Default::default(),
            reasons,
        }));
        Ok((!added.is_empty()).then_some(Action::Subscribe(added)))
    }

    pub(super) fn handle_unsubscribe(
        &mut self,
        u: Unsubscribe,
    ) -> Result<Option<Action>, SessionError> {
        let mut reasons = Vec::with_capacity(u.filters.len());
        let mut removed = Vec::new();
        for raw in u.filters {
            match self.subscriptions.remove(&raw) {
                Some(sub) => {
                    reasons.push(UnsubAckReason::Success);
                    removed.push(sub.filter);
                }
                None if TopicFilter::parse(raw).is_err() => {
                    reasons.push(UnsubAckReason::TopicFilterInvalid)
                }
                None => reasons.push(UnsubAckReason::NoSubscriptionExisted),
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK with the same packet id, even when nothing was removed.
        self.send(Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            properties: Default::default(),
            reasons,
        }));
        Ok((!removed.is_empty()).then_some(Action::Unsubscribe(removed)))
    }

    /// The session's subscriptions.
    pub fn subscriptions(&self) -> impl Iterator<Item = &SessionSubscription> {
        self.subscriptions.values()
    }

    /// Forgets every subscription and returns them, for removal from the index.
    pub fn clear_subscriptions(&mut self) -> Vec<SessionSubscription> {
        self.subscriptions.drain().map(|(_, s)| s).collect()
    }

    /// Restores a subscription (from a store).
    pub fn restore_subscription(&mut self, subscription: SessionSubscription) {
        let key = ByteString::from(subscription.filter.as_str());
        self.subscriptions.insert(key, subscription);
    }
}
