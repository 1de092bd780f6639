//! Snapshots and restores: the operations shared by both protocols. A restore is
//! checked against the source's restorable window here and again when it is applied,
//! before any work starts.

use keel_raft_store::{database_key, timefmt, Command, Response, RestoreSource, RestoreTarget, SnapshotKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::databases::{account_ref, class, key_of, storage};
use super::error::ApiError;
use super::service::{unexpected, Api};
use super::validate;
use super::views::{DatabaseOperation, OperationView, SnapshotView};

/// `db snapshot` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The snapshot's name, unique in the account (a DNS label).
    pub snapshot: String,
    /// Retry id.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `db restore` input: exactly one of `time`, `latest` or `snapshot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The new database's name.
    pub to: String,
    /// Restore every transaction committed at or before this time (RFC 3339).
    #[serde(default)]
    pub time: Option<String>,
    /// Restore as far as the archive reaches.
    #[serde(default)]
    pub latest: bool,
    /// Restore this snapshot as it was taken.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Instance class (default: the source's).
    #[serde(default)]
    pub class: Option<String>,
    /// Storage, GiB (default: the source's; never less).
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub storage_gib: Option<u32>,
    /// Zone (default: any).
    #[serde(default)]
    pub zone: Option<String>,
    /// Copies of the backups updated within this many minutes of the newest count as
    /// equally fresh, and the nearest to the new database's zone serves (default 15).
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub prefer_near_within_min: Option<u32>,
    /// Retry id.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `db clone` input: a restore whose defaults come from the source, to a time or (by
/// default) the latest restorable time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloneRequest {
    /// The clone's name.
    pub to: String,
    /// The source as it was at this time (RFC 3339; default: the latest restorable time).
    #[serde(default)]
    pub time: Option<String>,
    /// Instance class (default: the source's).
    #[serde(default)]
    pub class: Option<String>,
    /// Storage, GiB (default: the source's; never less).
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub storage_gib: Option<u32>,
    /// Zone (default: any).
    #[serde(default)]
    pub zone: Option<String>,
    /// As for a restore (default 15 minutes).
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub prefer_near_within_min: Option<u32>,
    /// Retry id.
    #[serde(default)]
    pub request_id: Option<String>,
}

impl From<CloneRequest> for RestoreRequest {
    fn from(c: CloneRequest) -> Self {
        RestoreRequest {
            to: c.to,
            latest: c.time.is_none(),
            time: c.time,
            snapshot: None,
            class: c.class,
            storage_gib: c.storage_gib,
            zone: c.zone,
            prefer_near_within_min: c.prefer_near_within_min,
            request_id: c.request_id,
        }
    }
}

/// The longest `prefer_near_within_min` (a day).
pub const PREFER_NEAR_WITHIN_MAX_MIN: u32 = 1440;

impl Api {
    /// Take a user snapshot of a database.
    pub async fn snapshot_database(
        &self,
        who: &Principal,
        name: &str,
        req: SnapshotRequest,
    ) -> Result<DatabaseOperation, ApiError> {
        let key = key_of(who, name)?;
        validate::dns_label("snapshot name", &req.snapshot)?;
        validate::request_id(req.request_id.as_deref())?;
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({"kind": "snapshot-database", "name": key, "snapshot": req.snapshot});
        let request = self.request_key(req.request_id, &job_id, fingerprint);
        let command = Command::SnapshotDatabase {
            job_id,
            request: Some(request),
            name: key,
            snapshot: req.snapshot,
            kind: SnapshotKind::User,
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, None, None)
    }

    /// The caller's snapshots (an admin's: every account's), optionally of one database.
    pub async fn list_snapshots(&self, who: &Principal, db: Option<&str>) -> Result<Vec<SnapshotView>, ApiError> {
        let db = db.map(|d| key_of(who, d)).transpose()?;
        let who = who.clone();
        self.node
            .read(move |s| {
                let mut list: Vec<SnapshotView> = s
                    .snapshots
                    .values()
                    .filter(|snap| who.sees(&snap.account))
                    .filter(|snap| db.as_ref().is_none_or(|d| &snap.database == d))
                    .map(SnapshotView::from)
                    .collect();
                list.sort_by_key(|v| v.requested_at_ms);
                list
            })
            .await
    }

    /// One of the caller's snapshots.
    pub async fn describe_snapshot(&self, who: &Principal, name: &str) -> Result<SnapshotView, ApiError> {
        let (snap, account) = account_ref(who, "snapshot name", name).map_err(|_| missing(name))?;
        let key = database_key(snap, account);
        self.node
            .read(move |s| s.snapshots.get(&key).map(SnapshotView::from))
            .await?
            .ok_or_else(|| missing(name))
    }

    /// Delete one of the caller's snapshots (its objects leave the store).
    pub async fn delete_snapshot(
        &self,
        who: &Principal,
        name: &str,
        request_id: Option<String>,
    ) -> Result<OperationView, ApiError> {
        let (snap, account) = account_ref(who, "snapshot name", name).map_err(|_| missing(name))?;
        let key = database_key(snap, account);
        validate::request_id(request_id.as_deref())?;
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({"kind": "delete-snapshot", "snapshot": key});
        let request = self.request_key(request_id, &job_id, fingerprint);
        let command = Command::DeleteSnapshot {
            job_id,
            request: Some(request),
            snapshot: key,
        };
        match self.commit(who, command).await? {
            Response::Job { job, .. } => Ok(OperationView::of(&job, None)),
            Response::Rejected {
                rejection: keel_raft_store::Rejection::NotFound { .. },
            } => Err(missing(name)),
            Response::Rejected { rejection } => Err(rejection.into()),
            other => Err(unexpected(other)),
        }
    }

    /// Make a new database from `source`'s backups.
    pub async fn restore_database(
        &self,
        who: &Principal,
        source: &str,
        req: RestoreRequest,
    ) -> Result<DatabaseOperation, ApiError> {
        let source_key = key_of(who, source)?;
        validate::dns_label("database name", &req.to)?;
        validate::request_id(req.request_id.as_deref())?;
        let target = match (&req.time, req.latest, &req.snapshot) {
            (Some(t), false, None) => RestoreTarget::Time {
                at_ms: timefmt::parse(t).ok_or_else(|| {
                    ApiError::InvalidArgument(format!(
                        "time {t:?} is not an RFC 3339 time such as 2026-11-30T16:00:05Z"
                    ))
                })?,
            },
            (None, true, None) => RestoreTarget::Latest,
            (None, false, Some(_)) => RestoreTarget::Snapshot,
            _ => {
                return Err(ApiError::InvalidArgument(
                    "give exactly one of time, latest or snapshot".into(),
                ))
            }
        };
        if let Some(c) = &req.class {
            class(c)?;
        }
        if let Some(g) = req.storage_gib {
            storage(g)?;
        }
        if let Some(z) = &req.zone {
            validate::dns_label("zone", z)?;
        }
        if let Some(m) = req.prefer_near_within_min.filter(|m| *m > PREFER_NEAR_WITHIN_MAX_MIN) {
            return Err(ApiError::InvalidArgument(format!(
                "prefer_near_within_min {m} is out of range: use 0 to {PREFER_NEAR_WITHIN_MAX_MIN}"
            )));
        }
        let named = match &req.snapshot {
            Some(s) => {
                let (snap, account) = account_ref(who, "snapshot name", s).map_err(|_| missing(s))?;
                Some(database_key(snap, account))
            }
            None => None,
        };
        let planned = self
            .node
            .read({
                let (source_key, target, named) = (source_key.clone(), target.clone(), named.clone());
                move |s| -> Result<_, ApiError> {
                    // The source: a database of the caller's, or one deleted within its
                    // retention, through its newest snapshot (which kept its spec).
                    let (lineage, spec, verifier, account) = match s.databases.get(&source_key) {
                        Some(db) => (
                            db.lineage(),
                            db.spec.clone(),
                            db.master_verifier.clone(),
                            db.account.clone(),
                        ),
                        None => {
                            let last = s
                                .snapshots
                                .values()
                                .filter(|x| x.database == source_key && x.spec.is_some())
                                .filter(|x| x.state == keel_raft_store::SnapshotState::Available)
                                .max_by_key(|x| x.taken_at_ms)
                                .ok_or_else(|| {
                                    ApiError::NotFound(format!(
                                        "database {source_key:?} does not exist and has no backups left; `keel db list` and `keel snapshots list` show what does"
                                    ))
                                })?;
                            (
                                last.lineage.clone(),
                                last.spec.clone().unwrap_or_default(),
                                last.master_verifier.clone(),
                                last.account.clone(),
                            )
                        }
                    };
                    let base = s
                        .restore_base(&lineage, &source_key, &target, named.as_deref())
                        .map_err(ApiError::Conflict)?;
                    if named.is_some() && base.lineage != lineage {
                        return Err(ApiError::InvalidArgument(format!(
                            "snapshot {} is of {}, not of {source_key}",
                            base.name, base.database
                        )));
                    }
                    let snapshot = base.key();
                    Ok((lineage, spec, verifier, account, snapshot))
                }
            })
            .await??;
        let (lineage, mut spec, master_verifier, account, snapshot) = planned;
        if let Some(g) = req.storage_gib {
            if g < spec.storage_gib {
                return Err(ApiError::InvalidArgument(format!(
                    "storage can only grow: the source has {} GiB, asked for {g} GiB",
                    spec.storage_gib
                )));
            }
            spec.storage_gib = g;
        }
        if let Some(c) = req.class {
            spec.class = c;
        }
        spec.zone = req.zone;
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({
            "kind": "restore-database", "source": source_key, "to": req.to,
            "target": target, "spec": spec,
        });
        let request = self.request_key(req.request_id, &job_id, fingerprint);
        let command = Command::RestoreDatabase {
            job_id,
            request: Some(request),
            name: req.to,
            account,
            spec,
            master_verifier,
            instance_id: uuid::Uuid::now_v7().simple().to_string(),
            from: RestoreSource {
                database: source_key,
                lineage,
                snapshot,
                target,
                prefer_near_within_ms: req.prefer_near_within_min.map(|m| u64::from(m) * 60_000),
            },
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, None, None)
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "snapshot {name:?} does not exist; `keel snapshots list` shows them"
    ))
}
