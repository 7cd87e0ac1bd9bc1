//! Topic permissions: the hook through which the broker's authorization decides what the
//! session's client may publish, subscribe to and receive.

use std::fmt;
use std::sync::Arc;

use vane_proto::TopicFilter;

use super::{Session, StoreEvent};

/// The topic permissions of the client a session serves, set for each connection (another
/// connection may take the session over with another identity). Implementations decide from
/// rules that may change while the client is connected, so every delivery asks again.
pub trait TopicPolicy: Send + Sync + fmt::Debug {
    /// May the client publish to the topic name `topic`?
    fn may_publish(&self, topic: &str) -> bool;
    /// May the client subscribe to `filter`? A shared subscription is judged on
    /// [`TopicFilter::filter`], without its `$share/<group>/` prefix.
    fn may_subscribe(&self, filter: &TopicFilter) -> bool;
    /// May the client receive a message published on `topic`?
    fn may_receive(&self, topic: &str) -> bool;
}

impl Session {
    /// Sets the topic permissions of the connection now serving the session; `None`: every
    /// topic is allowed (no authorization configured), at the cost of one branch per check.
    pub fn set_policy(&mut self, policy: Option<Arc<dyn TopicPolicy>>) {
        self.policy = policy;
    }

    /// The topic permissions in force, if any.
    pub fn policy(&self) -> Option<&Arc<dyn TopicPolicy>> {
        self.policy.as_ref()
    }

    /// True when the policy refuses the client `topic`: the delivery is dropped (and its
    /// store record completed, so it does not come back).
    #[inline]
    pub(super) fn refuses_delivery(&mut self, topic: &str, stored: Option<u64>) -> bool {
        let Some(policy) = &self.policy else {
            return false;
        };
        if policy.may_receive(topic) {
            return false;
        }
        if let Some(seq) = stored {
            self.store_events.push(StoreEvent::Completed { seq });
        }
        super::SessionCounts::bump(&mut self.counts.deliveries_denied);
        true
    }
}
