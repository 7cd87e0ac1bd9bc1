//! The session registry: client identifier to session slot. A slot holds the session itself
//! (owned by at most one connection task at a time), its mailbox, and the means to ask the
//! current owner to give it up. Takeover is serialised per client id, never globally.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, OwnedMutexGuard};
use vane_core::session::{TopicPolicy, Will};
use vane_core::Session;
use vane_proto::ByteString;

use crate::mailbox::Mailbox;

/// Why a connection task is asked to let go of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// A new connection with the same client id [MQTT-3.1.4-3].
    TakenOver,
    /// The client's credentials were removed or changed by a password file reload.
    Revoked,
}

/// Everything the broker keeps for one client id.
pub(crate) struct SessionSlot {
    pub id: u64,
    pub client_id: ByteString,
    pub mailbox: Mailbox,
    /// The session. Held (tokio mutex, owned guard) by the connection task that serves it for
    /// as long as it serves it: the lock is an ownership token, handed over on takeover.
    state: Arc<tokio::sync::Mutex<Option<Box<Session>>>>,
    /// Bumped by every connection that wants this session; the highest one wins.
    connect_seq: AtomicU64,
    owner: Mutex<Option<oneshot::Sender<Kick>>>,
    /// The password-file user the connection owning the session logged in as, so that a
    /// reload that removes or changes that user can end the connection.
    owner_user: Mutex<Option<String>>,
    /// The delayed will of the session while it is parked. Whoever takes it decides its fate:
    /// the will-delay timer publishes it, a resuming connection cancels it, a Clean Start
    /// connection (which ends the session) publishes it at once.
    pending_will: Mutex<Option<Box<Will>>>,
    /// The session outlives its connection and has a record in the store: QoS 1/2 messages
    /// to it are written before they are acknowledged to their publisher.
    pub persistent: AtomicBool,
    /// The user name that owns this client id while the session exists (`auth.bind_client_id`);
    /// a persistent session keeps it in its store record.
    bound_to: Mutex<Option<Arc<str>>>,
    /// The topic permissions of the connection that last served the session (the session
    /// holds the same), for routing: a shared-subscription message goes only to a member that
    /// may receive it. `None`: no authorization configured.
    policy: RwLock<Option<Arc<dyn TopicPolicy>>>,
}

/// The outcome of [`SessionSlot::bind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bind {
    /// The client may use the id (it owns it now, owned it already, or nobody does and it is
    /// anonymous).
    Allowed,
    /// Another user name owns the id.
    Refused { owner: Arc<str> },
}

// Boxed: an empty slot (a connected session lives in its task) then costs a pointer, not a
// whole `Session`, for every connection.
pub(crate) type SessionGuard = OwnedMutexGuard<Option<Box<Session>>>;

impl SessionSlot {
    /// Sets the topic permissions of the connection now serving the session.
    pub(crate) fn set_policy(&self, policy: Option<Arc<dyn TopicPolicy>>) {
        *self.policy.write() = policy;
    }

    /// May the session's client receive a message on `topic`? True when no authorization
    /// is configured.
    pub(crate) fn may_receive(&self, topic: &str) -> bool {
        self.policy
            .read()
            .as_ref()
            .is_none_or(|p| p.may_receive(topic))
    }

    /// Binds the client id to `username` if nobody owns it yet, or checks that `username` is
    /// its owner. An anonymous client (`None`) binds nothing and may not use an owned id.
    pub(crate) fn bind(&self, username: Option<&str>) -> Bind {
        let mut bound = self.bound_to.lock();
        match (bound.as_ref(), username) {
            (None, Some(user)) => {
                *bound = Some(Arc::from(user));
                Bind::Allowed
            }
            (None, None) => Bind::Allowed,
            (Some(owner), Some(user)) if &**owner == user => Bind::Allowed,
            (Some(owner), _) => Bind::Refused {
                owner: owner.clone(),
            },
        }
    }

    /// The user name the client id is bound to, if any (for the session's store record).
    pub(crate) fn bound_user(&self) -> Option<String> {
        self.bound_to.lock().as_deref().map(str::to_owned)
    }

    /// Restores the binding of a session read back from the store.
    pub(crate) fn restore_binding(&self, user: Option<&str>) {
        *self.bound_to.lock() = user.map(Arc::from);
    }

    /// Registers interest in the session and asks the current owner to let go.
    pub(crate) fn begin_takeover(&self) -> u64 {
        let seq = self.connect_seq.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(owner) = self.owner.lock().take() {
            let _ = owner.send(Kick::TakenOver);
        }
        seq
    }

    /// Waits for the session to be free.
    pub(crate) async fn acquire(&self) -> SessionGuard {
        self.state.clone().lock_owned().await
    }

    /// True when no connection newer than `seq` wants the session.
    pub(crate) fn is_latest(&self, seq: u64) -> bool {
        self.connect_seq.load(Ordering::SeqCst) == seq
    }

    /// Installs the kick channel of the connection that now owns the session. Returns false
    /// when a newer connection already wants it (the caller then gives it up at once).
    pub(crate) fn set_owner(&self, seq: u64, owner: oneshot::Sender<Kick>) -> bool {
        *self.owner.lock() = Some(owner);
        self.is_latest(seq)
    }

    /// Records the password-file user of the connection that owns the session (`None`: not
    /// authenticated by the password file).
    pub(crate) fn set_owner_user(&self, user: Option<String>) {
        *self.owner_user.lock() = user;
    }

    /// Ends the owning connection if it logged in as one of `users` (credentials revoked by
    /// a reload). Returns the user name when it did.
    pub(crate) fn revoke_if_user(&self, users: &HashSet<String>) -> Option<String> {
        let user = self.owner_user.lock().clone()?;
        if !users.contains(&user) {
            return None;
        }
        let owner = self.owner.lock().take()?;
        let _ = owner.send(Kick::Revoked);
        Some(user)
    }

    /// Keeps the delayed will of a session being parked.
    pub(crate) fn park_will(&self, will: Will) {
        *self.pending_will.lock() = Some(Box::new(will));
    }

    /// Takes the parked delayed will, if it is still waiting.
    pub(crate) fn take_will(&self) -> Option<Will> {
        self.pending_will.lock().take().map(|w| *w)
    }

    /// A clone of the parked delayed will, for the store.
    pub(crate) fn parked_will(&self) -> Option<Will> {
        self.pending_will.lock().as_deref().cloned()
    }

    /// Puts a session restored from the store in the slot (at start, before any connection).
    pub(crate) async fn install(&self, session: Session) {
        *self.acquire().await = Some(Box::new(session));
    }

    /// Drops the owner's kick channel once it no longer serves the session.
    pub(crate) fn clear_owner(&self, seq: u64) {
        if self.is_latest(seq) {
            self.owner.lock().take();
            self.owner_user.lock().take();
        }
    }
}

/// Client id to slot.
pub(crate) struct SessionRegistry {
    // parking_lot Mutex: lookups are short and never await; contention is per connect, not
    // per message.
    slots: Mutex<HashMap<ByteString, Arc<SessionSlot>>>,
    next_id: AtomicU64,
}

impl SessionRegistry {
    pub(crate) fn new() -> Self {
        SessionRegistry {
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// The slot of a client id, created when missing.
    pub(crate) fn get_or_create(
        &self,
        client_id: &ByteString,
        make_mailbox: impl FnOnce() -> Mailbox,
    ) -> Arc<SessionSlot> {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get(client_id) {
            return slot.clone();
        }
        let slot = Arc::new(SessionSlot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client_id: client_id.clone(),
            mailbox: make_mailbox(),
            state: Arc::new(tokio::sync::Mutex::new(None)),
            connect_seq: AtomicU64::new(0),
            owner: Mutex::new(None),
            owner_user: Mutex::new(None),
            pending_will: Mutex::new(None),
            persistent: AtomicBool::new(false),
            bound_to: Mutex::new(None),
            policy: RwLock::new(None),
        });
        slots.insert(client_id.clone(), slot.clone());
        slot
    }

    /// The slot of a client id, if it has one.
    pub(crate) fn get(&self, client_id: &str) -> Option<Arc<SessionSlot>> {
        self.slots.lock().get(client_id).cloned()
    }

    /// True when `slot` is still the registered slot of its client id.
    pub(crate) fn is_current(&self, slot: &Arc<SessionSlot>) -> bool {
        self.slots
            .lock()
            .get(&slot.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Removes a slot whose session ended, unless a newer connection is taking it over.
    pub(crate) fn remove_if_latest(&self, slot: &Arc<SessionSlot>, seq: u64) -> bool {
        let mut slots = self.slots.lock();
        if slot.is_latest(seq)
            && slots
                .get(&slot.client_id)
                .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            slots.remove(&slot.client_id);
            true
        } else {
            false
        }
    }

    /// Every slot, online or parked (a snapshot: the lock is released before it is used).
    pub(crate) fn all(&self) -> Vec<Arc<SessionSlot>> {
        self.slots.lock().values().cloned().collect()
    }

    /// Number of sessions, online or parked.
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Sessions held, and how many of them are persistent, for the metrics: one pass under the
    /// lock, a relaxed load per session, asked at most once per `$SYS` round or scrape.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let slots = self.slots.lock();
        let persistent = slots
            .values()
            .filter(|s| s.persistent.load(Ordering::Relaxed))
            .count();
        (slots.len() as u64, persistent as u64)
    }

    /// A fresh id for an assigned client identifier.
    pub(crate) fn next_assigned_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}
