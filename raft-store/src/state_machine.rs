//! The state machine: the admin store in memory, snapshots in RocksDB.
//!
//! Applied state lives in memory behind a lock that API reads share; it is
//! made durable by snapshots (built every `snapshot threshold` entries and
//! stored in the `sm` column family). On restart the latest snapshot is loaded
//! and openraft re-applies only the committed entries after it.
//!
//! A snapshot is stored in parts, so its cost does not grow with the history:
//! `rest` (everything but the history tables, written whole), one `row/…` key
//! per history row (only the rows changed since the snapshot before are
//! written), and `meta`, all in one atomic write. What the rows and `rest` hold
//! is captured between two applies (`get_snapshot_builder` runs on openraft's
//! state-machine worker), so together they are exactly the state at the
//! snapshot's index. The whole state is encoded only when a follower needs it
//! (`get_current_snapshot`), in the same format a snapshot always had.

use std::collections::VecDeque;
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::codec;
use crate::command::Response;
use crate::state::{AdminState, Changes};
use crate::zone_journal::ZoneJournal;
use crate::{Entry, KeelNode, LogId, NodeId, StorageError, TypeConfig};

pub(crate) const CF_SM: &str = "sm";
/// The whole snapshot as one value: how snapshots were stored before they had parts.
const KEY_LEGACY: &[u8] = b"snapshot";
const KEY_META: &[u8] = b"meta";
const KEY_REST: &[u8] = b"rest";
const ROW_PREFIX: &[u8] = b"row/";
/// The first key after every `row/…` key.
const ROW_END: &[u8] = b"row0";

fn row_key(table: &str, key: &str) -> Vec<u8> {
    [ROW_PREFIX, table.as_bytes(), b"/", key.as_bytes()].concat()
}

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
struct LegacySnapshot {
    meta: SnapshotMeta<NodeId, KeelNode>,
    data: Vec<u8>,
}

/// What a snapshot build writes, captured between two applies.
struct Capture {
    meta: SnapshotMeta<NodeId, KeelNode>,
    /// Everything but the history tables.
    rest: Applied,
    /// History rows changed since the capture before (every row, when `rewrite`).
    changes: Changes,
    /// Clear every stored row first: a capture before this one was lost.
    rewrite: bool,
}

struct Shared {
    applied: RwLock<Applied>,
    /// Captures not yet written, oldest first. Each holds only the rows changed since the
    /// one before, so they are written in order, all at once, by whichever build runs next.
    pending: Mutex<VecDeque<Capture>>,
    /// Serialises snapshot writes: a build racing an install must not write over it.
    snapshot_write: Mutex<()>,
    /// A snapshot write failed, so its captures' changes are lost: the next capture
    /// holds every row and its write replaces every stored row.
    rewrite: std::sync::atomic::AtomicBool,
    snapshot_rows_written: AtomicU64,
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

    /// History rows this node's snapshots wrote since it started (builds write only the
    /// rows changed since the snapshot before; installs write every row).
    pub fn snapshot_rows_written(&self) -> u64 {
        self.shared.snapshot_rows_written.load(Ordering::Relaxed)
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
        let mut applied = match load(&db)? {
            Stored::Parts(_, applied) => *applied,
            Stored::Legacy(legacy) => {
                let mut applied: Applied =
                    codec::decode(&legacy.data).map_err(|e| crate::StoreError::undecodable("sm/snapshot data", e))?;
                // The store holds no rows yet: the next snapshot writes them all.
                applied.state.mark_all_changed();
                applied
            }
            Stored::Nothing => Applied::default(),
        };
        applied.state.reindex();
        let index = applied.last_applied.map_or(0, |l| l.index);
        applied.zone_journal = ZoneJournal::starting_at(index);
        let (tx, _) = watch::channel(index);
        let handle = StateHandle {
            shared: Arc::new(Shared {
                applied: RwLock::new(applied),
                pending: Mutex::new(VecDeque::new()),
                snapshot_write: Mutex::new(()),
                rewrite: std::sync::atomic::AtomicBool::new(false),
                snapshot_rows_written: AtomicU64::new(0),
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
}

/// What the `sm` column family holds.
enum Stored {
    /// A snapshot in parts: its meta and the state it covers.
    Parts(SnapshotMeta<NodeId, KeelNode>, Box<Applied>),
    /// A whole snapshot as one value, as older builds stored it.
    Legacy(LegacySnapshot),
    /// No snapshot yet.
    Nothing,
}

/// Read the stored snapshot, all of it from one RocksDB snapshot so a build writing
/// meanwhile is seen whole or not at all.
fn load(db: &DB) -> Result<Stored, crate::StoreError> {
    use crate::StoreError as E;
    let view = db.snapshot();
    let cf = db.cf_handle(CF_SM).expect("cf");
    let Some(meta) = view.get_cf(cf, KEY_META)? else {
        return Ok(match view.get_cf(cf, KEY_LEGACY)? {
            Some(bytes) => Stored::Legacy(codec::decode(&bytes).map_err(|e| E::undecodable("sm/snapshot", e))?),
            None => Stored::Nothing,
        });
    };
    let meta = codec::decode(&meta).map_err(|e| E::undecodable("sm/meta", e))?;
    let rest = view.get_cf(cf, KEY_REST)?.unwrap_or_default();
    let mut applied: Applied = codec::decode(&rest).map_err(|e| E::undecodable("sm/rest", e))?;
    for item in view.iterator_cf(cf, IteratorMode::From(ROW_PREFIX, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(ROW_PREFIX) {
            break;
        }
        let name = String::from_utf8_lossy(&key[ROW_PREFIX.len()..]).into_owned();
        let Some((table, row)) = name.split_once('/') else {
            return Err(E::undecodable(format!("sm/row/{name}"), "no table name"));
        };
        applied
            .state
            .load_row(table, row.to_string(), &value)
            .map_err(|e| E::undecodable(format!("sm/row/{name}"), e))?;
    }
    Ok(Stored::Parts(meta, Box::new(applied)))
}

fn sync_write(db: &DB, batch: WriteBatch) -> Result<(), StorageError> {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts).map_err(snap_err)
}

/// Write every pending capture, oldest first, in one atomic write.
fn write_pending(db: &DB, handle: &StateHandle) -> Result<(), StorageError> {
    let _guard = handle.shared.snapshot_write.lock().unwrap_or_else(|p| p.into_inner());
    let captures: Vec<Capture> = handle
        .shared
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    // Nothing left: an earlier build wrote this capture, or an install replaced it.
    let Some(last) = captures.last() else { return Ok(()) };
    let cf = db.cf_handle(CF_SM).expect("cf");
    let mut batch = WriteBatch::default();
    let mut rows = 0;
    for capture in &captures {
        if capture.rewrite {
            batch.delete_range_cf(cf, ROW_PREFIX, ROW_END);
        }
        for (table, key, value) in capture.changes.encoded() {
            match value {
                Some(bytes) => batch.put_cf(cf, row_key(table, key), bytes),
                None => batch.delete_cf(cf, row_key(table, key)),
            }
            rows += 1;
        }
    }
    batch.put_cf(cf, KEY_REST, codec::encode(&last.rest));
    batch.put_cf(cf, KEY_META, codec::encode(&last.meta));
    batch.delete_cf(cf, KEY_LEGACY);
    if let Err(e) = sync_write(db, batch) {
        // The drained rows were not written: have the next snapshot write every row.
        handle
            .shared
            .applied
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .state
            .mark_all_changed();
        return Err(e);
    }
    handle.shared.snapshot_rows_written.fetch_add(rows, Ordering::Relaxed);
    Ok(())
}

/// Builds snapshots of the applied state.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    handle: StateHandle,
    meta: SnapshotMeta<NodeId, KeelNode>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (db, handle) = (self.db.clone(), self.handle.clone());
        tokio::task::spawn_blocking(move || write_pending(&db, &handle))
            .await
            .map_err(snap_err)??;
        // openraft 0.9 keeps only the meta of a snapshot it had built (`sm::worker`); a
        // follower that needs the data gets it from `get_current_snapshot`. Encoding the
        // whole state here would cost what the history weighs, for nothing.
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(Cursor::new(Vec::new())),
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
                            for name in state.zone_changes(p, &response) {
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
        // Runs between two applies: what is captured is exactly the state at last_applied.
        let capture = {
            let mut applied = self.write();
            let built = self.handle.shared.snapshots_built.fetch_add(1, Ordering::Relaxed) + 1;
            let snapshot_id = match applied.last_applied {
                Some(l) => format!("{}-{}-{built}", l.leader_id.term, l.index),
                None => format!("0-0-{built}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id,
            };
            let rewrite = self.handle.shared.rewrite.swap(false, Ordering::SeqCst);
            if rewrite {
                applied.state.mark_all_changed();
            }
            let changes = applied.state.take_changes();
            let rest = Applied {
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
                state: applied.state.without_history(),
                zone_journal: ZoneJournal::default(),
            };
            Capture {
                meta,
                rest,
                changes,
                rewrite,
            }
        };
        let meta = capture.meta.clone();
        self.handle
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(capture);
        SnapshotBuilder {
            db: self.db.clone(),
            handle: self.handle.clone(),
            meta,
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
        incoming.state.mark_all_changed();
        let rows = incoming.state.take_changes();
        let rest = Applied {
            last_applied: incoming.last_applied,
            membership: incoming.membership.clone(),
            state: incoming.state.without_history(),
            zone_journal: ZoneJournal::default(),
        };
        {
            let _guard = self
                .handle
                .shared
                .snapshot_write
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // Captures of the state being replaced must not be written after this.
            self.handle
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            let cf = self.db.cf_handle(CF_SM).expect("cf");
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf, ROW_PREFIX, ROW_END);
            for (table, key, value) in rows.encoded() {
                if let Some(bytes) = value {
                    batch.put_cf(cf, row_key(table, key), bytes);
                }
            }
            batch.put_cf(cf, KEY_REST, codec::encode(&rest));
            batch.put_cf(cf, KEY_META, codec::encode(meta));
            batch.delete_cf(cf, KEY_LEGACY);
            sync_write(&self.db, batch)?;
            let written = rows.len() as u64;
            self.handle
                .shared
                .snapshot_rows_written
                .fetch_add(written, Ordering::Relaxed);
        }
        incoming.state.reindex();
        let index = incoming.last_applied.map_or(0, |l| l.index);
        incoming.zone_journal = ZoneJournal::starting_at(index);
        *self.write() = incoming;
        self.handle.shared.snapshots_installed.fetch_add(1, Ordering::Relaxed);
        self.handle.shared.applied_index.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // The whole state, encoded only now that a follower needs it.
        let db = self.db.clone();
        let stored = tokio::task::spawn_blocking(move || load(&db))
            .await
            .map_err(snap_err)?
            .map_err(snap_err)?;
        let (meta, data) = match stored {
            Stored::Nothing => return Ok(None),
            Stored::Legacy(legacy) => (legacy.meta, legacy.data),
            Stored::Parts(meta, applied) => (meta, codec::encode(&applied)),
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};

    use super::*;
    use crate::command::{Command, Proposal, ProposalBatch};
    use crate::records::{JobKind, RequestKey};
    use crate::{open, Identity};

    fn store(dir: &std::path::Path) -> StateMachine {
        let identity = Identity {
            cluster: "snapshots".into(),
            node_id: 1,
        };
        open(dir, &identity).expect("open store").state_machine
    }

    fn entry(index: u64, commands: Vec<Command>) -> Entry {
        let batch: Vec<Proposal> = commands
            .into_iter()
            .map(|command| Proposal::new(index, command))
            .collect();
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(ProposalBatch(batch.into())),
        }
    }

    /// Drives a state machine through finished noop jobs with request ids.
    struct Driver {
        index: u64,
        fence: u64,
    }

    impl Driver {
        async fn start(sm: &mut StateMachine) -> Self {
            let membership = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
                payload: EntryPayload::Membership(Membership::new(vec![[1].into()], None)),
            };
            sm.apply([membership]).await.unwrap();
            sm.apply([entry(2, vec![Command::StartLeaderServices { node_id: 1, term: 1 }])])
                .await
                .unwrap();
            Self { index: 2, fence: 2 }
        }

        async fn finish_jobs(&mut self, sm: &mut StateMachine, from: u64, n: u64) {
            for k in from..from + n {
                let id = format!("job-{k:06}");
                self.index += 1;
                let commands = vec![
                    Command::SubmitJob {
                        job_id: id.clone(),
                        request: Some(RequestKey {
                            id: format!("request-{k}"),
                            fingerprint: "noop".into(),
                            retention_ms: 0,
                        }),
                        kind: JobKind::Noop { work_ms: 0 },
                    },
                    Command::ClaimJob {
                        job_id: id.clone(),
                        fence: self.fence,
                        node_id: 1,
                    },
                    Command::CompleteJob {
                        job_id: id,
                        fence: self.fence,
                        error: None,
                    },
                ];
                sm.apply([entry(self.index, commands)]).await.unwrap();
            }
        }

        async fn prune(&mut self, sm: &mut StateMachine, before_ms: u64, keep: u32) {
            self.index += 1;
            sm.apply([entry(self.index, vec![Command::PruneHistory { before_ms, keep }])])
                .await
                .unwrap();
        }
    }

    async fn snapshot(sm: &mut StateMachine) -> SnapshotMeta<NodeId, KeelNode> {
        sm.get_snapshot_builder().await.build_snapshot().await.unwrap().meta
    }

    fn state(sm: &StateMachine) -> (Option<LogId>, AdminState) {
        sm.handle.read(|a| (a.last_applied, a.state.clone()))
    }

    #[tokio::test]
    async fn a_snapshot_writes_only_the_rows_changed_since_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = store(dir.path());
        let mut d = Driver::start(&mut sm).await;
        d.finish_jobs(&mut sm, 0, 200).await;
        snapshot(&mut sm).await;
        // Every job and request id is new: 400 rows.
        assert_eq!(sm.handle.snapshot_rows_written(), 400);
        d.finish_jobs(&mut sm, 200, 2).await;
        snapshot(&mut sm).await;
        assert_eq!(
            sm.handle.snapshot_rows_written(),
            404,
            "two new jobs, two new request ids"
        );
        // Forget the oldest 100 jobs (and every lapsed request id): removals are rows too.
        d.prune(&mut sm, u64::MAX, 102).await;
        let at_snapshot = state(&sm);
        assert_eq!(at_snapshot.1.jobs.len(), 102);
        assert!(at_snapshot.1.requests.is_empty());
        let meta = snapshot(&mut sm).await;
        assert_eq!(sm.handle.snapshot_rows_written(), 404 + 100 + 202);
        // Applied after the snapshot: not in it.
        d.finish_jobs(&mut sm, 202, 1).await;
        drop(sm);

        let mut reopened = store(dir.path());
        assert_eq!(
            state(&reopened),
            at_snapshot,
            "a restart finds the state at the snapshot"
        );
        assert_eq!(reopened.applied_state().await.unwrap().0, meta.last_log_id);
        let current = reopened.get_current_snapshot().await.unwrap().expect("a snapshot");
        assert_eq!(current.meta, meta);

        // A follower installs it whole, and finds it again after its own restart.
        let follower_dir = tempfile::tempdir().unwrap();
        let mut follower = store(follower_dir.path());
        follower
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(state(&follower), at_snapshot);
        drop(follower);
        let mut follower = store(follower_dir.path());
        assert_eq!(state(&follower), at_snapshot);
        // Its next snapshot writes only what changed after the install.
        let mut d = Driver {
            index: meta.last_log_id.unwrap().index,
            fence: d.fence,
        };
        d.finish_jobs(&mut follower, 300, 1).await;
        let before = follower.handle.snapshot_rows_written();
        snapshot(&mut follower).await;
        assert_eq!(follower.handle.snapshot_rows_written() - before, 2);
        let after = state(&follower);
        drop(follower);
        assert_eq!(state(&store(follower_dir.path())), after);
    }

    #[tokio::test]
    async fn a_snapshot_stored_whole_by_an_older_build_is_read_and_rewritten_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = store(dir.path());
        let mut d = Driver::start(&mut sm).await;
        d.finish_jobs(&mut sm, 0, 5).await;
        let (last_applied, membership) = sm.applied_state().await.unwrap();
        let whole = sm.handle.read(codec::encode);
        let legacy = LegacySnapshot {
            meta: SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id: "legacy".into(),
            },
            data: whole,
        };
        let expected = state(&sm);
        let db = sm.db.clone();
        db.put_cf(db.cf_handle(CF_SM).unwrap(), KEY_LEGACY, codec::encode(&legacy))
            .unwrap();
        drop((sm, db));

        let mut sm = store(dir.path());
        assert_eq!(state(&sm), expected);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.snapshot_id, "legacy");
        snapshot(&mut sm).await;
        assert_eq!(
            sm.handle.snapshot_rows_written(),
            10,
            "the first snapshot writes every row"
        );
        let cf = sm.db.cf_handle(CF_SM).unwrap();
        assert!(sm.db.get_cf(cf, KEY_LEGACY).unwrap().is_none());
        drop(sm);
        assert_eq!(state(&store(dir.path())), expected);
    }
}
