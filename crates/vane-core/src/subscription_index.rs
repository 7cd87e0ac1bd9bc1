//! The subscription index: a trie of topic-filter levels that finds every subscription
//! matching a topic name in one walk, without allocating per level.

use std::collections::HashMap;

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

#[derive(Debug)]
struct Node<S> {
    children: HashMap<Box<str>, Node<S>>,
    /// Subscriptions whose filter ends at this node.
    exact: Vec<Subscription<S>>,
    /// Subscriptions whose filter is this node's path followed by `/#`.
    multi: Vec<Subscription<S>>,
}

impl<S> Default for Node<S> {
    fn default() -> Self {
        Node {
            children: HashMap::new(),
            exact: Vec::new(),
            multi: Vec::new(),
        }
    }
}

impl<S> Node<S> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.exact.is_empty() && self.multi.is_empty()
    }
}

/// Topic filter trie mapping filters to subscriptions (non-shared subscriptions).
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
    /// [MQTT-3.8.4-3]. Returns true when it replaced one.
    pub fn subscribe(&mut self, filter: &TopicFilter, sub: Subscription<S>) -> bool {
        let (path, multi) = split_multi(filter.filter());
        let mut node = &mut self.root;
        if let Some(path) = path {
            for level in path.split('/') {
                node = node.children.entry(level.into()).or_default();
            }
        }
        let list = if multi {
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
        let removed = remove_at(&mut self.root, &levels, multi, session_id);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Appends every subscription matching `topic` to `out`; a subscriber with overlapping
    /// subscriptions appears once per matching subscription. Wildcards in the first level do
    /// not match topics starting with `$` [MQTT-4.7.2-1].
    pub fn matches_into(&self, topic: &str, out: &mut Vec<Subscription<S>>) {
        let dollar = topic.starts_with('$');
        walk(&self.root, Some(topic), dollar, out);
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

fn remove_at<S>(node: &mut Node<S>, levels: &[&str], multi: bool, session_id: u64) -> bool {
    let Some((first, rest)) = levels.split_first() else {
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
    let removed = remove_at(child, rest, multi, session_id);
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
    out: &mut Vec<Subscription<S>>,
) {
    if !first_dollar {
        // `prefix/#` matches the prefix itself and everything below it.
        out.extend(node.multi.iter().cloned());
    }
    let Some(rest) = rest else {
        out.extend(node.exact.iter().cloned());
        return;
    };
    let (level, next) = match rest.split_once('/') {
        Some((level, next)) => (level, Some(next)),
        None => (rest, None),
    };
    if let Some(child) = node.children.get(level) {
        walk(child, next, false, out);
    }
    if !first_dollar {
        if let Some(child) = node.children.get("+") {
            walk(child, next, false, out);
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
}
