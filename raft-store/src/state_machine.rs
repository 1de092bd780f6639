//! The state machine: the admin store in memory, snapshots in RocksDB.
//!
//! Applied state lives in memory behind a lock that API reads share; it is
//! made durable by snapshots (built every `snapshot threshold` entries and
//! stored in the `sm` column family). On restart the latest snapshot is loaded
//! and openraft re-applies only the committed entries after it.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use rocksdb::{WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec;
use crate::command::Response;
use crate::state::AdminState;
use crate::zone_journal::ZoneJournal;
use crate::{Entry, KeelNode, LogId, NodeId, StorageError, TypeConfig};

pub(crate) const CF_SM: &str = "sm";
const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// Everything applied so far: the snapshot body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Applied {
    /// Last applied log id.
    pub last_applied: Option<LogId>,
    /// Membership as of `last_applied`.
    pub membership: StoredMembership<NodeId, KeelNode>,
    /// The tables.
    pub state: AdminState,
    /// Node-local: which databases' zone records changed lately (see [`ZoneJournal`]).
    #[serde(skip)]
    pub zone_journal: ZoneJournal,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, KeelNode>,
    data: Vec<u8>,
}

struct Shared {
    applied: RwLock<Applied>,
    /// Serialises snapshot writes: a build racing an install must not overwrite a newer snapshot.
    snapshot_write: Mutex<()>,
    applied_index: watch::Sender<u64>,
    snapshots_installed: AtomicU64,
    snapshots_built: AtomicU64,
}

/// A read handle on the applied state, shared by the API, the leader services and DNS.
#[derive(Clone)]
pub struct StateHandle {
    shared: Arc<Shared>,
}

impl StateHandle {
    /// Read the applied state under a shared lock; keep the closure short.
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        f(&self.lock())
    }

    fn lock(&self) -> RwLockReadGuard<'_, Applied> {
        self.shared.applied.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Index of the last applied entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        *self.shared.applied_index.borrow()
    }

    /// Notified whenever the applied index moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }

    /// Snapshots received from a leader and installed since this process started.
    pub fn snapshots_installed(&self) -> u64 {
        self.shared.snapshots_installed.load(Ordering::Relaxed)
    }

    /// Snapshots this node built since it started.
    pub fn snapshots_built(&self) -> u64 {
        self.shared.snapshots_built.load(Ordering::Relaxed)
    }
}

/// openraft's state machine over the in-memory tables and RocksDB snapshots.
pub struct StateMachine {
    db: Arc<DB>,
    handle: StateHandle,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

impl StateMachine {
    /// Load the latest stored snapshot (if any) as the starting state.
    pub(crate) fn open(db: Arc<DB>) -> Result<Self, crate::StoreError> {
        let applied = match db.get_cf(db.cf_handle(CF_SM).expect("cf"), KEY_SNAPSHOT)? {
            None => Applied::default(),
            Some(bytes) => {
                let stored: StoredSnapshot =
                    codec::decode(&bytes).map_err(|e| crate::StoreError::undecodable("sm/snapshot", e))?;
                codec::decode(&stored.data).map_err(|e| crate::StoreError::undecodable("sm/snapshot data", e))?
            }
        };
        let mut applied = applied;
        applied.state.reindex();
        let index = applied.last_applied.map_or(0, |l| l.index);
        applied.zone_journal = ZoneJournal::starting_at(index);
        let (tx, _) = watch::channel(index);
        let handle = StateHandle {
            shared: Arc::new(Shared {
                applied: RwLock::new(applied),
                snapshot_write: Mutex::new(()),
                applied_index: tx,
                snapshots_installed: AtomicU64::new(0),
                snapshots_built: AtomicU64::new(0),
            }),
        };
        Ok(Self { db, handle })
    }

    /// The shared read handle.
    pub fn handle(&self) -> StateHandle {
        self.handle.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.handle.shared.applied.write().unwrap_or_else(|p| p.into_inner())
    }

    fn store_snapshot(&self, meta: &SnapshotMeta<NodeId, KeelNode>, data: &[u8]) -> Result<(), StorageError> {
        store_snapshot(&self.db, &self.handle, meta, data)
    }
}

/// Persist a snapshot unless a newer one is already stored.
fn store_snapshot(
    db: &DB,
    handle: &StateHandle,
    meta: &SnapshotMeta<NodeId, KeelNode>,
    data: &[u8],
) -> Result<(), StorageError> {
    let _guard = handle.shared.snapshot_write.lock().unwrap_or_else(|p| p.into_inner());
    let cf = db.cf_handle(CF_SM).expect("cf");
    if let Some(bytes) = db.get_cf(cf, KEY_SNAPSHOT).map_err(snap_err)? {
        let stored: StoredSnapshot = codec::decode(&bytes).map_err(snap_err)?;
        if stored.meta.last_log_id > meta.last_log_id {
            return Ok(());
        }
    }
    let stored = StoredSnapshot {
        meta: meta.clone(),
        data: data.to_vec(),
    };
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(cf, KEY_SNAPSHOT, codec::encode(&stored), &opts)
        .map_err(snap_err)
}

/// Builds snapshots of the applied state.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    handle: StateHandle,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Copy under the read lock, encode outside it: apply waits for a copy, not an encoding.
        let copy = self.handle.read(Applied::clone);
        let (last_applied, membership) = (copy.last_applied, copy.membership.clone());
        let data = codec::encode(&copy);
        drop(copy);
        let built = self.handle.shared.snapshots_built.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{built}", l.leader_id.term, l.index),
            None => format!("0-0-{built}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        store_snapshot(&self.db, &self.handle, &meta, &data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, KeelNode>), StorageError> {
        Ok(self.handle.read(|a| (a.last_applied, a.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let last = {
            let mut applied = self.write();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(batch) => {
                        let index = entry.log_id.index;
                        let Applied {
                            state, zone_journal, ..
                        } = &mut *applied;
                        let apply = |p: &crate::Proposal| {
                            let response = state.apply(index, p);
                            if let Some(name) = state.zone_change(p, &response) {
                                zone_journal.record(index, name);
                            }
                            response
                        };
                        batch.0.iter().map(apply).collect()
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        Vec::new()
                    }
                };
                responses.push(response);
            }
            applied.last_applied.map_or(0, |l| l.index)
        };
        self.handle.shared.applied_index.send_replace(last);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            handle: self.handle.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, KeelNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut incoming: Applied = codec::decode(&data).map_err(sm_err)?;
        // The meta is authoritative for what the snapshot covers.
        incoming.last_applied = meta.last_log_id;
        incoming.membership = meta.last_membership.clone();
        incoming.state.reindex();
        self.store_snapshot(meta, &data)?;
        let index = incoming.last_applied.map_or(0, |l| l.index);
        incoming.zone_journal = ZoneJournal::starting_at(index);
        *self.write() = incoming;
        self.handle.shared.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        self.handle.shared.applied_index.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let bytes = self
            .db
            .get_cf(self.db.cf_handle(CF_SM).expect("cf"), KEY_SNAPSHOT)
            .map_err(snap_err)?;
        let Some(bytes) = bytes else { return Ok(None) };
        let stored: StoredSnapshot = codec::decode(&bytes).map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
