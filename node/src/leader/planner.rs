//! The planner: which tasks turn a job into the state it asks for. Pure
//! functions of the admin state, unit-tested without I/O.

use keel_raft_store::{AdminState, InstanceRole, Job, JobKind, Modification, StepState, Task, TaskAction, Workflow};

use super::clone_source::{self, Copy, ZoneDistances};
use crate::backup::wal::parse_lsn;
use crate::backup::work::{RestoreFrom, TaskWork, BACKUP_TASKS};
use crate::classes;
use crate::host::engine::{InstanceSpec, ReplicationSpec, Upstream};

fn task(workflow_id: &str, n: usize, action: TaskAction, host: &str, instance: &str) -> Task {
    Task {
        id: format!("{workflow_id}-{n}"),
        action,
        host: host.to_string(),
        instance: instance.to_string(),
        ..Task::default()
    }
}

/// Whether the monitor last saw `host` healthy (a task sent there is expected to run).
fn answers(state: &AdminState, host: &str) -> bool {
    state
        .hosts
        .get(host)
        .is_some_and(|h| h.health == keel_raft_store::HostHealth::Healthy)
}

/// The tasks of `job`'s workflow, in order.
pub fn plan(state: &AdminState, job: &Job, workflow_id: &str) -> Result<Vec<Task>, String> {
    if let JobKind::DeleteSnapshot { snapshot } | JobKind::CopySnapshot { snapshot } = &job.kind {
        let snap = state
            .snapshots
            .get(snapshot)
            .ok_or_else(|| format!("snapshot {snapshot} no longer exists"))?;
        // Any healthy host of the snapshot's zone reaches that zone's store.
        let host = state
            .hosts
            .values()
            .find(|h| h.zone == snap.zone && h.health == keel_raft_store::HostHealth::Healthy)
            .ok_or_else(|| format!("no healthy host in zone {} can reach its backup store", snap.zone))?;
        let action = match job.kind {
            JobKind::CopySnapshot { .. } => TaskAction::CopyBackup,
            _ => TaskAction::DeleteBackup,
        };
        return Ok(vec![task(workflow_id, 0, action, &host.name, BACKUP_TASKS)]);
    }
    let name = job.kind.database().ok_or("this job has no database")?;
    let db = state
        .databases
        .get(name)
        .ok_or_else(|| format!("database {name} no longer exists"))?;
    let instances: Vec<_> = db.instances.iter().filter_map(|id| state.instances.get(id)).collect();
    let mut tasks = Vec::new();
    let mut add = |action: TaskAction, host: &str, instance: &str| {
        let n = tasks.len();
        tasks.push(task(workflow_id, n, action, host, instance));
    };
    match &job.kind {
        JobKind::Noop { .. } => return Err("a noop job has no workflow".into()),
        JobKind::CreateDatabase { .. } => {
            for i in &instances {
                add(TaskAction::Provision, &i.host, &i.id);
                add(TaskAction::Start, &i.host, &i.id);
                add(TaskAction::Check, &i.host, &i.id);
            }
        }
        JobKind::ModifyDatabase { modification, .. } => {
            let restart = modification.class.as_ref().is_some_and(|c| *c != db.spec.class);
            let reconfigure = modification.storage_gib.is_some_and(|g| g != db.spec.storage_gib);
            let password = modification.master_verifier.is_some();
            let access = modification
                .access
                .as_ref()
                .is_some_and(|a| Some(a) != db.access.as_ref());
            for i in &instances {
                if restart {
                    add(TaskAction::Restart, &i.host, &i.id);
                    add(TaskAction::Check, &i.host, &i.id);
                } else if reconfigure {
                    // Start and check too: a modify also repairs a database whose instance
                    // is down (a failed one), and never reports one available unchecked.
                    add(TaskAction::Configure, &i.host, &i.id);
                    add(TaskAction::Start, &i.host, &i.id);
                    add(TaskAction::Check, &i.host, &i.id);
                }
                // Last, on the running engine: only the master user's verifier changes.
                if (password || access) && !restart && !reconfigure {
                    add(TaskAction::Start, &i.host, &i.id);
                }
                // On the primary only: its followers replay the change (and refuse writes).
                if password && i.role == InstanceRole::Primary {
                    add(TaskAction::SetPassword, &i.host, &i.id);
                }
                // pg_hba rewritten and reloaded: new connections follow the new rules.
                if access {
                    add(TaskAction::SetAccess, &i.host, &i.id);
                }
            }
            // Leaving Multi-AZ: the primary stops waiting for the standby and drops its
            // slot (cutting it off), then the standby goes.
            if modification.multi_az == Some(false) {
                let standbys = instances.iter().filter(|i| i.role == InstanceRole::Standby);
                if let (Some(p), true) = (state.primary_of(name), standbys.clone().next().is_some()) {
                    add(TaskAction::PrepareStandby, &p.host, &p.id);
                    for s in standbys {
                        add(TaskAction::Destroy, &s.host, &s.id);
                    }
                }
            }
        }
        JobKind::DeleteDatabase { final_snapshot, .. } => {
            if final_snapshot.is_some() {
                let primary = state
                    .primary_of(name)
                    .ok_or_else(|| format!("database {name} has no primary instance to snapshot"))?;
                add(TaskAction::Snapshot, &primary.host, &primary.id);
            }
            for i in &instances {
                add(TaskAction::Destroy, &i.host, &i.id);
            }
            // Instances recoveries fenced go too, where their host answers (a volume on a
            // host that never comes back stays fenced there: it never starts).
            for i in state
                .instances
                .values()
                .filter(|i| i.database == name && i.fenced_at.is_some())
            {
                let reachable = state
                    .hosts
                    .get(&i.host)
                    .is_some_and(|h| h.health != keel_raft_store::HostHealth::Unreachable);
                if reachable {
                    add(TaskAction::Destroy, &i.host, &i.id);
                }
            }
        }
        JobKind::DeleteSnapshot { .. } | JobKind::CopySnapshot { .. } => unreachable!("planned above"),
        JobKind::SnapshotDatabase { .. } => {
            let primary = state
                .primary_of(name)
                .ok_or_else(|| format!("database {name} has no primary instance to snapshot"))?;
            // From the standby while one serves, as RDS does: the copy's reads and its
            // compression cost the standby's host, not the primary's clients. A failure
            // pre-empts it there (the host stops a snapshot for a promotion or a fence).
            let source = state.serving_standby(name).unwrap_or(primary);
            // A standby's backup starts at its last restartpoint, which can only be at a
            // checkpoint of the primary's: the primary makes one now unless its last is
            // recent enough that the WAL carried since stays small (see the host's task).
            if source.id != primary.id {
                add(TaskAction::Checkpoint, &primary.host, &primary.id);
            }
            add(TaskAction::Snapshot, &source.host, &source.id);
        }
        JobKind::RestoreDatabase { .. } => {
            for i in &instances {
                add(TaskAction::Restore, &i.host, &i.id);
                add(TaskAction::Check, &i.host, &i.id);
            }
        }
        JobKind::AddStandby { standby: follower, .. } | JobKind::AddReplica { replica: follower, .. } => {
            // The primary keeps the WAL the follower will need (a slot) before it is made
            // from the latest snapshot and the archive up to the slot's start; then, for a
            // standby, the primary waits for it on every commit once it has caught up. A
            // replica a rebuild replaces is fenced already; the scheduler's reclaim destroys it.
            let primary = state
                .primary_of(name)
                .ok_or_else(|| format!("database {name} has no primary to follow"))?;
            let follower = state
                .instances
                .get(follower)
                .ok_or_else(|| format!("instance {follower} no longer exists"))?;
            add(TaskAction::PrepareStandby, &primary.host, &primary.id);
            add(TaskAction::BuildStandby, &follower.host, &follower.id);
            if matches!(job.kind, JobKind::AddStandby { .. }) {
                add(TaskAction::SyncStandby, &primary.host, &primary.id);
            }
        }
        JobKind::ReleaseStandby { standby, .. } => {
            // The release is committed: the primary stops waiting (its spec names no
            // synchronous standby, and no slot for the fenced one), then the standby goes
            // where its host answers.
            let primary = state
                .primary_of(name)
                .ok_or_else(|| format!("database {name} has no primary to release its standby"))?;
            add(TaskAction::PrepareStandby, &primary.host, &primary.id);
            if let Some(s) = state.instances.get(standby).filter(|s| answers(state, &s.host)) {
                add(TaskAction::Destroy, &s.host, &s.id);
            }
        }
        JobKind::FailoverDatabase { from, to, planned, .. } => {
            // The decision is committed (fence, generation, name): a switchover stops the old
            // primary first (its sessions end with an error, none hangs on a commit); then
            // the standby is promoted, and the fenced primary's volume goes where its host
            // answers. A host that does not is told of the fence by the monitor's next
            // probe that reaches it.
            let standby = state
                .instances
                .get(to)
                .ok_or_else(|| format!("standby {to} no longer exists"))?;
            let old = state.instances.get(from).filter(|o| answers(state, &o.host));
            if let Some(old) = old.filter(|_| *planned) {
                add(TaskAction::Stop, &old.host, &old.id);
            }
            add(TaskAction::Promote, &standby.host, &standby.id);
            if let Some(old) = old {
                add(TaskAction::Destroy, &old.host, &old.id);
            }
        }
        JobKind::RemoveReplica { replica, .. } => {
            // The replica is out of the members: the primary drops its slot (else it keeps
            // WAL for ever; a primary that does not answer fails the job, and the scheduler's
            // reclaim does both later), then it is destroyed.
            if let Some(p) = state.primary_of(name) {
                add(TaskAction::PrepareStandby, &p.host, &p.id);
            }
            let replica = state
                .instances
                .get(replica)
                .ok_or_else(|| format!("replica {replica} no longer exists"))?;
            add(TaskAction::Destroy, &replica.host, &replica.id);
        }
        JobKind::PromoteReplica { source, replica, .. } => {
            // Cut off first (the source's primary drops its slot, ending its stream), so it
            // never replays the source's writes after it takes its own, and the source keeps
            // no WAL for it; then promoted.
            if let Some(p) = state.primary_of(source) {
                add(TaskAction::PrepareStandby, &p.host, &p.id);
            }
            let replica = state
                .instances
                .get(replica)
                .ok_or_else(|| format!("replica {replica} no longer exists"))?;
            add(TaskAction::Promote, &replica.host, &replica.id);
            add(TaskAction::Check, &replica.host, &replica.id);
        }
        JobKind::ReclaimFenced { instances, .. } => {
            // A removed replica's slot goes from the primary first (its removal could not
            // reach the primary), so no slot keeps WAL for an instance that is gone.
            let replica = instances
                .iter()
                .filter_map(|id| state.instances.get(id))
                .any(|i| i.role == InstanceRole::Replica);
            if let Some(p) = state.primary_of(name).filter(|_| replica) {
                add(TaskAction::PrepareStandby, &p.host, &p.id);
            }
            for i in instances.iter().filter_map(|id| state.instances.get(id)) {
                add(TaskAction::Destroy, &i.host, &i.id);
            }
        }
        JobKind::RecoverDatabase { replaces, .. } => {
            // A failed instance whose host answers is fenced first, and what WAL its volume
            // still holds goes to the archive, so the restore replays it too. An unreachable
            // host is fenced by the record alone: it learns of it when it answers again.
            let old = replaces.as_ref().and_then(|id| state.instances.get(id));
            if let Some(old) = old.filter(|o| answers(state, &o.host)) {
                add(TaskAction::Fence, &old.host, &old.id);
            }
            // The new primary only: read replicas are rebuilt from its lineage later.
            for i in instances.iter().filter(|i| i.role == InstanceRole::Primary) {
                add(TaskAction::Restore, &i.host, &i.id);
                add(TaskAction::Check, &i.host, &i.id);
            }
        }
    }
    Ok(tasks)
}

/// What a backup task (`action`) of `job` carries to its host beyond the instance spec;
/// a restore's copies are ranked with `zones`.
pub fn task_work(
    state: &AdminState,
    job: &Job,
    action: TaskAction,
    zones: &ZoneDistances,
) -> Result<Option<TaskWork>, String> {
    match &job.kind {
        JobKind::RecoverDatabase { from, .. } if action == TaskAction::Fence => Ok(Some(TaskWork::Fence {
            lineage: from.lineage.clone(),
        })),
        JobKind::AddStandby {
            database,
            standby: follower,
        }
        | JobKind::AddReplica {
            database,
            replica: follower,
            ..
        } if action == TaskAction::BuildStandby => build_standby_work(state, job, database, follower, zones).map(Some),
        JobKind::SnapshotDatabase { database, .. }
        | JobKind::DeleteDatabase {
            database,
            final_snapshot: Some(_),
        } => {
            let db = state
                .databases
                .get(database)
                .ok_or_else(|| format!("database {database} no longer exists"))?;
            // Into the primary's zone store, beside the archive a restore replays from it,
            // wherever it is taken.
            let zone = state
                .primary_of(database)
                .and_then(|p| state.hosts.get(&p.host))
                .map(|h| h.zone.clone());
            Ok(Some(TaskWork::Snapshot {
                lineage: db.lineage(),
                id: job.id.clone(),
                zone,
            }))
        }
        JobKind::DeleteSnapshot { snapshot } => {
            let snap = state
                .snapshots
                .get(snapshot)
                .ok_or_else(|| format!("snapshot {snapshot} no longer exists"))?;
            Ok(Some(TaskWork::DeleteBackup {
                zone: snap.zone.clone(),
                keys: snap.objects.iter().map(|o| o.key.clone()).collect(),
                control_keys: snap
                    .control
                    .iter()
                    .flat_map(|c| c.objects.iter().map(|o| o.key.clone()))
                    .collect(),
                wal_before: wal_no_longer_needed(state, snap),
            }))
        }
        JobKind::RestoreDatabase { from, database } | JobKind::RecoverDatabase { from, database, .. } => {
            let target_zone = state
                .databases
                .get(database)
                .and_then(|d| d.instances.first())
                .and_then(|i| state.instances.get(i))
                .and_then(|i| state.hosts.get(&i.host))
                .map(|h| h.zone.clone())
                .unwrap_or_default();
            let (sources, choice) = restore_sources(state, from, &target_zone, zones)?;
            Ok(Some(TaskWork::Restore {
                lineage: from.lineage.clone(),
                sources,
                choice,
                target: from.target.clone(),
            }))
        }
        JobKind::CopySnapshot { snapshot } => {
            let snap = state
                .snapshots
                .get(snapshot)
                .ok_or_else(|| format!("snapshot {snapshot} no longer exists"))?;
            Ok(Some(TaskWork::CopyBackup {
                zone: snap.zone.clone(),
                lineage: snap.lineage.clone(),
                objects: snap.objects.clone(),
                start_lsn: snap.start_lsn.clone(),
                wal_until_ms: state
                    .archives
                    .get(&snap.lineage)
                    .map_or(snap.taken_at_ms, |a| a.restorable_until_ms.max(snap.taken_at_ms)),
            }))
        }
        _ => Ok(None),
    }
}

/// What a standby is built from: the database's latest snapshot (from the copy nearest
/// the standby's zone), and the archive up to where the primary's slot keeps WAL from, as
/// the workflow's prepare step recorded it.
fn build_standby_work(
    state: &AdminState,
    job: &Job,
    database: &str,
    standby: &str,
    zones: &ZoneDistances,
) -> Result<TaskWork, String> {
    use keel_raft_store::{RestoreSource, RestoreTarget, TaskOutput};
    let db = state
        .databases
        .get(database)
        .ok_or_else(|| format!("database {database} no longer exists"))?;
    let lineage = db.lineage();
    let base = state
        .snapshots_of(&lineage)
        .last()
        .ok_or_else(|| format!("database {database} has no snapshot to build a standby from yet"))?;
    let zone = state
        .instances
        .get(standby)
        .and_then(|i| state.hosts.get(&i.host))
        .map(|h| h.zone.clone())
        .unwrap_or_default();
    let from = RestoreSource {
        database: database.to_string(),
        lineage: lineage.clone(),
        snapshot: base.key(),
        target: RestoreTarget::Latest,
        prefer_near_within_ms: None,
    };
    let (sources, choice) = restore_sources(state, &from, &zone, zones)?;
    let need_lsn = state
        .workflow_of(&job.id)
        .and_then(|w| {
            w.tasks.iter().find_map(|t| match &t.output {
                Some(TaskOutput::StandbySlot { lsn }) => Some(lsn.clone()),
                _ => None,
            })
        })
        .ok_or("the primary's slot for the standby is not recorded yet")?;
    Ok(TaskWork::BuildStandby {
        lineage,
        sources,
        choice,
        need_lsn,
    })
}

/// The tasks that undo a failed workflow's work, in order: a failed create removes every
/// instance it touched; a failed modify puts every instance it touched back on the
/// database's previous settings (restarting it if the forward work restarted it). Ids are
/// given when the failure is recorded.
pub fn compensation(job: &Job, workflow: &Workflow) -> Vec<Task> {
    // Instances some forward task has tried (an attempt may have run even if it failed).
    let mut touched: Vec<(&str, &str, bool, bool, bool)> = Vec::new();
    for t in workflow.tasks.iter().filter(|t| !t.compensation && t.attempt > 0) {
        let restarted = t.action == TaskAction::Restart;
        let password = t.action == TaskAction::SetPassword;
        let access = t.action == TaskAction::SetAccess;
        match touched.iter_mut().find(|(i, ..)| *i == t.instance) {
            Some(seen) => {
                seen.2 |= restarted;
                seen.3 |= password;
                seen.4 |= access;
            }
            None => touched.push((&t.instance, &t.host, restarted, password, access)),
        }
    }
    let mut out = Vec::new();
    for (instance, host, restarted, password, access) in touched {
        let undo = |action| Task {
            action,
            host: host.to_string(),
            instance: instance.to_string(),
            state: StepState::Pending,
            ..Task::default()
        };
        match &job.kind {
            JobKind::CreateDatabase { .. } | JobKind::RestoreDatabase { .. } => out.push(undo(TaskAction::Destroy)),
            // The new instance goes; the fenced one stays fenced (its data is in the archive).
            JobKind::RecoverDatabase { replaces, .. } if replaces.as_deref() != Some(instance) => {
                out.push(undo(TaskAction::Destroy))
            }
            JobKind::RecoverDatabase { .. } => {}
            // The new standby goes; the primary drops its slot and waits for it no more.
            JobKind::AddStandby { standby, .. } if standby == instance => out.push(undo(TaskAction::Destroy)),
            JobKind::AddStandby { .. } => out.push(undo(TaskAction::PrepareStandby)),
            // The new replica goes; the primary drops its slot.
            JobKind::AddReplica { replica, .. } if replica == instance => out.push(undo(TaskAction::Destroy)),
            JobKind::AddReplica { .. } => out.push(undo(TaskAction::PrepareStandby)),
            // A replica removed is fenced and reclaimed later; a promotion that failed leaves
            // its new database failed (deleting it destroys the instance).
            JobKind::RemoveReplica { .. } | JobKind::PromoteReplica { .. } => {}
            // A release or a failover is not undone: the decision is committed (a failed
            // promotion leaves the database to the monitor's recovery).
            JobKind::ReleaseStandby { .. } | JobKind::FailoverDatabase { .. } => {}
            // A fenced volume left half destroyed is destroyed again by the next attempt.
            JobKind::ReclaimFenced { .. } => {}
            JobKind::ModifyDatabase { .. } if restarted => {
                out.push(undo(TaskAction::Restart));
                out.push(undo(TaskAction::Check));
            }
            JobKind::ModifyDatabase { .. } => {
                out.push(undo(TaskAction::Configure));
                out.push(undo(TaskAction::Start));
                out.push(undo(TaskAction::Check));
            }
            // A failed snapshot leaves nothing in the store (its host removes what it stored).
            JobKind::DeleteDatabase { .. }
            | JobKind::SnapshotDatabase { .. }
            | JobKind::DeleteSnapshot { .. }
            | JobKind::CopySnapshot { .. }
            | JobKind::Noop { .. } => {}
        }
        // The old verifier back (an undo task's spec is the database as it was).
        if password {
            out.push(undo(TaskAction::SetPassword));
        }
        // The access rules in force before, back (the undo spec's are the database's).
        if access {
            out.push(undo(TaskAction::SetAccess));
        }
    }
    out
}

/// The copies a restore can read from, the chosen one first (seed 002's rule, in
/// `clone_source`), and why: the base snapshot in its zone's store, and a control-store
/// copy of a snapshot that serves the same target.
pub fn restore_sources(
    state: &AdminState,
    from: &keel_raft_store::RestoreSource,
    target_zone: &str,
    zones: &ZoneDistances,
) -> Result<(Vec<RestoreFrom>, String), String> {
    use keel_raft_store::{BackupTier, RestoreTarget};
    let base = state
        .snapshots
        .get(&from.snapshot)
        .ok_or_else(|| format!("snapshot {} no longer exists", from.snapshot))?;
    let zone_reach = state
        .archives
        .get(&from.lineage)
        .map_or(base.taken_at_ms, |a| a.restorable_until_ms.max(base.taken_at_ms));
    let mut candidates = vec![(
        Copy {
            id: format!("zone-store:{}", base.zone),
            zone: Some(base.zone.clone()),
            updated_at_ms: zone_reach,
        },
        RestoreFrom {
            copy: format!("zone-store:{}", base.zone),
            tier: BackupTier::Zone,
            zone: base.zone.clone(),
            objects: base.objects.clone(),
            start_lsn: base.start_lsn.clone(),
        },
    )];
    // A control copy serves if its snapshot starts at or before the target and its WAL reaches it.
    let control = match from.target {
        RestoreTarget::Snapshot => base.control.as_ref().map(|c| (base, c)),
        RestoreTarget::Latest => state
            .snapshots_of(&from.lineage)
            .filter_map(|s| s.control.as_ref().map(|c| (s, c)))
            .last(),
        RestoreTarget::Time { at_ms } => state
            .snapshots_of(&from.lineage)
            .filter(|s| s.taken_at_ms <= at_ms)
            .filter_map(|s| s.control.as_ref().map(|c| (s, c)))
            .filter(|(_, c)| c.wal_until_ms >= at_ms)
            .last(),
    };
    if let Some((snap, copy)) = control {
        candidates.push((
            Copy {
                id: "control-store".into(),
                zone: None,
                updated_at_ms: copy.wal_until_ms,
            },
            RestoreFrom {
                copy: "control-store".into(),
                tier: BackupTier::Control,
                zone: String::new(),
                objects: copy.objects.clone(),
                start_lsn: snap.start_lsn.clone(),
            },
        ));
    }
    let copies: Vec<Copy> = candidates.iter().map(|(c, _)| c.clone()).collect();
    let within = from
        .prefer_near_within_ms
        .unwrap_or(keel_raft_store::PREFER_NEAR_WITHIN_MS);
    let choice = clone_source::choose(&copies, target_zone, within, zones)
        .ok_or("no copy of the backups can serve this restore")?;
    // The chosen copy first; the others after it, freshest first, as fallbacks.
    candidates.sort_by_key(|(c, _)| (c.id != choice.id, std::cmp::Reverse(c.updated_at_ms)));
    Ok((candidates.into_iter().map(|(_, r)| r).collect(), choice.reason))
}

/// The WAL of `snap`'s lineage that no snapshot needs once `snap` is gone: before the
/// oldest remaining snapshot's start; all of it once the database is gone and no snapshot
/// remains; none while the database lives without another snapshot (its next one will
/// need what comes).
pub fn wal_no_longer_needed(state: &AdminState, snap: &keel_raft_store::Snapshot) -> Option<(String, u64)> {
    let oldest_left = state
        .snapshots_of(&snap.lineage)
        .filter(|s| s.name != snap.name || s.account != snap.account)
        .filter_map(|s| parse_lsn(&s.start_lsn))
        .min();
    let lineage_lives = state.databases.values().any(|d| d.lineage() == snap.lineage);
    match oldest_left {
        Some(lsn) => Some((snap.lineage.clone(), lsn)),
        None if !lineage_lives => Some((snap.lineage.clone(), u64::MAX)),
        None => None,
    }
}

/// What the host manager needs to run an instance of `job`'s database: with the job's
/// modification applied, or (for an undo task, `undo`) as the database was before it.
pub fn instance_spec(
    state: &AdminState,
    job: &Job,
    instance_id: &str,
    undo: bool,
    action: TaskAction,
) -> Result<InstanceSpec, String> {
    let instance = state
        .instances
        .get(instance_id)
        .ok_or_else(|| format!("instance {instance_id} no longer exists"))?;
    let db = state
        .databases
        .get(&instance.database)
        .ok_or_else(|| format!("database {} no longer exists", instance.database))?;
    let host = state
        .hosts
        .get(&instance.host)
        .ok_or_else(|| format!("host {} is no longer registered", instance.host))?;
    let empty = Modification::default();
    let modification = match &job.kind {
        JobKind::ModifyDatabase { modification, .. } if !undo => modification,
        _ => &empty,
    };
    let class_name = modification.class.as_deref().unwrap_or(&db.spec.class);
    let class = classes::lookup(class_name).ok_or_else(|| format!("unknown instance class {class_name:?}"))?;
    Ok(InstanceSpec {
        id: instance.id.clone(),
        listen_addr: host.ip().to_string(),
        port: instance.port,
        settings: class.settings(),
        storage_gib: modification.storage_gib.unwrap_or(db.spec.storage_gib),
        master_user: db.spec.master_user.clone(),
        master_verifier: modification
            .master_verifier
            .clone()
            .unwrap_or_else(|| db.master_verifier.clone()),
        allowed_cidrs: modification.access.clone().or_else(|| db.access.clone()),
        // Retention 0 means no automatic backups, and no archive either.
        // A standby archives nothing: its primary does.
        backup_lineage: (db.spec.backup_retention_days > 0 && instance.role == InstanceRole::Primary)
            .then(|| db.lineage()),
        archive_sync: db.spec.backup_rpo == keel_raft_store::BackupRpo::Zero,
        replication: replication_spec(state, job, instance, undo, action),
    })
}

/// One step of a plan, for people: what, and with what (read from what runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    /// The step: observe, provision, install, sync, replicate, record (or nothing).
    pub step: &'static str,
    /// What it does here.
    pub detail: String,
}

/// What adding a synchronous standby to `database` would do now, step by step (seed
/// 003's plan), read from what runs as well as the records: the members and their
/// health and replication as the monitor last saw them, and the engine version each
/// host manager reports. Nothing is changed; `modify --multi-az true --dry-run` prints it.
pub fn standby_plan(state: &AdminState, database: &str) -> Result<Vec<PlanStep>, String> {
    let step = |step, detail: String| PlanStep { step, detail };
    let db = state
        .databases
        .get(database)
        .ok_or_else(|| format!("database {database} does not exist"))?;
    let primary = state
        .primary_of(database)
        .ok_or_else(|| format!("database {} has no primary to add a standby to", db.name))?;
    let host_of = |name: &str| state.hosts.get(name);
    let primary_host = host_of(&primary.host).ok_or("the primary's host is not registered")?;
    let version = primary_host.capacity.engine_version.clone();
    let members: Vec<String> = db
        .instances
        .iter()
        .filter_map(|id| state.instances.get(id))
        .map(|i| {
            let health = match &i.health {
                keel_raft_store::InstanceHealth::Healthy => "healthy".to_string(),
                keel_raft_store::InstanceHealth::Unhealthy { problem, .. } => format!("unhealthy: {problem}"),
            };
            let replication = i
                .replication
                .as_ref()
                .map(|r| format!(", {}{}", r.state, if r.sync { " (synchronous)" } else { "" }))
                .unwrap_or_default();
            let role = keel_raft_store::wire_name(&i.role);
            format!("{role} {} on {} ({health}{replication})", i.id, i.host)
        })
        .collect();
    let settings = classes::lookup(&db.spec.class).map(|c| c.settings());
    let mut steps = vec![step(
        "observe",
        format!(
            "members: {}; the primary's host {} (zone {}) reports PostgreSQL {}; class {}{}",
            members.join("; "),
            primary_host.name,
            primary_host.zone,
            if version.is_empty() {
                "(not reported yet)"
            } else {
                &version
            },
            db.spec.class,
            settings
                .map(|s| format!(
                    " (shared_buffers {} MiB, max_connections {})",
                    s.shared_buffers_mb, s.max_connections
                ))
                .unwrap_or_default()
        ),
    )];
    if let Some(s) = &db.sync_standby {
        steps.push(step(
            "nothing",
            format!("standby {s} is in sync already: nothing to add"),
        ));
        return Ok(steps);
    }
    if db.spec.backup_retention_days == 0 {
        return Err(format!(
            "database {} keeps no backups, and a standby is built from them: set --backup-retention-days first",
            db.name
        ));
    }
    let (to, port) = state
        .place_standby(&primary_host.zone, Some(primary.port))
        .map_err(|r| r.to_string())?;
    let to = host_of(&to).ok_or("the chosen host is not registered")?;
    steps.push(step(
        "provision",
        format!(
            "a volume for the standby on host {} (zone {}, another zone than the primary's {}), port {port}{}",
            to.name,
            to.zone,
            primary_host.zone,
            if port == primary.port {
                " (the primary's, so a failover keeps it)"
            } else {
                ""
            }
        ),
    ));
    let installed = &to.capacity.engine_version;
    if !version.is_empty() && !installed.is_empty() && installed != &version {
        return Err(format!(
            "host {} reports PostgreSQL {installed} and the primary runs {version}: a standby needs the same version",
            to.name
        ));
    }
    steps.push(step(
        "install",
        format!(
            "PostgreSQL {} and Keel's host manager on {}: {}",
            if installed.is_empty() {
                "(not reported yet)"
            } else {
                installed
            },
            to.name,
            if installed.is_empty() {
                "its host manager has not reported them yet"
            } else {
                "already there (reported)"
            }
        ),
    ));
    let lineage = db.lineage();
    let sync = match state.snapshots_of(&lineage).last() {
        Some(snap) => format!(
            "unpack snapshot {} (taken {}, {} MiB) from zone-store:{}, then the archive's WAL up to where the primary's new slot starts{}",
            snap.name,
            keel_raft_store::timefmt::format_ms(snap.taken_at_ms),
            snap.size_bytes >> 20,
            snap.zone,
            state
                .archives
                .get(&lineage)
                .map(|a| format!(" (it reaches {})", keel_raft_store::timefmt::format_ms(a.restorable_until_ms)))
                .unwrap_or_default()
        ),
        None => "waits for the database's first snapshot (none yet), then as above".to_string(),
    };
    steps.push(step("sync", sync));
    steps.push(step(
        "replicate",
        format!(
            "on primary {}: the keel_replication role, a slot reserving WAL, mutual TLS; the standby streams from it; then every commit waits for the standby{}",
            primary.id,
            if db.spec.backup_rpo == keel_raft_store::BackupRpo::Zero { " and the archive (FIRST 2)" } else { "" }
        ),
    ));
    steps.push(step(
        "record",
        "the database records the standby as its synchronous standby once it has flushed everything written before; from then on a failover may promote it".to_string(),
    ));
    Ok(steps)
}

/// An instance's part in its database's replication: a primary keeps a slot for each
/// standby and waits for the recorded synchronous one (and, in an add-standby's sync
/// step, for the new one); a standby streams from the primary. `None` for a database
/// without standbys.
fn replication_spec(
    state: &AdminState,
    job: &Job,
    instance: &keel_raft_store::Instance,
    undo: bool,
    action: TaskAction,
) -> Option<ReplicationSpec> {
    let db = state.databases.get(&instance.database)?;
    // Leaving Multi-AZ: the primary keeps no slot for the standby and waits for no one
    // (its read replicas stay).
    let leaving = matches!(&job.kind, JobKind::ModifyDatabase { modification, .. }
        if modification.multi_az == Some(false) && !undo);
    let adding = match &job.kind {
        JobKind::AddStandby { standby, .. } => Some(standby.as_str()),
        JobKind::AddReplica { replica, .. } => Some(replica.as_str()),
        _ => None,
    };
    // Every follower (the standby, the read replicas) has a slot on the primary.
    let standbys: Vec<String> = db
        .instances
        .iter()
        .filter_map(|id| state.instances.get(id))
        .filter(|i| i.role != InstanceRole::Primary && i.fenced_at.is_none())
        .filter(|i| !(leaving && i.role == InstanceRole::Standby))
        // Undoing an add-standby: the primary as it was, without the new one's slot.
        .filter(|i| !(undo && adding == Some(i.id.as_str())))
        .map(|i| i.id.clone())
        .collect();
    if (!db.spec.multi_az || leaving) && standbys.is_empty() {
        return None;
    }
    match instance.role {
        InstanceRole::Primary => Some(ReplicationSpec {
            sync_standby: match adding {
                _ if leaving => None,
                Some(new) if !undo && action == TaskAction::SyncStandby => Some(new.to_string()),
                _ => db.sync_standby.clone(),
            },
            standbys,
            upstream: None,
            readable: false,
        }),
        InstanceRole::Standby | InstanceRole::Replica => {
            let primary = state.primary_of(&instance.database)?;
            let host = state.hosts.get(&primary.host)?;
            Some(ReplicationSpec {
                upstream: Some(Upstream {
                    addr: host.ip().to_string(),
                    port: primary.port,
                }),
                readable: instance.role == InstanceRole::Replica,
                ..ReplicationSpec::default()
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft_store::{Command, DatabaseSpec, Host, HostHealth, Proposal, Response};

    fn state_with_db() -> (AdminState, Job) {
        let mut s = AdminState::default();
        s.hosts.insert(
            "h1".into(),
            Host {
                name: "h1".into(),
                addr: "127.0.1.1:7300".into(),
                zone: "a".into(),
                health: HostHealth::Healthy,
                ..Host::default()
            },
        );
        let spec = DatabaseSpec {
            engine: "postgres".into(),
            class: "small".into(),
            storage_gib: 10,
            master_user: "app".into(),
            ..DatabaseSpec::default()
        };
        let account = Command::CreateAccount { name: "acme".into() };
        s.apply(1, &Proposal::new(1, account));
        let command = Command::CreateDatabase {
            job_id: "j1".into(),
            request: None,
            name: "orders".into(),
            account: "acme".into(),
            spec,
            master_verifier: "v".into(),
            instance_id: "i1".into(),
        };
        let Response::Database { job, .. } = s.apply(2, &Proposal::new(1, command)) else {
            panic!()
        };
        (s, *job)
    }

    #[test]
    fn the_standby_plan_reads_what_runs_and_refuses_what_would_not_work() {
        let (mut s, _) = state_with_db();
        s.hosts.get_mut("h1").unwrap().capacity.engine_version = "15.18".into();
        s.hosts.insert(
            "h2".into(),
            Host {
                name: "h2".into(),
                addr: "127.0.1.2:7300".into(),
                zone: "b".into(),
                health: HostHealth::Healthy,
                capacity: keel_raft_store::HostCapacity {
                    instance_slots: 8,
                    disk_gib: 100,
                    engine_version: "15.18".into(),
                },
                ..Host::default()
            },
        );
        let key = "orders.acme";
        let steps = |s: &AdminState| standby_plan(s, key).map(|p| p.iter().map(|x| x.step).collect::<Vec<_>>());
        assert!(
            standby_plan(&s, key).unwrap_err().contains("keeps no backups"),
            "a standby is built from backups"
        );
        s.databases.get_mut(key).unwrap().spec.backup_retention_days = 7;
        let plan = standby_plan(&s, key).unwrap();
        assert_eq!(
            steps(&s).unwrap(),
            ["observe", "provision", "install", "sync", "replicate", "record"]
        );
        assert!(plan[0].detail.contains("primary i1 on h1") && plan[0].detail.contains("reports PostgreSQL 15.18"));
        assert!(plan[1].detail.contains("host h2 (zone b"), "{}", plan[1].detail);
        assert!(plan[2].detail.contains("already there"), "{}", plan[2].detail);
        assert!(
            plan[3].detail.contains("first snapshot"),
            "no snapshot yet: {}",
            plan[3].detail
        );
        // What runs decides: another engine version on the only other zone's host refuses.
        s.hosts.get_mut("h2").unwrap().capacity.engine_version = "16.4".into();
        let refused = standby_plan(&s, key).unwrap_err();
        assert!(
            refused.contains("h2 reports PostgreSQL 16.4") && refused.contains("15.18"),
            "{refused}"
        );
        // In sync already: nothing to add.
        s.databases.get_mut(key).unwrap().sync_standby = Some("s1".into());
        assert_eq!(steps(&s).unwrap(), ["observe", "nothing"]);
    }

    #[test]
    fn create_provisions_starts_and_checks_then_undoes_by_destroying() {
        let (s, job) = state_with_db();
        let tasks = plan(&s, &job, "w").unwrap();
        let names: Vec<&str> = tasks.iter().map(|t| t.action.name()).collect();
        assert_eq!(names, ["provision", "start", "check"]);
        assert!(tasks.iter().all(|t| t.host == "h1" && t.instance == "i1"));
        let mut wf = Workflow {
            id: "w".into(),
            tasks,
            ..Workflow::default()
        };
        assert!(compensation(&job, &wf).is_empty(), "nothing ran, nothing to undo");
        wf.tasks[0].attempt = 1;
        let undo = compensation(&job, &wf);
        assert_eq!(undo.len(), 1);
        assert_eq!((undo[0].action, undo[0].instance.as_str()), (TaskAction::Destroy, "i1"));
        let spec = instance_spec(&s, &job, "i1", false, TaskAction::Configure).unwrap();
        assert_eq!(
            (spec.listen_addr.as_str(), spec.port, spec.settings.shared_buffers_mb),
            ("127.0.1.1", 5432, 128)
        );
    }

    /// `state_with_db`'s database made Multi-AZ, with host h2 in zone b, a snapshot, and
    /// an add-standby job placing standby `s` there.
    fn state_adding_standby() -> (AdminState, Job) {
        let (mut s, _) = state_with_db();
        s.hosts.insert(
            "h2".into(),
            Host {
                name: "h2".into(),
                addr: "127.0.1.2:7300".into(),
                zone: "b".into(),
                health: HostHealth::Healthy,
                ..Host::default()
            },
        );
        let db = s.databases.get_mut("orders.acme").unwrap();
        db.spec.multi_az = true;
        db.spec.backup_retention_days = 7;
        db.status = keel_raft_store::DatabaseStatus::Available;
        db.operation = None;
        s.snapshots.insert(
            "auto1.acme".into(),
            keel_raft_store::Snapshot {
                name: "auto1".into(),
                account: "acme".into(),
                database: "orders.acme".into(),
                lineage: "j1".into(),
                zone: "a".into(),
                state: keel_raft_store::SnapshotState::Available,
                ..keel_raft_store::Snapshot::default()
            },
        );
        let add = Command::AddStandby {
            job_id: "j2".into(),
            name: "orders.acme".into(),
            instance_id: "s".into(),
        };
        let Response::Database { job, .. } = s.apply(3, &Proposal::new(3, add)) else {
            panic!("refused")
        };
        (s, *job)
    }

    #[test]
    fn a_snapshot_is_taken_from_the_serving_standby_into_the_primarys_zone_store() {
        let (mut s, _) = state_adding_standby();
        let db = s.databases.get_mut("orders.acme").unwrap();
        (db.operation, db.status) = (None, keel_raft_store::DatabaseStatus::Available);
        db.sync_standby = Some("s".into());
        let standby = s.instances.get_mut("s").unwrap();
        standby.health = keel_raft_store::InstanceHealth::Healthy;
        standby.replication = Some(keel_raft_store::Replication {
            state: "streaming".into(),
            sync: true,
            ..keel_raft_store::Replication::default()
        });
        let snap = Command::SnapshotDatabase {
            job_id: "j3".into(),
            request: None,
            name: "orders.acme".into(),
            snapshot: "auto2.acme".into(),
            kind: keel_raft_store::SnapshotKind::Automatic,
        };
        let Response::Database { job, .. } = s.apply(4, &Proposal::new(4, snap)) else {
            panic!("refused")
        };
        let placed = |s: &AdminState| {
            let tasks = plan(s, &job, "w").unwrap();
            let last = tasks.last().unwrap();
            (last.action, last.host.clone(), last.instance.clone())
        };
        assert_eq!(placed(&s), (TaskAction::Snapshot, "h2".to_string(), "s".to_string()));
        // The primary checkpoints first, so the standby's copy starts there.
        let tasks = plan(&s, &job, "w").unwrap();
        let steps: Vec<_> = tasks.iter().map(|t| (t.action, t.instance.as_str())).collect();
        assert_eq!(steps, [(TaskAction::Checkpoint, "i1"), (TaskAction::Snapshot, "s")]);
        // Stored beside the archive, in the primary's zone (a), though taken in zone b.
        let Some(TaskWork::Snapshot { zone, .. }) =
            task_work(&s, &job, TaskAction::Snapshot, &ZoneDistances::default()).unwrap()
        else {
            panic!("a snapshot's work")
        };
        assert_eq!(zone.as_deref(), Some("a"));
        // A standby that is not streaming in sync, or whose host is not healthy: the primary.
        s.instances.get_mut("s").unwrap().replication.as_mut().unwrap().state = "catchup".into();
        assert_eq!(placed(&s), (TaskAction::Snapshot, "h1".to_string(), "i1".to_string()));
        s.instances.get_mut("s").unwrap().replication.as_mut().unwrap().state = "streaming".into();
        s.hosts.get_mut("h2").unwrap().health = HostHealth::Unreachable;
        assert_eq!(placed(&s), (TaskAction::Snapshot, "h1".to_string(), "i1".to_string()));
        // From the primary itself: no separate checkpoint (its backup makes one).
        assert_eq!(plan(&s, &job, "w").unwrap().len(), 1);
    }

    #[test]
    fn a_standby_is_prepared_built_then_waited_for_and_undone_primary_first() {
        let (s, job) = state_adding_standby();
        let tasks = plan(&s, &job, "w").unwrap();
        let steps: Vec<(&str, &str)> = tasks.iter().map(|t| (t.action.name(), t.instance.as_str())).collect();
        assert_eq!(
            steps,
            [
                ("prepare-standby", "i1"),
                ("build-standby", "s"),
                ("sync-standby", "i1")
            ]
        );
        let spec = |instance, undo, action| instance_spec(&s, &job, instance, undo, action).unwrap();
        // The primary keeps the new standby's slot from the start, but waits for it only in
        // the sync step (and not at all once undone).
        let prepare = spec("i1", false, TaskAction::PrepareStandby).replication.unwrap();
        assert_eq!(
            (prepare.standbys.as_slice(), prepare.sync_standby),
            (&["s".to_string()][..], None)
        );
        let sync = spec("i1", false, TaskAction::SyncStandby).replication.unwrap();
        assert_eq!(sync.sync_standby.as_deref(), Some("s"));
        let undone = spec("i1", true, TaskAction::PrepareStandby).replication.unwrap();
        assert!(
            undone.standbys.is_empty() && undone.sync_standby.is_none(),
            "{undone:?}"
        );
        // The standby streams from the primary and archives nothing.
        let standby = spec("s", false, TaskAction::BuildStandby);
        let up = standby.replication.unwrap().upstream.unwrap();
        assert_eq!((up.addr.as_str(), up.port), ("127.0.1.1", 5432));
        assert_eq!(standby.backup_lineage, None);
        assert_eq!(
            spec("i1", false, TaskAction::Configure).backup_lineage.as_deref(),
            Some("j1")
        );
        // Built from the latest snapshot once the prepare step recorded the slot.
        let why = task_work(&s, &job, TaskAction::BuildStandby, &ZoneDistances::default()).unwrap_err();
        assert!(why.contains("slot"), "{why}");

        let mut wf = Workflow {
            id: "w".into(),
            tasks,
            ..Workflow::default()
        };
        for t in &mut wf.tasks {
            t.attempt = 1;
        }
        let undo: Vec<(TaskAction, String)> = compensation(&job, &wf)
            .into_iter()
            .map(|t| (t.action, t.instance))
            .collect();
        assert_eq!(
            undo,
            [
                (TaskAction::PrepareStandby, "i1".to_string()),
                (TaskAction::Destroy, "s".to_string())
            ],
            "the primary stops waiting (and cuts the standby off) before the standby goes"
        );
    }

    #[test]
    fn leaving_multi_az_unwaits_the_primary_then_destroys_the_standby() {
        let (mut s, _) = state_adding_standby();
        let db = s.databases.get_mut("orders.acme").unwrap();
        db.operation = None;
        db.status = keel_raft_store::DatabaseStatus::Available;
        db.sync_standby = Some("s".into());
        let job = modify_job(Modification {
            multi_az: Some(false),
            ..Modification::default()
        });
        let steps: Vec<(&str, String)> = plan(&s, &job, "w")
            .unwrap()
            .into_iter()
            .map(|t| (t.action.name(), t.instance))
            .collect();
        assert_eq!(steps, [("prepare-standby", "i1".into()), ("destroy", "s".into())]);
        let spec = instance_spec(&s, &job, "i1", false, TaskAction::PrepareStandby).unwrap();
        assert_eq!(spec.replication, None, "no slot, no synchronous standby");

        // With a read replica, the primary keeps its slot (and the replica streams on).
        s.instances.insert(
            "r".into(),
            keel_raft_store::Instance {
                id: "r".into(),
                database: "orders.acme".into(),
                role: InstanceRole::Replica,
                host: "h2".into(),
                port: 5433,
                ..keel_raft_store::Instance::default()
            },
        );
        s.databases.get_mut("orders.acme").unwrap().instances.push("r".into());
        let spec = instance_spec(&s, &job, "i1", false, TaskAction::PrepareStandby).unwrap();
        let kept = spec.replication.expect("the replica's slot");
        assert_eq!((kept.standbys, kept.sync_standby), (vec!["r".to_string()], None));
    }

    /// A modify job of `orders` in `acme` (the database `state_with_db` makes).
    fn modify_job(m: Modification) -> Job {
        Job {
            id: "j2".into(),
            request_id: None,
            account: "acme".into(),
            kind: JobKind::ModifyDatabase {
                database: "orders.acme".into(),
                modification: m,
            },
            state: Default::default(),
            submitted_at_ms: 0,
            claims: vec![],
            completed_fence: None,
            finished_at_ms: None,
            error: None,
        }
    }

    #[test]
    fn modify_restarts_only_for_a_new_class() {
        let (s, _) = state_with_db();
        let job = modify_job;
        let bigger = job(Modification {
            class: Some("medium".into()),
            ..Modification::default()
        });
        let tasks = plan(&s, &bigger, "w").unwrap();
        let names: Vec<&str> = tasks.iter().map(|t| t.action.name()).collect();
        assert_eq!(names, ["restart", "check"]);
        let mut wf = Workflow {
            id: "w".into(),
            tasks,
            ..Workflow::default()
        };
        wf.tasks[0].attempt = 1;
        let undo: Vec<TaskAction> = compensation(&bigger, &wf).into_iter().map(|t| t.action).collect();
        assert_eq!(
            undo,
            [TaskAction::Restart, TaskAction::Check],
            "a failed class change restarts on the old class"
        );
        assert_eq!(
            instance_spec(&s, &bigger, "i1", true, TaskAction::Configure)
                .unwrap()
                .settings
                .shared_buffers_mb,
            128,
            "an undo task gets the settings from before the modification"
        );
        assert_eq!(
            instance_spec(&s, &bigger, "i1", false, TaskAction::Configure)
                .unwrap()
                .settings
                .shared_buffers_mb,
            512
        );
        let windows = job(Modification {
            backup_window: Some("03:00-04:00".into()),
            ..Modification::default()
        });
        assert!(
            plan(&s, &windows, "w").unwrap().is_empty(),
            "a window change needs no host work"
        );

        // A new password: set on the running engine, and the old one put back on failure.
        let password = job(Modification {
            master_verifier: Some("SCRAM-SHA-256$new".into()),
            ..Modification::default()
        });
        let tasks = plan(&s, &password, "w").unwrap();
        let names: Vec<&str> = tasks.iter().map(|t| t.action.name()).collect();
        assert_eq!(names, ["start", "set-password"]);
        assert_eq!(
            instance_spec(&s, &password, "i1", false, TaskAction::Configure)
                .unwrap()
                .master_verifier,
            "SCRAM-SHA-256$new"
        );
        assert_eq!(
            instance_spec(&s, &password, "i1", true, TaskAction::Configure)
                .unwrap()
                .master_verifier,
            "v",
            "undo: the old one"
        );
        let mut wf = Workflow {
            id: "w".into(),
            tasks,
            ..Workflow::default()
        };
        wf.tasks[1].attempt = 1;
        let undo: Vec<TaskAction> = compensation(&password, &wf).into_iter().map(|t| t.action).collect();
        assert_eq!(undo.last(), Some(&TaskAction::SetPassword), "{undo:?}");
        let both = job(Modification {
            class: Some("medium".into()),
            master_verifier: Some("SCRAM-SHA-256$new".into()),
            ..Modification::default()
        });
        let names: Vec<TaskAction> = plan(&s, &both, "w").unwrap().into_iter().map(|t| t.action).collect();
        assert_eq!(names, [TaskAction::Restart, TaskAction::Check, TaskAction::SetPassword]);
    }

    #[test]
    fn new_access_rules_are_set_on_the_running_engine_and_the_old_ones_put_back() {
        let (mut s, _) = state_with_db();
        s.databases.get_mut("orders.acme").unwrap().access = Some(vec!["127.0.0.0/8".into()]);
        let job = modify_job;
        let same = job(Modification {
            access: Some(vec!["127.0.0.0/8".into()]),
            ..Modification::default()
        });
        assert!(
            plan(&s, &same, "w").unwrap().is_empty(),
            "rules already in force need no host work"
        );
        let office = job(Modification {
            access: Some(vec!["10.0.0.0/8".into()]),
            ..Modification::default()
        });
        let tasks = plan(&s, &office, "w").unwrap();
        let names: Vec<TaskAction> = tasks.iter().map(|t| t.action).collect();
        assert_eq!(names, [TaskAction::Start, TaskAction::SetAccess]);
        let rules = |undo| {
            instance_spec(&s, &office, "i1", undo, TaskAction::Configure)
                .unwrap()
                .allowed_cidrs
        };
        assert_eq!(rules(false), Some(vec!["10.0.0.0/8".to_string()]));
        assert_eq!(
            rules(true),
            Some(vec!["127.0.0.0/8".to_string()]),
            "undo: the rules before"
        );
        let mut wf = Workflow {
            id: "w".into(),
            tasks,
            ..Workflow::default()
        };
        wf.tasks[1].attempt = 1;
        let undo: Vec<TaskAction> = compensation(&office, &wf).into_iter().map(|t| t.action).collect();
        assert_eq!(undo.last(), Some(&TaskAction::SetAccess), "{undo:?}");
    }

    #[test]
    fn a_recovery_fences_an_answering_host_first_and_undoes_only_the_new_instance() {
        let (mut s, _) = state_with_db();
        s.hosts.insert(
            "h2".into(),
            Host {
                name: "h2".into(),
                addr: "127.0.1.2:7300".into(),
                zone: "b".into(),
                health: HostHealth::Healthy,
                ..Host::default()
            },
        );
        let db = s.databases.get_mut("orders.acme").unwrap();
        db.status = keel_raft_store::DatabaseStatus::Available;
        db.operation = None;
        db.spec.backup_retention_days = 7;
        s.snapshots.insert(
            "auto.acme".into(),
            keel_raft_store::Snapshot {
                name: "auto".into(),
                account: "acme".into(),
                lineage: "j1".into(),
                state: keel_raft_store::SnapshotState::Available,
                zone: "a".into(),
                ..keel_raft_store::Snapshot::default()
            },
        );
        let recover = |s: &mut AdminState, automatic| {
            let command = Command::RecoverDatabase {
                job_id: "r1".into(),
                request: None,
                name: "orders.acme".into(),
                instance_id: "i2".into(),
                reason: "instance i1 is unhealthy".into(),
                last_seen_ms: 0,
                automatic,
            };
            match s.apply(3, &Proposal::new(1, command)) {
                Response::Database { job, .. } => *job,
                other => panic!("{other:?}"),
            }
        };
        let mut unreachable = s.clone();
        let job = recover(&mut s, true);
        let tasks = plan(&s, &job, "w").unwrap();
        let steps: Vec<(TaskAction, &str, &str)> = tasks
            .iter()
            .map(|t| (t.action, t.host.as_str(), t.instance.as_str()))
            .collect();
        assert_eq!(
            steps,
            [
                (TaskAction::Fence, "h1", "i1"),
                (TaskAction::Restore, "h2", "i2"),
                (TaskAction::Check, "h2", "i2")
            ]
        );
        assert_eq!(
            task_work(&s, &job, TaskAction::Fence, &ZoneDistances::default()).unwrap(),
            Some(TaskWork::Fence { lineage: "j1".into() })
        );
        assert!(matches!(
            task_work(&s, &job, TaskAction::Restore, &ZoneDistances::default()).unwrap(),
            Some(TaskWork::Restore { lineage, target: keel_raft_store::RestoreTarget::Latest, .. }) if lineage == "j1"
        ));
        // Every task tried; the undo removes the new instance only.
        let mut wf = Workflow {
            tasks,
            ..Workflow::default()
        };
        wf.tasks.iter_mut().for_each(|t| t.attempt = 1);
        let undo: Vec<(TaskAction, String)> = compensation(&job, &wf)
            .into_iter()
            .map(|t| (t.action, t.instance))
            .collect();
        assert_eq!(undo, [(TaskAction::Destroy, "i2".to_string())]);

        // An unreachable host is fenced by the record alone: no task is sent there.
        unreachable.hosts.get_mut("h1").unwrap().health = HostHealth::Unreachable;
        let job = recover(&mut unreachable, true);
        let actions: Vec<TaskAction> = plan(&unreachable, &job, "w")
            .unwrap()
            .iter()
            .map(|t| t.action)
            .collect();
        assert_eq!(actions, [TaskAction::Restore, TaskAction::Check]);
    }
}
