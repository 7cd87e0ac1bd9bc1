//! A session's mailbox: the bounded queue publishers push deliveries into, and the wake-up
//! its connection task waits on. Publishers never wait: a full mailbox applies its overflow
//! policy and counts the drop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use vane_core::{Delivery, MessageQueue, Offer, QueueLimits, Session};
use vane_proto::QoS;

/// What a drain left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pull {
    /// Nothing is waiting: sleep until the mailbox is notified.
    Empty,
    /// Deliveries wait for the in-flight window: sleep until an acknowledgement.
    WindowFull,
    /// The batch limit was reached with deliveries left: pull again without sleeping.
    More,
}

/// What became of a pushed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued (possibly in place of the oldest one, under `drop-oldest`).
    Queued,
    /// Refused: the queue is full and its policy is `drop-newest`.
    Full,
    /// Not kept: QoS 0 for an offline session that does not queue it.
    NotKept,
}

struct Inner {
    queue: MessageQueue,
    online: bool,
}

/// Deliveries waiting for one session.
pub(crate) struct Mailbox {
    // parking_lot Mutex, not tokio: pushes and drains are short and never await.
    inner: Mutex<Inner>,
    notify: Notify,
    queue_qos0_offline: bool,
    /// Mirrors of `Inner::online` and the queue length, read without the lock when a shared
    /// subscription picks a member.
    online: AtomicBool,
    queued: AtomicUsize,
    /// Queue length above which a shared-subscription member is passed over.
    busy_above: usize,
}

impl Mailbox {
    pub(crate) fn new(limits: QueueLimits, queue_qos0_offline: bool) -> Mailbox {
        Mailbox {
            inner: Mutex::new(Inner {
                queue: MessageQueue::new(limits),
                online: false,
            }),
            notify: Notify::new(),
            queue_qos0_offline,
            online: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            busy_above: (limits.max_messages / 2).max(1),
        }
    }

    /// Queues a delivery and wakes the connection task.
    pub(crate) fn push(&self, delivery: Delivery) -> Pushed {
        let (offer, online) = {
            let mut inner = self.inner.lock();
            if !inner.online && delivery.qos == QoS::AtMostOnce && !self.queue_qos0_offline {
                return Pushed::NotKept;
            }
            let was_empty = inner.queue.is_empty();
            let offer = inner.queue.offer(delivery);
            self.queued.store(inner.queue.len(), Ordering::Relaxed);
            (offer, inner.online && was_empty)
        };
        // Only the push that makes the queue non-empty needs to wake the task: it drains
        // everything queued before it sleeps again.
        if online {
            self.notify.notify_one();
        }
        if offer == Offer::Dropped {
            Pushed::Full
        } else {
            Pushed::Queued
        }
    }

    /// Moves queued deliveries into the session until the queue is empty, the session's
    /// in-flight window is full, or `max` deliveries were moved.
    pub(crate) fn drain_into(
        &self,
        session: &mut Session,
        now: std::time::Instant,
        max: usize,
    ) -> Pull {
        let mut inner = self.inner.lock();
        let mut pull = Pull::More;
        for _ in 0..max {
            let Some(d) = inner.queue.pop() else {
                pull = Pull::Empty;
                break;
            };
            if let Err(d) = session.deliver(d, now) {
                inner.queue.push_front(d);
                pull = Pull::WindowFull;
                break;
            }
        }
        if pull == Pull::More && inner.queue.is_empty() {
            pull = Pull::Empty;
        }
        self.queued.store(inner.queue.len(), Ordering::Relaxed);
        pull
    }

    /// Waits until a push makes the mailbox non-empty.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await
    }

    /// Marks the session online (deliveries wake its task) or offline (QoS 0 is not kept
    /// unless configured). Going offline drops queued QoS 0 deliveries under the same rule.
    /// Returns the number of deliveries the overflow policy has dropped in total.
    pub(crate) fn set_online(&self, online: bool) -> u64 {
        let mut inner = self.inner.lock();
        inner.online = online;
        self.online.store(online, Ordering::Relaxed);
        if !online && !self.queue_qos0_offline {
            inner.queue.drop_qos0();
        }
        self.queued.store(inner.queue.len(), Ordering::Relaxed);
        let dropped = inner.queue.dropped();
        drop(inner);
        if online {
            // Wake the new task so it drains what queued while the session was offline.
            self.notify.notify_one();
        }
        dropped
    }

    /// Number of deliveries queued.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().queue.len()
    }

    /// Empties the mailbox (the session ended).
    pub(crate) fn clear(&self) {
        self.inner.lock().queue.clear();
        self.queued.store(0, Ordering::Relaxed);
    }

    /// Takes out the queued deliveries that were picked for a shared subscription.
    pub(crate) fn take_shared(&self) -> Vec<Delivery> {
        let mut inner = self.inner.lock();
        let taken = inner.queue.take_where(|d| d.shared.is_some());
        self.queued.store(inner.queue.len(), Ordering::Relaxed);
        taken
    }

    /// Whether the session can take a message now: online, and its queue not more than half
    /// full. Read without the lock, for picking shared-subscription members.
    pub(crate) fn can_take(&self) -> bool {
        self.online.load(Ordering::Relaxed) && self.queued.load(Ordering::Relaxed) < self.busy_above
    }
}
