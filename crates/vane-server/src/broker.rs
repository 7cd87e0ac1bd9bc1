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

use std::sync::atomic::Ordering;

use vane_store::{Op, Store, Ticket};

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
    /// The store commit that holds the message for its persistent receivers (and the retained
    /// store): its acknowledgement waits for it.
    pub ticket: Option<Ticket>,
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
    /// The password file for user name and password in CONNECT, if one is configured;
    /// replaced as a whole by a reload (the lock is held for a pointer copy, never across an
    /// `.await`).
    pub passwords: Option<RwLock<Arc<vane_auth::PasswordFile>>>,
    /// The ACL, if one is configured: `None` means no topic checks at all.
    pub acl: Option<Arc<crate::authz::AclRules>>,
    /// Password checks running at once. PBKDF2 is pure CPU: without a bound, a storm of
    /// CONNECTs would fill the blocking pool with hashing threads that crowd the runtime's
    /// workers off the cores. One core is left to the workers when there are two or more.
    pub password_checks: tokio::sync::Semaphore,
    /// JWT verification and the HTTP hook, when configured.
    pub methods: crate::auth::Methods,
    /// Whether a client id belongs to the user name that first used it (`auth.bind_client_id`).
    pub binds_client_ids: bool,
    /// The embedded store; `None` when durability is `memory`.
    pub store: Option<Store>,
    /// Connection tasks running, so that shutdown can wait for them to save their sessions.
    pub connections: std::sync::atomic::AtomicUsize,
    /// Connection caps, bans, flapping detection (`[limits]`).
    pub limits: Arc<crate::limits::Limits>,
    /// How far the broker has degraded under its memory budget.
    pub overload: crate::overload::Overload,
    /// Counters and gauges for `$SYS` and the Prometheus endpoint (each mailbox holds it too,
    /// to count what its queue drops).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Whether a subscriber can take a message now (for picking shared-subscription members).
fn can_take(slot: &Subscriber) -> bool {
    slot.mailbox.can_take()
}

impl Broker {
    pub(crate) fn new(
        config: Config,
        authenticators: vane_auth::Authenticators,
        passwords: Option<Arc<vane_auth::PasswordFile>>,
        methods: crate::auth::Methods,
        acl: Option<vane_auth::Acl>,
        store: Option<Store>,
        limits: Arc<crate::limits::Limits>,
    ) -> Broker {
        let max_qos = QoS::from_u8(config.mqtt.max_qos).unwrap_or(QoS::ExactlyOnce);
        let session_config = SessionConfig {
            max_inflight: config.mqtt.max_inflight,
            max_qos,
            receive_maximum: config.mqtt.receive_maximum,
            topic_alias_maximum: config.mqtt.topic_alias_maximum,
            max_subscriptions: config.limits.max_subscriptions_per_client,
            max_topic_length: config.limits.max_topic_length,
            max_topic_levels: config.limits.max_topic_levels,
            max_session_expiry: config.mqtt.max_session_expiry.map_or(u32::MAX, |d| {
                // Validated below u32::MAX seconds.
                u32::try_from(d.as_secs()).unwrap_or(u32::MAX - 1)
            }),
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
            passwords: passwords.map(RwLock::new),
            acl: acl.map(|acl| Arc::new(crate::authz::AclRules::new(config.acl.clone(), acl))),
            methods,
            binds_client_ids: config.binds_client_ids(),
            password_checks: tokio::sync::Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get().saturating_sub(1))
                    .max(1),
            ),
            config,
            session_config,
            registry: SessionRegistry::new(),
            index: RwLock::new(SubscriptionIndex::new()),
            retained: RwLock::new(Box::new(RetainedMessages::new())),
            store,
            connections: std::sync::atomic::AtomicUsize::new(0),
            limits,
            overload: crate::overload::Overload::new(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
        }
    }

    /// The password file in force, if one is configured.
    pub(crate) fn password_file(&self) -> Option<Arc<vane_auth::PasswordFile>> {
        self.passwords.as_ref().map(|p| p.read().clone())
    }

    /// The topic permissions of a new connection: `None` when no ACL is configured and the
    /// client's token (if any) carries no permission claims.
    pub(crate) fn topic_policy(
        &self,
        username: Option<&str>,
        client_id: &vane_proto::ByteString,
        peer: std::net::SocketAddr,
        token: Option<Arc<vane_auth::TopicPermissions>>,
    ) -> Option<Arc<dyn vane_core::session::TopicPolicy>> {
        let acl = self.acl.as_ref().map(|rules| {
            Arc::new(crate::authz::ConnectionPolicy::new(
                rules.clone(),
                username.map(str::to_owned),
                client_id.clone(),
                peer,
            )) as Arc<dyn vane_core::session::TopicPolicy>
        });
        match token {
            None => acl,
            Some(permissions) => Some(Arc::new(crate::token_policy::TokenPolicy::new(
                permissions,
                acl,
                client_id.clone(),
                username.map(str::to_owned),
                peer,
            ))),
        }
    }

    /// True when clients can have topic permissions (an ACL file, or JWT whose tokens may
    /// carry permission claims): routing then asks them.
    pub(crate) fn authorizes(&self) -> bool {
        self.acl.is_some() || self.methods.jwt.is_some()
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
            self.store.is_some(),
            self.metrics.clone(),
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
        let lost = self.hand_over_shared(slot, orphans, false).len();
        if lost > 0 {
            tracing::warn!(client_id = %slot.client_id, lost, "shared-subscription messages dropped: no other member left in their groups");
        }
    }

    /// Adds a session's subscriptions to the index.
    pub(crate) fn index_subscriptions<'a>(
        &self,
        slot: &Subscriber,
        subscriptions: impl IntoIterator<Item = &'a vane_core::session::SessionSubscription>,
    ) {
        let mut index = self.index.write();
        for sub in subscriptions {
            index.subscribe(
                &sub.filter,
                vane_core::Subscription {
                    subscriber: slot.clone(),
                    session_id: slot.id,
                    options: sub.options,
                    subscription_id: sub.subscription_id,
                },
            );
        }
    }

    /// Deletes the store record of a session that ended, and everything queued for it.
    pub(crate) fn forget_stored_session(&self, slot: &SessionSlot) {
        if slot.persistent.swap(false, Ordering::Relaxed) {
            if let Some(store) = &self.store {
                store.submit(vec![Op::DeleteSession(slot.client_id.clone())]);
            }
        }
    }

    /// Hands the shared-subscription messages a session had not completed to other members of
    /// their groups, when it goes offline: only to members that can take them now; the rest
    /// stay with the session for when it returns.
    pub(crate) fn hand_over_shared_on_disconnect(&self, slot: &SessionSlot, session: &mut Session) {
        let mut orphans = session.take_shared();
        orphans.extend(slot.mailbox.take_shared());
        for d in self.hand_over_shared(slot, orphans, true) {
            session.enqueue(d);
        }
    }

    /// Gives each delivery to another member of its shared group (never `leaving`). With
    /// `only_available`, a delivery whose group has no member able to take it now is returned;
    /// otherwise it is queued at an offline member if there is one, and returned only when the
    /// group has no other member at all.
    fn hand_over_shared(
        &self,
        leaving: &SessionSlot,
        deliveries: Vec<Delivery>,
        only_available: bool,
    ) -> Vec<Delivery> {
        let mut kept = Vec::new();
        if deliveries.is_empty() {
            return kept;
        }
        let mut ops = Vec::new();
        let mut held = Vec::new();
        let index = self.index.read();
        for d in deliveries {
            let Some(filter) = d.shared.clone() else {
                kept.push(d);
                continue;
            };
            let topic = &d.message.topic;
            let permitted = |slot: &Subscriber| slot.may_receive(topic);
            let picker = Picker {
                policy: self.share_policy,
                origin: d.message.origin,
                random: rand::random(),
                available: &can_take,
                permitted: self
                    .authorizes()
                    .then_some(&permitted as &dyn Fn(&Subscriber) -> bool),
                exclude: Some(leaving.id),
            };
            match index.pick_shared(&filter, &d.message.topic, &picker) {
                Some(sub) if !only_available || sub.subscriber.mailbox.can_take() => {
                    let mut delivery = Delivery {
                        qos: d.message.qos.min(sub.options.qos),
                        retain: d.message.retain && sub.options.retain_as_published,
                        subscription_ids: sub.subscription_id.into_iter().collect(),
                        shared: Some(filter),
                        stored: None,
                        message: d.message,
                    };
                    let slot = &sub.subscriber;
                    if let Some(seq) = d.stored {
                        ops.push(Op::DeleteDelivery {
                            client_id: leaving.client_id.clone(),
                            seq,
                        });
                    }
                    self.store_delivery(slot, &mut delivery, &mut ops);
                    held.push((slot.clone(), delivery));
                }
                _ => kept.push(d),
            }
        }
        drop(index);
        self.submit_and_push(&mut ops, &mut held, |_, _| {});
        kept
    }

    /// Gives a QoS 1/2 delivery to a persistent session a store record: the put joins `ops`,
    /// which must be submitted before the delivery is queued.
    /// Returns whether it did.
    fn store_delivery(
        &self,
        slot: &Subscriber,
        delivery: &mut Delivery,
        ops: &mut Vec<Op>,
    ) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        if delivery.qos == QoS::AtMostOnce || !slot.persistent.load(Ordering::Relaxed) {
            return false;
        }
        let seq = store.next_seq();
        delivery.stored = Some(seq);
        ops.push(Op::PutDelivery {
            client_id: slot.client_id.clone(),
            seq,
            delivery: delivery.clone(),
        });
        true
    }

    /// Submits `ops` (if any), then queues the deliveries held for them, telling `tally`
    /// what became of each; records dropped by full queues are deleted in a second commit.
    /// Returns the first commit's ticket.
    fn submit_and_push(
        &self,
        ops: &mut Vec<Op>,
        held: &mut Vec<(Subscriber, Delivery)>,
        mut tally: impl FnMut(Subscriber, Pushed),
    ) -> Option<Ticket> {
        let store = self.store.as_ref();
        let ticket = store.and_then(|s| (!ops.is_empty()).then(|| s.submit(std::mem::take(ops))));
        let mut evicted = Vec::new();
        for (slot, delivery) in held.drain(..) {
            let pushed = slot
                .mailbox
                .push_evicting(delivery, &mut evicted, ticket.unwrap_or(0));
            self.delete_evicted(&slot, &mut evicted, ops);
            tally(slot, pushed);
        }
        if let (Some(store), false) = (store, ops.is_empty()) {
            store.submit(std::mem::take(ops));
        }
        ticket
    }

    /// Adds deletes for the store records a queue dropped.
    fn delete_evicted(&self, slot: &SessionSlot, evicted: &mut Vec<u64>, ops: &mut Vec<Op>) {
        for seq in evicted.drain(..) {
            ops.push(Op::DeleteDelivery {
                client_id: slot.client_id.clone(),
                seq,
            });
        }
    }

    /// Routes a message to its receivers. When a persistent session receives it at QoS 1/2
    /// (or it is retained), its store records join `ops` (with whatever the caller put there
    /// first) and are submitted before it is queued anywhere; the ticket to wait for before
    /// acknowledging it is returned in [`Published::ticket`].
    pub(crate) fn publish(
        &self,
        message: Message,
        scratch: &mut RouteScratch<Subscriber>,
        ops: &mut Vec<Op>,
    ) -> Published {
        let message = Arc::new(message);
        if self.config.p2p.enabled {
            if let Some(target) = p2p_target(&message.topic) {
                let target = target.to_owned();
                return self.publish_p2p(&target, message, ops);
            }
        }
        if message.retain {
            let retained = Arc::new(message.detached());
            // `$SYS` values describe this run of the broker: not kept across a restart.
            if self.store.is_some() && !retained.topic.starts_with("$SYS/") {
                ops.push(if retained.payload.is_empty() {
                    Op::DeleteRetained(retained.topic.clone())
                } else {
                    Op::PutRetained(retained.clone())
                });
            }
            self.retained.write().set(retained);
        }
        // Authorization (an ACL, or tokens with permission claims): a shared group's message
        // goes to a member allowed to receive it, not to one that would drop it.
        let permitted = |slot: &Subscriber| slot.may_receive(&message.topic);
        let picker = Picker {
            policy: self.share_policy,
            origin: message.origin,
            random: scratch.next_random(),
            available: &can_take,
            permitted: self
                .authorizes()
                .then_some(&permitted as &dyn Fn(&Subscriber) -> bool),
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
        let mut tally = |slot: Subscriber, pushed: Pushed| match pushed {
            Pushed::Full => full += 1,
            Pushed::Congested if congested.is_none() => congested = Some(slot),
            _ => {}
        };
        // Under memory overload QoS 0 deliveries are dropped: one load per publish.
        let shed_qos0 = self.overload.level() >= crate::overload::Level::Shedding;
        let mut shed = 0u64;
        if self.store.is_none() && !shed_qos0 {
            // Without a store (durability `memory`) nothing is held back: the hot path of
            // the benchmarks stays as short as it was.
            let total = scratch.deliver_matches(&message, |slot, delivery| {
                let pushed = slot.mailbox.push(delivery);
                tally(slot, pushed);
            });
            return Published {
                routed: Routed::from_pushes(full, total),
                congested,
                ticket: None,
            };
        }
        let mut held = std::mem::take(&mut scratch.held);
        let total = scratch.deliver_matches(&message, |slot, mut delivery| {
            if shed_qos0 && delivery.qos == QoS::AtMostOnce {
                shed += 1;
            } else if self.store_delivery(&slot, &mut delivery, ops) {
                held.push((slot, delivery));
            } else {
                let pushed = slot.mailbox.push(delivery);
                tally(slot, pushed);
            }
        });
        let ticket = self.submit_and_push(ops, &mut held, tally);
        scratch.held = held;
        if shed > 0 {
            self.overload
                .dropped_qos0
                .fetch_add(shed, Ordering::Relaxed);
        }
        Published {
            routed: Routed::from_pushes(full, total),
            congested,
            ticket,
        }
    }

    /// Delivers a point-to-point message to the one client it names, online or parked; it is
    /// neither retained nor seen by subscribers.
    fn publish_p2p(&self, target: &str, message: Arc<Message>, ops: &mut Vec<Op>) -> Published {
        let Some(slot) = self.registry.get(target) else {
            tracing::debug!(target_client = target, topic = %message.topic, "p2p message for unknown client dropped");
            let ticket = self.submit_and_push(ops, &mut Vec::new(), |_, _| {});
            return Published {
                routed: Routed::NoReceivers,
                congested: None,
                ticket,
            };
        };
        let qos = message.qos.min(self.session_config.max_qos);
        if qos == QoS::AtMostOnce && self.overload.level() >= crate::overload::Level::Shedding {
            self.overload.dropped_qos0.fetch_add(1, Ordering::Relaxed);
            let ticket = self.submit_and_push(ops, &mut Vec::new(), |_, _| {});
            return Published {
                routed: Routed::Delivered,
                congested: None,
                ticket,
            };
        }
        let mut delivery = Delivery {
            message,
            qos,
            retain: false,
            subscription_ids: Vec::new(),
            shared: None,
            stored: None,
        };
        self.store_delivery(&slot, &mut delivery, ops);
        let mut pushed = Pushed::Queued;
        let ticket = self.submit_and_push(ops, &mut vec![(slot.clone(), delivery)], |_, p| {
            pushed = p;
        });
        Published {
            routed: Routed::from_pushes(usize::from(pushed == Pushed::Full), 1),
            congested: (pushed == Pushed::Congested).then_some(slot),
            ticket,
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
