//! A session's mailbox: the bounded queue publishers push deliveries into, the wake-up its
//! connection task waits on, and the backpressure that pauses publishers while an online
//! client's queue is full of QoS 1/2 messages (instead of dropping what they were told is
//! acknowledged). A mailbox that stays full past the backpressure timeout, or an offline one,
//! applies its overflow policy and counts the drop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;
use vane_core::{Delivery, MessageQueue, Offer, QueueLimits, Session};
use vane_proto::QoS;
use vane_store::Ticket;

use crate::metrics::{DropCause, Metrics};

/// What a drain left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pull {
    /// Nothing is waiting: sleep until the mailbox is notified.
    Empty,
    /// Deliveries wait for the in-flight window: sleep until an acknowledgement.
    WindowFull,
    /// The batch limit was reached with deliveries left: pull again without sleeping.
    More,
    /// Deliveries wait on disk for this store ticket to be durable (readable).
    WaitStore(Ticket),
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
    /// Deliveries kept on disk only (see [`Spilled`]); older than every stored delivery in
    /// `queue`.
    spilled: Spilled,
    /// The highest store ticket of a delivery pushed here.
    last_ticket: Ticket,
    online: bool,
    /// When QoS 1/2 deliveries first went beyond the caps in this episode of backpressure.
    congested_since: Option<Instant>,
    /// The episode outlasted the backpressure timeout: publishers no longer wait.
    stuck: bool,
    /// The connected client is a slow consumer: QoS 0 deliveries to it are dropped and
    /// publishers do not wait for it.
    slow: bool,
    /// QoS 0 deliveries dropped because the client was a slow consumer.
    slow_dropped: u64,
}

/// The deliveries of a session whose store records are all the broker keeps of them: an
/// offline client's queue lives on disk, not in memory (8 bytes of sequence number and 4 of
/// size each). Its connection reads them back in batches when the client returns.
#[derive(Default)]
struct Spilled {
    seqs: VecDeque<(u64, u32)>,
    bytes: usize,
    /// The store ticket covering every record here: they can be read once it is durable.
    ticket: Ticket,
    dropped: u64,
}

/// What [`Mailbox::take_spilled`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Spill {
    /// Nothing is on disk only.
    Empty,
    /// Records wait for this ticket to be durable before they can be read.
    Wait(Ticket),
    /// These records, oldest first, to read from the store.
    Taken(Vec<u64>),
}

impl Inner {
    /// Deliveries held, in memory and on disk.
    fn total_len(&self) -> usize {
        self.queue.len() + self.spilled.seqs.len()
    }

    /// Whether a delivery of `size` bytes fits within the caps, counting what is on disk.
    fn has_room_for(&self, size: usize) -> bool {
        let limits = self.queue.limits();
        self.total_len() < limits.max_messages
            && self.queue.bytes() + self.spilled.bytes + size <= limits.max_bytes
    }

    /// Whether at most half of each cap is used, counting what is on disk.
    fn at_most_half_full(&self) -> bool {
        let limits = self.queue.limits();
        self.total_len() <= limits.max_messages / 2
            && self.queue.bytes() + self.spilled.bytes <= limits.max_bytes / 2
    }

    /// Keeps only the store record of a delivery, applying the caps (times `factor`) and the
    /// overflow policy; records dropped go to `evicted`.
    fn spill(
        &mut self,
        seq: u64,
        size: usize,
        factor: usize,
        ticket: Ticket,
        evicted: &mut Vec<u64>,
    ) -> Offer {
        let limits = self.queue.limits();
        let max_messages = limits.max_messages.saturating_mul(factor);
        let max_bytes = limits.max_bytes.saturating_mul(factor);
        // A refused delivery's own record is named by the caller (`Offer::Dropped`).
        if size > max_bytes {
            self.spilled.dropped += 1;
            return Offer::Dropped;
        }
        let mut outcome = Offer::Queued;
        while self.total_len() >= max_messages
            || self.queue.bytes() + self.spilled.bytes + size > max_bytes
        {
            if limits.policy == vane_core::OverflowPolicy::DropNewest {
                self.spilled.dropped += 1;
                return Offer::Dropped;
            }
            if let Some((old, old_size)) = self.spilled.seqs.pop_front() {
                self.spilled.bytes -= old_size as usize;
                evicted.push(old);
            } else if let Some(old) = self.queue.pop() {
                evicted.extend(old.stored);
            } else {
                break;
            }
            self.spilled.dropped += 1;
            outcome = Offer::QueuedDroppedOldest;
        }
        self.spilled
            .seqs
            .push_back((seq, u32::try_from(size).unwrap_or(u32::MAX)));
        self.spilled.bytes += size;
        self.spilled.ticket = self.spilled.ticket.max(ticket);
        outcome
    }

    /// Deliveries the overflow policy dropped, in memory and on disk, since the mailbox was
    /// made.
    fn dropped(&self) -> u64 {
        self.queue.dropped() + self.spilled.dropped
    }

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
    /// Whether stored deliveries of an offline session are kept on disk only.
    spill: bool,
    /// Where the deliveries this mailbox drops are counted.
    metrics: Arc<Metrics>,
}

impl Mailbox {
    pub(crate) fn new(
        limits: QueueLimits,
        queue_qos0_offline: bool,
        backpressure_timeout: Duration,
        backpressure_above: usize,
        spill: bool,
        metrics: Arc<Metrics>,
    ) -> Mailbox {
        Mailbox {
            inner: Mutex::new(Inner {
                queue: MessageQueue::new(limits),
                spilled: Spilled::default(),
                last_ticket: 0,
                online: false,
                congested_since: None,
                stuck: false,
                slow: false,
                slow_dropped: 0,
            }),
            notify: Notify::new(),
            space: Notify::new(),
            backpressure_timeout,
            backpressure_above: backpressure_above.clamp(1, limits.max_messages.max(1)),
            queue_qos0_offline,
            online: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            busy_above: (limits.max_messages / 2).max(1),
            spill,
            metrics,
        }
    }

    /// Queues a delivery and wakes the connection task.
    #[inline]
    pub(crate) fn push(&self, delivery: Delivery) -> Pushed {
        self.push_evicting(delivery, &mut Vec::new(), 0)
    }

    /// Queues a delivery and wakes the connection task; the store records of deliveries
    /// dropped by the overflow policy (this one or older ones) are added to `evicted`.
    /// `ticket` is the store commit that holds the delivery's record, if it has one: the
    /// delivery of an offline session is then kept on disk only.
    #[inline]
    pub(crate) fn push_evicting(
        &self,
        delivery: Delivery,
        evicted: &mut Vec<u64>,
        ticket: Ticket,
    ) -> Pushed {
        let stored = delivery.stored;
        let (offer, online, congested) = {
            let mut inner = self.inner.lock();
            if delivery.qos == QoS::AtMostOnce
                && (inner.slow || (!inner.online && !self.queue_qos0_offline))
            {
                if inner.slow {
                    inner.slow_dropped += 1;
                    self.metrics.dropped(DropCause::SlowConsumer, 1);
                }
                return Pushed::NotKept;
            }
            let was_empty = inner.total_len() == 0;
            let dropped_before = inner.dropped();
            inner.last_ticket = inner.last_ticket.max(ticket);
            let congested = self.holds_back(&mut inner, &delivery);
            // Shared-subscription deliveries stay in memory: another member may take them.
            let to_disk = self.spill
                && delivery.shared.is_none()
                && (!inner.online || !inner.spilled.seqs.is_empty());
            let offer = if let (true, Some(seq)) = (to_disk, stored) {
                let factor = if congested { 2 } else { 1 };
                let size = delivery.size();
                drop(delivery);
                inner.spill(seq, size, factor, ticket, evicted)
            } else if congested {
                // Twice the caps bound what publishers already past their last check can
                // add while they pause.
                inner.queue.offer_scaled(delivery, 2)
            } else {
                inner.queue.offer(delivery)
            };
            self.queued.store(inner.total_len(), Ordering::Relaxed);
            inner.queue.take_evicted(evicted);
            let dropped = inner.dropped() - dropped_before;
            if dropped > 0 {
                self.metrics.dropped(DropCause::QueueFull, dropped);
            }
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
            || inner.slow
            || self.backpressure_timeout.is_zero()
            || (inner.congested_since.is_none()
                && inner.total_len() < self.backpressure_above
                && inner.has_room_for(delivery.size()))
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
    /// in-flight window is full, or `max` deliveries or at least `max_bytes` (topic and
    /// payload) were moved: what is moved is written out next, so the bytes bound the
    /// connection's write buffer. Returns how many were moved.
    pub(crate) fn drain_into(
        &self,
        session: &mut Session,
        now: std::time::Instant,
        max: usize,
        max_bytes: usize,
    ) -> (Pull, usize) {
        let mut inner = self.inner.lock();
        let mut pull = Pull::More;
        let mut moved = 0;
        let mut bytes = 0;
        while moved < max && bytes < max_bytes {
            let Some(d) = inner.queue.pop() else {
                pull = Pull::Empty;
                break;
            };
            let size = d.size();
            if let Err(d) = session.deliver(d, now) {
                inner.queue.push_front(d);
                pull = Pull::WindowFull;
                break;
            }
            moved += 1;
            bytes += size;
        }
        if pull == Pull::More && inner.queue.is_empty() {
            pull = Pull::Empty;
        }
        self.queued.store(inner.total_len(), Ordering::Relaxed);
        let release = self.drained(&mut inner);
        drop(inner);
        if release {
            self.space.notify_waiters();
        }
        (pull, moved)
    }

    /// Queues a delivery that is on disk only (restored at start, session offline), under the
    /// caps and overflow policy; records dropped go to `evicted`.
    pub(crate) fn push_on_disk(&self, seq: u64, size: usize, evicted: &mut Vec<u64>) {
        let mut inner = self.inner.lock();
        if let Offer::Dropped = inner.spill(seq, size, 1, 0, evicted) {
            evicted.push(seq);
        }
        self.queued.store(inner.total_len(), Ordering::Relaxed);
    }

    /// Whether a drain ended an episode of backpressure.
    fn drained(&self, inner: &mut Inner) -> bool {
        inner.total_len() <= self.backpressure_above / 2
            && inner.at_most_half_full()
            && inner.end_congestion()
    }

    /// Takes up to `max` of the oldest deliveries kept on disk only, once the store has made
    /// them readable (`durable` is its durable ticket). They come before anything in memory.
    pub(crate) fn take_spilled(&self, max: usize, durable: Ticket) -> Spill {
        let mut inner = self.inner.lock();
        if inner.spilled.seqs.is_empty() {
            return Spill::Empty;
        }
        if inner.spilled.ticket > durable {
            return Spill::Wait(inner.spilled.ticket);
        }
        let n = max.min(inner.spilled.seqs.len());
        let mut seqs = Vec::with_capacity(n);
        let spilled = &mut inner.spilled;
        for (seq, size) in spilled.seqs.drain(..n) {
            seqs.push(seq);
            spilled.bytes -= size as usize;
        }
        if inner.spilled.seqs.is_empty() {
            // Give the memory of a long offline queue back.
            inner.spilled.seqs = VecDeque::new();
        }
        self.queued.store(inner.total_len(), Ordering::Relaxed);
        let release = self.drained(&mut inner);
        drop(inner);
        if release {
            self.space.notify_waiters();
        }
        Spill::Taken(seqs)
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
        // Slow-consumer status belongs to a connection, not to the session.
        inner.slow = false;
        if online {
            inner.slow_dropped = 0;
        }
        self.online.store(online, Ordering::Relaxed);
        if !online && !self.queue_qos0_offline {
            inner.queue.drop_qos0();
        }
        if !online && self.spill {
            // What waits in memory for a client that left goes to disk only, ahead of what
            // comes next (it is older).
            let moved = inner
                .queue
                .take_where(|d| d.stored.is_some() && d.shared.is_none());
            for d in moved.into_iter().rev() {
                if let Some(seq) = d.stored {
                    let size = d.size();
                    inner
                        .spilled
                        .seqs
                        .push_front((seq, u32::try_from(size).unwrap_or(u32::MAX)));
                    inner.spilled.bytes += size;
                }
            }
            inner.spilled.ticket = inner.spilled.ticket.max(inner.last_ticket);
        }
        self.queued.store(inner.total_len(), Ordering::Relaxed);
        let dropped = inner.dropped();
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

    /// Marks the connected client a slow consumer (QoS 0 deliveries to it are dropped, those
    /// queued too, and publishers stop waiting for it) or not any more. Returns the QoS 0
    /// deliveries dropped for it so far.
    pub(crate) fn set_slow(&self, slow: bool) -> u64 {
        let mut inner = self.inner.lock();
        inner.slow = slow;
        let mut release = false;
        if slow {
            // Set once per episode, when the connection's policy flags the client.
            self.metrics.slow_consumer_flagged();
            let dropped = inner.queue.drop_qos0() as u64;
            inner.slow_dropped += dropped;
            if dropped > 0 {
                self.metrics.dropped(DropCause::SlowConsumer, dropped);
            }
            self.queued.store(inner.total_len(), Ordering::Relaxed);
            release = inner.end_congestion();
        }
        let dropped = inner.slow_dropped;
        drop(inner);
        if release {
            self.space.notify_waiters();
        }
        dropped
    }

    /// QoS 0 deliveries dropped since the client connected because it was a slow consumer.
    pub(crate) fn slow_dropped(&self) -> u64 {
        self.inner.lock().slow_dropped
    }

    /// Whether deliveries wait in the mailbox (read without the lock).
    pub(crate) fn has_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0
    }

    /// Number of deliveries queued, in memory and on disk.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().total_len()
    }

    /// Empties the mailbox (the session ended).
    pub(crate) fn clear(&self) {
        let mut inner = self.inner.lock();
        inner.queue.clear();
        inner.spilled.seqs = VecDeque::new();
        inner.spilled.bytes = 0;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use vane_core::{Delivery, Message, OverflowPolicy, QueueLimits};
    use vane_proto::{ByteString, QoS};

    use super::{Mailbox, Pushed, Spill};
    use crate::metrics::Metrics;

    fn mailbox(max_messages: usize, policy: OverflowPolicy) -> Mailbox {
        let limits = QueueLimits {
            max_messages,
            max_bytes: 1 << 20,
            policy,
        };
        Mailbox::new(
            limits,
            false,
            std::time::Duration::ZERO,
            max_messages,
            true,
            Arc::new(Metrics::new()),
        )
    }

    fn stored(seq: u64) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: ByteString::from("t"),
                payload: bytes::Bytes::from_static(b"payload"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
                origin: 0,
                received: Instant::now(),
            }),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: Vec::new(),
            shared: None,
            stored: Some(seq),
        }
    }

    #[test]
    fn an_offline_session_keeps_stored_deliveries_on_disk_only() {
        let m = mailbox(100, OverflowPolicy::DropOldest);
        let mut evicted = Vec::new();
        for seq in 1..=3 {
            assert_eq!(
                m.push_evicting(stored(seq), &mut evicted, 10 + seq),
                Pushed::Queued
            );
        }
        assert_eq!(m.len(), 3);
        assert_eq!(
            m.take_spilled(2, 12),
            Spill::Wait(13),
            "not readable before the store made the last record durable"
        );
        assert_eq!(m.take_spilled(2, 13), Spill::Taken(vec![1, 2]));
        assert_eq!(m.take_spilled(2, 13), Spill::Taken(vec![3]));
        assert_eq!(m.take_spilled(2, 13), Spill::Empty);
        assert!(evicted.is_empty());
    }

    #[test]
    fn caps_count_what_is_on_disk_and_evictions_name_their_records() {
        let m = mailbox(2, OverflowPolicy::DropOldest);
        let mut evicted = Vec::new();
        for seq in 1..=4 {
            m.push_evicting(stored(seq), &mut evicted, 1);
        }
        assert_eq!(evicted, vec![1, 2], "the oldest records go");
        assert_eq!(m.take_spilled(10, 1), Spill::Taken(vec![3, 4]));

        let m = mailbox(2, OverflowPolicy::DropNewest);
        let mut evicted = Vec::new();
        for seq in 1..=3 {
            m.push_evicting(stored(seq), &mut evicted, 1);
        }
        assert_eq!(evicted, vec![3], "the new record goes");
        assert_eq!(m.set_online(false), 1, "the drop is counted");
    }

    #[test]
    fn queue_full_drops_reach_the_broker_metrics() {
        let limits = QueueLimits {
            max_messages: 2,
            max_bytes: 1 << 20,
            policy: OverflowPolicy::DropOldest,
        };
        let metrics = Arc::new(Metrics::new());
        let m = Mailbox::new(
            limits,
            false,
            std::time::Duration::ZERO,
            2,
            false,
            metrics.clone(),
        );
        m.set_online(true);
        for seq in 1..=5 {
            m.push(stored(seq));
        }
        assert_eq!(
            metrics.dropped_total(crate::metrics::DropCause::QueueFull),
            3
        );
    }

    #[test]
    fn going_offline_moves_stored_deliveries_to_disk_ahead_of_later_ones() {
        let m = mailbox(100, OverflowPolicy::DropOldest);
        let mut evicted = Vec::new();
        m.set_online(true);
        m.push_evicting(stored(1), &mut evicted, 5);
        m.push_evicting(stored(2), &mut evicted, 6);
        m.set_online(false);
        m.push_evicting(stored(3), &mut evicted, 7);
        assert_eq!(m.take_spilled(10, 6), Spill::Wait(7));
        assert_eq!(m.take_spilled(10, 7), Spill::Taken(vec![1, 2, 3]));
    }

    #[test]
    fn a_slow_consumer_loses_qos0_and_holds_no_publisher_back() {
        let limits = QueueLimits {
            max_messages: 4,
            max_bytes: 1 << 20,
            policy: OverflowPolicy::DropOldest,
        };
        let m = Mailbox::new(
            limits,
            false,
            std::time::Duration::from_secs(10),
            2,
            false,
            Arc::new(Metrics::new()),
        );
        m.set_online(true);
        let qos0 = || Delivery {
            qos: QoS::AtMostOnce,
            stored: None,
            ..stored(0)
        };
        let qos1 = || Delivery {
            stored: None,
            ..stored(0)
        };
        assert_eq!(m.push(qos0()), Pushed::Queued);
        assert_eq!(m.push(qos1()), Pushed::Queued);
        assert_eq!(m.push(qos1()), Pushed::Congested, "backpressure before");
        assert_eq!(m.set_slow(true), 1, "the queued QoS 0 delivery is dropped");
        assert_eq!(m.push(qos0()), Pushed::NotKept);
        assert_eq!(m.push(qos1()), Pushed::Queued, "publishers no longer wait");
        assert_eq!(m.len(), 3);
        assert_eq!(m.set_slow(false), 2, "both QoS 0 drops counted");
        m.set_online(false);
    }

    #[test]
    fn a_drain_takes_about_max_bytes_and_at_least_one() {
        let m = mailbox(100, OverflowPolicy::DropOldest);
        m.set_online(true);
        for _ in 0..10 {
            // 8 bytes each: topic "t" and payload "payload".
            m.push(Delivery {
                stored: None,
                ..stored(0)
            });
        }
        let now = Instant::now();
        let mut session = vane_core::Session::new(
            1,
            ByteString::from("c"),
            vane_core::SessionConfig::default(),
            now,
        );
        assert_eq!(
            m.drain_into(&mut session, now, 256, 20).1,
            3,
            "8 + 8 + 8 >= 20"
        );
        assert_eq!(m.drain_into(&mut session, now, 256, 1).1, 1, "at least one");
        assert_eq!(
            m.drain_into(&mut session, now, 2, 1 << 20).1,
            2,
            "count bound"
        );
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn shared_and_unstored_deliveries_stay_in_memory() {
        let m = mailbox(100, OverflowPolicy::DropOldest);
        let mut evicted = Vec::new();
        let mut shared = stored(1);
        shared.shared = Some(Box::new(
            vane_proto::TopicFilter::parse("$share/g/t").expect("filter"),
        ));
        m.push_evicting(shared, &mut evicted, 1);
        m.push_evicting(
            Delivery {
                stored: None,
                ..stored(2)
            },
            &mut evicted,
            0,
        );
        assert_eq!(m.take_spilled(10, 1), Spill::Empty);
        assert_eq!(m.len(), 2);
    }
}
