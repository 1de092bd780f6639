//! Database operations of the service layer: validation, SCRAM verifiers, views.

use std::collections::BTreeMap;

use keel_raft_store::{Command, DatabaseSpec, Modification, Response};
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::ApiError;
use super::service::Api;
use super::validate;
use super::views::{
    BackupRpoView, DatabaseOperation, DatabaseView, EventView, FailoverView, OperationView, PlanStepView,
    RecoveryModeView, StandbyPlanView,
};
use super::whole;
use crate::classes;
use crate::window::Window;

/// Engines Keel can run, with their versions.
pub const ENGINES: [(&str, &str); 1] = [("postgres", "15")];

/// `db create` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatabaseRequest {
    /// Database name (a DNS label).
    pub name: String,
    /// Engine (`postgres`).
    pub engine: String,
    /// Engine version (default: the engine's only version).
    #[serde(default)]
    pub engine_version: Option<String>,
    /// Instance class.
    pub class: String,
    /// Allocated storage, GiB.
    #[serde(deserialize_with = "whole::number")]
    pub storage_gib: u32,
    /// Zone to place it in (default: least loaded).
    #[serde(default)]
    pub zone: Option<String>,
    /// Master user name.
    pub master_user: String,
    /// Master password; omit to have one generated and returned once.
    #[serde(default)]
    pub master_password: Option<String>,
    /// Days of backups to keep (default 7).
    #[serde(default, deserialize_with = "whole::optional")]
    pub backup_retention_days: Option<u32>,
    /// Daily backup window `HH:MM-HH:MM` (UTC; default 03:00-04:00).
    #[serde(default)]
    pub backup_window: Option<String>,
    /// Weekly maintenance window `ddd:HH:MM-ddd:HH:MM` (UTC; default sun:04:00-sun:05:00).
    #[serde(default)]
    pub maintenance_window: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Retry id: the same id within its retention answers the first call's operation.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The account to create it in (admins only; default: the caller's).
    #[serde(default)]
    pub account: Option<String>,
    /// Security groups whose networks may connect (default: the account's `default`).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Minutes between automatic snapshots (default 15).
    #[serde(default, deserialize_with = "whole::optional")]
    pub snapshot_interval_min: Option<u32>,
    /// `automatic` (default: a failed instance or host is replaced from the backups at
    /// once) or `manual` (an event only; `keel db recover` starts it).
    #[serde(default)]
    pub recovery: Option<RecoveryModeView>,
    /// `lag` (default: the archive trails commits by about a second) or `zero` (no
    /// commit is acknowledged before its WAL is in the zone's backup store).
    #[serde(default)]
    pub backup_rpo: Option<BackupRpoView>,
    /// Keep a synchronous standby in another zone, built from the backups once the
    /// database is available (needs a backup retention above 0).
    #[serde(default)]
    pub multi_az: bool,
}

/// The backup RPO a gRPC request names (empty: none given).
pub fn backup_rpo(text: &str) -> Result<Option<BackupRpoView>, ApiError> {
    match text {
        "" => Ok(None),
        "lag" => Ok(Some(BackupRpoView::Lag)),
        "zero" => Ok(Some(BackupRpoView::Zero)),
        other => Err(ApiError::InvalidArgument(format!(
            "backup RPO {other:?} is not one: use lag or zero"
        ))),
    }
}

/// The recovery mode a gRPC request names (empty: none given).
pub fn recovery_mode(text: &str) -> Result<Option<RecoveryModeView>, ApiError> {
    match text {
        "" => Ok(None),
        "automatic" => Ok(Some(RecoveryModeView::Automatic)),
        "manual" => Ok(Some(RecoveryModeView::Manual)),
        other => Err(ApiError::InvalidArgument(format!(
            "recovery mode {other:?} is not one: use automatic or manual"
        ))),
    }
}

/// `db failover` input: a switchover to the standby, now or in the maintenance window.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchoverRequest {
    /// The zone the primary is to move to (the standby's); refused if the standby is elsewhere.
    pub to_zone: Option<String>,
    /// Wait for the database's maintenance window instead of switching over now.
    pub in_maintenance_window: bool,
    /// Retry id.
    pub request_id: Option<String>,
}

/// The shortest interval between automatic snapshots, in minutes.
pub const SNAPSHOT_INTERVAL_MIN: u32 = 1;

/// `db modify` input: at least one change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModifyDatabaseRequest {
    /// New class.
    pub class: Option<String>,
    /// New storage, GiB (grow only).
    #[serde(deserialize_with = "whole::optional")]
    pub storage_gib: Option<u32>,
    /// New backup window.
    pub backup_window: Option<String>,
    /// New maintenance window.
    pub maintenance_window: Option<String>,
    /// Apply now rather than in the maintenance window.
    pub apply_immediately: bool,
    /// Retry id.
    pub request_id: Option<String>,
    /// New master password (only its SCRAM verifier travels on); applied at once, with
    /// everything else in the call.
    pub master_password: Option<String>,
    /// Generate a new master password, set it, and return it once.
    pub rotate_master_password: bool,
    /// New security groups (replacing the list); applied at once.
    pub security_groups: Option<Vec<String>>,
    /// New recovery mode; applied at once.
    pub recovery: Option<RecoveryModeView>,
    /// Keep (true) or stop keeping (false) a synchronous standby in another zone; applied
    /// at once (the standby is built or removed right after).
    pub multi_az: Option<bool>,
}

/// Group names as given, each a DNS label, at most 10.
fn group_names(names: &[String]) -> Result<(), ApiError> {
    if names.len() > 10 {
        return Err(ApiError::InvalidArgument(
            "at most 10 security groups per database".into(),
        ));
    }
    names
        .iter()
        .try_for_each(|n| validate::dns_label("security group name", n))
}

fn master_user(name: &str) -> Result<(), ApiError> {
    if crate::host::engine::reserved_user(name) {
        return Err(ApiError::InvalidArgument(format!(
            "master user {name:?} is reserved (postgres and names starting with pg_ are the engine's own); choose another name"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.starts_with("pg_");
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "master user {name:?} is not valid: use 1-63 lowercase letters, digits or '_', starting with a letter or '_', not 'pg_'"
        )))
    }
}

fn password(p: &str) -> Result<(), ApiError> {
    if (8..=128).contains(&p.chars().count()) && p.chars().all(|c| !c.is_control()) {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(
            "master password must be 8-128 characters with no control characters".into(),
        ))
    }
}

fn window(what: &str, w: &str, weekly: bool) -> Result<(), ApiError> {
    let parsed = if weekly { Window::weekly(w) } else { Window::daily(w) };
    parsed
        .map(drop)
        .map_err(|e| ApiError::InvalidArgument(format!("{what}: {e}")))
}

pub(crate) fn class(name: &str) -> Result<(), ApiError> {
    classes::lookup(name).map(|_| ()).ok_or_else(|| {
        let names: Vec<&str> = classes::CLASSES.iter().map(|c| c.name).collect();
        ApiError::InvalidArgument(format!(
            "unknown instance class {name:?}; classes: {}",
            names.join(", ")
        ))
    })
}

/// Events a page holds unless asked otherwise.
pub const EVENTS_PAGE: usize = 1_000;
/// The most a page of events may hold.
pub const EVENTS_PAGE_MAX: usize = 10_000;

/// Storage Keel allocates, GiB.
pub const STORAGE_GIB: std::ops::RangeInclusive<u32> = 1..=16_384;

pub(crate) fn storage(gib: u32) -> Result<(), ApiError> {
    if STORAGE_GIB.contains(&gib) {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "storage {gib} GiB is out of range: use {} to {} GiB",
            STORAGE_GIB.start(),
            STORAGE_GIB.end()
        )))
    }
}

impl Api {
    pub(crate) fn database_reply(
        &self,
        r: Response,
        master_password: Option<String>,
        our_job: Option<&str>,
    ) -> Result<DatabaseOperation, ApiError> {
        match r {
            Response::Database { database, job, .. } => {
                let view = self.node.state.read(|a| DatabaseView::of(&database, &a.state));
                // The password generated for this call was set only if the operation is this
                // call's (the routing layer may have applied the same proposal twice); a
                // client's retry answers an earlier call's operation, whose password was
                // shown to that call only.
                let ours = our_job.is_some_and(|id| id == job.id);
                Ok(DatabaseOperation {
                    database: view,
                    operation_id: Some(job.id),
                    master_password: master_password.filter(|_| ours),
                })
            }
            Response::Deferred { database } => {
                let view = self.node.state.read(|a| DatabaseView::of(&database, &a.state));
                Ok(DatabaseOperation {
                    database: view,
                    operation_id: None,
                    master_password,
                })
            }
            Response::Rejected { rejection } => Err(rejection.into()),
            other => Err(ApiError::Internal(format!(
                "unexpected result from the store: {other:?}"
            ))),
        }
    }

    /// Create a database: returns at once with the operation id.
    pub async fn create_database(
        &self,
        who: &Principal,
        req: CreateDatabaseRequest,
    ) -> Result<DatabaseOperation, ApiError> {
        validate::dns_label("database name", &req.name)?;
        let account = match req.account {
            Some(a) if a != who.account => {
                validate::dns_label("account", &a)?;
                if !who.sees(&a) {
                    return Err(ApiError::PermissionDenied(format!(
                        "a member of account {} creates databases only in its own account",
                        who.account
                    )));
                }
                a
            }
            _ => who.account.clone(),
        };
        let Some((engine, version)) = ENGINES.iter().find(|(e, _)| *e == req.engine) else {
            return Err(ApiError::InvalidArgument(format!(
                "unknown engine {:?}; engines: {}",
                req.engine,
                ENGINES.iter().map(|(e, _)| *e).collect::<Vec<_>>().join(", ")
            )));
        };
        if let Some(v) = req.engine_version.as_deref().filter(|v| v != version) {
            return Err(ApiError::InvalidArgument(format!(
                "{engine} version {v:?} is not offered; versions: {version}"
            )));
        }
        class(&req.class)?;
        storage(req.storage_gib)?;
        if let Some(zone) = &req.zone {
            validate::dns_label("zone", zone)?;
        }
        master_user(&req.master_user)?;
        let retention = req.backup_retention_days.unwrap_or(7);
        if retention > 35 {
            return Err(ApiError::InvalidArgument(format!(
                "backup retention {retention} days is out of range: use 0 to 35"
            )));
        }
        if retention == 0 && req.backup_rpo == Some(BackupRpoView::Zero) {
            return Err(ApiError::InvalidArgument(
                "backup RPO zero needs backups: give a backup retention of 1 to 35 days".into(),
            ));
        }
        if retention == 0 && req.multi_az {
            return Err(ApiError::InvalidArgument(
                "a Multi-AZ database's standby is built from its backups: give a backup retention of 1 to 35 days"
                    .into(),
            ));
        }
        if let Some(m) = req
            .snapshot_interval_min
            .filter(|m| !(SNAPSHOT_INTERVAL_MIN..=1440).contains(m))
        {
            return Err(ApiError::InvalidArgument(format!(
                "snapshot interval {m} minutes is out of range: use {SNAPSHOT_INTERVAL_MIN} to 1440"
            )));
        }
        let backup_window = req.backup_window.unwrap_or_else(|| "03:00-04:00".into());
        window("backup window", &backup_window, false)?;
        let maintenance_window = req.maintenance_window.unwrap_or_else(|| "sun:04:00-sun:05:00".into());
        window("maintenance window", &maintenance_window, true)?;
        validate::labels(&req.tags)?;
        validate::request_id(req.request_id.as_deref())?;
        group_names(&req.security_groups)?;
        let generated = req.master_password.is_none();
        let password_text = match req.master_password {
            Some(p) => {
                password(&p)?;
                p
            }
            None => Alphanumeric.sample_string(&mut rand::thread_rng(), 24),
        };
        // Only the salted SCRAM verifier travels on: through Raft, to the host, into PostgreSQL.
        let master_verifier = postgres_protocol::password::scram_sha_256(password_text.as_bytes());
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let spec = DatabaseSpec {
            engine: engine.to_string(),
            engine_version: version.to_string(),
            class: req.class,
            storage_gib: req.storage_gib,
            zone: req.zone,
            master_user: req.master_user,
            tags: req.tags,
            backup_retention_days: retention,
            backup_window,
            maintenance_window,
            security_groups: req.security_groups,
            snapshot_interval_min: req.snapshot_interval_min,
            recovery: req.recovery.unwrap_or_default().into(),
            backup_rpo: req.backup_rpo.unwrap_or_default().into(),
            multi_az: req.multi_az,
        };
        let fingerprint = serde_json::json!({
            "kind": "create-database",
            "name": req.name,
            "account": account,
            "spec": spec,
            "master_password_given": !generated,
        });
        let request = self.request_key(req.request_id, &job_id, fingerprint);
        let ours = job_id.clone();
        let command = Command::CreateDatabase {
            job_id,
            request: Some(request),
            name: req.name,
            account,
            spec,
            master_verifier,
            instance_id: uuid::Uuid::now_v7().simple().to_string(),
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, generated.then_some(password_text), Some(&ours))
    }

    /// Modify a database.
    pub async fn modify_database(
        &self,
        who: &Principal,
        name: &str,
        req: ModifyDatabaseRequest,
    ) -> Result<DatabaseOperation, ApiError> {
        // The key is in the caller's account (or an admin's choice): another account's
        // database cannot be named, and the store says "does not exist" for a missing one
        // (a retried delete of a deleted one answers its operation).
        let key = key_of(who, name)?;
        let name = key.as_str();
        if let Some(c) = &req.class {
            class(c)?;
        }
        if let Some(g) = req.storage_gib {
            storage(g)?;
        }
        if let Some(w) = &req.backup_window {
            window("backup window", w, false)?;
        }
        if let Some(w) = &req.maintenance_window {
            window("maintenance window", w, true)?;
        }
        validate::request_id(req.request_id.as_deref())?;
        let new_password = match (req.master_password, req.rotate_master_password) {
            (Some(_), true) => {
                return Err(ApiError::InvalidArgument(
                    "give a new master password or ask for a generated one (--rotate-master-password), not both".into(),
                ))
            }
            (Some(p), false) => {
                password(&p)?;
                Some((p, false))
            }
            (None, true) => Some((Alphanumeric.sample_string(&mut rand::thread_rng(), 24), true)),
            (None, false) => None,
        };
        if let Some(groups) = &req.security_groups {
            group_names(groups)?;
        }
        // The networks the new groups allow, as of now; the scheduler corrects any drift
        // a concurrent change of a group causes.
        let access = match req.security_groups.clone() {
            Some(groups) => {
                let account = key.rsplit_once('.').map_or(who.account.clone(), |(_, a)| a.to_string());
                Some(self.node.read(move |s| s.access_of(&account, &groups)).await?)
            }
            None => None,
        };
        let modification = Modification {
            security_groups: req.security_groups,
            access,
            class: req.class,
            storage_gib: req.storage_gib,
            backup_window: req.backup_window,
            maintenance_window: req.maintenance_window,
            // Only the salted verifier goes on: through Raft, to the host, into PostgreSQL.
            master_verifier: new_password
                .as_ref()
                .map(|(p, _)| postgres_protocol::password::scram_sha_256(p.as_bytes())),
            recovery: req.recovery.map(Into::into),
            multi_az: req.multi_az,
        };
        if modification == Modification::default() {
            return Err(ApiError::InvalidArgument(
                "nothing to modify: give --class, --storage-gib, --backup-window, --maintenance-window, --master-password, --rotate-master-password, --security-groups, --recovery or --multi-az".into(),
            ));
        }
        // Windows change no instance, so they always apply at once; class and storage wait
        // for the maintenance window unless asked otherwise. A new password applies at
        // once, and so does everything else asked for in the same call.
        let touches_instances = modification.class.is_some() || modification.storage_gib.is_some();
        if touches_instances && !req.apply_immediately && new_password.is_none() {
            let r = self
                .commit(
                    who,
                    Command::DeferModification {
                        name: name.into(),
                        modification,
                    },
                )
                .await?;
            return self.database_reply(r, None, None);
        }
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        // The verifier is salted afresh on every call: a retry is recognised by everything
        // else, and by whether a password was given (never by the password).
        let fingerprint = serde_json::json!({
            "kind": "modify-database",
            "name": name,
            "modification": Modification { master_verifier: None, ..modification.clone() },
            "master_password_given": new_password.is_some(),
        });
        let request = self.request_key(req.request_id, &job_id, fingerprint);
        let ours = job_id.clone();
        let r = self
            .commit(
                who,
                Command::ModifyDatabase {
                    job_id,
                    request: Some(request),
                    name: name.into(),
                    modification,
                },
            )
            .await?;
        let generated = new_password.filter(|(_, generated)| *generated).map(|(p, _)| p);
        self.database_reply(r, generated, Some(&ours))
    }

    /// Delete a database.
    pub async fn delete_database(
        &self,
        who: &Principal,
        name: &str,
        request_id: Option<String>,
        final_snapshot: Option<String>,
    ) -> Result<DatabaseOperation, ApiError> {
        if let Some(s) = &final_snapshot {
            validate::dns_label("final snapshot name", s)?;
        }
        // The key is in the caller's account (or an admin's choice): another account's
        // database cannot be named, and the store says "does not exist" for a missing one
        // (a retried delete of a deleted one answers its operation).
        let key = key_of(who, name)?;
        let name = key.as_str();
        validate::request_id(request_id.as_deref())?;
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint =
            serde_json::json!({"kind": "delete-database", "name": name, "final_snapshot": final_snapshot});
        let request = self.request_key(request_id, &job_id, fingerprint);
        let r = self
            .commit(
                who,
                Command::DeleteDatabase {
                    job_id,
                    request: Some(request),
                    name: name.into(),
                    final_snapshot,
                },
            )
            .await?;
        self.database_reply(r, None, None)
    }

    /// Recover a database whose instance or host failed (or whose last recovery failed):
    /// a new instance on another host, restored from its backups to the latest
    /// restorable time, under the same name; the old instance is fenced.
    pub async fn recover_database(
        &self,
        who: &Principal,
        name: &str,
        request_id: Option<String>,
    ) -> Result<DatabaseOperation, ApiError> {
        let key = key_of(who, name)?;
        validate::request_id(request_id.as_deref())?;
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({"kind": "recover-database", "name": key});
        let request = self.request_key(request_id, &job_id, fingerprint);
        let command = Command::RecoverDatabase {
            job_id,
            request: Some(request),
            name: key,
            instance_id: uuid::Uuid::now_v7().simple().to_string(),
            reason: format!("recovery asked for with token {}", who.token_id),
            last_seen_ms: 0,
            automatic: false,
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, None, None)
    }

    /// The caller's databases (an admin's: every account's).
    pub async fn list_databases(&self, who: &Principal) -> Result<Vec<DatabaseView>, ApiError> {
        let who = who.clone();
        self.node
            .read(move |s| {
                s.databases
                    .values()
                    .filter(|d| who.sees(&d.account))
                    .map(|d| DatabaseView::of(d, s))
                    .collect()
            })
            .await
    }

    /// One of the caller's databases.
    pub async fn describe_database(&self, who: &Principal, name: &str) -> Result<DatabaseView, ApiError> {
        let key = key_of(who, name)?;
        self.node
            .read(|s| s.databases.get(&key).map(|d| DatabaseView::of(d, s)))
            .await?
            .ok_or_else(|| missing(name))
    }

    /// Switch a Multi-AZ database over to its standby, now or in its maintenance window.
    pub async fn switchover(
        &self,
        who: &Principal,
        name: &str,
        req: SwitchoverRequest,
    ) -> Result<DatabaseOperation, ApiError> {
        let key = key_of(who, name)?;
        validate::request_id(req.request_id.as_deref())?;
        if let Some(zone) = &req.to_zone {
            validate::dns_label("to_zone", zone)?;
        }
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({"kind": "switchover", "name": key, "to_zone": req.to_zone, "in_maintenance_window": req.in_maintenance_window});
        let request = self.request_key(req.request_id, &job_id, fingerprint);
        let command = Command::Switchover {
            job_id,
            request: Some(request),
            name: key,
            to_zone: req.to_zone,
            in_maintenance_window: req.in_maintenance_window,
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, None, None)
    }

    /// Cancel a switchover waiting for the maintenance window.
    pub async fn cancel_switchover(&self, who: &Principal, name: &str) -> Result<DatabaseOperation, ApiError> {
        let key = key_of(who, name)?;
        let r = self.commit(who, Command::CancelSwitchover { name: key }).await?;
        self.database_reply(r, None, None)
    }

    /// What adding a synchronous standby to a database would do now (nothing is changed).
    pub async fn standby_plan(&self, who: &Principal, name: &str) -> Result<StandbyPlanView, ApiError> {
        let key = key_of(who, name)?;
        let plan = self
            .node
            .read(|s| {
                s.databases
                    .contains_key(&key)
                    .then(|| crate::leader::planner::standby_plan(s, &key))
            })
            .await?
            .ok_or_else(|| missing(name))?
            .map_err(ApiError::Conflict)?;
        Ok(StandbyPlanView {
            steps: plan
                .into_iter()
                .map(|p| PlanStepView {
                    step: p.step.to_string(),
                    detail: p.detail,
                })
                .collect(),
        })
    }

    /// A database's failovers, oldest first.
    pub async fn failovers(&self, who: &Principal, name: &str) -> Result<Vec<FailoverView>, ApiError> {
        let key = key_of(who, name)?;
        self.node
            .read(|s| {
                s.databases
                    .contains_key(&key)
                    .then(|| s.failovers_of(&key).map(FailoverView::from).collect())
            })
            .await?
            .ok_or_else(|| missing(name))
    }

    /// One of the caller's operations, with its workflow.
    pub async fn describe_operation(&self, who: &Principal, id: &str) -> Result<OperationView, ApiError> {
        let who = who.clone();
        self.node
            .read(|s| {
                s.jobs
                    .get(id)
                    .filter(|job| who.sees(&job.account))
                    .map(|job| OperationView::of(job, s.workflow_of(id)))
            })
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("operation {id:?} does not exist; `keel ops list` shows them")))
    }

    /// Events after `after` (a sequence number), optionally for one database, oldest first.
    pub async fn events(
        &self,
        who: &Principal,
        db: Option<&str>,
        after: u64,
        limit: Option<usize>,
    ) -> Result<Vec<EventView>, ApiError> {
        let limit = limit.unwrap_or(EVENTS_PAGE);
        if !(1..=EVENTS_PAGE_MAX).contains(&limit) {
            return Err(ApiError::InvalidArgument(format!(
                "limit {limit} is out of range: ask for 1 to {EVENTS_PAGE_MAX} events a page"
            )));
        }
        let db = db.map(|d| key_of(who, d)).transpose()?;
        let account = who.scope();
        self.node
            .read(move |s| {
                s.events_page(account.as_deref(), db.as_deref(), after, limit)
                    .iter()
                    .map(EventView::from)
                    .collect()
            })
            .await
    }
}

/// The same answer for a database that does not exist and one the caller may not see.
pub(crate) fn missing(name: &str) -> ApiError {
    ApiError::NotFound(format!("database {name:?} does not exist; `keel db list` shows them"))
}

/// The store key of a database reference as `who` means it: `<name>` is in the caller's
/// own account, `<name>.<account>` in that account (another account's is "not found"
/// unless the caller is an admin).
pub fn key_of(who: &Principal, reference: &str) -> Result<String, ApiError> {
    let (name, account) = account_ref(who, "database name", reference).map_err(|e| match e {
        ApiError::NotFound(_) => missing(reference),
        other => other,
    })?;
    Ok(keel_raft_store::database_key(name, account))
}

/// `(name, account)` of a per-account resource's reference as `who` means it: `<name>` is
/// in the caller's own account, `<name>.<account>` in that one; another account's is
/// "not found" unless the caller is an admin. `what` names the part for messages.
pub fn account_ref<'a>(who: &'a Principal, what: &str, reference: &'a str) -> Result<(&'a str, &'a str), ApiError> {
    let (name, account) = reference.split_once('.').unwrap_or((reference, who.account.as_str()));
    validate::dns_label(what, name)?;
    validate::dns_label("account", account)?;
    if !who.sees(account) {
        return Err(ApiError::NotFound(format!("{reference} does not exist")));
    }
    Ok((name, account))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_users_and_passwords() {
        assert!(window("w", "02:00-03:00", false).is_ok());
        assert!(window("w", "sun:04:00-sun:05:00", true).is_ok());
        for bad in ["2:00-3:00", "24:00-01:00", "02:00", "sun:04:00-sun:05:00"] {
            assert!(window("w", bad, false).is_err(), "{bad}");
        }
        assert!(window("w", "funday:04:00-sun:05:00", true).is_err());
        assert!(master_user("app_owner").is_ok());
        for bad in ["", "App", "1app", "pg_admin", "a-b", "postgres"] {
            assert!(master_user(bad).is_err(), "{bad}");
        }
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
        assert!(class("tiny")
            .unwrap_err()
            .to_string()
            .contains("micro, small, medium, large"));
        assert!(storage(0).is_err() && storage(20_000).is_err() && storage(10).is_ok());
    }
}
