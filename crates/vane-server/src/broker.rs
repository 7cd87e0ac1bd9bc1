//! Shared broker state and routing: where a published message goes (point-to-point target,
//! retained store, subscribers), and the settings every connection reads.

use std::sync::Arc;

use parking_lot::RwLock;
use vane_config::Config;
use vane_core::{
    Delivery, Message, Picker, QueueLimits, RetainedMessages, RetainedStore, RouteScratch, Session,
    SessionConfig, SharePolicy, SubscriptionIndex,
};
use vane_proto::QoS;

use crate::mailbox::{Mailbox, Pushed};
use crate::registry::{SessionRegistry, SessionSlot};

/// Where a published message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Nobody subscribed (MQTT 5.0 acknowledgement 0x10).
    NoReceivers,
    /// At least one receiver took it, or kept it as its QoS allows.
    Delivered,
    /// Every receiver refused it because its queue was full (acknowledgement 0x97).
    Refused,
}

impl Routed {
    fn from_pushes(full: usize, total: usize) -> Routed {
        match (total, full) {
            (0, _) => Routed::NoReceivers,
            (t, f) if f == t => Routed::Refused,
            _ => Routed::Delivered,
        }
    }
}

/// What routing a message did, and whom the publisher should wait for.
#[derive(Clone)]
pub(crate) struct Published {
    pub routed: Routed,
    /// A receiver whose queue took the message beyond its caps: the publisher stops reading
    /// until it drains (backpressure).
    pub congested: Option<Subscriber>,
}

/// A subscriber as the index sees it: the slot whose mailbox receives deliveries.
pub(crate) type Subscriber = Arc<SessionSlot>;

/// The state every connection task shares.
pub(crate) struct Broker {
    pub config: Config,
    pub session_config: SessionConfig,
    pub registry: SessionRegistry,
    // parking_lot RwLock, not tokio: matching never awaits and takes microseconds; the guard
    // is dropped before any delivery.
    pub index: RwLock<SubscriptionIndex<Subscriber>>,
    pub retained: RwLock<Box<dyn RetainedStore>>,
    share_policy: SharePolicy,
    /// Enhanced authentication methods offered to MQTT 5.0 clients.
    pub authenticators: vane_auth::Authenticators,
}

/// Whether a subscriber can take a message now (for picking shared-subscription members).
fn can_take(slot: &Subscriber) -> bool {
    slot.mailbox.can_take()
}

impl Broker {
    pub(crate) fn new(config: Config, authenticators: vane_auth::Authenticators) -> Broker {
        let max_qos = QoS::from_u8(config.mqtt.max_qos).unwrap_or(QoS::ExactlyOnce);
        let session_config = SessionConfig {
            max_inflight: config.mqtt.max_inflight,
            max_qos,
            receive_maximum: config.mqtt.receive_maximum,
            topic_alias_maximum: config.mqtt.topic_alias_maximum,
        };
        let share_policy = match config.shared.policy {
            vane_config::SharePolicy::RoundRobin => SharePolicy::RoundRobin,
            vane_config::SharePolicy::Random => SharePolicy::Random,
            vane_config::SharePolicy::Sticky => SharePolicy::Sticky,
            vane_config::SharePolicy::HashClient => SharePolicy::HashClient,
            vane_config::SharePolicy::HashTopic => SharePolicy::HashTopic,
        };
        Broker {
            share_policy,
            authenticators,
            config,
            session_config,
            registry: SessionRegistry::new(),
            index: RwLock::new(SubscriptionIndex::new()),
            retained: RwLock::new(Box::new(RetainedMessages::new())),
        }
    }

    /// A mailbox with the configured limits.
    pub(crate) fn new_mailbox(&self) -> Mailbox {
        let q = &self.config.queue;
        let policy = match q.overflow {
            vane_config::OverflowPolicy::DropOldest => vane_core::OverflowPolicy::DropOldest,
            vane_config::OverflowPolicy::DropNewest => vane_core::OverflowPolicy::DropNewest,
        };
        Mailbox::new(
            QueueLimits {
                max_messages: q.max_messages,
                max_bytes: q.max_bytes.0,
                policy,
            },
            q.queue_qos0_offline,
            q.backpressure_timeout,
            q.backpressure_above,
        )
    }

    /// Forgets a session's routing state: its subscriptions leave the index, the shared
    /// subscription messages it had not completed go to other members of their groups, and
    /// its mailbox is emptied. The caller decides whether the slot stays registered.
    pub(crate) fn discard_session(&self, slot: &SessionSlot, session: &mut Session) {
        let mut index = self.index.write();
        for sub in session.clear_subscriptions() {
            index.unsubscribe(&sub.filter, slot.id);
        }
        drop(index);
        let mut orphans = session.take_shared();
        orphans.extend(slot.mailbox.take_shared());
        slot.mailbox.clear();
        let lost = self.hand_over_shared(slot.id, orphans, false).len();
        if lost > 0 {
            tracing::warn!(client_id = %slot.client_id, lost, "shared-subscription messages dropped: no other member left in their groups");
        }
    }

    /// Hands the shared-subscription messages a session had not completed to other members of
    /// their groups, when it goes offline: only to members that can take them now; the rest
    /// stay with the session for when it returns.
    pub(crate) fn hand_over_shared_on_disconnect(&self, slot: &SessionSlot, session: &mut Session) {
        let mut orphans = session.take_shared();
        orphans.extend(slot.mailbox.take_shared());
        for d in self.hand_over_shared(slot.id, orphans, true) {
            session.enqueue(d);
        }
    }

    /// Gives each delivery to another member of its shared group (never `leaving`). With
    /// `only_available`, a delivery whose group has no member able to take it now is returned;
    /// otherwise it is queued at an offline member if there is one, and returned only when the
    /// group has no other member at all.
    fn hand_over_shared(
        &self,
        leaving: u64,
        deliveries: Vec<Delivery>,
        only_available: bool,
    ) -> Vec<Delivery> {
        let mut kept = Vec::new();
        if deliveries.is_empty() {
            return kept;
        }
        let index = self.index.read();
        for d in deliveries {
            let Some(filter) = d.shared.clone() else {
                kept.push(d);
                continue;
            };
            let picker = Picker {
                policy: self.share_policy,
                origin: d.message.origin,
                random: rand::random(),
                available: &can_take,
                exclude: Some(leaving),
            };
            match index.pick_shared(&filter, &d.message.topic, &picker) {
                Some(sub) if !only_available || sub.subscriber.mailbox.can_take() => {
                    sub.subscriber.mailbox.push(Delivery {
                        qos: d.message.qos.min(sub.options.qos),
                        retain: d.message.retain && sub.options.retain_as_published,
                        subscription_ids: sub.subscription_id.into_iter().collect(),
                        shared: Some(filter),
                        stored: None,
                        message: d.message,
                    });
                }
                _ => kept.push(d),
            }
        }
        kept
    }

    /// Routes a message to its receivers.
    pub(crate) fn publish(
        &self,
        message: Message,
        scratch: &mut RouteScratch<Subscriber>,
    ) -> Published {
        let message = Arc::new(message);
        if self.config.p2p.enabled {
            if let Some(target) = p2p_target(&message.topic) {
                let target = target.to_owned();
                return self.publish_p2p(&target, message);
            }
        }
        if message.retain {
            self.retained.write().set(Arc::new(message.detached()));
        }
        let picker = Picker {
            policy: self.share_policy,
            origin: message.origin,
            random: scratch.next_random(),
            available: &can_take,
            exclude: None,
        };
        self.index.read().select_into(
            &message.topic,
            &picker,
            &mut scratch.matches,
            &mut scratch.shared,
        );
        let mut full = 0;
        let mut congested = None;
        let total = scratch.deliver_matches(&message, |slot, delivery| {
            match slot.mailbox.push(delivery) {
                Pushed::Full => full += 1,
                Pushed::Congested if congested.is_none() => congested = Some(slot),
                _ => {}
            }
        });
        Published {
            routed: Routed::from_pushes(full, total),
            congested,
        }
    }

    /// Delivers a point-to-point message to the one client it names, online or parked; it is
    /// neither retained nor seen by subscribers.
    fn publish_p2p(&self, target: &str, message: Arc<Message>) -> Published {
        let Some(slot) = self.registry.get(target) else {
            tracing::debug!(target_client = target, topic = %message.topic, "p2p message for unknown client dropped");
            return Published {
                routed: Routed::NoReceivers,
                congested: None,
            };
        };
        let qos = message.qos.min(self.session_config.max_qos);
        let pushed = slot.mailbox.push(Delivery {
            message,
            qos,
            retain: false,
            subscription_ids: Vec::new(),
            shared: None,
            stored: None,
        });
        Published {
            routed: Routed::from_pushes(usize::from(pushed == Pushed::Full), 1),
            congested: (pushed == Pushed::Congested).then_some(slot),
        }
    }
}

/// The client id named by a point-to-point topic `<first-level>/p2p/<client id>`. The client id
/// is everything after the second separator, so it may itself contain `/`.
pub(crate) fn p2p_target(topic: &str) -> Option<&str> {
    let (first, rest) = topic.split_once('/')?;
    let target = rest.strip_prefix("p2p/")?;
    (!first.starts_with('$') && !target.is_empty()).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::p2p_target;

    #[test]
    fn p2p_topics_name_their_client() {
        assert_eq!(p2p_target("cmd/p2p/dev-1"), Some("dev-1"));
        assert_eq!(p2p_target("cmd/p2p/site/dev-1"), Some("site/dev-1"));
        assert_eq!(p2p_target("cmd/p2p/"), None);
        assert_eq!(p2p_target("cmd/x/p2p/dev"), None);
        assert_eq!(p2p_target("p2p/dev"), None);
        assert_eq!(p2p_target("$SYS/p2p/dev"), None);
    }
}
