//! The newest log entries, kept in memory.
//!
//! openraft reads entries back from the log store to replicate them (once per
//! follower) and to apply them, almost always just after appending them. Each
//! such read was a RocksDB read and a decode; serving it from here is a clone
//! of an `Arc`ed batch. The kept entries are always a suffix of the log:
//! `append` adds at the tail, `truncate` and `purge` cut the same ranges as
//! on disk, and anything not kept is read from RocksDB as before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::Entry;

/// Bytes of encoded entries kept at most (the newest are kept).
const KEPT_BYTES: usize = 16 * 1024 * 1024;

/// A shared, contiguous tail of the log.
#[derive(Clone, Default)]
pub(crate) struct RecentLog {
    inner: Arc<Mutex<Tail>>,
}

#[derive(Default)]
struct Tail {
    /// Entries with consecutive indexes, with their encoded sizes.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn last_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn pop_back(&mut self) {
        if let Some((_, size)) = self.entries.pop_back() {
            self.bytes -= size;
        }
    }
}

impl RecentLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record `entry` (encoded in `size` bytes) as just appended at the tail.
    pub(crate) fn appended(&self, entry: Entry, size: usize) {
        let mut tail = self.lock();
        if tail.last_index().is_some_and(|last| last + 1 != entry.log_id.index) {
            // Not the next index: what we keep would no longer be one suffix. Start over.
            tail.entries.clear();
            tail.bytes = 0;
        }
        tail.bytes += size;
        tail.entries.push_back((entry, size));
        while tail.bytes > KEPT_BYTES && tail.entries.len() > 1 {
            tail.pop_front();
        }
    }

    /// Entries from `index` on were removed from the log.
    pub(crate) fn truncated(&self, index: u64) {
        let mut tail = self.lock();
        while tail.last_index().is_some_and(|last| last >= index) {
            tail.pop_back();
        }
    }

    /// Entries up to and including `index` were removed from the log.
    pub(crate) fn purged(&self, index: u64) {
        let mut tail = self.lock();
        while tail.first_index().is_some_and(|first| first <= index) {
            tail.pop_front();
        }
    }

    /// The entries with indexes in `start..end`, if every one of them that is in the log is
    /// kept here; `None` means read the log.
    pub(crate) fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let tail = self.lock();
        let (first, last) = (tail.first_index()?, tail.last_index()?);
        if start < first || start > last {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end.min(last + 1).max(start) - first) as usize;
        Some(tail.entries.range(from..to).map(|(e, _)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_what_it_holds_and_follows_truncate_and_purge() {
        let log = RecentLog::default();
        assert_eq!(indexes(log.get(1, 2)), None, "empty: read the log");
        for i in 5..=9 {
            log.appended(entry(i), 10);
        }
        assert_eq!(indexes(log.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(log.get(7, u64::MAX)), Some(vec![7, 8, 9]));
        assert_eq!(indexes(log.get(4, 10)), None, "before the kept tail");
        assert_eq!(indexes(log.get(10, 12)), None, "past the tail");
        log.truncated(8);
        assert_eq!(indexes(log.get(5, u64::MAX)), Some(vec![5, 6, 7]));
        log.appended(entry(8), 10);
        log.purged(6);
        assert_eq!(indexes(log.get(7, u64::MAX)), Some(vec![7, 8]));
        assert_eq!(indexes(log.get(6, u64::MAX)), None);
        // A gap starts over rather than keeping a non-contiguous tail.
        log.appended(entry(20), 10);
        assert_eq!(indexes(log.get(20, 21)), Some(vec![20]));
        assert_eq!(indexes(log.get(8, 9)), None);
    }

    #[test]
    fn keeps_a_bounded_number_of_bytes() {
        let log = RecentLog::default();
        let size = KEPT_BYTES / 4;
        for i in 1..=10 {
            log.appended(entry(i), size);
        }
        assert_eq!(indexes(log.get(7, 11)), Some(vec![7, 8, 9, 10]));
        assert_eq!(indexes(log.get(6, 11)), None);
    }
}
