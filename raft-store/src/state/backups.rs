//! The backup catalog: snapshots (taken by a job, recorded from the task's output),
//! the WAL archive's reach per lineage (as the monitor relays it), and what a restore
//! may ask for: the restorable window is checked here, before any work starts.

use super::databases::Start;
use super::{conflict, not_found, AdminState};
use crate::catalog::*;
use crate::command::Response;
use crate::records::*;
use crate::timefmt::format_ms;

/// The span a lineage can be restored to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestorableWindow {
    /// The oldest available snapshot's end.
    pub earliest_ms: Millis,
    /// As far as the WAL archive (or, without one, the newest snapshot) reaches.
    pub latest_ms: Millis,
}

impl std::fmt::Display for RestorableWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", format_ms(self.earliest_ms), format_ms(self.latest_ms))
    }
}

impl AdminState {
    /// A lineage's available snapshots, oldest first.
    pub fn snapshots_of<'a>(&'a self, lineage: &'a str) -> impl Iterator<Item = &'a Snapshot> + 'a {
        let mut list: Vec<&Snapshot> = self
            .snapshots
            .values()
            .filter(move |s| s.lineage == lineage && s.state == SnapshotState::Available)
            .collect();
        list.sort_by_key(|s| s.taken_at_ms);
        list.into_iter()
    }

    /// What `lineage` can be restored to now, if it has an available snapshot.
    pub fn restorable_window(&self, lineage: &str) -> Option<RestorableWindow> {
        let mut snapshots = self.snapshots_of(lineage);
        let first = snapshots.next()?;
        let newest = snapshots.last().unwrap_or(first).taken_at_ms;
        let archived = self.archives.get(lineage).map_or(0, |a| a.restorable_until_ms);
        Some(RestorableWindow {
            earliest_ms: first.taken_at_ms,
            latest_ms: archived.max(newest),
        })
    }

    /// The snapshot a restore of `lineage` to `target` starts from (`named` for a
    /// snapshot restore), or why there is none: the error names the window.
    pub fn restore_base<'a>(
        &'a self,
        lineage: &'a str,
        database: &str,
        target: &RestoreTarget,
        named: Option<&str>,
    ) -> Result<&'a Snapshot, String> {
        let Some(window) = self.restorable_window(lineage) else {
            return Err(format!(
                "database {database} has no backup yet: take a snapshot (`keel db snapshot`) or wait for the first automatic one, then retry"
            ));
        };
        match target {
            RestoreTarget::Snapshot => {
                let key = named.unwrap_or_default();
                let snap = self
                    .snapshots
                    .get(key)
                    .ok_or_else(|| format!("snapshot {key} does not exist; `keel snapshots list` shows them"))?;
                if snap.state != SnapshotState::Available {
                    return Err(format!("snapshot {key} is still being taken; wait for it and retry"));
                }
                Ok(snap)
            }
            RestoreTarget::Latest => self
                .snapshots_of(lineage)
                .last()
                .ok_or_else(|| format!("database {database} has no backup yet")),
            RestoreTarget::Time { at_ms } => {
                if *at_ms < window.earliest_ms || *at_ms > window.latest_ms {
                    return Err(format!(
                        "{} is outside the restorable window of {database}: {window}; choose a time inside it",
                        format_ms(*at_ms)
                    ));
                }
                self.snapshots_of(lineage)
                    .filter(|s| s.taken_at_ms <= *at_ms)
                    .last()
                    .ok_or_else(|| format!("no snapshot of {database} ends at or before {}", format_ms(*at_ms)))
            }
        }
    }

    /// Check a restore the proposer planned: the snapshot still fits the target.
    pub(super) fn check_restore(&self, from: &RestoreSource) -> Result<(), String> {
        let named = matches!(from.target, RestoreTarget::Snapshot).then_some(from.snapshot.as_str());
        let base = self.restore_base(&from.lineage, &from.database, &from.target, named)?;
        if base.key() != from.snapshot && !matches!(from.target, RestoreTarget::Snapshot) {
            // A newer snapshot appeared since the proposer chose: the older one still serves.
            let chosen = self
                .snapshots
                .get(&from.snapshot)
                .filter(|s| s.lineage == from.lineage && s.state == SnapshotState::Available);
            let fits = chosen.is_some_and(|s| match from.target {
                RestoreTarget::Time { at_ms } => s.taken_at_ms <= at_ms,
                _ => true,
            });
            if !fits {
                return Err(format!("snapshot {} cannot serve this restore", from.snapshot));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn snapshot_database(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request: Option<&RequestKey>,
        name: &str,
        snapshot: &str,
        kind: SnapshotKind,
    ) -> Response {
        let Some(db) = self.databases.get(name) else {
            return not_found("database", name);
        };
        let account = db.account.clone();
        let key = database_key(snapshot, &account);
        let repeat = self.repeat_of(request, &account, at).ok().flatten().is_some();
        if !repeat {
            if let Some(existing) = self.snapshots.get(&key) {
                return conflict(format!(
                    "snapshot {snapshot} already exists in account {account} (of {}); choose another name or delete it first",
                    existing.database
                ));
            }
        }
        let job = JobKind::SnapshotDatabase {
            database: name.to_string(),
            snapshot: key.clone(),
        };
        let start = Start {
            index,
            at,
            job_id,
            request,
        };
        let allowed = |db: &Database| match db.status {
            DatabaseStatus::Available | DatabaseStatus::StorageFull if !db.instances.is_empty() => Ok(()),
            other => Err(format!(
                "database {name} is {}; only an available database can be snapshotted",
                wire_name(&other)
            )),
        };
        let response = self.begin(start, name, job, DatabaseStatus::BackingUp, "backed up", allowed);
        if !repeat && matches!(response, Response::Database { created: true, .. }) {
            self.new_snapshot(&key, name, job_id, at, kind);
        }
        response
    }

    /// Record a snapshot of `database` being taken by `job_id`, as `key`.
    pub(super) fn new_snapshot(&mut self, key: &str, database: &str, job_id: &str, at: Millis, kind: SnapshotKind) {
        let Some(db) = self.databases.get(database) else {
            return;
        };
        let (name, _) = key.split_once('.').unwrap_or((key, ""));
        let snapshot = Snapshot {
            name: name.to_string(),
            account: db.account.clone(),
            database: database.to_string(),
            lineage: db.lineage(),
            kind,
            state: SnapshotState::Creating,
            requested_at_ms: at,
            job_id: job_id.to_string(),
            retention_days: db.spec.backup_retention_days,
            spec: Some(db.spec.clone()),
            master_verifier: db.master_verifier.clone(),
            ..Snapshot::default()
        };
        self.snapshots.insert(key.to_string(), snapshot);
    }

    pub(super) fn delete_snapshot(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request: Option<&RequestKey>,
        key: &str,
    ) -> Response {
        let Some(snap) = self.snapshots.get(key) else {
            return not_found("snapshot", key);
        };
        let account = snap.account.clone();
        match self.repeat_of(request, &account, at) {
            Err(refused) => return refused,
            Ok(Some(job)) => {
                return Response::Job {
                    job: Box::new(job.clone()),
                    created: false,
                }
            }
            Ok(None) => {}
        }
        if snap.state != SnapshotState::Available {
            return conflict(format!(
                "snapshot {} is {}; only an available snapshot can be deleted (wait for it)",
                snap.name,
                wire_name(&snap.state)
            ));
        }
        let kind = JobKind::DeleteSnapshot { snapshot: key.into() };
        let job = match self.enqueue(index, at, job_id, request, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        let snap = self.snapshots.get_mut(key).expect("checked above");
        snap.state = SnapshotState::Deleting;
        let message = format!("Snapshot {} of {} is being deleted.", snap.name, snap.database);
        self.account_event(index, at, "snapshot-deleting", key, account, message);
        Response::Job {
            job: Box::new(job),
            created: true,
        }
    }

    /// A snapshot delete ended: forgotten, or (failed) available again.
    pub(super) fn conclude_snapshot_delete(&mut self, index: u64, at: Millis, key: &str, ok: bool) {
        let Some(snap) = self.snapshots.get_mut(key) else {
            return;
        };
        let account = snap.account.clone();
        let (kind, message) = if ok {
            let message = format!("Snapshot {} of {} was deleted.", snap.name, snap.database);
            self.snapshots.remove(key);
            ("snapshot-deleted", message)
        } else {
            snap.state = SnapshotState::Available;
            (
                "snapshot-delete-failed",
                format!("Deleting snapshot {} failed; it is kept. Retry the delete.", snap.name),
            )
        };
        self.account_event(index, at, kind, key, account, message);
    }

    pub(super) fn copy_snapshot(&mut self, index: u64, at: Millis, job_id: &str, key: &str) -> Response {
        let Some(snap) = self.snapshots.get(key) else {
            return not_found("snapshot", key);
        };
        if snap.state != SnapshotState::Available {
            return conflict(format!("snapshot {key} is not available to copy"));
        }
        let account = snap.account.clone();
        let kind = JobKind::CopySnapshot { snapshot: key.into() };
        match self.enqueue(index, at, job_id, None, kind, &account) {
            Ok(job) => Response::Job {
                job: Box::new(job),
                created: true,
            },
            Err(refused) => refused,
        }
    }

    /// A control copy ended: recorded (by its task's output), or said to have failed.
    pub(super) fn conclude_snapshot_copy(&mut self, index: u64, at: Millis, key: &str, ok: bool) {
        let Some(snap) = self.snapshots.get(key) else {
            return;
        };
        let (account, name, database) = (snap.account.clone(), snap.name.clone(), snap.database.clone());
        let (kind, message) = if ok {
            (
                "snapshot-copied",
                format!("Snapshot {name} of {database} was copied to the control environment's store."),
            )
        } else {
            ("snapshot-copy-failed", format!("Copying snapshot {name} of {database} to the control environment's store failed; the next daily copy tries again."))
        };
        self.account_event(index, at, kind, key, account, message);
    }

    /// Record what a succeeded task of `job` produced.
    pub(super) fn record_output(&mut self, at: Millis, job: &JobKind, instance: &str, output: &TaskOutput) {
        if let (JobKind::CopySnapshot { snapshot }, TaskOutput::ControlCopy { objects, wal_until_ms }) = (job, output) {
            if let Some(s) = self.snapshots.get_mut(snapshot) {
                s.control = Some(ControlCopy {
                    objects: objects.clone(),
                    wal_until_ms: *wal_until_ms,
                    copied_at_ms: at,
                });
            }
            return;
        }
        if let (JobKind::AddStandby { database, standby }, TaskOutput::InSync { standby: synced }) = (job, output) {
            if standby == synced {
                self.record_in_sync(database, standby);
            }
            return;
        }
        if let (JobKind::FailoverDatabase { database, .. }, TaskOutput::Promoted { promoted_at_ms }) = (job, output) {
            self.record_promoted(at, database, *promoted_at_ms);
            return;
        }
        if let (JobKind::RecoverDatabase { database, .. }, TaskOutput::Restored { last_commit_ms }) = (job, output) {
            if let Some(r) = self.databases.get_mut(database).and_then(|d| d.last_recovery.as_mut()) {
                r.restored_to_ms = *last_commit_ms;
            }
            return;
        }
        let (
            JobKind::SnapshotDatabase { snapshot, .. }
            | JobKind::DeleteDatabase {
                final_snapshot: Some(snapshot),
                ..
            },
            TaskOutput::Snapshot {
                taken_at_ms,
                timeline,
                start_lsn,
                end_lsn,
                objects,
                zone,
            },
        ) = (job, output)
        else {
            return;
        };
        if let Some(s) = self.snapshots.get_mut(snapshot) {
            s.taken_at_ms = *taken_at_ms;
            s.timeline = *timeline;
            s.start_lsn = start_lsn.clone();
            s.end_lsn = end_lsn.clone();
            s.size_bytes = objects.iter().map(|o| o.size).sum();
            s.objects = objects.clone();
            s.source_instance = instance.to_string();
            s.zone = zone.clone();
            s.tier = BackupTier::Zone;
        }
    }

    /// A snapshot job ended: the snapshot is available, or (failed) forgotten; its
    /// database is at rest again.
    /// A snapshot job ended: the catalog records it (or forgets it), and the database, if
    /// the job still holds it (`holds`; a failover may have pre-empted it), is at rest.
    pub(super) fn conclude_snapshot(
        &mut self,
        index: u64,
        at: Millis,
        database: &str,
        snapshot: &str,
        ok: bool,
        holds: bool,
    ) {
        let name = self.snapshots.get(snapshot).map(|s| s.name.clone()).unwrap_or_default();
        let (kind, message) = if ok {
            if let Some(s) = self.snapshots.get_mut(snapshot) {
                s.state = SnapshotState::Available;
            }
            (
                "snapshot-available",
                format!("Snapshot {name} of {database} is available."),
            )
        } else {
            self.snapshots.remove(snapshot);
            (
                "snapshot-failed",
                format!("Snapshot {name} of {database} could not be taken; nothing of it was kept."),
            )
        };
        if let Some(db) = self.databases.get_mut(database).filter(|_| holds) {
            db.operation = None;
            db.status = DatabaseStatus::Available;
        }
        self.event(index, at, kind, database, message);
    }

    pub(super) fn record_archive(&mut self, archives: &[WalArchive]) -> Response {
        for a in archives {
            let entry = self.archives.entry(a.lineage.clone()).or_default();
            // Reports only move forward in time for a lineage (a late one is ignored).
            if a.restorable_until_ms >= entry.restorable_until_ms {
                *entry = a.clone();
            }
            self.record_first_write(&a.lineage, a.restorable_until_ms);
        }
        Response::Done
    }
}
