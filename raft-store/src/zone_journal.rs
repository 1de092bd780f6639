//! Which databases' published DNS records changed, by log index.
//!
//! The DNS feed on every node updates only the names listed here instead of
//! rebuilding a zone of every database after each change. The journal is
//! node-local and derived (never stored or replicated): after a start or a
//! snapshot install it begins at the applied index, and a reader that served
//! anything older rebuilds from the tables.

use std::collections::{BTreeSet, VecDeque};

/// Changes kept; a reader further behind than this rebuilds the whole zone.
pub const ZONE_JOURNAL_KEPT: usize = 65_536;

/// Database names whose zone records changed, with the log index of each change.
#[derive(Debug, Clone, Default)]
pub struct ZoneJournal {
    /// Every change after this index is listed in `changes`.
    complete_after: u64,
    changes: VecDeque<(u64, String)>,
}

impl ZoneJournal {
    /// An empty journal that knows nothing before `index`.
    pub fn starting_at(index: u64) -> Self {
        Self {
            complete_after: index,
            changes: VecDeque::new(),
        }
    }

    /// Note that `database`'s records changed at `index`.
    pub fn record(&mut self, index: u64, database: &str) {
        self.changes.push_back((index, database.to_string()));
        if self.changes.len() > ZONE_JOURNAL_KEPT {
            if let Some((dropped, _)) = self.changes.pop_front() {
                self.complete_after = dropped;
            }
        }
    }

    /// The databases changed after `index`, or `None` when the journal does not reach back
    /// that far (the caller must rebuild from the tables).
    pub fn changed_since(&self, index: u64) -> Option<BTreeSet<&str>> {
        if index < self.complete_after {
            return None;
        }
        Some(
            self.changes
                .iter()
                .rev()
                .take_while(|(i, _)| *i > index)
                .map(|(_, name)| name.as_str())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_changes_after_an_index_and_admits_what_it_forgot() {
        let mut j = ZoneJournal::starting_at(10);
        assert_eq!(j.changed_since(9), None, "before its start it knows nothing");
        assert_eq!(j.changed_since(10), Some(BTreeSet::new()));
        j.record(11, "a");
        j.record(12, "b");
        j.record(12, "a");
        assert_eq!(j.changed_since(10), Some(["a", "b"].into()));
        assert_eq!(j.changed_since(11), Some(["a", "b"].into()));
        assert_eq!(j.changed_since(12), Some(BTreeSet::new()));
        for i in 0..ZONE_JOURNAL_KEPT as u64 {
            j.record(13 + i, "c");
        }
        assert_eq!(j.changed_since(11), None, "dropped entries make older readers rebuild");
        assert_eq!(j.changed_since(13), Some(["c"].into()));
    }
}
