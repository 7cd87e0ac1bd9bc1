//! A growable bit set of message sequence numbers, to tell which acknowledged messages the
//! subscriber never received.

/// Sequence numbers seen, one bit each.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    /// Adds `seq`; false when it was already there.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        if word >= self.words.len() {
            self.words.resize((word + 1).next_power_of_two(), 0);
        }
        let bit = 1u64 << (seq % 64);
        let new = self.words[word] & bit == 0;
        self.words[word] |= bit;
        new
    }

    /// Number of sequence numbers in `self` that are not in `other`.
    pub(crate) fn missing_from(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, &w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_the_other_set_lacks() {
        let mut acked = SeqSet::default();
        let mut received = SeqSet::default();
        for seq in 0..1000 {
            assert!(acked.insert(seq));
            if seq % 10 != 3 {
                received.insert(seq);
            }
        }
        assert!(!acked.insert(5));
        assert_eq!(acked.missing_from(&received), 100);
        assert_eq!(received.missing_from(&acked), 0);
        assert_eq!(acked.missing_from(&SeqSet::default()), 1000);
    }
}
