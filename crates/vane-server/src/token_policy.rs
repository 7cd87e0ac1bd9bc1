//! Topic permissions from a token: a client whose JWT carries permission claims may publish,
//! subscribe to and receive only what the claims list, and never more than the ACL allows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vane_auth::TopicPermissions;
use vane_core::session::TopicPolicy;
use vane_proto::{ByteString, TopicFilter};

/// Denials logged per connection; past this they are only refused, so a client trying topic
/// after topic cannot flood the log.
const MAX_LOGGED_DENIALS: usize = 64;

/// The token's claims in front of the ACL's policy (if any): both must allow.
#[derive(Debug)]
pub(crate) struct TokenPolicy {
    permissions: Arc<TopicPermissions>,
    acl: Option<Arc<dyn TopicPolicy>>,
    client_id: ByteString,
    username: Option<String>,
    peer: SocketAddr,
    logged: AtomicUsize,
}

impl TokenPolicy {
    pub(crate) fn new(
        permissions: Arc<TopicPermissions>,
        acl: Option<Arc<dyn TopicPolicy>>,
        client_id: ByteString,
        username: Option<String>,
        peer: SocketAddr,
    ) -> TokenPolicy {
        TokenPolicy {
            permissions,
            acl,
            client_id,
            username,
            peer,
            logged: AtomicUsize::new(0),
        }
    }

    fn denied(&self, action: &'static str, topic: &str) -> bool {
        if self.logged.fetch_add(1, Ordering::Relaxed) < MAX_LOGGED_DENIALS {
            tracing::info!(
                client_id = %self.client_id,
                username = self.username.as_deref().unwrap_or(""),
                peer = %self.peer,
                topic,
                action,
                "not authorized by the token's permission claims"
            );
        }
        false
    }
}

impl TopicPolicy for TokenPolicy {
    fn may_publish(&self, topic: &str) -> bool {
        if !self.permissions.may_publish(topic) {
            return self.denied("publish", topic);
        }
        self.acl.as_ref().is_none_or(|acl| acl.may_publish(topic))
    }

    fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        if !self.permissions.may_subscribe(filter.filter()) {
            return self.denied("subscribe", filter.filter());
        }
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.may_subscribe(filter))
    }

    fn may_receive(&self, topic: &str) -> bool {
        // Subscriptions were already checked; a delivery outside the claims can only come
        // from a shared or overlapping subscription, and is not worth a log line each time.
        self.permissions.may_receive(topic)
            && self.acl.as_ref().is_none_or(|acl| acl.may_receive(topic))
    }
}
