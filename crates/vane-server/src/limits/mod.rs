//! Limits that keep hostile or broken clients from hurting the others: admission at accept
//! (connection caps, per-source connection rate, banned addresses, all before any TLS
//! handshake), bans and flapping detection at CONNECT, and the per-client publish budget.

mod bans;
mod flapping;
mod publish;
mod token_bucket;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Mutex, RwLock};
use tracing::{info, warn};
use vane_config::Config;

pub(crate) use bans::{BanList, Banned};
use flapping::{Flap, Flapping};
pub(crate) use publish::{OverBudget, PublishBudget};
use token_bucket::TokenBucket;

/// Connections assumed when the open file limit cannot be read or is unlimited.
const FALLBACK_MAX_CONNECTIONS: usize = 100_000;
/// File descriptors kept out of `max_connections` for the store, listeners and logs.
const DESCRIPTOR_HEADROOM: usize = 64;
/// Source addresses whose connection rate is tracked at most (see [`SourceRates`]).
const MAX_SOURCES: usize = 65_536;
/// Refusals at accept are summed up in one log line per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    GlobalCap = 0,
    ListenerCap = 1,
    SourceRate = 2,
    BannedAddress = 3,
}

/// Why a CONNECT is refused with 0x8A Banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectBan {
    /// The ban list names the client id or the user name.
    List(Banned),
    /// The client id connected too often (flapping).
    Flapping,
}

/// The broker's limits and their state.
pub(crate) struct Limits {
    max_connections: usize,
    /// Per listener, in configuration order: its cap (0: none).
    listener_caps: Vec<usize>,
    open: AtomicUsize,
    open_per_listener: Vec<AtomicUsize>,
    rates: Option<Mutex<SourceRates>>,
    ban_file: String,
    bans: RwLock<Arc<BanList>>,
    /// Bumped by every reload, so connection tasks re-check their clients.
    bans_version: tokio::sync::watch::Sender<u64>,
    flapping: Option<Mutex<Flapping>>,
    refusals: RefusalLog,
}

impl Limits {
    /// The limits of `config`, with the ban file read (an error names the file and line).
    pub(crate) fn new(config: &Config) -> Result<Limits, String> {
        let l = &config.limits;
        let bans = if l.ban_file.is_empty() {
            BanList::default()
        } else {
            BanList::load(&l.ban_file).map_err(|e| format!("limits.ban_file: {e}"))?
        };
        let max_connections = if l.max_connections == 0 {
            default_max_connections()
        } else {
            l.max_connections
        };
        let rates = (l.connection_rate_per_source > 0).then(|| {
            let rate = f64::from(l.connection_rate_per_source);
            let burst = match l.connection_burst_per_source {
                0 => rate,
                b => f64::from(b),
            };
            Mutex::new(SourceRates::new(rate, burst))
        });
        Ok(Limits {
            max_connections,
            listener_caps: config.listeners.iter().map(|l| l.max_connections).collect(),
            open: AtomicUsize::new(0),
            open_per_listener: config
                .listeners
                .iter()
                .map(|_| AtomicUsize::new(0))
                .collect(),
            rates,
            ban_file: l.ban_file.clone(),
            bans: RwLock::new(Arc::new(bans)),
            bans_version: tokio::sync::watch::Sender::new(0),
            flapping: l
                .flapping
                .enabled
                .then(|| Mutex::new(Flapping::new(&l.flapping))),
            refusals: RefusalLog::default(),
        })
    }

    /// The global connection cap in force (for the start-up log).
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Entries in the ban list.
    pub(crate) fn bans_len(&self) -> usize {
        self.bans.read().len()
    }

    /// Re-reads the ban file. On error the old list stays in force and the error names the
    /// file and line. Returns the number of entries now in force. Meant for SIGHUP.
    pub(crate) fn reload_bans(&self) -> Result<usize, String> {
        if self.ban_file.is_empty() {
            return Ok(0);
        }
        let list = BanList::load(&self.ban_file).map_err(|e| format!("limits.ban_file: {e}"))?;
        let n = list.len();
        *self.bans.write() = Arc::new(list);
        self.bans_version.send_modify(|v| *v += 1);
        info!(file = %self.ban_file, entries = n, "ban list reloaded");
        Ok(n)
    }

    /// A receiver told of every ban list reload, when a ban file is configured: connected
    /// clients are checked against the new list.
    pub(crate) fn watch_bans(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        (!self.ban_file.is_empty()).then(|| self.bans_version.subscribe())
    }

    /// Whether the ban list in force bans a connected client, by client id, user name or
    /// address.
    pub(crate) fn bans_connected(
        &self,
        client_id: &str,
        username: Option<&str>,
        ip: IpAddr,
    ) -> bool {
        let bans = self.bans.read();
        let now = SystemTime::now();
        bans.bans_client(client_id, username, now).is_some() || bans.bans_address(ip, now)
    }

    /// Logs refusals counted since the last summary line, if its interval is over: called
    /// every interval, so the last refusals of a storm are reported too.
    pub(crate) fn flush_refusal_log(&self) {
        self.refusals.log_if_due(Instant::now());
    }

    /// How often [`Limits::flush_refusal_log`] should be called.
    pub(crate) const REFUSAL_LOG_INTERVAL: Duration = REFUSAL_LOG_INTERVAL;

    /// Decides at accept, before any handshake or allocation for the connection, whether a
    /// connection from `peer` on listener `listener` is served. The permit holds its place
    /// under the caps until dropped.
    pub(crate) fn admit(
        self: &Arc<Self>,
        listener: usize,
        peer: SocketAddr,
    ) -> Result<ConnectionPermit, Refusal> {
        self.admit_source(peer)?;
        self.admit_slot(listener)
    }

    /// The checks of [`Limits::admit`] that depend on where the connection comes from: banned
    /// addresses and the connection rate per source. Behind a PROXY protocol balancer they
    /// run once the header has named the client.
    pub(crate) fn admit_source(&self, peer: SocketAddr) -> Result<(), Refusal> {
        let refused = |why: Refusal| {
            self.refusals.note(why);
            Err(why)
        };
        {
            let bans = self.bans.read();
            if bans.has_addresses() && bans.bans_address(peer.ip(), SystemTime::now()) {
                return refused(Refusal::BannedAddress);
            }
        }
        if let Some(rates) = &self.rates {
            if !rates.lock().admit(peer.ip(), Instant::now()) {
                return refused(Refusal::SourceRate);
            }
        }
        Ok(())
    }

    /// The checks of [`Limits::admit`] that count connections: the global and the listener's
    /// caps. The permit holds the place until dropped.
    pub(crate) fn admit_slot(
        self: &Arc<Self>,
        listener: usize,
    ) -> Result<ConnectionPermit, Refusal> {
        let refused = |why: Refusal| {
            self.refusals.note(why);
            Err(why)
        };
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return refused(Refusal::GlobalCap);
        }
        let cap = self.listener_caps.get(listener).copied().unwrap_or(0);
        let counter = self.open_per_listener.get(listener);
        if let Some(counter) = counter {
            if counter.fetch_add(1, Ordering::AcqRel) >= cap && cap != 0 {
                counter.fetch_sub(1, Ordering::AcqRel);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return refused(Refusal::ListenerCap);
            }
        }
        Ok(ConnectionPermit {
            limits: self.clone(),
            listener,
        })
    }

    /// Checks a CONNECT against the ban list and, when enabled, flapping detection (which
    /// counts this attempt).
    /// Whether the ban list names `username`, a user name that authentication established
    /// (a certificate's or a token's) and that the CONNECT itself did not carry, so that
    /// [`Limits::check_connect`] could not see it.
    pub(crate) fn bans_user(&self, username: &str) -> Option<Banned> {
        self.bans
            .read()
            .bans_client("", Some(username), SystemTime::now())
            .filter(|b| *b == Banned::UserName)
    }

    pub(crate) fn check_connect(
        &self,
        client_id: &str,
        username: Option<&str>,
    ) -> Result<(), ConnectBan> {
        if let Some(why) = self
            .bans
            .read()
            .bans_client(client_id, username, SystemTime::now())
        {
            return Err(ConnectBan::List(why));
        }
        if let Some(flapping) = &self.flapping {
            let flap = flapping.lock().connect(client_id, Instant::now());
            match flap {
                Flap::Allowed => {}
                Flap::NewlyBanned => {
                    warn!(
                        client_id,
                        username = username.unwrap_or(""),
                        "client id connects too often (limits.flapping): banned for a while"
                    );
                    return Err(ConnectBan::Flapping);
                }
                Flap::Banned => return Err(ConnectBan::Flapping),
            }
        }
        Ok(())
    }
}

/// A connection's place under the connection caps, given back when it is dropped.
pub(crate) struct ConnectionPermit {
    limits: Arc<Limits>,
    listener: usize,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(c) = self.limits.open_per_listener.get(self.listener) {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Connection rate per source: a token bucket per IPv4 address or IPv6 /64 (one host usually
/// holds a whole /64, so per-address buckets would be free to dodge).
struct SourceRates {
    rate: f64,
    burst: f64,
    buckets: HashMap<IpAddr, TokenBucket>,
    last_prune: Option<Instant>,
}

impl SourceRates {
    fn new(rate: f64, burst: f64) -> SourceRates {
        SourceRates {
            rate,
            burst,
            buckets: HashMap::new(),
            last_prune: None,
        }
    }

    fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        if let Some(bucket) = self.buckets.get_mut(&key) {
            return bucket.try_take(1.0, now);
        }
        if self.buckets.len() >= MAX_SOURCES {
            // Buckets that have refilled hold nothing a new bucket would not: they go. At most
            // once a second, so a storm from many addresses does not scan the map each time.
            if self
                .last_prune
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
            {
                self.last_prune = Some(now);
                self.buckets.retain(|_, b| !b.is_full(now));
            }
            if self.buckets.len() >= MAX_SOURCES {
                // Fail open: the global and listener caps still hold.
                return true;
            }
        }
        let mut bucket = TokenBucket::new(self.rate, self.burst, now);
        let admitted = bucket.try_take(1.0, now);
        self.buckets.insert(key, bucket);
        admitted
    }
}

/// The key a source's rate is counted under: the IPv4 address, or the IPv6 /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) & !((1u128 << 64) - 1)).into()),
    }
}

/// Counts refusals at accept and logs one summary line per interval, not one per socket: a
/// connection storm must not become a log storm.
#[derive(Default)]
struct RefusalLog {
    counts: [AtomicU64; 4],
    last: Mutex<Option<Instant>>,
}

impl RefusalLog {
    /// Counts a refusal; the first after a quiet interval is logged at once.
    fn note(&self, why: Refusal) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
        self.log_if_due(Instant::now());
    }

    /// Logs the counts if the interval since the last line is over and there are any.
    fn log_if_due(&self, now: Instant) {
        {
            let mut last = self.last.lock();
            if last.is_some_and(|t| now.saturating_duration_since(t) < REFUSAL_LOG_INTERVAL) {
                return;
            }
            if self.counts.iter().all(|c| c.load(Ordering::Relaxed) == 0) {
                return;
            }
            *last = Some(now);
        }
        let [global, listener, rate, banned] =
            std::array::from_fn(|i| self.counts[i].swap(0, Ordering::Relaxed));
        warn!(
            limits_max_connections = global,
            listener_max_connections = listener,
            connection_rate_per_source = rate,
            banned_address = banned,
            "connections closed at accept by limits (counts since the last such line, at most one line per {}s)",
            REFUSAL_LOG_INTERVAL.as_secs()
        );
    }
}

/// `limits.max_connections = 0`: the soft open file limit less headroom (each connection is
/// one descriptor), read from `/proc/self/limits` (Linux), or a fixed number elsewhere.
fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<usize>().ok()
        });
    match soft {
        Some(n) => n
            .saturating_sub(DESCRIPTOR_HEADROOM)
            .max(DESCRIPTOR_HEADROOM),
        None => FALLBACK_MAX_CONNECTIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(configure: impl FnOnce(&mut Config)) -> Arc<Limits> {
        let mut config = Config::default();
        configure(&mut config);
        Arc::new(Limits::new(&config).expect("limits"))
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn caps_count_open_permits() {
        let l = limits(|c| {
            c.limits.max_connections = 2;
            c.listeners[0].max_connections = 1;
            c.listeners.push(vane_config::ListenerConfig {
                bind: peer("127.0.0.1:1884"),
                ..Default::default()
            });
        });
        let a = l.admit(0, peer("192.0.2.1:1000")).expect("first");
        assert_eq!(
            l.admit(0, peer("192.0.2.1:1001")).err(),
            Some(Refusal::ListenerCap)
        );
        let b = l.admit(1, peer("192.0.2.1:1002")).expect("other listener");
        assert_eq!(
            l.admit(1, peer("192.0.2.1:1003")).err(),
            Some(Refusal::GlobalCap)
        );
        drop(a);
        let _c = l.admit(0, peer("192.0.2.1:1004")).expect("room again");
        drop(b);
        assert_eq!(l.open.load(Ordering::Acquire), 1);
    }

    #[test]
    fn source_rate_is_per_address_and_per_ipv6_64() {
        let l = limits(|c| {
            c.limits.connection_rate_per_source = 1;
            c.limits.connection_burst_per_source = 2;
        });
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(l.admit(0, peer("192.0.2.1:1")).expect("burst"));
        }
        assert_eq!(
            l.admit(0, peer("192.0.2.1:1")).err(),
            Some(Refusal::SourceRate)
        );
        assert!(l.admit(0, peer("192.0.2.2:1")).is_ok(), "another address");
        for _ in 0..2 {
            held.push(l.admit(0, peer("[2001:db8::1]:1")).expect("burst"));
        }
        assert_eq!(
            l.admit(0, peer("[2001:db8::ffff]:1")).err(),
            Some(Refusal::SourceRate),
            "same /64"
        );
        assert!(
            l.admit(0, peer("[2001:db8:0:1::1]:1")).is_ok(),
            "another /64"
        );
    }

    #[test]
    fn ban_file_is_read_at_start_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("vane-bans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("bans");
        std::fs::write(&file, "client a\naddress 192.0.2.0/24\n").expect("write");
        let path = file.display().to_string();
        let l = limits(|c| c.limits.ban_file = path.clone());
        assert_eq!(
            l.check_connect("a", None),
            Err(ConnectBan::List(Banned::ClientId))
        );
        assert_eq!(
            l.admit(0, peer("192.0.2.9:1")).err(),
            Some(Refusal::BannedAddress)
        );
        // A broken file leaves the list in force, naming the line.
        std::fs::write(&file, "client a\nbogus b\n").expect("write");
        let err = l.reload_bans().expect_err("line 2 is bad");
        assert!(err.contains("line 2"), "{err}");
        assert!(l.check_connect("a", None).is_err());
        std::fs::write(&file, "user u\n").expect("write");
        assert_eq!(l.reload_bans(), Ok(1));
        assert_eq!(l.check_connect("a", None), Ok(()));
        assert_eq!(
            l.check_connect("b", Some("u")),
            Err(ConnectBan::List(Banned::UserName))
        );
        assert!(l.admit(0, peer("192.0.2.9:1")).is_ok());
        // An unreadable file at start stops the broker.
        let mut config = Config::default();
        config.limits.ban_file = dir.join("missing").display().to_string();
        let err = Limits::new(&config).err().expect("missing file");
        assert!(err.starts_with("limits.ban_file: cannot read"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flapping_bans_the_client_id_at_connect() {
        let l = limits(|c| {
            c.limits.flapping.enabled = true;
            c.limits.flapping.max_connects = 2;
        });
        assert_eq!(l.check_connect("f", None), Ok(()));
        assert_eq!(l.check_connect("f", None), Ok(()));
        assert_eq!(l.check_connect("f", None), Err(ConnectBan::Flapping));
        assert_eq!(l.check_connect("f", None), Err(ConnectBan::Flapping));
        assert_eq!(l.check_connect("g", None), Ok(()));
    }

    #[test]
    fn refusals_are_summed_up_once_per_interval() {
        let log = RefusalLog::default();
        let pending = |log: &RefusalLog| {
            log.counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        log.note(Refusal::GlobalCap);
        assert_eq!(pending(&log), 0, "the first refusal is logged at once");
        log.note(Refusal::SourceRate);
        log.note(Refusal::BannedAddress);
        assert_eq!(pending(&log), 2, "held for the next line");
        log.log_if_due(Instant::now());
        assert_eq!(pending(&log), 2, "interval not over");
        log.log_if_due(Instant::now() + REFUSAL_LOG_INTERVAL);
        assert_eq!(pending(&log), 0, "flushed once the interval is over");
    }

    #[test]
    fn default_cap_follows_the_open_file_limit() {
        let n = default_max_connections();
        assert!(n >= DESCRIPTOR_HEADROOM, "{n}");
    }
}
