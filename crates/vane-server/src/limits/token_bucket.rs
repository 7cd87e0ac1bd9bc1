//! A token bucket: a steady rate with a bounded burst, for connection rates per source and
//! for publish rate and bandwidth per client.

use std::time::{Duration, Instant};

/// The longest wait [`TokenBucket::take`] reports.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Tokens refill at `rate` per second up to `burst`; taking more than there are either fails
/// ([`TokenBucket::try_take`]) or leaves a debt that must refill before the next take
/// ([`TokenBucket::take`]).
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` must be more than 0.
    pub(crate) fn new(rate: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if there are that many.
    pub(crate) fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt if there are fewer; returns how long until the bucket
    /// is out of debt (zero when it is not in debt). A take from a full bucket always succeeds,
    /// so a single item larger than the burst is let through once the bucket has refilled.
    pub(crate) fn take(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            // At most a day: a debt that long means a broken configuration, and a wait must
            // stay addable to an Instant.
            Duration::try_from_secs_f64(-self.tokens / self.rate)
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT)
        }
    }

    /// Whether the bucket had `n` tokens, or was full (taking nothing either way).
    pub(crate) fn would_allow(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= n || self.tokens >= self.burst
    }

    /// Whether the bucket has refilled completely (an idle source whose entry can go).
    pub(crate) fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2.0, 3.0, t0);
        assert!(b.try_take(1.0, t0));
        assert!(b.try_take(1.0, t0));
        assert!(b.try_take(1.0, t0));
        assert!(!b.try_take(1.0, t0), "burst spent");
        // 2 per second: one token every 500 ms.
        assert!(!b.try_take(1.0, t0 + Duration::from_millis(400)));
        assert!(b.try_take(1.0, t0 + Duration::from_millis(500)));
        // Refill stops at the burst.
        let later = t0 + Duration::from_secs(100);
        assert!(b.is_full(later));
        for _ in 0..3 {
            assert!(b.try_take(1.0, later));
        }
        assert!(!b.try_take(1.0, later));
    }

    #[test]
    fn debt_tells_how_long_to_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 100.0, t0);
        assert_eq!(b.take(100.0, t0), Duration::ZERO);
        // 50 tokens of debt at 100 per second: half a second.
        assert_eq!(b.take(50.0, t0), Duration::from_millis(500));
        assert!(!b.would_allow(1.0, t0 + Duration::from_millis(499)));
        assert!(b.would_allow(1.0, t0 + Duration::from_millis(520)));
    }

    #[test]
    fn an_item_larger_than_the_burst_passes_a_full_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 10.0, t0);
        assert!(b.would_allow(1000.0, t0));
        assert_eq!(b.take(1000.0, t0), Duration::from_secs(99));
        assert!(!b.would_allow(1.0, t0 + Duration::from_secs(98)));
    }

    #[test]
    fn waits_are_capped() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1.0, 1.0, t0);
        assert_eq!(b.take(1e30, t0), MAX_WAIT);
    }
}
