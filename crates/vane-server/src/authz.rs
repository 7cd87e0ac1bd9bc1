//! Topic authorization: the ACL file loaded into a cell that a reload can replace, and the
//! per-connection policy that asks it for every publish, subscription and delivery and logs
//! each denial once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use vane_auth::{Acl, AclAction, AclIdentity};
use vane_config::{AclConfig, AclDefault};
use vane_core::session::TopicPolicy;
use vane_proto::{ByteString, TopicFilter};

/// Reads and parses the configured ACL file. `Ok(None)`: no file, no checks. A file that cannot
/// be read or parsed is an error naming the file, line and reason: it never means "allow".
pub(crate) fn load(config: &AclConfig) -> Result<Option<Acl>, String> {
    if config.file.is_empty() {
        return Ok(None);
    }
    let path = &config.file;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{path}: not UTF-8 text"))?;
    let acl = Acl::parse(&text, config.default == AclDefault::Allow)
        .map_err(|e| format!("{path}: {e}"))?;
    Ok(Some(acl))
}

/// The ACL in force. Read for every check: a short read lock and an `Arc` clone, never held
/// across an `.await`; replaced as a whole by a reload.
pub(crate) struct AclRules {
    config: AclConfig,
    // parking_lot RwLock over an Arc, not a new dependency: a check takes the lock for the
    // time of a pointer copy, and a reload (rare) swaps the pointer.
    current: RwLock<Arc<Acl>>,
    /// Bumped by every reload, so that connections notice new rules with one atomic load.
    generation: AtomicU64,
}

impl AclRules {
    pub(crate) fn new(config: AclConfig, acl: Acl) -> AclRules {
        AclRules {
            config,
            current: RwLock::new(Arc::new(acl)),
            generation: AtomicU64::new(0),
        }
    }

    /// The rules in force.
    pub(crate) fn current(&self) -> Arc<Acl> {
        self.current.read().clone()
    }

    /// Reads the file again. A file that cannot be read or parsed keeps the rules in force and
    /// returns the reason.
    pub(crate) fn reload(&self) -> Result<usize, String> {
        match load(&self.config)? {
            Some(acl) => {
                let rules = acl.len();
                *self.current.write() = Arc::new(acl);
                self.generation.fetch_add(1, Ordering::AcqRel);
                Ok(rules)
            }
            None => Ok(0),
        }
    }

    /// The file's path, for log lines.
    pub(crate) fn path(&self) -> &str {
        &self.config.file
    }
}

/// Distinct denials logged per connection; past this, further ones are counted only, so a
/// client trying topic after topic cannot flood the log.
const MAX_LOGGED_DENIALS: usize = 256;

/// Decisions a connection remembers: a subscriber mostly receives the same few topics, and
/// a rule scan per delivery would cost more than the delivery itself.
const REMEMBERED_DECISIONS: usize = 8;

/// One connection's view of the ACL: its identity, which denials it already logged, and its
/// latest decisions.
#[derive(Debug)]
pub(crate) struct ConnectionPolicy {
    rules: Arc<AclRules>,
    username: Option<String>,
    client_id: ByteString,
    peer: SocketAddr,
    logged: Mutex<HashSet<(AclAction, String)>>,
    // Taken by the connection's own task (the policy lives in its session) and, with shared
    // subscriptions, by publishers picking a group member: short, never held across an
    // `.await`.
    memo: Mutex<Memo>,
}

/// The rules a connection decided with, and its latest decisions under them.
#[derive(Debug)]
struct Memo {
    generation: u64,
    acl: Arc<Acl>,
    decisions: Vec<(AclAction, String, bool)>,
    next: usize,
}

impl std::fmt::Debug for AclRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclRules")
            .field("file", &self.config.file)
            .finish_non_exhaustive()
    }
}

impl ConnectionPolicy {
    pub(crate) fn new(
        rules: Arc<AclRules>,
        username: Option<String>,
        client_id: ByteString,
        peer: SocketAddr,
    ) -> ConnectionPolicy {
        let memo = Memo {
            generation: rules.generation.load(Ordering::Acquire),
            acl: rules.current(),
            decisions: Vec::new(),
            next: 0,
        };
        ConnectionPolicy {
            rules,
            username,
            client_id,
            peer,
            logged: Mutex::new(HashSet::new()),
            memo: Mutex::new(memo),
        }
    }

    fn decide(&self, action: AclAction, topic: &str) -> bool {
        let mut memo = self.memo.lock();
        let generation = self.rules.generation.load(Ordering::Acquire);
        if memo.generation != generation {
            // A reload: decide again under the new rules.
            memo.generation = generation;
            memo.acl = self.rules.current();
            memo.decisions.clear();
            memo.next = 0;
        }
        if let Some(&(_, _, allowed)) = memo
            .decisions
            .iter()
            .find(|(a, t, _)| *a == action && t == topic)
        {
            return allowed;
        }
        let who = AclIdentity {
            username: self.username.as_deref(),
            client_id: &self.client_id,
        };
        let allowed = memo.acl.check(who, action, topic);
        if memo.decisions.len() < REMEMBERED_DECISIONS {
            memo.decisions.push((action, topic.to_owned(), allowed));
        } else {
            // Round robin, reusing the evicted entry's string: no allocation per delivery
            // for a subscriber that receives many topics.
            let at = memo.next;
            memo.next = (at + 1) % REMEMBERED_DECISIONS;
            if let Some(entry) = memo.decisions.get_mut(at) {
                entry.0 = action;
                entry.1.clear();
                entry.1.push_str(topic);
                entry.2 = allowed;
            }
        }
        drop(memo);
        if !allowed {
            self.log_denial(action, topic);
        }
        allowed
    }

    /// Logs a denial the first time this connection meets it.
    fn log_denial(&self, action: AclAction, topic: &str) {
        let mut logged = self.logged.lock();
        if logged.len() > MAX_LOGGED_DENIALS {
            return;
        }
        if logged.len() == MAX_LOGGED_DENIALS {
            logged.insert((action, String::new()));
            tracing::info!(
                client_id = %self.client_id,
                username = self.username.as_deref().unwrap_or(""),
                peer = %self.peer,
                "not authorized: {MAX_LOGGED_DENIALS} distinct denials logged for this connection, further ones are not"
            );
            return;
        }
        if logged.insert((action, topic.to_owned())) {
            tracing::info!(
                client_id = %self.client_id,
                username = self.username.as_deref().unwrap_or(""),
                peer = %self.peer,
                topic,
                %action,
                "not authorized by the ACL"
            );
        }
    }
}

impl TopicPolicy for ConnectionPolicy {
    fn may_publish(&self, topic: &str) -> bool {
        self.decide(AclAction::Publish, topic)
    }

    fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        self.decide(AclAction::Subscribe, filter.filter())
    }

    fn may_receive(&self, topic: &str) -> bool {
        self.decide(AclAction::Receive, topic)
    }
}
