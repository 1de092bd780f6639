//! The Raft log and vote in RocksDB.
//!
//! Entries live in the `log` column family keyed by big-endian index, so
//! RocksDB's order is log order. Votes are written with fsync; appends are
//! written unsynced and reported durable only after a group WAL sync
//! (`log_flush`), so an acknowledged write survives kill -9 and power loss.
//!
//! The commit index is only a hint for how far to re-apply at start, so it is
//! not written on each commit: it rides along in the next append's batch. What
//! made it matter for correctness is gone: a node that led its term before it
//! stopped resumes as a candidate (see [`LogStore::new`]), so a restarted
//! leader's read index is its new term's first entry, never a stored value.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::codec;
use crate::log_flush::LogFlusher;
use crate::recent_log::RecentLog;
use crate::{Entry, LogId, NodeId, StorageError, TypeConfig};

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_META: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// openraft's log storage over a shared RocksDB handle.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    flusher: LogFlusher,
    /// The newest entries, so replication and apply need not read them back.
    recent: RecentLog,
    /// The commit index openraft reported last, written with the next append. Only the
    /// store openraft appends through holds a current value; reader clones never use it.
    committed: Option<LogId>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

impl LogStore {
    /// Open the log over `db`. A vote that says this node's term had an elected leader is
    /// stored back as not yet committed: openraft 0.9 restarts a node that led its term
    /// straight back as leader, with no new entry of its own, and such a leader's read index
    /// is only what it remembers as committed, which may be behind what it acknowledged.
    /// As a candidate it must win a new term first, and the new term's first entry, once
    /// committed, covers everything acknowledged before. A follower forgetting that its term
    /// had a leader loses nothing: the leader's next message says so again, and the node
    /// still will not vote for anyone else in that term.
    pub(crate) fn new(db: Arc<DB>) -> Result<Self, crate::StoreError> {
        let meta = db.cf_handle(CF_META).expect("column family created at open");
        let undecodable = crate::StoreError::undecodable;
        if let Some(bytes) = db.get_cf(meta, KEY_VOTE)? {
            let mut vote: Vote<NodeId> = codec::decode(&bytes).map_err(|e| undecodable("meta/vote", e))?;
            if vote.committed {
                vote.committed = false;
                db.put_cf_opt(meta, KEY_VOTE, codec::encode(&vote), &synced())?;
            }
        }
        let committed = match db.get_cf(meta, KEY_COMMITTED)? {
            None => None,
            Some(bytes) => codec::decode(&bytes).map_err(|e| undecodable("meta/committed", e))?,
        };
        Ok(Self {
            flusher: LogFlusher::start(db.clone())?,
            db,
            recent: RecentLog::default(),
            committed,
        })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.db.get_cf(self.cf(CF_META), key).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(read_err),
        }
    }

    /// Synced: the metadata left (vote, last purged) changes rarely and must survive power loss.
    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        self.db
            .put_cf_opt(self.cf(CF_META), key, codec::encode(value), &synced())
            .map_err(write_err)
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut iter = self.db.iterator_cf(self.cf(CF_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(read_err)?;
                let entry: Entry = codec::decode(&value).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(entries) = self.recent.get(start, end) {
            return Ok(entries);
        }
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_LOG),
            IteratorMode::From(&index_key(start), Direction::Forward),
        );
        for item in iter {
            let (key, value) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                read_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "log key is not 8 bytes",
                ))
            })?);
            if !range.contains(&index) {
                break;
            }
            out.push(codec::decode(&value).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self.last_entry_log_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote)
            .map_err(|_| StorageIOError::write_vote(&std::io::Error::other("vote write failed")).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Written with the next append (see the module doc): a write per commit on every node
        // was a few percent of a write's CPU, for a value that only saves re-applying at start.
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let cf = self.cf(CF_LOG);
        let mut written = Vec::new();
        for entry in entries {
            let bytes = codec::encode(&entry);
            batch.put_cf(cf, index_key(entry.log_id.index), &bytes);
            written.push((entry, bytes.len()));
        }
        // A few bytes more in a write that happens anyway.
        batch.put_cf(self.cf(CF_META), KEY_COMMITTED, codec::encode(&self.committed));
        // Unsynced: the flusher's group sync makes them durable before openraft counts
        // them, one sync for every append queued meanwhile. This does not overlap the
        // leader's sync with the followers': openraft 0.9 starts replicating an entry only
        // once the leader's own flush is reported (`RaftCore::append_to_log` waits for
        // it), so the two fsyncs run one after the other.
        if let Err(e) = self.db.write(batch) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(write_err(e));
        }
        for (entry, size) in written {
            self.recent.appended(entry, size);
        }
        self.flusher.after_sync(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = index_key(log_id.index);
        let to = index_key(u64::MAX);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), from, to);
        // delete_range excludes its end key.
        batch.delete_cf(self.cf(CF_LOG), to);
        // Forget first: a reader must never be served an entry that is no longer in the log.
        self.recent.truncated(log_id.index);
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two leaves extra entries, never a gap.
        self.put_meta(KEY_LAST_PURGED, &log_id)?;
        self.recent.purged(log_id.index);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOG), index_key(0), index_key(log_id.index + 1));
        self.db.write(batch).map_err(write_err)
    }
}
