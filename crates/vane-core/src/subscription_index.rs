//! The subscription index: a trie of topic-filter levels that finds every subscription
//! matching a topic name in one walk, without allocating per level. Shared subscriptions
//! (`$share/<group>/<filter>`) live at their filter's node as groups, of which the walk picks
//! one member per matching group.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use vane_proto::{SubscriptionOptions, TopicFilter};

/// One subscription held in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription<S> {
    /// Who subscribed.
    pub subscriber: S,
    /// Session id of the subscriber (for No Local and for merging overlaps).
    pub session_id: u64,
    /// The subscription's options.
    pub options: SubscriptionOptions,
    /// The subscription identifier (MQTT 5.0).
    pub subscription_id: Option<u32>,
}

/// How a shared subscription group picks the member that receives a message. Whatever the
/// policy, a member that cannot take the message now (offline, or its queue full) is passed
/// over for the next one that can; when none can, the picked member queues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharePolicy {
    /// Each member in turn.
    #[default]
    RoundRobin,
    /// A member at random.
    Random,
    /// The same member for as long as it can take messages.
    Sticky,
    /// A member chosen by the publishing session, so one publisher's messages stay in order
    /// at one member.
    HashClient,
    /// A member chosen by the topic, so one topic's messages stay in order at one member.
    HashTopic,
}

/// The members of one shared subscription (one share name on one filter).
#[derive(Debug)]
struct SharedGroup<S> {
    filter: TopicFilter,
    members: Vec<Subscription<S>>,
    cursor: AtomicUsize,
}

/// A shared subscription's member picked for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMatch<S> {
    /// The picked member's subscription.
    pub subscription: Subscription<S>,
    /// The shared filter, `$share/<group>/<filter>`, naming the group.
    pub filter: TopicFilter,
}

/// What a walk needs to pick shared-group members for one message.
pub struct Picker<'a, S> {
    /// The group policy.
    pub policy: SharePolicy,
    /// Session id of the publisher (for [`SharePolicy::HashClient`]).
    pub origin: u64,
    /// A fresh random number (for [`SharePolicy::Random`]).
    pub random: u64,
    /// Whether a member can take a message now.
    pub available: &'a dyn Fn(&S) -> bool,
    /// Whether a member may receive this message at all (authorization); `None`: every member
    /// may. Unlike `available`, a member refused here is never picked, not even when no other
    /// member can take the message now: the message goes to a member allowed to have it, or,
    /// when there is none, to nobody.
    pub permitted: Option<&'a dyn Fn(&S) -> bool>,
    /// A member never to pick (one leaving the group whose messages are being redistributed).
    pub exclude: Option<u64>,
}

#[derive(Debug)]
struct Node<S> {
    children: HashMap<Box<str>, Node<S>>,
    /// Subscriptions whose filter ends at this node.
    exact: Vec<Subscription<S>>,
    /// Subscriptions whose filter is this node's path followed by `/#`.
    multi: Vec<Subscription<S>>,
    /// Shared groups whose filter ends at this node.
    exact_shared: Vec<SharedGroup<S>>,
    /// Shared groups whose filter is this node's path followed by `/#`.
    multi_shared: Vec<SharedGroup<S>>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            exact: Vec::new(),
            multi: Vec::new(),
            exact_shared: Vec::new(),
            multi_shared: Vec::new(),
        }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.exact.is_empty()
            && self.multi.is_empty()
            && self.exact_shared.is_empty()
            && self.multi_shared.is_empty()
    }
}

fn hash_of(value: impl std::hash::Hash) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(value) as usize
}

impl<S: Clone> SharedGroup<S> {
    /// Picks the member for one message; see [`SharePolicy`].
    fn pick(&self, topic: &str, picker: &Picker<'_, S>) -> Option<&Subscription<S>> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = match picker.policy {
            SharePolicy::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed),
            SharePolicy::Random => picker.random as usize,
            SharePolicy::Sticky => self.cursor.load(Ordering::Relaxed),
            SharePolicy::HashClient => hash_of(picker.origin),
            SharePolicy::HashTopic => hash_of(topic),
        } % n;
        let eligible = |m: &Subscription<S>| {
            picker.exclude != Some(m.session_id)
                && picker
                    .permitted
                    .is_none_or(|permitted| permitted(&m.subscriber))
        };
        for i in 0..n {
            let m = &self.members[(start + i) % n];
            if eligible(m) && (picker.available)(&m.subscriber) {
                if picker.policy == SharePolicy::Sticky {
                    self.cursor.store((start + i) % n, Ordering::Relaxed);
                }
                return Some(m);
            }
        }
        // Nobody can take it now: the first eligible member queues it (an offline member with a
        // persistent session receives it when it returns).
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|m| eligible(m))
    }
}

/// Topic filter trie mapping filters to subscriptions, plain and shared.
#[derive(Debug)]
pub struct SubscriptionIndex<S> {
    root: Node<S>,
    len: usize,
}

impl<S> Default for SubscriptionIndex<S> {
    fn default() -> Self {
        SubscriptionIndex {
            root: Node::default(),
            len: 0,
        }
    }
}

/// Where a walk puts what it finds.
struct Collector<'a, 'p, S> {
    plain: &'a mut Vec<Subscription<S>>,
    shared: Option<(&'a mut Vec<SharedMatch<S>>, &'a Picker<'p, S>)>,
    topic: &'a str,
}

impl<S: Clone> Collector<'_, '_, S> {
    fn take(&mut self, subs: &[Subscription<S>], groups: &[SharedGroup<S>]) {
        self.plain.extend(subs.iter().cloned());
        if let Some((out, picker)) = &mut self.shared {
            for g in groups {
                if let Some(m) = g.pick(self.topic, picker) {
                    out.push(SharedMatch {
                        subscription: m.clone(),
                        filter: g.filter.clone(),
                    });
                }
            }
        }
    }
}

impl<S: Clone> SubscriptionIndex<S> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the index holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a subscription, replacing the subscriber's existing one on the same filter
    /// [MQTT-3.8.4-3]. A `$share/<group>/<filter>` filter joins that group. Returns true when it
    /// replaced one.
    pub fn subscribe(&mut self, filter: &TopicFilter, sub: Subscription<S>) -> bool {
        let (path, multi) = split_multi(filter.filter());
        let mut node = &mut self.root;
        if let Some(path) = path {
            for level in path.split('/') {
                node = node.children.entry(level.into()).or_default();
            }
        }
        let list = if filter.share_group().is_some() {
            let groups = if multi {
                &mut node.multi_shared
            } else {
                &mut node.exact_shared
            };
            let pos = match groups.iter().position(|g| g.filter == *filter) {
                Some(pos) => pos,
                None => {
                    groups.push(SharedGroup {
                        filter: filter.clone(),
                        members: Vec::new(),
                        cursor: AtomicUsize::new(0),
                    });
                    groups.len() - 1
                }
            };
            &mut groups[pos].members
        } else if multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        if let Some(existing) = list.iter_mut().find(|s| s.session_id == sub.session_id) {
            *existing = sub;
            true
        } else {
            list.push(sub);
            self.len += 1;
            false
        }
    }

    /// Removes a session's subscription on a filter. Returns true when one existed.
    pub fn unsubscribe(&mut self, filter: &TopicFilter, session_id: u64) -> bool {
        let (path, multi) = split_multi(filter.filter());
        let levels: Vec<&str> = path.map(|p| p.split('/').collect()).unwrap_or_default();
        let removed = remove_at(&mut self.root, &levels, filter, multi, session_id);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Picks a member of the shared group `filter` for one message, as a publish would; used
    /// to hand a leaving member's unacknowledged messages to another member.
    pub fn pick_shared(
        &self,
        filter: &TopicFilter,
        topic: &str,
        picker: &Picker<'_, S>,
    ) -> Option<Subscription<S>> {
        let (path, multi) = split_multi(filter.filter());
        let mut node = &self.root;
        if let Some(path) = path {
            for level in path.split('/') {
                node = node.children.get(level)?;
            }
        }
        let groups = if multi {
            &node.multi_shared
        } else {
            &node.exact_shared
        };
        groups
            .iter()
            .find(|g| g.filter == *filter)?
            .pick(topic, picker)
            .cloned()
    }

    /// Appends every plain subscription matching `topic` to `out`, and for every matching
    /// shared group the member `picker` chooses to `shared`. One walk; see
    /// [`SubscriptionIndex::matches_into`] for the matching rules.
    pub fn select_into(
        &self,
        topic: &str,
        picker: &Picker<'_, S>,
        out: &mut Vec<Subscription<S>>,
        shared: &mut Vec<SharedMatch<S>>,
    ) {
        let dollar = topic.starts_with('$');
        let mut c = Collector {
            plain: out,
            shared: Some((shared, picker)),
            topic,
        };
        walk(&self.root, Some(topic), dollar, &mut c);
    }

    /// Appends every subscription matching `topic` to `out`; a subscriber with overlapping
    /// subscriptions appears once per matching subscription. Wildcards in the first level do
    /// not match topics starting with `$` [MQTT-4.7.2-1].
    pub fn matches_into(&self, topic: &str, out: &mut Vec<Subscription<S>>) {
        let dollar = topic.starts_with('$');
        let mut c = Collector {
            plain: out,
            shared: None,
            topic,
        };
        walk(&self.root, Some(topic), dollar, &mut c);
    }
}

/// Splits `a/b/#` into (`a/b`, true), `#` into (None, true), `a/b` into (`a/b`, false).
fn split_multi(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

fn remove_at<S>(
    node: &mut Node<S>,
    levels: &[&str],
    filter: &TopicFilter,
    multi: bool,
    session_id: u64,
) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        if filter.share_group().is_some() {
            let groups = if multi {
                &mut node.multi_shared
            } else {
                &mut node.exact_shared
            };
            let Some(pos) = groups.iter().position(|g| g.filter == *filter) else {
                return false;
            };
            let members = &mut groups[pos].members;
            let before = members.len();
            members.retain(|s| s.session_id != session_id);
            let removed = members.len() != before;
            if members.is_empty() {
                groups.swap_remove(pos);
            }
            return removed;
        }
        let list = if multi {
            &mut node.multi
        } else {
            &mut node.exact
        };
        let before = list.len();
        list.retain(|s| s.session_id != session_id);
        return list.len() != before;
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest, filter, multi, session_id);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

/// `rest` is the part of the topic not yet matched: `None` once every level is consumed.
/// `first_dollar` is set while at the root of a `$` topic.
fn walk<S: Clone>(
    node: &Node<S>,
    rest: Option<&str>,
    first_dollar: bool,
    c: &mut Collector<'_, '_, S>,
) {
    if !first_dollar {
        // `prefix/#` matches the prefix itself and everything below it.
        c.take(&node.multi, &node.multi_shared);
    }
    let Some(rest) = rest else {
        c.take(&node.exact, &node.exact_shared);
        return;
    };
    let (level, next) = match rest.split_once('/') {
        Some((level, next)) => (level, Some(next)),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(level) {
        walk(child, next, false, c);
    }
    if !first_dollar {
        if let Some(child) = node.children.get("+") {
            walk(child, next, false, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::merge_overlaps;
    use vane_proto::QoS;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s.to_string()).expect("valid filter")
    }

    fn sub(id: u64, qos: QoS) -> Subscription<u64> {
        Subscription {
            subscriber: id,
            session_id: id,
            options: SubscriptionOptions::qos(qos),
            subscription_id: None,
        }
    }

    fn matching(index: &SubscriptionIndex<u64>, topic: &str) -> Vec<u64> {
        let mut out = Vec::new();
        index.matches_into(topic, &mut out);
        let mut ids: Vec<u64> = out.iter().map(|s| s.subscriber).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn wildcards_match_per_level() {
        let mut index = SubscriptionIndex::new();
        index.subscribe(&filter("a/+/c"), sub(1, QoS::AtMostOnce));
        index.subscribe(&filter("a/#"), sub(2, QoS::AtMostOnce));
        index.subscribe(&filter("#"), sub(3, QoS::AtMostOnce));
        index.subscribe(&filter("a/b/c"), sub(4, QoS::AtMostOnce));
        index.subscribe(&filter("+/+"), sub(5, QoS::AtMostOnce));
        assert_eq!(matching(&index, "a/b/c"), vec![1, 2, 3, 4]);
        assert_eq!(matching(&index, "a"), vec![2, 3]);
        assert_eq!(matching(&index, "a/b"), vec![2, 3, 5]);
        assert_eq!(matching(&index, "a/b/c/d"), vec![2, 3]);
        assert_eq!(matching(&index, "/x"), vec![3, 5]);
    }

    #[test]
    fn first_level_wildcards_skip_dollar_topics() {
        // [MQTT-4.7.2-1]
        let mut index = SubscriptionIndex::new();
        index.subscribe(&filter("#"), sub(1, QoS::AtMostOnce));
        index.subscribe(&filter("+/info"), sub(2, QoS::AtMostOnce));
        index.subscribe(&filter("$SYS/#"), sub(3, QoS::AtMostOnce));
        index.subscribe(&filter("$SYS/+"), sub(4, QoS::AtMostOnce));
        assert_eq!(matching(&index, "$SYS/info"), vec![3, 4]);
    }

    #[test]
    fn resubscribe_replaces_and_unsubscribe_prunes() {
        // [MQTT-3.8.4-3]
        let mut index = SubscriptionIndex::new();
        assert!(!index.subscribe(&filter("a/b"), sub(1, QoS::AtMostOnce)));
        assert!(index.subscribe(&filter("a/b"), sub(1, QoS::ExactlyOnce)));
        assert_eq!(index.len(), 1);
        let mut out = Vec::new();
        index.matches_into("a/b", &mut out);
        assert_eq!(out[0].options.qos, QoS::ExactlyOnce);
        assert!(index.unsubscribe(&filter("a/b"), 1));
        assert!(!index.unsubscribe(&filter("a/b"), 1));
        assert!(index.is_empty());
        assert!(index.root.is_empty(), "empty branches are pruned");
    }

    #[test]
    fn overlapping_subscriptions_merge_to_highest_qos() {
        // [MQTT-3.3.4-2]
        let mut out = vec![
            sub(7, QoS::AtMostOnce),
            sub(3, QoS::AtMostOnce),
            sub(7, QoS::AtLeastOnce),
        ];
        out[0].subscription_id = Some(10);
        out[2].subscription_id = Some(20);
        let mut ids = Vec::new();
        merge_overlaps(&mut out, &mut ids);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].session_id, out[1].session_id), (3, 7));
        assert_eq!(out[1].options.qos, QoS::AtLeastOnce);
        let mut seven = ids[1].clone();
        seven.sort_unstable();
        assert_eq!(seven, vec![10, 20]);
    }

    fn pick_all(
        index: &SubscriptionIndex<u64>,
        topic: &str,
        picker: &Picker<'_, u64>,
        rounds: usize,
    ) -> Vec<u64> {
        let mut picked = Vec::new();
        for _ in 0..rounds {
            let (mut plain, mut shared) = (Vec::new(), Vec::new());
            index.select_into(topic, picker, &mut plain, &mut shared);
            assert!(plain.is_empty());
            assert_eq!(
                shared.len(),
                1,
                "one member per group and message [MQTT-4.8.2-?]"
            );
            picked.push(shared[0].subscription.session_id);
        }
        picked
    }

    fn picker(policy: SharePolicy, available: &dyn Fn(&u64) -> bool) -> Picker<'_, u64> {
        Picker {
            policy,
            origin: 7,
            random: 0,
            available,
            permitted: None,
            exclude: None,
        }
    }

    #[test]
    fn shared_group_round_robin_spreads_messages() {
        // MQTT 5.0 section 4.8.2: each message goes to one member of the group.
        let mut index = SubscriptionIndex::new();
        for id in 1..=3 {
            index.subscribe(&filter("$share/g/s/+"), sub(id, QoS::AtLeastOnce));
        }
        let all = |_: &u64| true;
        let mut picked = pick_all(&index, "s/x", &picker(SharePolicy::RoundRobin, &all), 6);
        picked.sort_unstable();
        assert_eq!(picked, vec![1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn shared_group_skips_members_that_cannot_take_messages() {
        let mut index = SubscriptionIndex::new();
        for id in 1..=3 {
            index.subscribe(&filter("$share/g/s/#"), sub(id, QoS::AtLeastOnce));
        }
        let only_two = |s: &u64| *s == 2;
        for policy in [
            SharePolicy::RoundRobin,
            SharePolicy::Random,
            SharePolicy::Sticky,
            SharePolicy::HashClient,
            SharePolicy::HashTopic,
        ] {
            assert_eq!(
                pick_all(&index, "s/x", &picker(policy, &only_two), 4),
                vec![2, 2, 2, 2],
                "{policy:?}"
            );
        }
        // Nobody available: a member still queues it, so the message is not lost.
        let none = |_: &u64| false;
        assert_eq!(
            pick_all(&index, "s/x", &picker(SharePolicy::RoundRobin, &none), 1).len(),
            1
        );
    }

    #[test]
    fn shared_and_plain_subscriptions_are_independent() {
        // MQTT 5.0 section 4.8.2: a plain subscription and a shared one each get a copy.
        let mut index = SubscriptionIndex::new();
        index.subscribe(&filter("$share/g/a/b"), sub(1, QoS::AtMostOnce));
        index.subscribe(&filter("$share/h/a/b"), sub(2, QoS::AtMostOnce));
        index.subscribe(&filter("a/b"), sub(1, QoS::AtMostOnce));
        let all = |_: &u64| true;
        let (mut plain, mut shared) = (Vec::new(), Vec::new());
        index.select_into(
            "a/b",
            &picker(SharePolicy::RoundRobin, &all),
            &mut plain,
            &mut shared,
        );
        assert_eq!(plain.len(), 1);
        assert_eq!(shared.len(), 2, "one per group");
        assert_eq!(
            matching(&index, "a/b"),
            vec![1],
            "matches_into sees plain subscriptions only"
        );
    }

    #[test]
    fn leaving_the_last_member_removes_the_group() {
        let mut index = SubscriptionIndex::new();
        index.subscribe(&filter("$share/g/a"), sub(1, QoS::AtMostOnce));
        assert!(
            index.subscribe(&filter("$share/g/a"), sub(1, QoS::AtLeastOnce)),
            "resubscribing replaces"
        );
        assert_eq!(index.len(), 1);
        assert!(index.unsubscribe(&filter("$share/g/a"), 1));
        assert!(index.is_empty());
        assert!(index.root.is_empty());
    }

    #[test]
    fn a_member_not_permitted_the_topic_is_never_picked() {
        // Shared subscriptions obey authorization: a member that may not receive the topic is
        // skipped, so its share goes to members that may (not dropped), even when they cannot
        // take it at once; with no permitted member, nobody gets it.
        let mut index = SubscriptionIndex::new();
        for id in 1..=3 {
            index.subscribe(&filter("$share/g/a/#"), sub(id, QoS::AtLeastOnce));
        }
        let all = |_: &u64| true;
        let not_two = |s: &u64| *s != 2;
        let permitted: &dyn Fn(&u64) -> bool = &not_two;
        let p = Picker {
            permitted: Some(permitted),
            ..picker(SharePolicy::RoundRobin, &all)
        };
        let mut picked = Vec::new();
        for _ in 0..6 {
            let (mut out, mut shared) = (Vec::new(), Vec::new());
            index.select_into("a/x", &p, &mut out, &mut shared);
            assert_eq!(shared.len(), 1);
            picked.push(shared[0].subscription.session_id);
        }
        assert!(!picked.contains(&2), "{picked:?}");
        assert!(picked.contains(&1) && picked.contains(&3), "{picked:?}");

        let busy = |_: &u64| false;
        let p = Picker {
            permitted: Some(permitted),
            ..picker(SharePolicy::RoundRobin, &busy)
        };
        for _ in 0..3 {
            let (mut out, mut shared) = (Vec::new(), Vec::new());
            index.select_into("a/x", &p, &mut out, &mut shared);
            assert_ne!(shared[0].subscription.session_id, 2);
        }

        let nobody = |_: &u64| false;
        let nobody: &dyn Fn(&u64) -> bool = &nobody;
        let p = Picker {
            permitted: Some(nobody),
            ..picker(SharePolicy::RoundRobin, &all)
        };
        let (mut out, mut shared) = (Vec::new(), Vec::new());
        index.select_into("a/x", &p, &mut out, &mut shared);
        assert!(shared.is_empty());
    }

    #[test]
    fn pick_shared_excludes_the_leaving_member() {
        let mut index = SubscriptionIndex::new();
        index.subscribe(&filter("$share/g/a"), sub(1, QoS::AtMostOnce));
        index.subscribe(&filter("$share/g/a"), sub(2, QoS::AtMostOnce));
        let all = |_: &u64| true;
        let p = Picker {
            exclude: Some(1),
            ..picker(SharePolicy::Sticky, &all)
        };
        assert_eq!(
            index
                .pick_shared(&filter("$share/g/a"), "a", &p)
                .map(|s| s.session_id),
            Some(2)
        );
        index.unsubscribe(&filter("$share/g/a"), 2);
        assert_eq!(
            index.pick_shared(&filter("$share/g/a"), "a", &p),
            None,
            "nobody else is left"
        );
    }

    #[test]
    fn shared_wildcards_skip_dollar_topics() {
        // [MQTT-4.7.2-1] applies to the filter inside a shared subscription too.
        let mut index = SubscriptionIndex::new();
        index.subscribe(&filter("$share/g/#"), sub(1, QoS::AtMostOnce));
        let all = |_: &u64| true;
        let (mut plain, mut shared) = (Vec::new(), Vec::new());
        index.select_into(
            "$SYS/x",
            &picker(SharePolicy::RoundRobin, &all),
            &mut plain,
            &mut shared,
        );
        assert!(shared.is_empty());
    }
}
