//! Topic aliases the server assigns on the PUBLISH packets it sends to an MQTT 5.0 client
//! (MQTT 5.0 section 3.3.2.3.4).
//!
//! The client's CONNECT Topic Alias Maximum bounds the aliases the server may use
//! [MQTT-3.1.2-26], [MQTT-3.3.2-11]; absent or 0, none are sent [MQTT-3.1.2-27]. The first
//! PUBLISH of a topic carries the topic and a free alias, later ones an empty topic and that
//! alias. Once every alias is taken, the least recently used one is given to the new topic
//! (sending the new topic with it redefines the client's mapping). Mappings last for one network
//! connection [MQTT-3.3.2-7]: [`TopicAliases::reset`] is called on every CONNECT.
//!
//! Choosing and recording are separate steps: the session encodes a PUBLISH with the
//! [`AliasChoice`] from [`TopicAliases::choose`], and only once the packet is kept (not dropped
//! for exceeding the client's Maximum Packet Size) calls [`TopicAliases::commit`]. The table
//! therefore always matches what the client has actually been sent.
//!
//! Cost per PUBLISH: nothing when aliases are off or the topic is short; otherwise one hash
//! lookup and, for a topic already mapped, an O(1) move to the front of the recency list with no
//! allocation. Assigning an alias to a new topic copies the topic once (see
//! [`TopicAliases::commit`]).

use std::collections::HashMap;

use vane_proto::ByteString;

/// Topics shorter than this are always sent as they are. The Topic Alias property takes three
/// bytes (identifier and Two Byte Integer), so aliasing a topic of three bytes or fewer could
/// never make a PUBLISH smaller, and costs three bytes on the first send.
pub(super) const MIN_ALIASED_TOPIC_LEN: usize = 4;

/// The most aliases the server keeps per connection, whatever larger maximum the client offers:
/// each costs a table entry and a copy of its topic for the life of the connection. The client's
/// maximum applies when it is lower.
pub(super) const MAX_ALIASES_PER_CONNECTION: u16 = 1024;

/// No slot: the end of the recency list. Slot indexes stay below
/// [`MAX_ALIASES_PER_CONNECTION`], so this never names a real slot.
const NIL: u16 = u16::MAX;

/// How to send the topic of one PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AliasChoice {
    /// The topic as it is, no alias.
    Plain,
    /// The client already maps this alias to the topic: an empty topic and the alias.
    Known(u16),
    /// The topic and this alias, which (re)defines the client's mapping.
    Assign(u16),
}

impl AliasChoice {
    /// The Topic Alias to send, if any.
    pub(super) fn alias(self) -> Option<u16> {
        match self {
            AliasChoice::Plain => None,
            AliasChoice::Known(a) | AliasChoice::Assign(a) => Some(a),
        }
    }
}

/// One alias: the topic the client maps it to, and its place in the recency list.
#[derive(Debug)]
struct Slot {
    topic: ByteString,
    /// The next more recently used slot, or [`NIL`].
    newer: u16,
    /// The next less recently used slot, or [`NIL`].
    older: u16,
}

/// The server-to-client alias table of one connection. Slot `i` holds alias `i + 1`.
#[derive(Debug)]
pub(super) struct TopicAliases {
    /// The most aliases usable on this connection: the lower of the client's Topic Alias
    /// Maximum and [`MAX_ALIASES_PER_CONNECTION`]; 0 turns aliases off.
    max: u16,
    /// Topic to slot index.
    by_topic: HashMap<ByteString, u16>,
    /// Aliases in use, never more than `max`.
    slots: Vec<Slot>,
    /// Most recently used slot, or [`NIL`].
    newest: u16,
    /// Least recently used slot, or [`NIL`]: the one reused when all are taken.
    oldest: u16,
}

impl TopicAliases {
    /// An empty table with aliases off.
    pub(super) fn new() -> TopicAliases {
        TopicAliases {
            max: 0,
            by_topic: HashMap::new(),
            slots: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// Forgets every mapping, for a new connection whose client accepts up to `client_maximum`
    /// aliases (its CONNECT Topic Alias Maximum; 0 for none, and for MQTT 3.x).
    pub(super) fn reset(&mut self, client_maximum: u16) {
        self.max = client_maximum.min(MAX_ALIASES_PER_CONNECTION);
        self.by_topic.clear();
        self.slots.clear();
        let keep = usize::from(self.max);
        self.by_topic.shrink_to(keep);
        self.slots.shrink_to(keep);
        self.newest = NIL;
        self.oldest = NIL;
    }

    /// Aliases currently mapped on this connection.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// How to send `topic`, without changing the table; [`TopicAliases::commit`] records the
    /// choice once the PUBLISH is kept.
    pub(super) fn choose(&self, topic: &str) -> AliasChoice {
        if self.max == 0 || topic.len() < MIN_ALIASED_TOPIC_LEN {
            return AliasChoice::Plain;
        }
        if let Some(&slot) = self.by_topic.get(topic) {
            return AliasChoice::Known(slot + 1);
        }
        let slot = if self.slots.len() < usize::from(self.max) {
            // Lossless: slots.len() < max <= MAX_ALIASES_PER_CONNECTION.
            self.slots.len() as u16
        } else {
            self.oldest
        };
        AliasChoice::Assign(slot + 1)
    }

    /// Records that a PUBLISH of `topic` sent as `choice` (from [`TopicAliases::choose`] on
    /// this same table, with nothing recorded in between) reached the client.
    ///
    /// A newly assigned topic is copied rather than shared: a topic decoded from a publisher's
    /// packet is a slice of that connection's read buffer, and keeping it here for the life of
    /// this connection would keep the whole buffer (and any large payload in it) alive.
    pub(super) fn commit(&mut self, topic: &str, choice: AliasChoice) {
        match choice {
            AliasChoice::Plain => {}
            AliasChoice::Known(alias) => self.touch(alias - 1),
            AliasChoice::Assign(alias) => {
                let slot = alias - 1;
                let topic = ByteString::from(topic);
                if usize::from(slot) == self.slots.len() {
                    self.slots.push(Slot {
                        topic: topic.clone(),
                        newer: NIL,
                        older: NIL,
                    });
                } else {
                    let old =
                        std::mem::replace(&mut self.slots[usize::from(slot)].topic, topic.clone());
                    self.by_topic.remove(&*old);
                    self.unlink(slot);
                }
                self.push_newest(slot);
                self.by_topic.insert(topic, slot);
            }
        }
    }

    /// Makes `slot` the most recently used.
    fn touch(&mut self, slot: u16) {
        if self.newest != slot {
            self.unlink(slot);
            self.push_newest(slot);
        }
    }

    /// Takes `slot` out of the recency list.
    fn unlink(&mut self, slot: u16) {
        let Slot { newer, older, .. } = self.slots[usize::from(slot)];
        match newer {
            NIL => self.newest = older,
            n => self.slots[usize::from(n)].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[usize::from(o)].newer = newer,
        }
    }

    /// Puts an unlinked `slot` at the most recently used end of the list.
    fn push_newest(&mut self, slot: u16) {
        let previous = self.newest;
        {
            let s = &mut self.slots[usize::from(slot)];
            s.newer = NIL;
            s.older = previous;
        }
        match previous {
            NIL => self.oldest = slot,
            p => self.slots[usize::from(p)].newer = slot,
        }
        self.newest = slot;
    }

    /// Aliases from least to most recently used, with their topics (for tests).
    #[cfg(test)]
    pub(super) fn by_recency(&self) -> Vec<(u16, &str)> {
        let mut out = Vec::with_capacity(self.slots.len());
        let mut at = self.oldest;
        while at != NIL {
            let s = &self.slots[usize::from(at)];
            out.push((at + 1, &*s.topic));
            at = s.newer;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(t: &mut TopicAliases, topic: &str) -> AliasChoice {
        let choice = t.choose(topic);
        t.commit(topic, choice);
        choice
    }

    fn check(t: &TopicAliases) {
        let order = t.by_recency();
        assert_eq!(order.len(), t.slots.len(), "every slot is in the list once");
        assert_eq!(t.by_topic.len(), t.slots.len());
        assert!(t.slots.len() <= usize::from(t.max));
        for (alias, topic) in order {
            assert_eq!(t.by_topic.get(topic), Some(&(alias - 1)));
        }
    }

    #[test]
    fn assigns_free_aliases_then_reuses_the_least_recently_used() {
        let mut t = TopicAliases::new();
        t.reset(3);
        assert_eq!(send(&mut t, "t/aa"), AliasChoice::Assign(1));
        assert_eq!(send(&mut t, "t/bb"), AliasChoice::Assign(2));
        assert_eq!(send(&mut t, "t/cc"), AliasChoice::Assign(3));
        assert_eq!(send(&mut t, "t/aa"), AliasChoice::Known(1));
        check(&t);
        // t/bb is now the least recently used.
        assert_eq!(send(&mut t, "t/dd"), AliasChoice::Assign(2));
        assert_eq!(t.choose("t/bb"), AliasChoice::Assign(3));
        assert_eq!(send(&mut t, "t/cc"), AliasChoice::Known(3));
        assert_eq!(send(&mut t, "t/bb"), AliasChoice::Assign(1));
        assert_eq!(t.by_recency(), vec![(2, "t/dd"), (3, "t/cc"), (1, "t/bb")]);
        check(&t);
    }

    #[test]
    fn choose_alone_changes_nothing() {
        let mut t = TopicAliases::new();
        t.reset(1);
        assert_eq!(t.choose("t/aa"), AliasChoice::Assign(1));
        assert_eq!(t.len(), 0);
        send(&mut t, "t/aa");
        assert_eq!(t.choose("t/bb"), AliasChoice::Assign(1));
        assert_eq!(t.choose("t/aa"), AliasChoice::Known(1));
        assert_eq!(t.by_recency(), vec![(1, "t/aa")]);
    }

    #[test]
    fn off_short_topics_and_cap() {
        let mut t = TopicAliases::new();
        assert_eq!(t.choose("t/aa"), AliasChoice::Plain, "off until reset");
        t.reset(0);
        assert_eq!(t.choose("t/aa"), AliasChoice::Plain);
        t.reset(5);
        assert_eq!(t.choose("abc"), AliasChoice::Plain);
        assert_eq!(t.choose("abcd"), AliasChoice::Assign(1));
        t.reset(u16::MAX);
        assert_eq!(t.max, MAX_ALIASES_PER_CONNECTION);
        for i in 0..MAX_ALIASES_PER_CONNECTION + 10 {
            let topic = format!("topic/{i}");
            let alias = send(&mut t, &topic).alias().unwrap_or_default();
            assert!((1..=MAX_ALIASES_PER_CONNECTION).contains(&alias));
        }
        assert_eq!(t.len(), usize::from(MAX_ALIASES_PER_CONNECTION));
        check(&t);
    }

    #[test]
    fn reset_forgets_every_mapping() {
        let mut t = TopicAliases::new();
        t.reset(2);
        send(&mut t, "t/aa");
        send(&mut t, "t/bb");
        t.reset(2);
        assert_eq!(t.len(), 0);
        assert_eq!(send(&mut t, "t/bb"), AliasChoice::Assign(1));
        check(&t);
    }

    #[test]
    fn single_alias_is_reused_in_turn() {
        let mut t = TopicAliases::new();
        t.reset(1);
        for round in 0..3 {
            assert_eq!(
                send(&mut t, "t/aa"),
                AliasChoice::Assign(1),
                "round {round}"
            );
            assert_eq!(send(&mut t, "t/aa"), AliasChoice::Known(1));
            assert_eq!(send(&mut t, "t/bb"), AliasChoice::Assign(1));
            check(&t);
        }
    }
}
