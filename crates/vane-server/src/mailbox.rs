//! A session's mailbox: the bounded queue publishers push deliveries into, the wake-up its
//! connection task waits on, and the backpressure that pauses publishers while an online
//! client's queue is full of QoS 1/2 messages (instead of dropping what they were told is
//! acknowledged). A mailbox that stays full past the backpressure timeout, or an offline one,
//! applies its overflow policy and counts the drop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    /// Queued beyond the queue's caps: the publisher should pause until the queue drains.
    Congested,
}

/// Whether a publisher should wait for this mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Congestion {
    /// The queue has room (or backpressure does not apply): go on.
    Clear,
    /// The queue is over its caps: wait for it to drain, at most until this instant.
    Until(Instant),
    /// The wait ran out just now (reported once per episode): the client is not keeping up
    /// and the overflow policy applies to it until its queue drains to half.
    TimedOut,
}

struct Inner {
    queue: MessageQueue,
    online: bool,
    /// When QoS 1/2 deliveries first went beyond the caps in this episode of backpressure.
    congested_since: Option<Instant>,
    /// The episode outlasted the backpressure timeout: publishers no longer wait.
    stuck: bool,
}

impl Inner {
    /// Ends an episode of backpressure; true if publishers may be waiting.
    fn end_congestion(&mut self) -> bool {
        self.stuck = false;
        self.congested_since.take().is_some()
    }
}

/// Deliveries waiting for one session.
pub(crate) struct Mailbox {
    // parking_lot Mutex, not tokio: pushes and drains are short and never await.
    inner: Mutex<Inner>,
    notify: Notify,
    /// Wakes publishers paused by backpressure when the queue drains to half.
    space: Notify,
    /// 0: no backpressure, full queues apply their policy at once.
    backpressure_timeout: Duration,
    /// Queue length at which backpressure starts for a connected client.
    backpressure_above: usize,
    queue_qos0_offline: bool,
    /// Mirrors of `Inner::online` and the queue length, read without the lock when a shared
    /// subscription picks a member.
    online: AtomicBool,
    queued: AtomicUsize,
    /// Queue length above which a shared-subscription member is passed over.
    busy_above: usize,
}

impl Mailbox {
    pub(crate) fn new(
        limits: QueueLimits,
        queue_qos0_offline: bool,
        backpressure_timeout: Duration,
        backpressure_above: usize,
    ) -> Mailbox {
        Mailbox {
            inner: Mutex::new(Inner {
                queue: MessageQueue::new(limits),
                online: false,
                congested_since: None,
                stuck: false,
            }),
            notify: Notify::new(),
            space: Notify::new(),
            backpressure_timeout,
            backpressure_above: backpressure_above.clamp(1, limits.max_messages.max(1)),
            queue_qos0_offline,
            online: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            busy_above: (limits.max_messages / 2).max(1),
        }
    }

    /// Queues a delivery and wakes the connection task.
    pub(crate) fn push(&self, delivery: Delivery) -> Pushed {
        self.push_evicting(delivery, &mut Vec::new())
    }

    /// Queues a delivery and wakes the connection task; the store records of deliveries
    /// dropped by the overflow policy (this one or older ones) are added to `evicted`.
    pub(crate) fn push_evicting(&self, delivery: Delivery, evicted: &mut Vec<u64>) -> Pushed {
        let stored = delivery.stored;
        let (offer, online, congested) = {
            let mut inner = self.inner.lock();
            if !inner.online && delivery.qos == QoS::AtMostOnce && !self.queue_qos0_offline {
                return Pushed::NotKept;
            }
            let was_empty = inner.queue.is_empty();
            let congested = self.holds_back(&mut inner, &delivery);
            let offer = if congested {
                // Twice the caps bound what publishers already past their last check can
                // add while they pause.
                inner.queue.offer_scaled(delivery, 2)
            } else {
                inner.queue.offer(delivery)
            };
            self.queued.store(inner.queue.len(), Ordering::Relaxed);
            inner.queue.take_evicted(evicted);
            (offer, inner.online && was_empty, congested)
        };
        // Only the push that makes the queue non-empty needs to wake the task: it drains
        // everything queued before it sleeps again.
        if online {
            self.notify.notify_one();
        }
        match offer {
            Offer::Dropped => {
                evicted.extend(stored);
                Pushed::Full
            }
            _ if congested => Pushed::Congested,
            _ => Pushed::Queued,
        }
    }

    /// Whether a delivery that finds the queue at its backpressure length (or full) is kept,
    /// beyond the caps if need be, while publishers pause: QoS 1/2, to an online client, within
    /// the backpressure timeout.
    fn holds_back(&self, inner: &mut Inner, delivery: &Delivery) -> bool {
        if delivery.qos == QoS::AtMostOnce
            || !inner.online
            || inner.stuck
            || self.backpressure_timeout.is_zero()
            || (inner.congested_since.is_none()
                && inner.queue.len() < self.backpressure_above
                && inner.queue.has_room_for(delivery.size()))
        {
            return false;
        }
        let since = *inner.congested_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.backpressure_timeout {
            return true;
        }
        inner.stuck = true;
        false
    }

    /// Whether a publisher whose message went beyond the caps should wait for this mailbox.
    pub(crate) fn congestion(&self) -> Congestion {
        let mut inner = self.inner.lock();
        match inner.congested_since {
            None => Congestion::Clear,
            Some(_) if inner.stuck => Congestion::Clear,
            Some(since) => {
                let until = since + self.backpressure_timeout;
                if Instant::now() < until {
                    Congestion::Until(until)
                } else {
                    inner.stuck = true;
                    drop(inner);
                    self.space.notify_waiters();
                    Congestion::TimedOut
                }
            }
        }
    }

    /// Waits until the queue drains enough for publishers to go on, or `until`. Spurious
    /// returns are fine: the caller asks [`Mailbox::congestion`] again.
    pub(crate) async fn space_or(&self, until: Instant) {
        let notified = self.space.notified();
        tokio::pin!(notified);
        // Registered before the check, so a drain between the two is not missed.
        notified.as_mut().enable();
        if !matches!(self.congestion(), Congestion::Until(_)) {
            return;
        }
        let _ = tokio::time::timeout_at(until.into(), notified).await;
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
        let release = inner.queue.len() <= self.backpressure_above / 2
            && inner.queue.at_most_half_full()
            && inner.end_congestion();
        drop(inner);
        if release {
            self.space.notify_waiters();
        }
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
        // Nobody waits for an offline client: its queue's policy applies from now on.
        let release = !online && inner.end_congestion();
        drop(inner);
        if release {
            self.space.notify_waiters();
        }
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
        let mut inner = self.inner.lock();
        inner.queue.clear();
        self.queued.store(0, Ordering::Relaxed);
        let release = inner.end_congestion();
        drop(inner);
        if release {
            self.space.notify_waiters();
        }
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
