//! The ban list file: client ids, user names and address networks refused, each until an
//! optional expiry.
//!
//! ```text
//! # comment lines and empty lines are ignored
//! client sensor-17
//! user mallory until 2030-01-01T00:00:00Z
//! address 203.0.113.7
//! address 10.0.0.0/8
//! address 2001:db8::/32 until 2030-01-01T00:00:00Z
//! ```
//!
//! One entry per line: a kind, a value without spaces, and optionally `until` with an RFC 3339
//! time in UTC (`Z`). An entry whose time has passed is ignored.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

/// An IPv4 or IPv6 network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Network {
    V4(u32, u8),
    V6(u128, u8),
}

impl Network {
    fn parse(text: &str) -> Result<Network, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("`/{p}` is not a prefix length of 0 to {max}")),
            },
        };
        Ok(match addr {
            IpAddr::V4(a) => Network::V4(u32::from(a) & mask32(prefix), prefix),
            IpAddr::V6(a) => Network::V6(u128::from(a) & mask128(prefix), prefix),
        })
    }

    /// Whether `ip` is in the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (*self, ip.to_canonical()) {
            (Network::V4(net, p), IpAddr::V4(a)) => u32::from(a) & mask32(p) == net,
            (Network::V6(net, p), IpAddr::V6(a)) => u128::from(a) & mask128(p) == net,
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

/// Until when an entry holds; `None`: for good.
type Expiry = Option<SystemTime>;

/// The parsed ban list.
#[derive(Debug, Default)]
pub(crate) struct BanList {
    clients: HashMap<String, Expiry>,
    users: HashMap<String, Expiry>,
    networks: Vec<(Network, Expiry)>,
}

/// What a ban matched, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Banned {
    ClientId,
    UserName,
}

fn holds(expiry: &Expiry, now: SystemTime) -> bool {
    expiry.is_none_or(|until| until > now)
}

/// Keeps the later of two expiries for the same value (`None`, for good, is the latest).
fn merge(map: &mut HashMap<String, Expiry>, key: &str, expiry: Expiry) {
    let e = map.entry(key.to_string()).or_insert(expiry);
    *e = match (*e, expiry) {
        (Some(a), Some(b)) => Some(a.max(b)),
        _ => None,
    };
}

impl BanList {
    /// Parses the file's text; an error names the line and what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<BanList, String> {
        let mut list = BanList::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let mut words = line.split_whitespace();
            let kind = words.next().unwrap_or_default();
            let Some(value) = words.next() else {
                return Err(format!("line {n}: `{kind}` needs a value"));
            };
            let expiry = match (words.next(), words.next(), words.next()) {
                (None, _, _) => None,
                (Some("until"), Some(time), None) => {
                    Some(humantime::parse_rfc3339(time).map_err(|e| {
                        format!("line {n}: `{time}` is not an RFC 3339 UTC time such as 2030-01-01T00:00:00Z: {e}")
                    })?)
                }
                _ => {
                    return Err(format!(
                        "line {n}: expected `{kind} VALUE` or `{kind} VALUE until TIME`"
                    ))
                }
            };
            match kind {
                "client" => merge(&mut list.clients, value, expiry),
                "user" => merge(&mut list.users, value, expiry),
                "address" => {
                    let net = Network::parse(value).map_err(|e| format!("line {n}: {e}"))?;
                    list.networks.push((net, expiry));
                }
                other => {
                    return Err(format!(
                        "line {n}: unknown kind `{other}` (expected client, user or address)"
                    ))
                }
            }
        }
        Ok(list)
    }

    /// Reads and parses a ban file.
    pub(crate) fn load(path: &str) -> Result<BanList, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        BanList::parse(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// Entries in the list (expired ones included).
    pub(crate) fn len(&self) -> usize {
        self.clients.len() + self.users.len() + self.networks.len()
    }

    /// Whether the list bans any address (so the accept loop can skip the check).
    pub(crate) fn has_addresses(&self) -> bool {
        !self.networks.is_empty()
    }

    /// Whether `ip` is in a banned network.
    pub(crate) fn bans_address(&self, ip: IpAddr, now: SystemTime) -> bool {
        self.networks
            .iter()
            .any(|(net, expiry)| net.contains(ip) && holds(expiry, now))
    }

    /// Whether the client id or the user name it claims is banned.
    pub(crate) fn bans_client(
        &self,
        client_id: &str,
        username: Option<&str>,
        now: SystemTime,
    ) -> Option<Banned> {
        if self.clients.get(client_id).is_some_and(|e| holds(e, now)) {
            return Some(Banned::ClientId);
        }
        let user = username?;
        self.users
            .get(user)
            .is_some_and(|e| holds(e, now))
            .then_some(Banned::UserName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).expect("time")
    }

    const LIST: &str = "\
# banned for good
client bad-device
user mallory until 2030-01-01T00:00:00Z

address 203.0.113.7
address 10.0.0.0/8 until 2020-01-01T00:00:00Z
address 2001:db8::/32
";

    #[test]
    fn entries_match_until_they_expire() {
        let list = BanList::parse(LIST).expect("parses");
        assert_eq!(list.len(), 5);
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(
            list.bans_client("bad-device", None, now),
            Some(Banned::ClientId)
        );
        assert_eq!(list.bans_client("good", None, now), None);
        assert_eq!(
            list.bans_client("good", Some("mallory"), now),
            Some(Banned::UserName)
        );
        assert_eq!(
            list.bans_client("good", Some("mallory"), at("2030-01-01T00:00:01Z")),
            None,
            "expired"
        );
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert!(list.bans_address(ip("203.0.113.7"), now));
        assert!(!list.bans_address(ip("203.0.113.8"), now));
        assert!(
            !list.bans_address(ip("10.1.2.3"), now),
            "10/8 expired in 2020"
        );
        assert!(list.bans_address(ip("10.1.2.3"), at("2019-01-01T00:00:00Z")));
        assert!(list.bans_address(ip("2001:db8:1::5"), now));
        assert!(!list.bans_address(ip("2001:db9::5"), now));
        assert!(
            list.bans_address(ip("::ffff:203.0.113.7"), now),
            "IPv4-mapped IPv6"
        );
    }

    #[test]
    fn prefixes_zero_and_full() {
        let all = Network::parse("0.0.0.0/0").expect("parses");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let all6 = Network::parse("::/0").expect("parses");
        assert!(all6.contains("2001:db8::1".parse().expect("ip")));
        assert!(!all6.contains("192.0.2.1".parse().expect("ip")));
        let one = Network::parse("192.0.2.1/32").expect("parses");
        assert!(!one.contains("192.0.2.2".parse().expect("ip")));
    }

    #[test]
    fn the_latest_expiry_of_duplicates_wins() {
        let list = BanList::parse(
            "client a until 2020-01-01T00:00:00Z\nclient a until 2030-01-01T00:00:00Z\nclient b until 2030-01-01T00:00:00Z\nclient b\n",
        )
        .expect("parses");
        let later = at("2031-01-01T00:00:00Z");
        assert!(list
            .bans_client("a", None, at("2029-01-01T00:00:00Z"))
            .is_some());
        assert!(list.bans_client("a", None, later).is_none());
        assert!(list.bans_client("b", None, later).is_some(), "for good");
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, needle) in [
            ("client", 1, "needs a value"),
            ("\n\nban x", 3, "unknown kind"),
            ("address 10.0.0.300", 1, "not an IP address"),
            ("address 10.0.0.0/33", 1, "prefix length"),
            ("address ::/129", 1, "prefix length"),
            ("user u until tomorrow", 1, "RFC 3339"),
            ("user u until", 1, "expected"),
            ("user u forever 2030-01-01T00:00:00Z", 1, "expected"),
            ("user u until 2030-01-01T00:00:00Z extra", 1, "expected"),
        ] {
            let err = BanList::parse(text).expect_err(text);
            assert!(err.starts_with(&format!("line {line}: ")), "{text}: {err}");
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
