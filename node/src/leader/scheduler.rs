//! The scheduler: starts pending modifications when a database's maintenance
//! window opens (each start is an ordinary modify job, so the workflow engine,
//! its events and its failure handling are the same as for `--apply-immediately`),
//! brings every database at rest whose instances allow other client networks than
//! its security groups now give to those groups' rules (also a modify job, at once:
//! access is not maintenance), takes each database's automatic snapshot when its
//! interval has passed since the last one (a snapshot job like a user's), deletes
//! automatic snapshots past their retention (a delete-snapshot job), and keeps
//! the history bounded by proposing `PruneHistory` when there is something older than
//! the retention to forget.

use std::time::Duration;

use keel_raft_store::{
    AdminState, Command, Database, DatabaseStatus, Modification, RequestKey, Response, SnapshotKind,
};

use super::Term;
use crate::clock::now_ms;
use crate::window::Window;

/// How often the history is checked for what to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Run until the term ends.
pub async fn run(t: Term) {
    let interval = Duration::from_millis(t.config.scheduler_interval_ms);
    let mut next_prune = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_prune {
            next_prune += PRUNE_EVERY;
            if let Err(e) = prune(&t).await {
                tracing::warn!(error = %e, "Could not prune the history; will retry.");
                return;
            }
        }
        tokio::select! {
            _ = t.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = now_ms();
        let due: Vec<Due> = t.read(|a| {
            let at_rest = a.databases.values().filter(|d| d.at_rest());
            let mut due: Vec<Due> = Vec::new();
            for d in at_rest {
                let desired = a.desired_access(d);
                if d.access.as_ref() != Some(&desired) {
                    let access = Modification {
                        access: Some(desired),
                        ..Modification::default()
                    };
                    due.push(Due::Modify(d.key(), access));
                } else if let Some(pending) = d
                    .pending
                    .clone()
                    .filter(|_| Window::weekly(&d.spec.maintenance_window).is_ok_and(|w| w.contains(now)))
                {
                    due.push(Due::Modify(d.key(), pending));
                } else if let Some(pending) = d
                    .pending_switchover
                    .clone()
                    .filter(|_| Window::weekly(&d.spec.maintenance_window).is_ok_and(|w| w.contains(now)))
                {
                    due.push(Due::Switchover(d.key(), pending.to_zone));
                } else if snapshot_due(a, d, now) {
                    due.push(Due::Snapshot(d.key(), automatic_name(&d.name, now)));
                } else if standby_due(a, d, now) {
                    due.push(Due::Standby(d.key()));
                } else if let Some(stale) = replica_due(a, d, now) {
                    due.push(Due::Replica(d.key(), stale));
                }
                // A reclaim holds no operation slot: it goes beside whatever else is due.
                if let Some(fenced) = reclaim_due(a, d, now) {
                    due.push(Due::Reclaim(d.key(), fenced));
                }
            }
            due.extend(expired_snapshots(a, now).into_iter().map(Due::Expire));
            due.extend(copies_due(a, now).into_iter().map(Due::Copy));
            due
        });
        for work in due {
            let job_id = uuid::Uuid::now_v7().simple().to_string();
            let request = Some(RequestKey {
                id: format!("maintenance/{job_id}"),
                fingerprint: String::new(),
                retention_ms: 3_600_000,
            });
            let (name, start) = match work {
                Due::Modify(name, modification) => (
                    name.clone(),
                    Command::ModifyDatabase {
                        job_id: job_id.clone(),
                        request,
                        name,
                        modification,
                    },
                ),
                Due::Copy(snapshot) => (
                    snapshot.clone(),
                    Command::CopySnapshot {
                        job_id: job_id.clone(),
                        snapshot,
                    },
                ),
                Due::Expire(snapshot) => (
                    snapshot.clone(),
                    Command::DeleteSnapshot {
                        job_id: job_id.clone(),
                        request,
                        snapshot,
                    },
                ),
                Due::Reclaim(name, instances) => (
                    name.clone(),
                    Command::ReclaimFenced {
                        job_id: job_id.clone(),
                        name,
                        instances,
                    },
                ),
                Due::Switchover(name, to_zone) => (
                    name.clone(),
                    Command::Switchover {
                        job_id: job_id.clone(),
                        request,
                        name,
                        to_zone,
                        in_maintenance_window: false,
                    },
                ),
                Due::Standby(name) => (
                    name.clone(),
                    Command::AddStandby {
                        job_id: job_id.clone(),
                        name,
                        instance_id: uuid::Uuid::now_v7().simple().to_string(),
                    },
                ),
                Due::Replica(name, stale) => (
                    name.clone(),
                    Command::AddReplica {
                        job_id: job_id.clone(),
                        request: None,
                        name,
                        instance_id: uuid::Uuid::now_v7().simple().to_string(),
                        zone: None,
                        replaces: Some(stale),
                    },
                ),
                Due::Snapshot(name, snapshot) => (
                    name.clone(),
                    Command::SnapshotDatabase {
                        job_id: job_id.clone(),
                        request,
                        name,
                        snapshot,
                        kind: SnapshotKind::Automatic,
                    },
                ),
            };
            match t.commit(start).await {
                Ok(Response::Rejected { rejection }) => {
                    tracing::info!(database = %name, %rejection, "Scheduled work not started; will retry.")
                }
                Ok(_) => {
                    tracing::info!(database = %name, job = %job_id, "Started scheduled work.")
                }
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "Could not start a maintenance-window modification.");
                    return;
                }
            }
        }
    }
}

/// Work the scheduler starts on a database.
enum Due {
    /// A modification (security-group rules, or a pending one in its window).
    Modify(String, Modification),
    /// An automatic snapshot, with its name.
    Snapshot(String, String),
    /// Deleting an automatic snapshot past its retention (its catalog key).
    Expire(String),
    /// The daily copy of a snapshot to the control environment's store.
    Copy(String),
    /// Building a Multi-AZ database's missing synchronous standby.
    Standby(String),
    /// A switchover asked for in the maintenance window, to this zone.
    Switchover(String, Option<String>),
    /// Destroying fenced instances on hosts that answer.
    Reclaim(String, Vec<String>),
    /// Rebuilding a read replica that follows an earlier lineage (after a failover or
    /// recovery), or whose build failed.
    Replica(String, String),
}

/// A read replica of database `d` (at rest) to rebuild now: one that follows a lineage
/// the database left (a failover or recovery made a new primary), once the new lineage has
/// a snapshot to build from, and not within a minute of a failed attempt.
pub fn replica_due(a: &AdminState, d: &Database, now: u64) -> Option<String> {
    let key = d.key();
    if d.status != DatabaseStatus::Available || a.snapshots_of(&d.lineage()).next().is_none() {
        return None;
    }
    let held_back = a
        .last_job_where(&key, |k| matches!(k, keel_raft_store::JobKind::AddReplica { .. }))
        .is_some_and(|j| {
            j.state == keel_raft_store::JobState::Failed
                && j.finished_at_ms
                    .is_none_or(|t| now.saturating_sub(t) < STANDBY_RETRY_MS)
        });
    let stale = a.replicas_of(&key).find(|i| a.replica_stale(i))?;
    (!held_back).then(|| stale.id.clone())
}

/// The fenced instances of database `d` (at rest) on healthy hosts, to destroy now: none
/// while an attempt runs, or within a minute of a failed one.
pub fn reclaim_due(a: &AdminState, d: &Database, now: u64) -> Option<Vec<String>> {
    let key = d.key();
    // One at a time (it does not hold the database's slot; nor does a replica's removal,
    // which destroys what it fenced), none within a minute of a failure.
    let held_back = a
        .last_job_where(&key, |k| {
            matches!(
                k,
                keel_raft_store::JobKind::ReclaimFenced { .. } | keel_raft_store::JobKind::RemoveReplica { .. }
            )
        })
        .is_some_and(|j| {
            !j.state.is_terminal()
                || j.state == keel_raft_store::JobState::Failed
                    && j.finished_at_ms
                        .is_none_or(|t| now.saturating_sub(t) < STANDBY_RETRY_MS)
        });
    let fenced: Vec<String> = a
        .fenced_of(&key)
        .filter(|i| {
            a.hosts
                .get(&i.host)
                .is_some_and(|h| h.health == keel_raft_store::HostHealth::Healthy)
        })
        .map(|i| i.id.clone())
        .collect();
    (!held_back && !fenced.is_empty()).then_some(fenced)
}

/// How long after a failed attempt to build a standby the next one starts.
pub const STANDBY_RETRY_MS: u64 = 60_000;

/// Whether database `d` (at rest) is Multi-AZ without a synchronous standby, has a
/// snapshot to build one from, and its last attempt (if it failed) is old enough.
pub fn standby_due(a: &AdminState, d: &Database, now: u64) -> bool {
    d.spec.multi_az
        && d.sync_standby.is_none()
        && d.status == DatabaseStatus::Available
        && a.snapshots_of(&d.lineage()).next().is_some()
        && a.last_standby_attempt(&d.key()).is_none_or(|j| {
            j.state != keel_raft_store::JobState::Failed
                || j.finished_at_ms
                    .is_some_and(|t| now.saturating_sub(t) >= STANDBY_RETRY_MS)
        })
}

/// How often a database's backups are copied to the control environment's store.
const CONTROL_COPY_EVERY_MS: u64 = 86_400_000;

/// Snapshots to copy to the control store now (catalog keys): for each database that
/// keeps backups and is inside its daily backup window, its newest snapshot, once a day.
pub fn copies_due(a: &AdminState, now: u64) -> Vec<String> {
    let copying: Vec<&str> = a
        .open_jobs()
        .filter_map(|j| match &j.kind {
            keel_raft_store::JobKind::CopySnapshot { snapshot } => Some(snapshot.as_str()),
            _ => None,
        })
        .collect();
    let mut due = Vec::new();
    for d in a.databases.values().filter(|d| d.spec.backup_retention_days > 0) {
        if !Window::daily(&d.spec.backup_window).is_ok_and(|w| w.contains(now)) {
            continue;
        }
        let lineage = d.lineage();
        let last_copy = a
            .snapshots_of(&lineage)
            .filter_map(|s| s.control.as_ref().map(|c| c.copied_at_ms))
            .max();
        if last_copy.is_some_and(|at| now.saturating_sub(at) < CONTROL_COPY_EVERY_MS) {
            continue;
        }
        let Some(newest) = a.snapshots_of(&lineage).last() else {
            continue;
        };
        let key = newest.key();
        if newest.control.is_none() && !copying.contains(&key.as_str()) {
            due.push(key);
        }
    }
    due
}

/// Automatic snapshots past their retention at `now` (catalog keys): their database's
/// backups reach back that many days, whether it still exists or not.
pub fn expired_snapshots(a: &AdminState, now: u64) -> Vec<String> {
    a.snapshots
        .iter()
        .filter(|(_, s)| s.expired(now))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Whether `d` keeps backups and its last snapshot (or its creation) is an interval old.
pub fn snapshot_due(a: &AdminState, d: &Database, now: u64) -> bool {
    if d.spec.backup_retention_days == 0 {
        return false;
    }
    let lineage = d.lineage();
    let last = a
        .snapshots
        .values()
        .filter(|s| s.lineage == lineage)
        .map(|s| s.requested_at_ms)
        .max();
    match last {
        Some(at) => now.saturating_sub(at) >= u64::from(d.spec.snapshot_interval_min()) * 60_000,
        // The first as soon as the database is available: it starts the restorable window.
        None => true,
    }
}

/// An automatic snapshot's name: `<db>-auto-<YYYYMMDDHHMMSS>`.
pub fn automatic_name(db: &str, now: u64) -> String {
    let digits: String = keel_raft_store::timefmt::format_ms(now - now % 1000)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{db}-auto-{digits}")
}

/// Propose a prune when the history holds something older than the retention.
async fn prune(t: &Term) -> Result<(), String> {
    let now = now_ms();
    let before_ms = now.saturating_sub(t.config.history_retention_days.saturating_mul(86_400_000));
    let keep = t.config.history_keep_per_database;
    if t.read(|a| a.prunable(now, before_ms, keep).is_empty()) {
        return Ok(());
    }
    t.commit(Command::PruneHistory { before_ms, keep }).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft_store::{Snapshot, SnapshotKind, SnapshotState};

    const DAY: u64 = 86_400_000;

    #[test]
    fn only_available_automatic_snapshots_past_their_retention_expire() {
        let mut a = AdminState::default();
        let snap = |kind, state, taken_at_ms, retention_days| Snapshot {
            kind,
            state,
            taken_at_ms,
            retention_days,
            ..Snapshot::default()
        };
        let now = 100 * DAY;
        a.snapshots.insert(
            "old.acme".into(),
            snap(SnapshotKind::Automatic, SnapshotState::Available, now - 8 * DAY, 7),
        );
        a.snapshots.insert(
            "young.acme".into(),
            snap(SnapshotKind::Automatic, SnapshotState::Available, now - 6 * DAY, 7),
        );
        a.snapshots.insert(
            "edge.acme".into(),
            snap(SnapshotKind::Automatic, SnapshotState::Available, now - 7 * DAY, 7),
        );
        a.snapshots.insert(
            "mine.acme".into(),
            snap(SnapshotKind::User, SnapshotState::Available, now - 99 * DAY, 7),
        );
        a.snapshots.insert(
            "last.acme".into(),
            snap(SnapshotKind::Final, SnapshotState::Available, now - 99 * DAY, 7),
        );
        a.snapshots.insert(
            "going.acme".into(),
            snap(SnapshotKind::Automatic, SnapshotState::Deleting, now - 9 * DAY, 7),
        );
        assert_eq!(expired_snapshots(&a, now), ["edge.acme", "old.acme"]);
    }

    #[test]
    fn the_first_snapshot_is_due_at_once_and_then_every_interval() {
        let mut a = AdminState::default();
        let db = Database {
            name: "orders".into(),
            account: "acme".into(),
            lineage: "L".into(),
            spec: keel_raft_store::DatabaseSpec {
                backup_retention_days: 7,
                snapshot_interval_min: Some(15),
                ..Default::default()
            },
            ..Database::default()
        };
        assert!(snapshot_due(&a, &db, 1_000));
        a.snapshots.insert(
            "s.acme".into(),
            Snapshot {
                lineage: "L".into(),
                requested_at_ms: 1_000,
                ..Snapshot::default()
            },
        );
        assert!(!snapshot_due(&a, &db, 1_000 + 14 * 60_000));
        assert!(snapshot_due(&a, &db, 1_000 + 15 * 60_000));
        let off = Database {
            spec: keel_raft_store::DatabaseSpec::default(),
            ..db.clone()
        };
        assert!(
            !snapshot_due(&a, &off, 1_000 + 60 * 60_000),
            "retention 0: no automatic snapshots"
        );
        assert_eq!(
            automatic_name("orders", 1_795_000_000_123),
            "orders-auto-20261118110640"
        );
    }
}

#[cfg(test)]
mod standby_tests {
    use super::*;
    use keel_raft_store::{Command, DatabaseSpec, Host, HostHealth, JobKind, Proposal, Snapshot, SnapshotState};

    #[test]
    fn a_missing_standby_is_due_once_there_is_a_snapshot_and_again_a_while_after_a_failure() {
        let mut a = AdminState::default();
        for (name, zone) in [("h1", "a"), ("h2", "b")] {
            a.hosts.insert(
                name.into(),
                Host {
                    name: name.into(),
                    zone: zone.into(),
                    health: HostHealth::Healthy,
                    ..Host::default()
                },
            );
        }
        a.apply(1, &Proposal::new(1, Command::CreateAccount { name: "acme".into() }));
        let create = Command::CreateDatabase {
            job_id: "j1".into(),
            request: None,
            name: "orders".into(),
            account: "acme".into(),
            spec: DatabaseSpec {
                class: "small".into(),
                storage_gib: 1,
                backup_retention_days: 7,
                multi_az: true,
                ..DatabaseSpec::default()
            },
            master_verifier: "v".into(),
            instance_id: "p".into(),
        };
        a.apply(2, &Proposal::new(2, create));
        let key = "orders.acme";
        let rest = |a: &mut AdminState| {
            let db = a.databases.get_mut(key).unwrap();
            db.status = DatabaseStatus::Available;
            db.operation = None;
        };
        rest(&mut a);
        let due = |a: &AdminState, now| standby_due(a, &a.databases[key], now);
        assert!(!due(&a, 1_000), "nothing to build it from yet");
        a.snapshots.insert(
            "auto1.acme".into(),
            Snapshot {
                lineage: "j1".into(),
                state: SnapshotState::Available,
                ..Snapshot::default()
            },
        );
        assert!(due(&a, 1_000));
        let add = Command::AddStandby {
            job_id: "j2".into(),
            name: key.into(),
            instance_id: "s".into(),
        };
        a.apply(3, &Proposal::new(3, add));
        assert!(matches!(a.jobs["j2"].kind, JobKind::AddStandby { .. }));
        // The job failed at 10 s: the next attempt waits a minute.
        let job = a.jobs.get_mut("j2").unwrap();
        job.state = keel_raft_store::JobState::Failed;
        job.finished_at_ms = Some(10_000);
        rest(&mut a);
        assert!(!due(&a, 10_000 + STANDBY_RETRY_MS - 1));
        assert!(due(&a, 10_000 + STANDBY_RETRY_MS));
        a.databases.get_mut(key).unwrap().sync_standby = Some("s".into());
        assert!(!due(&a, 10_000 + STANDBY_RETRY_MS), "it has one");
        a.databases.get_mut(key).unwrap().sync_standby = None;
        a.databases.get_mut(key).unwrap().spec.multi_az = false;
        assert!(!due(&a, 10_000 + STANDBY_RETRY_MS), "not Multi-AZ");

        // The left standby, fenced: reclaimed where its host answers, and again a minute
        // after a failed attempt.
        let reclaim = |a: &AdminState, now| reclaim_due(a, &a.databases[key], now);
        assert_eq!(reclaim(&a, 1), None, "nothing fenced");
        a.instances.get_mut("s").unwrap().fenced_at = Some(2);
        a.hosts.get_mut("h2").unwrap().health = HostHealth::Unreachable;
        assert_eq!(reclaim(&a, 1), None, "its host does not answer");
        a.hosts.get_mut("h2").unwrap().health = HostHealth::Healthy;
        assert_eq!(reclaim(&a, 1), Some(vec!["s".to_string()]));
        let cmd = Command::ReclaimFenced {
            job_id: "j3".into(),
            name: key.into(),
            instances: vec!["s".into()],
        };
        a.apply(4, &Proposal::new(4, cmd));
        assert_eq!(reclaim(&a, 5), None, "one at a time");
        let job = a.jobs.get_mut("j3").unwrap();
        job.state = keel_raft_store::JobState::Failed;
        job.finished_at_ms = Some(20_000);
        assert_eq!(reclaim(&a, 20_000 + STANDBY_RETRY_MS - 1), None);
        assert!(reclaim(&a, 20_000 + STANDBY_RETRY_MS).is_some());
    }
}

#[cfg(test)]
mod copy_tests {
    use super::*;
    use keel_raft_store::{ControlCopy, DatabaseSpec, Snapshot, SnapshotState};

    #[test]
    fn the_newest_snapshot_is_copied_once_a_day_inside_the_backup_window() {
        let hour = 3_600_000;
        let day = 24 * hour;
        let now = 100 * day + 3 * hour + 30 * 60_000; // 03:30 UTC
        let mut a = AdminState::default();
        a.databases.insert(
            "orders.acme".into(),
            Database {
                name: "orders".into(),
                account: "acme".into(),
                lineage: "L".into(),
                spec: DatabaseSpec {
                    backup_retention_days: 7,
                    backup_window: "03:00-04:00".into(),
                    ..DatabaseSpec::default()
                },
                ..Database::default()
            },
        );
        let snap = |name: &str, taken| Snapshot {
            name: name.into(),
            account: "acme".into(),
            lineage: "L".into(),
            state: SnapshotState::Available,
            taken_at_ms: taken,
            ..Snapshot::default()
        };
        a.snapshots.insert("old.acme".into(), snap("old", now - 2 * hour));
        a.snapshots.insert("new.acme".into(), snap("new", now - hour));
        assert_eq!(copies_due(&a, now), ["new.acme"]);
        assert!(copies_due(&a, now - 2 * hour).is_empty(), "outside the window");
        a.snapshots.get_mut("old.acme").unwrap().control = Some(ControlCopy {
            copied_at_ms: now - 2 * hour,
            ..ControlCopy::default()
        });
        assert!(copies_due(&a, now).is_empty(), "copied within the day");
        assert_eq!(copies_due(&a, now + day), ["new.acme"], "the next day's window");
    }
}
