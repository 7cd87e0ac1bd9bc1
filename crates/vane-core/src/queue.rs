//! A bounded queue of deliveries with a written overflow policy and a count of what it drops.

use std::collections::VecDeque;

use vane_proto::QoS;

use crate::message::Delivery;

/// What to do when a delivery arrives at a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Drop the oldest queued delivery to make room: subscribers get the freshest data.
    #[default]
    DropOldest,
    /// Refuse the new delivery: what is queued stays intact.
    DropNewest,
}

/// Caps on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most deliveries held.
    pub max_messages: usize,
    /// Most payload and topic bytes held.
    pub max_bytes: usize,
    /// What happens when a cap is reached.
    pub policy: OverflowPolicy,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_messages: 1000,
            max_bytes: 64 * 1024 * 1024,
            policy: OverflowPolicy::DropOldest,
        }
    }
}

/// Result of offering a delivery to a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Queued with room to spare.
    Queued,
    /// Queued after dropping the oldest delivery.
    QueuedDroppedOldest,
    /// Not queued: the queue is full and refuses new deliveries, or it does not take QoS 0.
    Dropped,
}

/// A FIFO of deliveries for one client, bounded in count and bytes.
#[derive(Debug, Default)]
pub struct MessageQueue {
    items: VecDeque<Delivery>,
    bytes: usize,
    limits: QueueLimits,
    dropped: u64,
    /// Store records of deliveries dropped to make room, for the store to delete.
    evicted: Vec<u64>,
}

impl MessageQueue {
    /// An empty queue with the given limits.
    pub fn new(limits: QueueLimits) -> MessageQueue {
        MessageQueue {
            items: VecDeque::new(),
            bytes: 0,
            limits,
            dropped: 0,
            evicted: Vec::new(),
        }
    }

    /// Offers a delivery; applies the overflow policy when full.
    pub fn offer(&mut self, delivery: Delivery) -> Offer {
        self.offer_scaled(delivery, 1)
    }

    /// Offers a delivery to the queue as if its caps were `factor` times larger; the overflow
    /// policy applies at those caps. Backpressure uses this to keep messages for an online
    /// client beyond its caps while its publishers are paused.
    pub fn offer_scaled(&mut self, delivery: Delivery, factor: usize) -> Offer {
        let max_messages = self.limits.max_messages.saturating_mul(factor);
        let max_bytes = self.limits.max_bytes.saturating_mul(factor);
        let size = delivery.size();
        if size > max_bytes || max_messages == 0 {
            self.dropped += 1;
            return Offer::Dropped;
        }
        let mut outcome = Offer::Queued;
        while self.items.len() >= max_messages || self.bytes + size > max_bytes {
            match self.limits.policy {
                OverflowPolicy::DropNewest => {
                    self.dropped += 1;
                    return Offer::Dropped;
                }
                OverflowPolicy::DropOldest => {
                    if let Some(old) = self.items.pop_front() {
                        self.bytes -= old.size();
                        if let Some(seq) = old.stored {
                            self.evicted.push(seq);
                        }
                        self.dropped += 1;
                        outcome = Offer::QueuedDroppedOldest;
                    }
                }
            }
        }
        self.bytes += size;
        self.items.push_back(delivery);
        outcome
    }

    /// Whether a delivery of `size` bytes fits within the caps without dropping anything.
    pub fn has_room_for(&self, size: usize) -> bool {
        self.items.len() < self.limits.max_messages && self.bytes + size <= self.limits.max_bytes
    }

    /// Whether the queue holds at most half of each cap.
    pub fn at_most_half_full(&self) -> bool {
        self.items.len() <= self.limits.max_messages / 2 && self.bytes <= self.limits.max_bytes / 2
    }

    /// Moves the store records of deliveries dropped since the last call into `out`.
    pub fn take_evicted(&mut self, out: &mut Vec<u64>) {
        if !self.evicted.is_empty() {
            out.append(&mut self.evicted);
        }
    }

    /// Takes the oldest delivery.
    pub fn pop(&mut self) -> Option<Delivery> {
        let d = self.items.pop_front()?;
        self.bytes -= d.size();
        Some(d)
    }

    /// Puts a delivery back at the front (it could not be sent yet).
    pub fn push_front(&mut self, delivery: Delivery) {
        self.bytes += delivery.size();
        self.items.push_front(delivery);
    }

    /// The oldest delivery, without taking it.
    pub fn peek(&self) -> Option<&Delivery> {
        self.items.front()
    }

    /// Removes QoS 0 deliveries, which are not kept for an offline client by default.
    pub fn drop_qos0(&mut self) -> usize {
        let before = self.items.len();
        self.items.retain(|d| d.qos != QoS::AtMostOnce);
        self.bytes = self.items.iter().map(Delivery::size).sum();
        before - self.items.len()
    }

    /// Removes and returns the deliveries `take` selects, keeping the others in order.
    pub fn take_where(&mut self, mut take: impl FnMut(&Delivery) -> bool) -> Vec<Delivery> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.items.len());
        for d in self.items.drain(..) {
            if take(&d) {
                self.bytes -= d.size();
                taken.push(d);
            } else {
                kept.push_back(d);
            }
        }
        self.items = kept;
        taken
    }

    /// Empties the queue.
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    /// Deliveries queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Deliveries dropped by the overflow policy since the queue was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Changes the limits; takes effect on the next offer.
    pub fn set_limits(&mut self, limits: QueueLimits) {
        self.limits = limits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use std::sync::Arc;
    use std::time::Instant;

    fn delivery(n: u8) -> Delivery {
        let message = Message {
            topic: "t".into(),
            payload: bytes::Bytes::from(vec![n; 9]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            origin: 0,
            received: Instant::now(),
        };
        Delivery {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
            shared: None,
            stored: None,
        }
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts() {
        let mut q = MessageQueue::new(QueueLimits {
            max_messages: 2,
            max_bytes: 1000,
            policy: OverflowPolicy::DropOldest,
        });
        assert_eq!(q.offer(delivery(1)), Offer::Queued);
        assert_eq!(q.offer(delivery(2)), Offer::Queued);
        assert_eq!(q.offer(delivery(3)), Offer::QueuedDroppedOldest);
        assert_eq!(q.pop().map(|d| d.message.payload[0]), Some(2));
        assert_eq!(q.dropped(), 1);
    }

    #[test]
    fn drop_newest_refuses_when_full() {
        let mut q = MessageQueue::new(QueueLimits {
            max_messages: 10,
            max_bytes: 20,
            policy: OverflowPolicy::DropNewest,
        });
        assert_eq!(q.offer(delivery(1)), Offer::Queued);
        assert_eq!(q.offer(delivery(2)), Offer::Queued);
        assert_eq!(q.offer(delivery(3)), Offer::Dropped);
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), 20);
        assert_eq!(q.dropped(), 1);
    }

    #[test]
    fn scaled_offer_keeps_beyond_the_caps_then_applies_the_policy() {
        let mut q = MessageQueue::new(QueueLimits {
            max_messages: 2,
            max_bytes: 1000,
            policy: OverflowPolicy::DropOldest,
        });
        q.offer(delivery(1));
        q.offer(delivery(2));
        assert!(!q.has_room_for(10));
        assert_eq!(q.offer_scaled(delivery(3), 2), Offer::Queued);
        assert_eq!(q.offer_scaled(delivery(4), 2), Offer::Queued);
        assert_eq!(q.len(), 4);
        // At twice the caps the policy drops one, not everything above the plain caps.
        assert_eq!(q.offer_scaled(delivery(5), 2), Offer::QueuedDroppedOldest);
        assert_eq!(q.len(), 4);
        assert!(!q.at_most_half_full());
        q.pop();
        q.pop();
        q.pop();
        assert!(q.at_most_half_full());
    }
}
