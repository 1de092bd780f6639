//! Group commit for the Raft log: one WAL fsync acknowledges every append queued before it.
//!
//! `append` writes entries to RocksDB unsynced (readable at once, so the leader
//! replicates while its own fsync runs) and queues openraft's callback here. A
//! dedicated thread takes everything queued, syncs the WAL once, then reports
//! each callback in order. Every queued append's write happened before it was
//! queued, so the one sync covers them all.

use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::LogFlushed;
use rocksdb::DB;

use crate::TypeConfig;

/// Queues flush callbacks for the flusher thread.
#[derive(Clone)]
pub(crate) struct LogFlusher {
    tx: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogFlusher {
    /// Start the flusher thread for `db`; it exits when every `LogFlusher` clone is dropped.
    pub(crate) fn start(db: Arc<DB>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        std::thread::Builder::new()
            .name("raft-log-fsync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let result = db.flush_wal(true);
                    for callback in batch {
                        let outcome = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::other(format!("syncing the Raft log failed: {e}"))),
                        };
                        callback.log_io_completed(outcome);
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Report `callback` once everything written so far is on disk.
    pub(crate) fn after_sync(&self, callback: LogFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(callback)) = self.tx.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("the Raft log flusher has stopped")));
        }
    }
}
