//! Retained messages: a trie keyed by topic levels, so that a subscription's filter visits
//! only the branches it can match.

use std::collections::HashMap;
use std::sync::Arc;

use vane_proto::TopicFilter;

use crate::message::Message;

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

/// Where retained messages are kept. The broker talks to this trait only, so that a store that
/// keeps them on disk (and streams a `#` subscription instead of collecting it) can replace the
/// in-memory [`RetainedMessages`].
pub trait RetainedStore: Send + Sync {
    /// Stores a retained message, replacing the topic's previous one; an empty payload clears
    /// the topic instead [MQTT-3.3.1-5], [MQTT-3.3.1-10], [MQTT-3.3.1-11].
    fn set(&mut self, message: Arc<Message>);
    /// Removes a topic's retained message. Returns true when there was one.
    fn remove(&mut self, topic: &str) -> bool;
    /// The retained message of one topic.
    fn get(&self, topic: &str) -> Option<Arc<Message>>;
    /// Appends every retained message whose topic matches `filter` to `out`.
    fn matches_into(&self, filter: &TopicFilter, out: &mut Vec<Arc<Message>>);
    /// Number of retained messages.
    fn len(&self) -> usize;
    /// True when nothing is retained.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The retained message of every topic that has one, in memory.
#[derive(Debug, Default)]
pub struct RetainedMessages {
    root: Node,
    len: usize,
}

impl RetainedMessages {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl RetainedStore for RetainedMessages {
    fn set(&mut self, message: Arc<Message>) {
        if message.payload.is_empty() {
            self.remove(&message.topic);
            return;
        }
        let mut node = &mut self.root;
        for level in message.topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if node.message.replace(message).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, topic: &str) -> bool {
        let levels: Vec<&str> = topic.split('/').collect();
        let removed = remove_at(&mut self.root, &levels);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn get(&self, topic: &str) -> Option<Arc<Message>> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.clone()
    }

    fn matches_into(&self, filter: &TopicFilter, out: &mut Vec<Arc<Message>>) {
        let levels: Vec<&str> = filter.filter().split('/').collect();
        collect(&self.root, &levels, true, out);
    }

    fn len(&self) -> usize {
        self.len
    }
}

fn remove_at(node: &mut Node, levels: &[&str]) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_at(child, rest);
    if child.message.is_none() && child.children.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn collect(node: &Node, levels: &[&str], at_root: bool, out: &mut Vec<Arc<Message>>) {
    let Some((first, rest)) = levels.split_first() else {
        out.extend(node.message.iter().cloned());
        return;
    };
    match *first {
        "#" => {
            // `a/#` matches `a` itself as well as everything below it.
            if !at_root {
                out.extend(node.message.iter().cloned());
            }
            for (name, child) in &node.children {
                if !(at_root && name.starts_with('$')) {
                    collect_all(child, out);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if !(at_root && name.starts_with('$')) {
                    collect(child, rest, false, out);
                }
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                collect(child, rest, false, out);
            }
        }
    }
}

fn collect_all(node: &Node, out: &mut Vec<Arc<Message>>) {
    out.extend(node.message.iter().cloned());
    for child in node.children.values() {
        collect_all(child, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use vane_proto::QoS;

    fn msg(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message {
            topic: topic.to_string().into(),
            payload: bytes::Bytes::from(payload.to_string()),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Default::default(),
            origin: 0,
            received: Instant::now(),
        })
    }

    fn topics(store: &RetainedMessages, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.matches_into(
            &TopicFilter::parse(filter.to_string()).expect("filter"),
            &mut out,
        );
        let mut t: Vec<String> = out.iter().map(|m| m.topic.to_string()).collect();
        t.sort();
        t
    }

    #[test]
    fn set_replace_and_clear() {
        let mut store = RetainedMessages::new();
        store.set(msg("a/b", "1"));
        store.set(msg("a/b", "2"));
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.get("a/b").map(|m| m.payload.clone()),
            Some(bytes::Bytes::from("2"))
        );
        // [MQTT-3.3.1-10] an empty retained payload removes the retained message
        store.set(msg("a/b", ""));
        assert!(store.is_empty());
        assert!(store.root.children.is_empty());
    }

    #[test]
    fn filters_select_retained_topics() {
        let mut store = RetainedMessages::new();
        for t in ["a", "a/b", "a/b/c", "x/b", "$SYS/x"] {
            store.set(msg(t, "p"));
        }
        assert_eq!(topics(&store, "#"), vec!["a", "a/b", "a/b/c", "x/b"]);
        assert_eq!(topics(&store, "a/#"), vec!["a", "a/b", "a/b/c"]);
        assert_eq!(topics(&store, "+/b"), vec!["a/b", "x/b"]);
        assert_eq!(topics(&store, "a/+/c"), vec!["a/b/c"]);
        // [MQTT-4.7.2-1]
        assert_eq!(topics(&store, "$SYS/#"), vec!["$SYS/x"]);
        assert_eq!(topics(&store, "+/x"), Vec::<String>::new());
    }
}
