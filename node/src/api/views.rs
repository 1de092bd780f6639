//! What API clients see: view types defined at the edge, each converted from the
//! replicated records in one place. HTTP serialises them as JSON and documents them in
//! the generated OpenAPI document; gRPC converts each to its prost message
//! (`grpc_views.rs`). A record can change shape (a snapshot migration) without
//! changing these, and nothing internal (a verifier, a fence's request key) leaks.

use std::collections::BTreeMap;

use keel_raft_store as rs;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::server::peer::NodeStatus;

/// What the monitor last observed of a host manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostHealth {
    /// Not probed yet.
    Unknown,
    /// Answering health checks.
    Healthy,
    /// Failed several health checks in a row.
    Unreachable,
}

/// Capacity a host manager reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    /// Instances it can run.
    pub instance_slots: u32,
    /// Disk it can allocate to volumes, GiB.
    pub disk_gib: u64,
}

/// A data host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostView {
    /// Unique host name.
    pub name: String,
    /// host:port of its host manager.
    pub addr: String,
    /// Zone it is in.
    pub zone: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Last observed health.
    pub health: HostHealth,
    /// No new placements while set.
    pub draining: bool,
    /// Reported capacity.
    pub capacity: Capacity,
    /// When it was registered (Unix ms).
    pub added_at_ms: u64,
}

impl From<&rs::Host> for HostView {
    fn from(h: &rs::Host) -> Self {
        Self {
            name: h.name.clone(),
            addr: h.addr.clone(),
            zone: h.zone.clone(),
            labels: h.labels.clone(),
            health: match h.health {
                rs::HostHealth::Unknown => HostHealth::Unknown,
                rs::HostHealth::Healthy => HostHealth::Healthy,
                rs::HostHealth::Unreachable => HostHealth::Unreachable,
            },
            draining: h.draining,
            capacity: Capacity {
                instance_slots: h.capacity.instance_slots,
                disk_gib: h.capacity.disk_gib,
            },
            added_at_ms: h.added_at_ms,
        }
    }
}

/// A host and whether this call registered it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddHostResponse {
    /// The host.
    pub host: HostView,
    /// False when it already existed as asked.
    pub created: bool,
}

/// Lifecycle status of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseStatus {
    /// Being provisioned.
    Creating,
    /// Serving.
    Available,
    /// Applying a modification.
    Modifying,
    /// Taking a backup.
    BackingUp,
    /// Moving the primary.
    FailingOver,
    /// Replacing a failed instance.
    Recovering,
    /// Stopping to hibernate.
    Hibernating,
    /// Stopped, data kept.
    Hibernated,
    /// Starting from hibernation.
    Resuming,
    /// Being removed.
    Deleting,
    /// Serving, but writes fail until storage is grown or data deleted.
    StorageFull,
    /// Failed; see the reason.
    Failed,
}

impl From<rs::DatabaseStatus> for DatabaseStatus {
    fn from(s: rs::DatabaseStatus) -> Self {
        use rs::DatabaseStatus as R;
        match s {
            R::Creating => Self::Creating,
            R::Available => Self::Available,
            R::Modifying => Self::Modifying,
            R::BackingUp => Self::BackingUp,
            R::FailingOver => Self::FailingOver,
            R::Recovering => Self::Recovering,
            R::Hibernating => Self::Hibernating,
            R::Hibernated => Self::Hibernated,
            R::Resuming => Self::Resuming,
            R::Deleting => Self::Deleting,
            R::StorageFull => Self::StorageFull,
            R::Failed => Self::Failed,
        }
    }
}

/// What the customer asked a database to be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SpecView {
    /// Engine name, e.g. `postgres`.
    pub engine: String,
    /// Engine major version.
    pub engine_version: String,
    /// Instance class.
    pub class: String,
    /// Allocated storage, GiB.
    pub storage_gib: u32,
    /// Requested zone, if any.
    pub zone: Option<String>,
    /// Master user name.
    pub master_user: String,
    /// Customer tags.
    pub tags: BTreeMap<String, String>,
    /// Days of backups kept.
    pub backup_retention_days: u32,
    /// Minutes between automatic snapshots.
    pub snapshot_interval_min: u32,
    /// Daily backup window, `HH:MM-HH:MM` UTC.
    pub backup_window: String,
    /// Weekly maintenance window, `ddd:HH:MM-ddd:HH:MM` UTC.
    pub maintenance_window: String,
    /// Security groups (empty: the account's `default`).
    pub security_groups: Vec<String>,
    /// What happens when its instance or host fails.
    pub recovery: RecoveryModeView,
    /// What a lost host may cost of what was committed.
    pub backup_rpo: BackupRpoView,
    /// It keeps a synchronous standby in another zone.
    pub multi_az: bool,
}

/// What the continuous archive promises about commits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackupRpoView {
    /// Commits are acknowledged at once; the archive trails them by about a second.
    #[default]
    Lag,
    /// No commit is acknowledged before its WAL is in the zone's backup store (commits
    /// wait for the store, and stop while it is unreachable).
    Zero,
}

impl From<rs::BackupRpo> for BackupRpoView {
    fn from(r: rs::BackupRpo) -> Self {
        match r {
            rs::BackupRpo::Lag => Self::Lag,
            rs::BackupRpo::Zero => Self::Zero,
        }
    }
}

impl From<BackupRpoView> for rs::BackupRpo {
    fn from(r: BackupRpoView) -> Self {
        match r {
            BackupRpoView::Lag => Self::Lag,
            BackupRpoView::Zero => Self::Zero,
        }
    }
}

/// What the monitor does when a database's instance or host fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryModeView {
    /// Recover at once: a new instance on another host from the backups, same name.
    #[default]
    Automatic,
    /// Only raise an event; `keel db recover NAME` starts the recovery.
    Manual,
}

impl From<rs::RecoveryMode> for RecoveryModeView {
    fn from(m: rs::RecoveryMode) -> Self {
        match m {
            rs::RecoveryMode::Automatic => Self::Automatic,
            rs::RecoveryMode::Manual => Self::Manual,
        }
    }
}

impl From<RecoveryModeView> for rs::RecoveryMode {
    fn from(m: RecoveryModeView) -> Self {
        match m {
            RecoveryModeView::Automatic => Self::Automatic,
            RecoveryModeView::Manual => Self::Manual,
        }
    }
}

impl From<&rs::DatabaseSpec> for SpecView {
    fn from(s: &rs::DatabaseSpec) -> Self {
        Self {
            engine: s.engine.clone(),
            engine_version: s.engine_version.clone(),
            class: s.class.clone(),
            storage_gib: s.storage_gib,
            zone: s.zone.clone(),
            master_user: s.master_user.clone(),
            tags: s.tags.clone(),
            backup_retention_days: s.backup_retention_days,
            snapshot_interval_min: s.snapshot_interval_min(),
            backup_window: s.backup_window.clone(),
            maintenance_window: s.maintenance_window.clone(),
            security_groups: s.security_groups.clone(),
            recovery: s.recovery.into(),
            backup_rpo: s.backup_rpo.into(),
            multi_az: s.multi_az,
        }
    }
}

/// What a recovery did, and what it may have lost, as measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecoveryView {
    /// The recovery operation.
    pub operation_id: String,
    /// When the failed instance was last seen answering (Unix ms; 0: not known).
    pub last_seen_ms: u64,
    /// When the failure was declared (Unix ms).
    pub failed_at_ms: u64,
    /// The last replayed transaction's commit time (Unix ms): every commit up to it is kept.
    pub restored_to_ms: Option<u64>,
    /// When the database was available again (Unix ms; absent while recovering).
    pub recovered_at_ms: Option<u64>,
}

impl From<&rs::Recovery> for RecoveryView {
    fn from(r: &rs::Recovery) -> Self {
        Self {
            operation_id: r.job_id.clone(),
            last_seen_ms: r.last_seen_ms,
            failed_at_ms: r.failed_at_ms,
            restored_to_ms: r.restored_to_ms,
            recovered_at_ms: (r.recovered_at_ms > 0).then_some(r.recovered_at_ms),
        }
    }
}

/// Where a database is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EndpointView {
    /// Host name of the primary.
    pub host: String,
    /// Address of the primary's host.
    pub addr: String,
    /// Port, kept for the database's whole life.
    pub port: u16,
}

/// A change to a database's spec (only the fields given change).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ModificationView {
    /// New class.
    pub class: Option<String>,
    /// New storage, GiB.
    pub storage_gib: Option<u32>,
    /// New backup window.
    pub backup_window: Option<String>,
    /// New maintenance window.
    pub maintenance_window: Option<String>,
    /// Whether it sets a new master password (never shown).
    pub master_password: bool,
    /// New recovery mode.
    pub recovery: Option<RecoveryModeView>,
    /// Keep (or stop keeping) a synchronous standby in another zone.
    pub multi_az: Option<bool>,
}

impl From<&rs::Modification> for ModificationView {
    fn from(m: &rs::Modification) -> Self {
        Self {
            class: m.class.clone(),
            storage_gib: m.storage_gib,
            backup_window: m.backup_window.clone(),
            maintenance_window: m.maintenance_window.clone(),
            master_password: m.master_verifier.is_some(),
            recovery: m.recovery.map(Into::into),
            multi_az: m.multi_az,
        }
    }
}

/// The role of an instance in its database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceRole {
    /// Takes writes.
    Primary,
    /// Synchronous standby.
    Standby,
    /// Readable replica.
    Replica,
}

/// One instance as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceView {
    /// Instance id.
    pub id: String,
    /// Its role.
    pub role: InstanceRole,
    /// Host it runs on.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `healthy`, or `unhealthy: <what the monitor saw>`.
    pub health: String,
    /// A standby's replication, as its primary last reported it.
    pub replication: Option<ReplicationView>,
}

/// What adding a synchronous standby would do now, step by step, read from what runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StandbyPlanView {
    /// The steps in order: observe, provision, install, sync, replicate, record (or
    /// observe, nothing, when a standby is in sync already).
    pub steps: Vec<PlanStepView>,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlanStepView {
    /// Its name.
    pub step: String,
    /// What it does here.
    pub detail: String,
}

/// One failover of a Multi-AZ database, step by step (Unix ms; absent: not reached).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailoverView {
    /// The failover operation's id.
    pub id: String,
    /// Why it failed over.
    pub reason: String,
    /// A switchover someone asked for (not a failure).
    pub planned: bool,
    /// The fenced primary.
    pub from_instance: String,
    /// Its host.
    pub from_host: String,
    /// Its zone.
    pub from_zone: String,
    /// The promoted standby.
    pub to_instance: String,
    /// Its host.
    pub to_host: String,
    /// Its zone.
    pub to_zone: String,
    /// The generation the old primary was fenced at.
    pub generation: u64,
    /// When the old primary last answered the monitor (absent: not known).
    pub last_seen_ms: Option<u64>,
    /// When the monitor concluded the primary failed.
    pub detected_ms: u64,
    /// When the new generation, the fence and the name's move were committed (one entry).
    pub fenced_ms: u64,
    /// When the name moved to the new primary (with the fence).
    pub dns_moved_ms: u64,
    /// When the standby left recovery.
    pub promoted_ms: Option<u64>,
    /// When its promotion was committed.
    pub promotion_committed_ms: Option<u64>,
    /// The first write on the new primary the monitor saw stored.
    pub first_write_ms: Option<u64>,
    /// When the operation ended.
    pub finished_ms: Option<u64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl From<&rs::Failover> for FailoverView {
    fn from(f: &rs::Failover) -> Self {
        Self {
            id: f.id.clone(),
            reason: f.reason.clone(),
            planned: f.planned,
            from_instance: f.from_instance.clone(),
            from_host: f.from_host.clone(),
            from_zone: f.from_zone.clone(),
            to_instance: f.to_instance.clone(),
            to_host: f.to_host.clone(),
            to_zone: f.to_zone.clone(),
            generation: f.generation,
            last_seen_ms: (f.last_seen_ms > 0).then_some(f.last_seen_ms),
            detected_ms: f.detected_ms,
            fenced_ms: f.fenced_ms,
            dns_moved_ms: f.fenced_ms,
            promoted_ms: f.promoted_ms,
            promotion_committed_ms: f.promotion_committed_ms,
            first_write_ms: f.first_write_ms,
            finished_ms: f.finished_ms,
            error: f.error.clone(),
        }
    }
}

/// How a standby follows its primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicationView {
    /// `streaming`, `catchup`, `startup`, or `down` (no connection from it).
    pub state: String,
    /// Every commit waits for it.
    pub sync: bool,
    /// WAL bytes written on the primary it has not replayed.
    pub lag_bytes: u64,
    /// How far its replay trails the primary's commits, when measured (ms).
    pub replay_lag_ms: Option<u64>,
    /// When the monitor saw this (Unix ms).
    pub as_of_ms: u64,
}

impl From<&rs::Instance> for InstanceView {
    fn from(i: &rs::Instance) -> Self {
        Self {
            id: i.id.clone(),
            role: match i.role {
                rs::InstanceRole::Primary => InstanceRole::Primary,
                rs::InstanceRole::Standby => InstanceRole::Standby,
                rs::InstanceRole::Replica => InstanceRole::Replica,
            },
            host: i.host.clone(),
            port: i.port,
            health: match &i.health {
                rs::InstanceHealth::Healthy => "healthy".into(),
                rs::InstanceHealth::Unhealthy { problem, .. } => format!("unhealthy: {problem}"),
            },
            replication: i.replication.as_ref().map(|r| ReplicationView {
                state: r.state.clone(),
                sync: r.sync,
                lag_bytes: r.lag_bytes,
                replay_lag_ms: r.replay_lag_ms,
                as_of_ms: r.as_of_ms,
            }),
        }
    }
}

/// A database as the API shows it (never the password or its verifier).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseView {
    /// Name.
    pub name: String,
    /// The account that owns it.
    pub account: String,
    /// Lifecycle status.
    pub status: DatabaseStatus,
    /// Why it is not simply available, when it is not.
    pub status_reason: Option<String>,
    /// What was asked for.
    pub spec: SpecView,
    /// Where to connect.
    pub endpoint: Option<EndpointView>,
    /// Its instances.
    pub instances: Vec<InstanceView>,
    /// When it was created (Unix ms).
    pub created_at_ms: u64,
    /// The operation working on it.
    pub operation: Option<String>,
    /// A modification waiting for the maintenance window.
    pub pending: Option<ModificationView>,
    /// Client networks its instances allow now (`null`: any, made before security groups).
    pub access: Option<Vec<String>>,
    /// The times it can be restored to now (`null` until its first snapshot).
    pub restorable: Option<RestorableView>,
    /// What it was restored from, if it was.
    pub restored_from: Option<String>,
    /// Its latest recovery from a failed instance or host, if it had one.
    pub last_recovery: Option<RecoveryView>,
    /// The standby every commit waits for (the one a failover may promote), if any.
    pub sync_standby: Option<String>,
    /// A switchover waiting for the maintenance window: to this zone (cancel with DELETE
    /// /v1/databases/{name}/failover).
    pub pending_switchover_to: Option<String>,
}

/// The span of times a database can be restored to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestorableView {
    /// Earliest restorable time (Unix ms): the end of its oldest snapshot.
    pub earliest_ms: u64,
    /// Latest restorable time (Unix ms): every commit up to it is archived.
    pub latest_ms: u64,
}

/// Why a snapshot exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKindView {
    /// On the database's cadence.
    Automatic,
    /// Asked for by a user; kept until deleted.
    User,
    /// Taken at deletion; kept until deleted.
    Final,
}

/// A snapshot in the backup catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotView {
    /// Name, unique in its account.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// The database it is of (its name; it may have been deleted).
    pub database: String,
    /// Why it exists.
    pub kind: SnapshotKindView,
    /// `creating` or `available`.
    pub state: String,
    /// When it was asked for (Unix ms).
    pub requested_at_ms: u64,
    /// When the backup ended: restorable from then on (Unix ms; 0 while creating).
    pub taken_at_ms: u64,
    /// The engine timeline.
    pub timeline: u32,
    /// WAL position replay starts from.
    pub start_lsn: String,
    /// WAL position it is consistent at.
    pub end_lsn: String,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Zone of the store holding it.
    pub zone: String,
    /// `zone` (the data environment's store) or `control`.
    pub tier: String,
    /// Stored objects with their SHA-256.
    pub objects: Vec<BackupObjectView>,
    /// When its copy in the control environment's store was made (`null`: none yet).
    pub control_copied_at_ms: Option<u64>,
    /// How far the WAL copied with it reaches (Unix ms; `null`: no copy).
    pub control_wal_until_ms: Option<u64>,
}

/// One stored object of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupObjectView {
    /// Key in the store.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

impl From<&rs::Snapshot> for SnapshotView {
    fn from(s: &rs::Snapshot) -> Self {
        Self {
            name: s.name.clone(),
            account: s.account.clone(),
            database: s
                .database
                .split_once('.')
                .map_or(s.database.as_str(), |(n, _)| n)
                .to_string(),
            kind: match s.kind {
                rs::SnapshotKind::Automatic => SnapshotKindView::Automatic,
                rs::SnapshotKind::User => SnapshotKindView::User,
                rs::SnapshotKind::Final => SnapshotKindView::Final,
            },
            state: rs::wire_name(&s.state),
            requested_at_ms: s.requested_at_ms,
            taken_at_ms: s.taken_at_ms,
            timeline: s.timeline,
            start_lsn: s.start_lsn.clone(),
            end_lsn: s.end_lsn.clone(),
            size_bytes: s.size_bytes,
            zone: s.zone.clone(),
            tier: rs::wire_name(&s.tier),
            objects: s
                .objects
                .iter()
                .map(|o| BackupObjectView {
                    key: o.key.clone(),
                    size: o.size,
                    sha256: o.sha256.clone(),
                })
                .collect(),
            control_copied_at_ms: s.control.as_ref().map(|c| c.copied_at_ms),
            control_wal_until_ms: s.control.as_ref().map(|c| c.wal_until_ms),
        }
    }
}

impl DatabaseView {
    /// The view of `db`, with its instances looked up in `state`.
    pub fn of(db: &rs::Database, state: &rs::AdminState) -> Self {
        Self {
            name: db.name.clone(),
            account: db.account.clone(),
            status: db.status.into(),
            status_reason: db.status_reason.clone(),
            spec: (&db.spec).into(),
            endpoint: db.endpoint.as_ref().map(|e| EndpointView {
                host: e.host.clone(),
                addr: e.addr.clone(),
                port: e.port,
            }),
            instances: db
                .instances
                .iter()
                .filter_map(|id| state.instances.get(id))
                .map(InstanceView::from)
                .collect(),
            created_at_ms: db.created_at_ms,
            operation: db.operation.clone(),
            pending: db.pending.as_ref().map(ModificationView::from),
            access: db.access.clone(),
            restorable: state.restorable_window(&db.lineage()).map(|w| RestorableView {
                earliest_ms: w.earliest_ms,
                latest_ms: w.latest_ms,
            }),
            restored_from: db.restored_from.clone(),
            last_recovery: db.last_recovery.as_ref().map(RecoveryView::from),
            sync_standby: db.sync_standby.clone(),
            pending_switchover_to: db
                .pending_switchover
                .as_ref()
                .map(|p| p.to_zone.clone().unwrap_or_default()),
        }
    }
}

/// What a mutating database call returns: at once, with the operation to follow.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseOperation {
    /// The database as it now is.
    pub database: DatabaseView,
    /// The operation id (`keel ops describe`); absent when a modification waits for the maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The generated master password, returned only by the create call that generated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_password: Option<String>,
}

/// Where an operation or one of its tasks is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Progress {
    /// Not started.
    Pending,
    /// In progress.
    Running,
    /// Done.
    Succeeded,
    /// Gave up (an operation's `error` says why).
    Failed,
}

impl Progress {
    /// Whether it has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Progress::Succeeded | Progress::Failed)
    }
}

impl From<rs::JobState> for Progress {
    fn from(s: rs::JobState) -> Self {
        match s {
            rs::JobState::Pending => Progress::Pending,
            rs::JobState::Running => Progress::Running,
            rs::JobState::Succeeded => Progress::Succeeded,
            rs::JobState::Failed => Progress::Failed,
        }
    }
}

impl From<rs::StepState> for Progress {
    fn from(s: rs::StepState) -> Self {
        match s {
            rs::StepState::Pending => Progress::Pending,
            rs::StepState::Running => Progress::Running,
            rs::StepState::Succeeded => Progress::Succeeded,
            rs::StepState::Failed => Progress::Failed,
        }
    }
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// A diagnostic operation that touches no host.
    Noop,
    /// Create a database.
    CreateDatabase,
    /// Modify a database.
    ModifyDatabase,
    /// Delete a database.
    DeleteDatabase,
    /// Take a snapshot of a database.
    SnapshotDatabase,
    /// Make a database from another's backups.
    RestoreDatabase,
    /// Delete a snapshot.
    DeleteSnapshot,
    /// Copy a snapshot to the control environment's store.
    CopySnapshot,
    /// Replace a failed instance from the database's backups.
    RecoverDatabase,
    /// Build a Multi-AZ database's synchronous standby.
    AddStandby,
    /// Stop waiting for a Multi-AZ database's lost standby.
    ReleaseStandby,
    /// Fail a Multi-AZ database over to its synchronous standby.
    FailoverDatabase,
    /// Destroy a database's fenced instances and free their ports and slots.
    ReclaimFenced,
    /// Build (or rebuild) a read replica.
    AddReplica,
    /// Remove a read replica.
    RemoveReplica,
    /// Make a read replica a database of its own.
    PromoteReplica,
}

/// A committed claim of an operation by the leader services in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClaimView {
    /// The claiming services' fencing token.
    pub fence: u64,
    /// The Raft term they ran in.
    pub term: u64,
    /// The claiming control node.
    pub node_id: u64,
    /// When it claimed (Unix ms).
    pub at_ms: u64,
}

/// One step of an operation, performed by a host manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    /// Task id.
    pub id: String,
    /// What it does: provision, start, check, restart, configure, stop or destroy.
    pub action: String,
    /// Host it runs on.
    pub host: String,
    /// Instance it acts on.
    pub instance: String,
    /// Where it is.
    pub state: Progress,
    /// Attempts so far.
    pub attempt: u32,
    /// Outcome detail, or what it is waiting for.
    pub result: Option<String>,
    /// When the current attempt started (Unix ms).
    pub started_at_ms: Option<u64>,
    /// When it finished (Unix ms).
    pub finished_at_ms: Option<u64>,
    /// It undoes an earlier task after a failure.
    pub undo: bool,
}

impl From<&rs::Task> for TaskView {
    fn from(t: &rs::Task) -> Self {
        Self {
            id: t.id.clone(),
            action: t.action.name().to_string(),
            host: t.host.clone(),
            instance: t.instance.clone(),
            state: t.state.into(),
            attempt: t.attempt,
            result: t.result.clone(),
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
            undo: t.compensation,
        }
    }
}

/// An operation (a job on the replicated queue) with its tasks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OperationView {
    /// Operation id (time-ordered).
    pub id: String,
    /// What it does.
    pub kind: OperationKind,
    /// Where it is.
    pub state: Progress,
    /// The client's request id, for idempotent retries.
    pub request_id: Option<String>,
    /// The database it works on.
    pub database: Option<String>,
    /// What a modify changes.
    pub modification: Option<ModificationView>,
    /// How long a noop works.
    pub work_ms: Option<u64>,
    /// When it was submitted (Unix ms).
    pub submitted_at_ms: u64,
    /// When it finished (Unix ms).
    pub finished_at_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Every claim by leader services, in order.
    pub claims: Vec<ClaimView>,
    /// Fence of the claim that completed it.
    pub completed_fence: Option<u64>,
    /// Its tasks, once planned, in order.
    pub tasks: Vec<TaskView>,
}

impl OperationView {
    /// The view of `job` and its workflow.
    pub fn of(job: &rs::Job, workflow: Option<&rs::Workflow>) -> Self {
        let (kind, modification, work_ms) = match &job.kind {
            rs::JobKind::Noop { work_ms } => (OperationKind::Noop, None, Some(*work_ms)),
            rs::JobKind::CreateDatabase { .. } => (OperationKind::CreateDatabase, None, None),
            rs::JobKind::ModifyDatabase { modification, .. } => {
                (OperationKind::ModifyDatabase, Some(modification.into()), None)
            }
            rs::JobKind::DeleteDatabase { .. } => (OperationKind::DeleteDatabase, None, None),
            rs::JobKind::SnapshotDatabase { .. } => (OperationKind::SnapshotDatabase, None, None),
            rs::JobKind::RestoreDatabase { .. } => (OperationKind::RestoreDatabase, None, None),
            rs::JobKind::DeleteSnapshot { .. } => (OperationKind::DeleteSnapshot, None, None),
            rs::JobKind::CopySnapshot { .. } => (OperationKind::CopySnapshot, None, None),
            rs::JobKind::RecoverDatabase { .. } => (OperationKind::RecoverDatabase, None, None),
            rs::JobKind::AddStandby { .. } => (OperationKind::AddStandby, None, None),
            rs::JobKind::ReleaseStandby { .. } => (OperationKind::ReleaseStandby, None, None),
            rs::JobKind::FailoverDatabase { .. } => (OperationKind::FailoverDatabase, None, None),
            rs::JobKind::ReclaimFenced { .. } => (OperationKind::ReclaimFenced, None, None),
            rs::JobKind::AddReplica { .. } => (OperationKind::AddReplica, None, None),
            rs::JobKind::RemoveReplica { .. } => (OperationKind::RemoveReplica, None, None),
            rs::JobKind::PromoteReplica { .. } => (OperationKind::PromoteReplica, None, None),
        };
        Self {
            id: job.id.clone(),
            kind,
            state: job.state.into(),
            request_id: job.request_id.clone(),
            database: job.kind.database().map(str::to_string),
            modification,
            work_ms,
            submitted_at_ms: job.submitted_at_ms,
            finished_at_ms: job.finished_at_ms,
            error: job.error.clone(),
            claims: job
                .claims
                .iter()
                .map(|c| ClaimView {
                    fence: c.fence,
                    term: c.term,
                    node_id: c.node_id,
                    at_ms: c.at_ms,
                })
                .collect(),
            completed_fence: job.completed_fence,
            tasks: workflow
                .map(|w| w.tasks.iter().map(TaskView::from).collect())
                .unwrap_or_default(),
        }
    }
}

/// Something that happened, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Position in the event stream; page with `after`.
    pub seq: u64,
    /// When (Unix ms).
    pub at_ms: u64,
    /// What kind of thing happened, e.g. `database-available`.
    pub kind: String,
    /// What it happened to: a database, host or operation.
    pub subject: String,
    /// A sentence for people.
    pub message: String,
}

impl From<&rs::Event> for EventView {
    fn from(e: &rs::Event) -> Self {
        Self {
            seq: e.seq,
            at_ms: e.at_ms,
            kind: e.kind.clone(),
            subject: e.subject.clone(),
            message: e.message.clone(),
        }
    }
}

/// How far one member's log matches the leader's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Matched {
    /// Member id.
    pub node_id: u64,
    /// Highest log index known to match.
    pub index: u64,
}

/// One control node's own view of itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NodeStatusView {
    /// Node id.
    pub id: u64,
    /// leader, follower, candidate or learner.
    pub role: String,
    /// Current Raft term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// Last log index.
    pub last_log_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Last snapshot's index.
    pub snapshot_index: u64,
    /// Last purged index.
    pub purged_index: u64,
    /// Snapshots installed from a leader since it started.
    pub snapshots_installed: u64,
    /// On the leader: matched index per member.
    pub replication: Vec<Matched>,
    /// On the leader: ms since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// The term of the leader services running on this node, if any.
    pub leader_services_term: Option<u64>,
}

impl From<NodeStatus> for NodeStatusView {
    fn from(s: NodeStatus) -> Self {
        Self {
            id: s.id,
            role: s.role,
            term: s.term,
            leader: s.leader,
            last_log_index: s.last_log_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            snapshots_installed: s.snapshots_installed,
            replication: s
                .replication
                .into_iter()
                .map(|(node_id, index)| Matched { node_id, index })
                .collect(),
            millis_since_quorum_ack: s.millis_since_quorum_ack,
            leader_services_term: s.leader_services_term,
        }
    }
}

/// One member as `cluster status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    /// Node id.
    pub id: u64,
    /// Internal (Raft) address.
    pub raft_addr: String,
    /// Public API address.
    pub api_addr: String,
    /// A voter, or a learner still catching up.
    pub voter: bool,
    /// Its own view, when it answered.
    pub status: Option<NodeStatusView>,
    /// Entries behind the leader's log, as the leader sees it.
    pub lag: Option<u64>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// Which node runs the leader services, since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LeaderServicesView {
    /// The leader.
    pub node_id: u64,
    /// Its term.
    pub term: u64,
    /// The services' fencing token: greater for every later start.
    pub fence: u64,
    /// When they started (Unix ms).
    pub since_ms: u64,
}

impl From<&rs::LeaderServices> for LeaderServicesView {
    fn from(l: &rs::LeaderServices) -> Self {
        Self {
            node_id: l.node_id,
            term: l.term,
            fence: l.fence,
            since_ms: l.since_ms,
        }
    }
}

/// The whole control cluster as seen through one node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatusView {
    /// Cluster name.
    pub cluster_name: String,
    /// Current leader.
    pub leader: Option<u64>,
    /// Highest term any member reported.
    pub term: u64,
    /// Every member.
    pub members: Vec<MemberView>,
    /// Who runs the leader services, since when.
    pub leader_services: Option<LeaderServicesView>,
}
