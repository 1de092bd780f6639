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
    thread: Arc<FlusherThread>,
}

/// The thread and its queue; dropping the last handle closes the queue and joins the thread,
/// so the thread's hold on the database ends before the store's owner moves on (a RocksDB
/// handle closed on a stray thread while the process exits can crash it).
struct FlusherThread {
    tx: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FlusherThread {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl LogFlusher {
    /// Start the flusher thread for `db`; it exits when every `LogFlusher` clone is dropped.
    pub(crate) fn start(db: Arc<DB>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let handle = std::thread::Builder::new()
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
        Ok(Self {
            thread: Arc::new(FlusherThread {
                tx: Some(tx),
                handle: Some(handle),
            }),
        })
    }

    /// Report `callback` once everything written so far is on disk.
    pub(crate) fn after_sync(&self, callback: LogFlushed<TypeConfig>) {
        let sent = match &self.thread.tx {
            Some(tx) => tx.send(callback).map_err(|mpsc::SendError(cb)| cb),
            None => Err(callback),
        };
        if let Err(callback) = sent {
            callback.log_io_completed(Err(std::io::Error::other("the Raft log flusher has stopped")));
        }
    }
}
