//! Applying database commands: create (with placement), modify, delete.
//!
//! A database works on one operation at a time: a modify or delete while
//! another operation runs is refused with the id of the running one.

use super::{conflict, not_found, AdminState};
use crate::command::Response;
use crate::records::*;

/// What `CreateDatabase` asks for.
pub(crate) struct NewDatabase<'a> {
    pub job_id: &'a str,
    pub request: Option<&'a RequestKey>,
    pub name: &'a str,
    pub account: &'a str,
    pub spec: &'a DatabaseSpec,
    pub master_verifier: &'a str,
    pub instance_id: &'a str,
    /// For a restore: where the data comes from.
    pub restore: Option<&'a crate::catalog::RestoreSource>,
}

/// How a database's workflow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every task succeeded.
    Succeeded,
    /// It failed; `undone` when its undo tasks all succeeded (a failed modify is then rolled
    /// back, a failed create has removed what it made).
    Failed {
        /// Why.
        error: String,
        /// Whether the undo tasks succeeded.
        undone: bool,
    },
}

impl Outcome {
    /// Why it failed, if it did.
    pub(crate) fn error(&self) -> Option<&str> {
        match self {
            Outcome::Succeeded => None,
            Outcome::Failed { error, .. } => Some(error),
        }
    }
}

/// Where and by whom an operation is being started.
pub(super) struct Start<'a> {
    pub index: u64,
    pub at: Millis,
    pub job_id: &'a str,
    pub request: Option<&'a RequestKey>,
}

impl AdminState {
    pub(super) fn database_response(&self, job: &Job, created: bool) -> Response {
        let database = job
            .kind
            .database()
            .and_then(|d| self.databases.get(d))
            .cloned()
            .unwrap_or_else(|| Database {
                name: job.kind.database().unwrap_or_default().to_string(),
                ..Database::default()
            });
        Response::Database {
            database: Box::new(database),
            job: Box::new(job.clone()),
            created,
        }
    }

    pub(super) fn busy(&self, db: &Database) -> Option<Response> {
        let op = db.operation.as_ref()?;
        let kind = self.jobs.get(op).map_or("an operation", |j| j.kind.name());
        Some(conflict(format!(
            "database {} is busy with {kind} {op}; wait for it (`keel ops describe {op}`) and retry",
            db.name
        )))
    }

    pub(super) fn create_database(&mut self, index: u64, at: Millis, new: NewDatabase) -> Response {
        let NewDatabase {
            job_id,
            request,
            name,
            account,
            spec,
            master_verifier,
            instance_id,
            restore,
        } = new;
        match self.repeat_of(request, account, at) {
            Err(refused) => return refused,
            Ok(Some(job)) => return self.database_response(&job.clone(), false),
            Ok(None) => {}
        }
        if !self.accounts.contains_key(account) {
            return not_found("account", account);
        }
        if let Some(missing) = self.missing_security_group(account, &spec.security_groups) {
            return not_found("security group", missing);
        }
        let key = database_key(name, account);
        if let Some(existing) = self.databases.get(&key) {
            return conflict(format!(
                "database {name:?} already exists in account {account} ({:?}); choose another name or delete it first",
                existing.status
            ));
        }
        if let Some(from) = restore {
            if let Err(why) = self.check_restore(from) {
                return conflict(why);
            }
        }
        let (host, port) = match self.place(spec.zone.as_deref()) {
            Ok(p) => p,
            Err(rejection) => return Response::Rejected { rejection },
        };
        let kind = match restore {
            Some(from) => JobKind::RestoreDatabase {
                database: key.clone(),
                from: from.clone(),
            },
            None => JobKind::CreateDatabase { database: key.clone() },
        };
        let job = match self.enqueue(index, at, job_id, request, kind, account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        self.instances.insert(
            instance_id.to_string(),
            Instance {
                id: instance_id.to_string(),
                database: key.clone(),
                role: InstanceRole::Primary,
                host: host.clone(),
                port,
                created_at_ms: at,
                health: InstanceHealth::Healthy,
                fenced_at: None,
                replication: None,
                follows: None,
            },
        );
        self.databases.insert(
            key.clone(),
            Database {
                name: name.to_string(),
                account: account.to_string(),
                spec: spec.clone(),
                status: DatabaseStatus::Creating,
                instances: vec![instance_id.to_string()],
                generation: 1,
                created_at_ms: at,
                operation: Some(job_id.to_string()),
                master_verifier: master_verifier.to_string(),
                access: Some(self.access_of(account, &spec.security_groups)),
                lineage: job_id.to_string(),
                restored_from: restore.map(|from| {
                    let to = match from.target {
                        crate::catalog::RestoreTarget::Time { at_ms } => crate::timefmt::format_ms(at_ms),
                        crate::catalog::RestoreTarget::Latest => "the latest restorable time".into(),
                        crate::catalog::RestoreTarget::Snapshot => format!("snapshot {}", from.snapshot),
                    };
                    format!("{} at {to}", from.database)
                }),
                ..Database::default()
            },
        );
        let message = match restore {
            Some(from) => format!(
                "Database {name} is being restored from {} on host {host}, port {port}.",
                from.database
            ),
            None => format!("Database {name} is being created on host {host}, port {port}."),
        };
        self.event(index, at, "database-creating", &key, message);
        self.database_response(&job, true)
    }

    pub(super) fn modify_database(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request: Option<&RequestKey>,
        name: &str,
        modification: &Modification,
    ) -> Response {
        let kind = JobKind::ModifyDatabase {
            database: name.into(),
            modification: modification.clone(),
        };
        // Read before `begin` borrows the state: a named group the account lacks.
        let missing_group = modification.security_groups.as_ref().and_then(|groups| {
            let account = &self.databases.get(name)?.account;
            self.missing_security_group(account, groups)
                .map(|m| format!("security group {m} does not exist in account {account}; create it first"))
        });
        let allowed = |db: &Database| {
            // A failed database may be modified too: that is how a failed rollback is retried.
            let modifiable = matches!(
                db.status,
                DatabaseStatus::Available | DatabaseStatus::StorageFull | DatabaseStatus::Failed
            );
            if !modifiable || db.instances.is_empty() {
                return Err(format!(
                    "database {name} is {} with {} instances; only an available, storage-full or failed database with an instance can be modified",
                    wire_name(&db.status),
                    db.instances.len()
                ));
            }
            if let Some(missing) = missing_group {
                return Err(missing);
            }
            if modification.multi_az == Some(true) && db.spec.backup_retention_days == 0 {
                return Err(format!(
                    "a Multi-AZ database's standby is built from its backups, and {name} keeps none (retention 0): modify its backup retention first"
                ));
            }
            match modification.storage_gib {
                Some(gib) if gib < db.spec.storage_gib => Err(format!(
                    "storage can only grow: {name} has {} GiB, asked for {gib} GiB",
                    db.spec.storage_gib
                )),
                _ => Ok(()),
            }
        };
        let start = Start {
            index,
            at,
            job_id,
            request,
        };
        let response = self.begin(start, name, kind, DatabaseStatus::Modifying, "modified", allowed);
        // Leaving Multi-AZ: from this index no standby may be promoted (the primary stops
        // waiting for it only after this is committed).
        if modification.multi_az == Some(false) && matches!(response, Response::Database { created: true, .. }) {
            if let Some(db) = self.databases.get_mut(name) {
                db.sync_standby = None;
            }
        }
        // The pending modification is being applied now (by the scheduler, or asked for at once).
        if let Some(db) = self.databases.get_mut(name) {
            if db.pending.as_ref() == Some(modification) && db.operation.as_deref() == Some(job_id) {
                db.pending = None;
            }
        }
        response
    }

    pub(super) fn defer_modification(&mut self, index: u64, at: Millis, name: &str, m: &Modification) -> Response {
        let Some(db) = self.databases.get_mut(name) else {
            return not_found("database", name);
        };
        if let Some(gib) = m.storage_gib {
            if gib < db.spec.storage_gib {
                return conflict(format!(
                    "storage can only grow: {name} has {} GiB, asked for {gib} GiB",
                    db.spec.storage_gib
                ));
            }
        }
        let mut pending = db.pending.clone().unwrap_or_default();
        // A later request overrides the same field of an earlier one.
        pending.class = m.class.clone().or(pending.class);
        pending.storage_gib = m.storage_gib.or(pending.storage_gib);
        pending.backup_window = m.backup_window.clone().or(pending.backup_window);
        pending.maintenance_window = m.maintenance_window.clone().or(pending.maintenance_window);
        db.pending = Some(pending);
        let message = format!(
            "Database {name} will be modified in its maintenance window ({} UTC).",
            db.spec.maintenance_window
        );
        let database = Box::new(db.clone());
        self.event(index, at, "modification-pending", name, message);
        Response::Deferred { database }
    }

    pub(super) fn delete_database(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request: Option<&RequestKey>,
        name: &str,
        final_snapshot: Option<&str>,
    ) -> Response {
        let account = name.split_once('.').map_or("", |(_, a)| a);
        let final_key = final_snapshot.map(|s| database_key(s, account));
        let repeat = self.repeat_of(request, account, at).ok().flatten().is_some();
        if let (Some(key), false) = (&final_key, repeat) {
            if self.snapshots.contains_key(key) {
                return conflict(format!(
                    "snapshot {} already exists in account {account}; choose another name for the final snapshot",
                    final_snapshot.unwrap_or_default()
                ));
            }
        }
        let kind = JobKind::DeleteDatabase {
            database: name.into(),
            final_snapshot: final_key.clone(),
        };
        let start = Start {
            index,
            at,
            job_id,
            request,
        };
        // A final snapshot needs a running instance to take it from.
        let allowed = |db: &Database| match (&final_key, db.status) {
            (Some(_), DatabaseStatus::Available | DatabaseStatus::StorageFull) => Ok(()),
            (Some(_), other) => Err(format!(
                "database {name} is {}; a final snapshot needs it available (delete it without one)",
                wire_name(&other)
            )),
            (None, _) => Ok(()),
        };
        let response = self.begin(start, name, kind, DatabaseStatus::Deleting, "deleted", allowed);
        if let (Some(key), false, Response::Database { created: true, .. }) = (&final_key, repeat, &response) {
            self.new_snapshot(key, name, job_id, at, crate::catalog::SnapshotKind::Final);
        }
        response
    }

    /// Start an operation on an existing database: refuse repeats, unknown names, busy
    /// databases and what `allowed` refuses; else queue the job and move to `status`.
    pub(super) fn begin(
        &mut self,
        start: Start<'_>,
        name: &str,
        kind: JobKind,
        status: DatabaseStatus,
        verb: &str,
        allowed: impl FnOnce(&Database) -> Result<(), String>,
    ) -> Response {
        let Start {
            index,
            at,
            job_id,
            request,
        } = start;
        // The key says whose database it is even after a delete removed it.
        if let Some(answer) = self.repeated(request, name, at) {
            return answer;
        }
        let Some(db) = self.databases.get(name) else {
            return not_found("database", name);
        };
        if let Some(refused) = self.busy(db) {
            return refused;
        }
        if let Err(why) = allowed(db) {
            return conflict(why);
        }
        let account = db.account.clone();
        let job = match self.enqueue(index, at, job_id, request, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        let db = self.databases.get_mut(name).expect("checked above");
        db.status = status;
        db.operation = Some(job_id.to_string());
        let kind_name = format!("database-{}", wire_name(&status));
        self.event(index, at, &kind_name, name, format!("Database {name} is being {verb}."));
        self.database_response(&job, true)
    }

    /// Drop a database's instances, freeing their ports and slots.
    pub(super) fn release_instances(&mut self, name: &str) {
        self.instances.retain(|_, i| i.database != name);
        if let Some(db) = self.databases.get_mut(name) {
            db.instances.clear();
            db.endpoint = None;
        }
    }

    /// The effect of a workflow a failover pre-empted: its catalog work only (the
    /// database belongs to the failover now).
    pub(super) fn conclude_preempted(&mut self, index: u64, at: Millis, kind: &JobKind, outcome: &Outcome) {
        let ok = *outcome == Outcome::Succeeded;
        match kind {
            JobKind::SnapshotDatabase { database, snapshot } => {
                self.conclude_snapshot(index, at, database, snapshot, ok, false)
            }
            JobKind::ReclaimFenced { instances, .. } => self.conclude_reclaim(instances, ok),
            JobKind::RemoveReplica { replica, .. } => self.conclude_reclaim(std::slice::from_ref(replica), ok),
            _ => {}
        }
    }

    /// The effect of a finished workflow on its database.
    pub(super) fn conclude(&mut self, index: u64, at: Millis, kind: &JobKind, outcome: &Outcome) {
        match kind {
            JobKind::DeleteSnapshot { snapshot } => {
                self.conclude_snapshot_delete(index, at, snapshot, *outcome == Outcome::Succeeded);
                return;
            }
            JobKind::CopySnapshot { snapshot } => {
                self.conclude_snapshot_copy(index, at, snapshot, *outcome == Outcome::Succeeded);
                return;
            }
            _ => {}
        }
        let Some(name) = kind.database().map(str::to_string) else {
            return;
        };
        if let JobKind::AddStandby { standby, .. } = kind {
            let undone = matches!(outcome, Outcome::Failed { undone: true, .. });
            self.conclude_add_standby(index, at, &name, standby, outcome.error(), undone);
            return;
        }
        if let JobKind::ReclaimFenced { instances, .. } = kind {
            self.conclude_reclaim(instances, *outcome == Outcome::Succeeded);
            return;
        }
        if let JobKind::RemoveReplica { replica, .. } = kind {
            // Destroyed: the record goes. Not (its host did not answer): it stays fenced,
            // and the scheduler's reclaim destroys it once the host answers.
            self.conclude_reclaim(std::slice::from_ref(replica), *outcome == Outcome::Succeeded);
            return;
        }
        if let JobKind::AddReplica { .. } = kind {
            self.conclude_add_replica(index, at, kind, outcome.error());
            return;
        }
        if let JobKind::FailoverDatabase { .. } = kind {
            self.conclude_failover(index, at, &name, outcome.error());
            return;
        }
        if let JobKind::ReleaseStandby { .. } = kind {
            self.conclude_release_standby(index, at, &name, outcome.error());
            return;
        }
        match (kind, outcome) {
            (
                JobKind::DeleteDatabase {
                    final_snapshot: Some(snap),
                    ..
                },
                outcome,
            ) if *outcome != Outcome::Succeeded => {
                // The final snapshot is not kept from a delete that did not finish.
                self.snapshots.remove(snap);
            }
            _ => {}
        }
        match (kind, outcome) {
            (JobKind::DeleteDatabase { final_snapshot, .. }, Outcome::Succeeded) => {
                if let Some(s) = final_snapshot.as_ref().and_then(|k| self.snapshots.get_mut(k)) {
                    s.state = crate::catalog::SnapshotState::Available;
                }
                self.release_instances(&name);
                // Recorded while the database exists, so the event keeps its account.
                self.event(
                    index,
                    at,
                    "database-deleted",
                    &name,
                    format!("Database {name} was deleted."),
                );
                self.databases.remove(&name);
                return;
            }
            // A failed create whose undo removed its volume gives back its port and slot; if
            // the undo failed, the instance record keeps them until a delete cleans up.
            (
                JobKind::CreateDatabase { .. } | JobKind::RestoreDatabase { .. },
                Outcome::Failed { undone: true, .. },
            ) => self.release_instances(&name),
            // Only the new instance went; the fenced one keeps its record until a delete.
            (JobKind::RecoverDatabase { .. }, Outcome::Failed { undone: true, .. }) => {
                let new = self.databases.get_mut(&name).map(|d| std::mem::take(&mut d.instances));
                for id in new.unwrap_or_default() {
                    self.instances.remove(&id);
                }
            }
            (JobKind::SnapshotDatabase { snapshot, .. }, outcome) => {
                let ok = *outcome == Outcome::Succeeded;
                self.conclude_snapshot(index, at, &name, snapshot, ok, true);
                return;
            }
            _ => {}
        }
        let endpoint = self.primary_endpoint(&name);
        let unhealthy = self.health_reason(&name);
        let Some(db) = self.databases.get_mut(&name) else {
            return;
        };
        db.operation = None;
        let (kind_name, message) = match (kind, outcome) {
            (JobKind::ModifyDatabase { .. }, Outcome::Failed { error, undone: true }) => {
                db.status = DatabaseStatus::Available;
                db.status_reason = unhealthy;
                db.endpoint = endpoint;
                (
                    "database-modify-rolled-back",
                    format!("Modifying database {name} failed ({error}); it was rolled back and runs with its previous settings."),
                )
            }
            (_, Outcome::Failed { error, undone }) => {
                let what = match kind {
                    JobKind::CreateDatabase { .. } | JobKind::RestoreDatabase { .. } if *undone => {
                        "creating it failed and what it made was removed; delete it, then create it again"
                    }
                    JobKind::DeleteDatabase { .. } => "deleting it failed; retry the delete",
                    JobKind::RecoverDatabase { .. } if *undone => {
                        "recovering it failed and the new instance was removed; `keel db recover` tries again"
                    }
                    JobKind::RecoverDatabase { .. } => {
                        "recovering it failed; `keel db recover` tries again, or delete it"
                    }
                    JobKind::PromoteReplica { .. } => {
                        "promoting the replica failed; delete this database (its source runs on without the replica)"
                    }
                    _ => "its instance may be in an unknown state; retry the modify, or delete it",
                };
                db.status = DatabaseStatus::Failed;
                db.status_reason = Some(format!("{error} ({what})"));
                db.endpoint = None;
                ("database-failed", format!("Database {name} failed: {error} ({what})."))
            }
            (
                JobKind::CreateDatabase { .. } | JobKind::RestoreDatabase { .. } | JobKind::PromoteReplica { .. },
                Outcome::Succeeded,
            ) => {
                db.status = DatabaseStatus::Available;
                db.endpoint = endpoint;
                let at_addr = db
                    .endpoint
                    .as_ref()
                    .map(|e| format!(" at {}:{}", e.addr, e.port))
                    .unwrap_or_default();
                ("database-available", format!("Database {name} is available{at_addr}."))
            }
            (JobKind::RecoverDatabase { .. }, Outcome::Succeeded) => {
                db.status = DatabaseStatus::Available;
                db.status_reason = unhealthy;
                db.endpoint = endpoint;
                if let Some(r) = db.last_recovery.as_mut() {
                    r.recovered_at_ms = at;
                }
                let message = self.recovered_message(&name);
                self.event(index, at, "database-recovered", &name, message);
                return;
            }
            (JobKind::ModifyDatabase { modification, .. }, Outcome::Succeeded) => {
                if let Some(class) = &modification.class {
                    db.spec.class = class.clone();
                }
                if let Some(gib) = modification.storage_gib {
                    db.spec.storage_gib = gib;
                }
                if let Some(w) = &modification.backup_window {
                    db.spec.backup_window = w.clone();
                }
                if let Some(w) = &modification.maintenance_window {
                    db.spec.maintenance_window = w.clone();
                }
                if let Some(v) = &modification.master_verifier {
                    db.master_verifier = v.clone();
                }
                if let Some(groups) = &modification.security_groups {
                    db.spec.security_groups = groups.clone();
                }
                if let Some(access) = &modification.access {
                    db.access = Some(access.clone());
                }
                if let Some(mode) = modification.recovery {
                    db.spec.recovery = mode;
                }
                if let Some(multi_az) = modification.multi_az {
                    db.spec.multi_az = multi_az;
                }
                // Leaving Multi-AZ destroyed the standby: its record (port, slot) goes too.
                if modification.multi_az == Some(false) {
                    let instances = &self.instances;
                    let gone: Vec<String> = db
                        .instances
                        .iter()
                        .filter(|id| instances.get(*id).is_some_and(|i| i.role == InstanceRole::Standby))
                        .cloned()
                        .collect();
                    db.instances.retain(|id| !gone.contains(id));
                    for id in gone {
                        self.instances.remove(&id);
                    }
                }
                db.status = DatabaseStatus::Available;
                db.status_reason = unhealthy;
                db.endpoint = endpoint;
                ("database-modified", format!("Database {name} was modified."))
            }
            _ => return,
        };
        self.event(index, at, kind_name, &name, message);
    }

    /// An operation on `name` ended and left it serving: at rest, available (with why its
    /// instances are unhealthy, if they are). Its short name, for the event, if it exists.
    pub(super) fn back_at_rest(&mut self, name: &str) -> Option<String> {
        let unhealthy = self.health_reason(name);
        let db = self.databases.get_mut(name)?;
        db.operation = None;
        db.status = DatabaseStatus::Available;
        db.status_reason = unhealthy;
        Some(db.name.clone())
    }

    /// Why the database is not healthy at rest, from what the monitor recorded of its instances.
    pub(super) fn health_reason(&self, name: &str) -> Option<String> {
        self.instances
            .values()
            .filter(|i| i.database == name && i.fenced_at.is_none())
            .find_map(|i| match &i.health {
                InstanceHealth::Healthy => None,
                InstanceHealth::Unhealthy { problem, .. } => {
                    Some(format!("instance {} on host {} is unhealthy: {problem}", i.id, i.host))
                }
            })
    }

    pub(super) fn primary_endpoint(&self, name: &str) -> Option<Endpoint> {
        let primary = self.primary_of(name)?;
        let host = self.hosts.get(&primary.host)?;
        Some(Endpoint {
            host: host.name.clone(),
            addr: host.ip().to_string(),
            port: primary.port,
        })
    }
}
