//! Turning the raw matches of a topic into one delivery per subscriber: No Local, overlapping
//! subscriptions, QoS downgrade and the retain flag.

use std::sync::Arc;

use crate::message::{Delivery, Message};
use crate::subscription_index::{SharedMatch, Subscription};

/// Reusable buffers for routing, so that routing a message allocates nothing once warm.
#[derive(Debug)]
pub struct RouteScratch<S> {
    /// Raw matches, filled by [`crate::SubscriptionIndex::matches_into`].
    pub matches: Vec<Subscription<S>>,
    /// Shared-subscription members picked, filled by [`crate::SubscriptionIndex::select_into`].
    pub shared: Vec<SharedMatch<S>>,
    /// Deliveries held back until their store records are submitted (reused per publish).
    pub held: Vec<(S, Delivery)>,
    ids: Vec<Vec<u32>>,
    rng: u64,
}

impl<S> Default for RouteScratch<S> {
    fn default() -> Self {
        Self::with_seed(0x9E37_79B9_7F4A_7C15)
    }
}

impl<S> RouteScratch<S> {
    /// Empty buffers, with a seed for the random numbers of [`RouteScratch::next_random`].
    pub fn with_seed(seed: u64) -> Self {
        RouteScratch {
            matches: Vec::new(),
            shared: Vec::new(),
            held: Vec::new(),
            ids: Vec::new(),
            rng: seed | 1,
        }
    }

    /// A pseudo-random number (xorshift64*), for picking a random shared-subscription member;
    /// not for anything that needs to be unpredictable.
    pub fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Turns the matches in `self.matches` into one delivery per subscriber, and each picked
    /// shared-subscription member in `self.shared` into one more, and hands each to `deliver`;
    /// returns how many deliveries there were. Clears both.
    ///
    /// - No Local subscriptions skip the publisher's own messages [MQTT-3.8.3-3].
    /// - Overlapping subscriptions give one delivery at the highest QoS with every subscription
    ///   identifier [MQTT-3.3.4-2], [MQTT-3.3.4-3].
    /// - The QoS is the lower of published and granted [MQTT-3.8.4-8].
    /// - The retain flag is cleared unless Retain As Published is set [MQTT-3.3.1-9], [MQTT-3.3.1-12].
    pub fn deliver_matches(
        &mut self,
        message: &Arc<Message>,
        mut deliver: impl FnMut(S, Delivery),
    ) -> usize {
        self.matches.retain(|s| {
            !(s.options.no_local && s.session_id == message.origin && message.origin != 0)
        });
        merge_overlaps(&mut self.matches, &mut self.ids);
        let count = self.matches.len();
        for (sub, ids) in self.matches.drain(..).zip(self.ids.drain(..)) {
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(sub.options.qos),
                retain: message.retain && sub.options.retain_as_published,
                subscription_ids: ids,
                shared: None,
                stored: None,
            };
            deliver(sub.subscriber, delivery);
        }
        // A shared subscription is separate from the member's plain ones: its copy is never
        // merged with theirs (MQTT 5.0 section 4.8.2).
        let shared = self.shared.len();
        for m in self.shared.drain(..) {
            let sub = m.subscription;
            let delivery = Delivery {
                message: message.clone(),
                qos: message.qos.min(sub.options.qos),
                retain: message.retain && sub.options.retain_as_published,
                subscription_ids: sub.subscription_id.into_iter().collect(),
                shared: Some(Box::new(m.filter)),
                stored: None,
            };
            deliver(sub.subscriber, delivery);
        }
        count + shared
    }
}

/// Merges the matches of one subscriber into one entry [MQTT-3.3.4-2]: the highest QoS, every
/// subscription identifier, and Retain As Published if any match asks for it. Leaves `out`
/// sorted by session id. `ids` receives the subscription identifiers per merged entry, in the
/// same order as `out`.
pub(crate) fn merge_overlaps<S>(out: &mut Vec<Subscription<S>>, ids: &mut Vec<Vec<u32>>) {
    ids.clear();
    if out.len() <= 1 {
        if let Some(s) = out.first() {
            ids.push(s.subscription_id.into_iter().collect());
        }
        return;
    }
    out.sort_unstable_by_key(|s| s.session_id);
    let mut write = 0;
    for read in 0..out.len() {
        if write > 0 && out[write - 1].session_id == out[read].session_id {
            let (qos, rap, sid) = (
                out[read].options.qos,
                out[read].options.retain_as_published,
                out[read].subscription_id,
            );
            let merged = &mut out[write - 1];
            merged.options.qos = merged.options.qos.max(qos);
            merged.options.retain_as_published |= rap;
            if let Some(sid) = sid {
                if let Some(last) = ids.last_mut() {
                    last.push(sid);
                }
            }
        } else {
            out.swap(write, read);
            ids.push(out[write].subscription_id.into_iter().collect());
            write += 1;
        }
    }
    out.truncate(write);
}
