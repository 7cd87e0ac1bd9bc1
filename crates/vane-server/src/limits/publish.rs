//! The per-client publish budget: `limits.publish_rate` messages and `limits.publish_bandwidth`
//! bytes per second, each a token bucket with one second's burst.

use std::time::{Duration, Instant};

use vane_config::{LimitsConfig, RateExceeded};

use super::token_bucket::TokenBucket;

/// What a PUBLISH over the budget leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverBudget {
    /// Within the budget.
    No,
    /// Stop reading for this long (`rate_exceeded = "pause"`).
    Pause(Duration),
    /// End the connection (`rate_exceeded = "disconnect"`; MQTT 5.0: DISCONNECT 0x96).
    Disconnect,
}

/// One connection's publish budget. Only built when a rate or bandwidth is configured, so an
/// unconfigured broker pays one `Option` check per PUBLISH.
#[derive(Debug)]
pub(crate) struct PublishBudget {
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
    disconnect: bool,
}

impl PublishBudget {
    /// The budget `limits` configures, if any.
    pub(crate) fn new(limits: &LimitsConfig, now: Instant) -> Option<Box<PublishBudget>> {
        let bucket = |per_second: f64| {
            (per_second > 0.0).then(|| TokenBucket::new(per_second, per_second, now))
        };
        let messages = bucket(f64::from(limits.publish_rate));
        // usize to f64: exact for any bandwidth below 2^53 bytes per second.
        let bytes = bucket(limits.publish_bandwidth.0 as f64);
        if messages.is_none() && bytes.is_none() {
            return None;
        }
        Some(Box::new(PublishBudget {
            messages,
            bytes,
            disconnect: limits.rate_exceeded == RateExceeded::Disconnect,
        }))
    }

    /// Charges one PUBLISH of `size` bytes (the whole packet) read at `now`.
    pub(crate) fn charge(&mut self, size: usize, now: Instant) -> OverBudget {
        if self.disconnect {
            let within = self
                .messages
                .as_mut()
                .is_none_or(|b| b.would_allow(1.0, now))
                && self
                    .bytes
                    .as_mut()
                    .is_none_or(|b| b.would_allow(size as f64, now));
            if !within {
                return OverBudget::Disconnect;
            }
        }
        let wait_messages = self
            .messages
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(1.0, now));
        let wait_bytes = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(size as f64, now));
        let wait = wait_messages.max(wait_bytes);
        if wait.is_zero() || self.disconnect {
            // In disconnect mode a debt only comes from one packet larger than the burst,
            // which a full bucket lets through; the next one finds out.
            OverBudget::No
        } else {
            OverBudget::Pause(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vane_config::ByteSize;

    fn limits(rate: u32, bandwidth: usize, on_exceed: RateExceeded) -> LimitsConfig {
        LimitsConfig {
            publish_rate: rate,
            publish_bandwidth: ByteSize(bandwidth),
            rate_exceeded: on_exceed,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn unconfigured_means_no_budget() {
        assert!(PublishBudget::new(&LimitsConfig::default(), Instant::now()).is_none());
    }

    #[test]
    fn message_rate_pauses_for_the_debt() {
        let t0 = Instant::now();
        let mut b = PublishBudget::new(&limits(10, 0, RateExceeded::Pause), t0).expect("budget");
        for _ in 0..10 {
            assert_eq!(b.charge(100, t0), OverBudget::No);
        }
        // One message of debt at 10 per second: 100 ms.
        assert_eq!(
            b.charge(100, t0),
            OverBudget::Pause(Duration::from_millis(100))
        );
    }

    #[test]
    fn bandwidth_pauses_for_the_debt() {
        let t0 = Instant::now();
        let mut b = PublishBudget::new(&limits(0, 1000, RateExceeded::Pause), t0).expect("budget");
        assert_eq!(b.charge(1000, t0), OverBudget::No);
        assert_eq!(
            b.charge(500, t0),
            OverBudget::Pause(Duration::from_millis(500))
        );
    }

    #[test]
    fn disconnect_mode_refuses_what_is_over() {
        let t0 = Instant::now();
        let mut b =
            PublishBudget::new(&limits(2, 0, RateExceeded::Disconnect), t0).expect("budget");
        assert_eq!(b.charge(10, t0), OverBudget::No);
        assert_eq!(b.charge(10, t0), OverBudget::No);
        assert_eq!(b.charge(10, t0), OverBudget::Disconnect);
        assert_eq!(
            b.charge(10, t0 + Duration::from_millis(500)),
            OverBudget::No,
            "refilled"
        );
    }
}
