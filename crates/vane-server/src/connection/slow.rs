//! The slow-consumer policy of one connection: a client that takes none of the messages
//! waiting for it for `slow_consumer.timeout` loses its QoS 0 deliveries and stops holding
//! publishers back; if it still takes nothing for `disconnect_after`, it is disconnected.

use std::time::{Duration, Instant};

use tracing::{info, warn};
use vane_config::SlowConsumerConfig;

use crate::mailbox::Mailbox;

/// Where a connection stands under the policy.
pub(super) struct SlowConsumer {
    timeout: Duration,
    disconnect_after: Duration,
    /// Since when deliveries have waited with none taken (reset by any progress).
    since: Option<Instant>,
    /// The client was found slow: its mailbox drops QoS 0 and holds no publisher back.
    flagged: bool,
}

impl SlowConsumer {
    pub(super) fn new(config: &SlowConsumerConfig) -> SlowConsumer {
        SlowConsumer {
            timeout: config.timeout,
            disconnect_after: config.disconnect_after,
            since: None,
            flagged: false,
        }
    }

    /// Takes one turn's observation: whether deliveries wait that the client could not take
    /// (its window is full or its socket is not draining), and whether it took any this turn.
    /// Returns true when the client is to be disconnected.
    pub(super) fn observe(
        &mut self,
        now: Instant,
        waiting: bool,
        progressed: bool,
        mailbox: &Mailbox,
        client_id: &str,
    ) -> bool {
        if self.timeout.is_zero() {
            return false;
        }
        if !waiting {
            if self.flagged {
                let dropped = mailbox.set_slow(false);
                info!(%client_id, dropped_qos0 = dropped, "slow consumer caught up: its QoS 0 messages are delivered again");
                self.flagged = false;
            }
            self.since = None;
            return false;
        }
        let since = match self.since {
            Some(since) if !progressed => since,
            _ => *self.since.insert(now),
        };
        let stalled = now.saturating_duration_since(since);
        if !self.flagged {
            if stalled >= self.timeout {
                self.flagged = true;
                // The disconnect clock starts now.
                self.since = Some(now);
                let dropped = mailbox.set_slow(true);
                warn!(
                    %client_id,
                    queued = mailbox.len(),
                    timeout = ?self.timeout,
                    dropped_qos0 = dropped,
                    "slow consumer: the client took none of its messages for the slow-consumer timeout; QoS 0 messages to it are dropped and publishers no longer wait for it"
                );
            }
            return false;
        }
        !self.disconnect_after.is_zero() && stalled >= self.disconnect_after
    }

    /// When the next step of the policy is due, if one is.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let since = self.since?;
        if !self.flagged {
            return Some(since + self.timeout);
        }
        (!self.disconnect_after.is_zero()).then(|| since + self.disconnect_after)
    }

    /// How long the client took nothing, for the disconnect log.
    pub(super) fn describe(&self) -> String {
        format!(
            "the client took none of its messages for {:?}",
            self.timeout + self.disconnect_after
        )
    }
}
