//! Flapping detection: a client id that connects more than `max_connects` times within a
//! window is banned for a while. The map is bounded, and entries go once they have expired.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use vane_config::FlappingConfig;

/// Client ids tracked at most; beyond, idle entries are pruned, and if none is idle new ids
/// are not tracked (the map cannot grow without bound under a storm of fresh ids).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    connects: u32,
    banned_until: Option<Instant>,
}

/// What a CONNECT attempt meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flap {
    /// Within the limit.
    Allowed,
    /// This attempt went over the limit: the client id is now banned until then.
    NewlyBanned,
    /// The client id is banned from an earlier excess.
    Banned,
}

/// Counts CONNECTs per client id in fixed windows.
#[derive(Debug)]
pub(crate) struct Flapping {
    max_connects: u32,
    window: Duration,
    ban: Duration,
    entries: HashMap<String, Entry>,
    last_prune: Option<Instant>,
}

impl Flapping {
    pub(crate) fn new(config: &FlappingConfig) -> Flapping {
        Flapping {
            max_connects: config.max_connects,
            window: config.window,
            ban: config.ban,
            entries: HashMap::new(),
            last_prune: None,
        }
    }

    /// Records a CONNECT of `client_id` at `now`.
    pub(crate) fn connect(&mut self, client_id: &str, now: Instant) -> Flap {
        if let Some(e) = self.entries.get_mut(client_id) {
            if let Some(until) = e.banned_until {
                if now < until {
                    return Flap::Banned;
                }
                e.banned_until = None;
                e.window_start = now;
                e.connects = 0;
            }
            if now.saturating_duration_since(e.window_start) >= self.window {
                e.window_start = now;
                e.connects = 0;
            }
            e.connects += 1;
            if e.connects > self.max_connects {
                // Validation bounds the ban; checked all the same.
                e.banned_until = Some(now.checked_add(self.ban).unwrap_or(now));
                return Flap::NewlyBanned;
            }
            return Flap::Allowed;
        }
        if self.entries.len() >= MAX_TRACKED {
            self.prune(now);
            if self.entries.len() >= MAX_TRACKED {
                return Flap::Allowed;
            }
        }
        self.entries.insert(
            client_id.to_string(),
            Entry {
                window_start: now,
                connects: 1,
                banned_until: None,
            },
        );
        Flap::Allowed
    }

    /// Drops entries whose window and ban are over, at most once a second.
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_prune = Some(now);
        let window = self.window;
        self.entries.retain(|_, e| match e.banned_until {
            Some(until) => now < until,
            None => now.saturating_duration_since(e.window_start) < window,
        });
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FlappingConfig {
        FlappingConfig {
            enabled: true,
            max_connects: 3,
            window: Duration::from_secs(60),
            ban: Duration::from_secs(300),
        }
    }

    #[test]
    fn more_connects_than_allowed_in_the_window_ban_for_the_ban_time() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut f = Flapping::new(&config());
        for i in 0..3 {
            assert_eq!(f.connect("c", s(i)), Flap::Allowed);
        }
        assert_eq!(f.connect("c", s(10)), Flap::NewlyBanned);
        assert_eq!(f.connect("other", s(10)), Flap::Allowed, "per client id");
        assert_eq!(f.connect("c", s(309)), Flap::Banned);
        // The ban is over: counting starts afresh.
        for i in 0..3 {
            assert_eq!(f.connect("c", s(310 + i)), Flap::Allowed);
        }
    }

    #[test]
    fn connects_spread_over_windows_are_not_flapping() {
        let t0 = Instant::now();
        let mut f = Flapping::new(&config());
        for i in 0..30 {
            // Three per minute, for ten minutes.
            let at = t0 + Duration::from_secs(60 * (i / 3) + (i % 3));
            assert_eq!(f.connect("c", at), Flap::Allowed, "connect {i}");
        }
    }

    #[test]
    fn the_map_is_bounded_and_pruned() {
        let t0 = Instant::now();
        let mut f = Flapping::new(&config());
        for i in 0..MAX_TRACKED {
            f.connect(&format!("c{i}"), t0);
        }
        // Full, nothing idle yet: a new id is not tracked (and not refused).
        assert_eq!(f.connect("new", t0), Flap::Allowed);
        assert_eq!(f.tracked(), MAX_TRACKED);
        // After the window, the idle entries go.
        assert_eq!(
            f.connect("new", t0 + Duration::from_secs(61)),
            Flap::Allowed
        );
        assert_eq!(f.tracked(), 1);
    }
}
