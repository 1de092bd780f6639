//! The typed tables of the admin store. Every record is serde with defaults so
//! a newer node reads what an older one wrote.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The name a unit enum variant has on the wire (its serde name, e.g. `"available"`).
pub fn wire_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch, stamped by the proposer.
pub type Millis = u64;

/// The cluster's own configuration, written once at bootstrap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterConfig {
    /// Name every node of this cluster is configured with.
    pub name: String,
    /// When the cluster was initialised.
    pub created_at_ms: Millis,
}

/// A tenant: owns databases and their operations and events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Account {
    /// Unique account name (a DNS label).
    pub name: String,
    /// When it was created.
    pub created_at_ms: Millis,
    /// Its own throttling limits, where an admin set them (else the cluster's defaults).
    pub limits: Limits,
}

/// An account's throttling limits; `None` is the cluster's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// API calls per second, per control node.
    pub requests_per_second: Option<u32>,
    /// API calls allowed in a burst above the rate.
    pub burst: Option<u32>,
    /// Heavy workflows (creates; later restores and clones) running at once; more wait.
    pub heavy_workflows: Option<u32>,
}

/// The account of the cluster's operators; the bootstrap token belongs to it.
pub const ADMIN_ACCOUNT: &str = "admin";

/// Account names that would clash with the zone's own names (`<host>.hosts`, `ns<N>.ns`).
pub const RESERVED_ACCOUNTS: [&str; 2] = ["hosts", "ns"];

/// A database's key in the store and its name in DNS: `<name>.<account>`. Names are
/// unique per account, so two accounts may each have `orders`.
pub fn database_key(name: &str, account: &str) -> String {
    format!("{name}.{account}")
}

/// What a token's holder may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Its own account's databases, operations and events.
    #[default]
    Member,
    /// The cluster, hosts, accounts and tokens, and every account's resources.
    Admin,
}

/// Who made an API call: carried by its proposal into the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Actor {
    /// The token used.
    pub token_id: String,
    /// The token's account.
    pub account: String,
    /// The token's role.
    pub role: Role,
    /// The client's address, as the API node saw it.
    pub source: Option<String>,
}

/// One audited API call that reached the store: who, what, on what, and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditRecord {
    /// Position in the audit log (dense, from 1).
    pub seq: u64,
    /// When (the proposer's clock).
    pub at_ms: Millis,
    /// Who.
    pub actor: Actor,
    /// What, e.g. `create-database`.
    pub action: String,
    /// On what: a database, host, account, token or operation.
    pub target: String,
    /// The account whose resource it was (the actor's for cluster-wide calls).
    pub target_account: String,
    /// The client's request id or retry token, if any.
    pub request_id: Option<String>,
    /// `ok`, or the refusal.
    pub outcome: String,
}

/// An API token. The secret is shown once, at creation; only its SHA-256 is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Token {
    /// Public id (the part of the token before its secret).
    pub id: String,
    /// What it is for, for people.
    pub name: String,
    /// The account it acts for.
    pub account: String,
    /// What it may do.
    pub role: Role,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// When it was created.
    pub created_at_ms: Millis,
    /// When it stops working, if ever.
    pub expires_at_ms: Option<Millis>,
    /// When it was last used, to the nearest minute or so (recorded in batches).
    pub last_used_ms: Option<Millis>,
}

impl Token {
    /// Whether the token has expired at `at`.
    pub fn expired(&self, at: Millis) -> bool {
        self.expires_at_ms.is_some_and(|e| at >= e)
    }
}

/// What the monitor last observed of a host manager.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostHealth {
    /// Not probed yet.
    #[default]
    Unknown,
    /// Answering health checks.
    Healthy,
    /// Failed K consecutive health checks.
    Unreachable,
}

/// Capacity a host manager reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostCapacity {
    /// Instances it can run.
    pub instance_slots: u32,
    /// Disk it can allocate to volumes.
    pub disk_gib: u64,
    /// The engine version its host manager reports running (observed, not configured).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub engine_version: String,
}

/// A data host, registered by the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    /// Unique host name.
    pub name: String,
    /// host:port of its host manager.
    pub addr: String,
    /// Zone (data centre) it is in.
    pub zone: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Last observed health.
    pub health: HostHealth,
    /// No new placements while set.
    pub draining: bool,
    /// Reported capacity.
    pub capacity: HostCapacity,
    /// When it was registered.
    pub added_at_ms: Millis,
}

impl Host {
    /// The address its databases listen on: its host manager's, without the port.
    pub fn ip(&self) -> &str {
        self.addr.rsplit_once(':').map_or(self.addr.as_str(), |(ip, _)| ip)
    }
}

/// Lifecycle status of a database (shared/PRODUCT.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseStatus {
    /// Being provisioned.
    #[default]
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
    /// Serving, but its storage is full: writes fail until storage is grown or data deleted.
    StorageFull,
    /// Failed; see the reason.
    Failed,
}

/// What the customer asked a database to be.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSpec {
    /// Engine name, e.g. `postgres`.
    pub engine: String,
    /// Engine major version.
    pub engine_version: String,
    /// Instance class.
    pub class: String,
    /// Allocated storage.
    pub storage_gib: u32,
    /// Requested zone, if any.
    pub zone: Option<String>,
    /// Master user name.
    pub master_user: String,
    /// Customer tags.
    pub tags: BTreeMap<String, String>,
    /// Days of backups kept.
    pub backup_retention_days: u32,
    /// Daily backup window, `HH:MM-HH:MM` UTC.
    pub backup_window: String,
    /// Weekly maintenance window, `ddd:HH:MM-ddd:HH:MM` UTC.
    pub maintenance_window: String,
    /// Security groups (names in the account) whose CIDRs may connect; empty means
    /// the account's `default` group.
    pub security_groups: Vec<String>,
    /// Minutes between automatic snapshots (`None`: [`DEFAULT_SNAPSHOT_INTERVAL_MIN`]).
    pub snapshot_interval_min: Option<u32>,
    /// What happens when its instance or host fails.
    pub recovery: RecoveryMode,
    /// How much a lost host may cost of what was committed.
    pub backup_rpo: BackupRpo,
    /// A synchronous standby in another zone (built by the scheduler from the latest
    /// snapshot and the archive once the database is available and has one).
    pub multi_az: bool,
}

/// What the continuous archive promises about commits (`--backup-rpo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupRpo {
    /// Commits are acknowledged at once; the archive trails them by about a second.
    #[default]
    Lag,
    /// No commit is acknowledged before its WAL is in the zone's store.
    Zero,
}

/// What the monitor does when a database's instance or its host fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryMode {
    /// Recover at once: a new instance on another host from the backups, same name.
    #[default]
    Automatic,
    /// Only raise an event; `keel db recover NAME` starts the recovery.
    Manual,
}

/// Minutes between automatic snapshots unless a database says otherwise.
pub const DEFAULT_SNAPSHOT_INTERVAL_MIN: u32 = 15;

impl DatabaseSpec {
    /// Minutes between automatic snapshots.
    pub fn snapshot_interval_min(&self) -> u32 {
        self.snapshot_interval_min.unwrap_or(DEFAULT_SNAPSHOT_INTERVAL_MIN)
    }
}

/// Where a database is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// Host name of the primary.
    pub host: String,
    /// Address of the primary's host.
    pub addr: String,
    /// Port, kept for the database's whole life.
    pub port: u16,
}

/// A switchover asked for in the maintenance window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PendingSwitchover {
    /// The zone the primary is to move to (its standby's), if one was named.
    pub to_zone: Option<String>,
    /// When it was asked for.
    pub requested_at_ms: Millis,
}

/// One failover (or switchover) of a Multi-AZ database, step by step, as data: each
/// time is when that step was committed or observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Failover {
    /// The failover job's id.
    pub id: String,
    /// The database.
    pub database: String,
    /// Why (what the monitor and the standby saw).
    pub reason: String,
    /// The fenced primary, its host and zone.
    pub from_instance: String,
    /// Host of the fenced primary.
    pub from_host: String,
    /// Zone of the fenced primary.
    pub from_zone: String,
    /// The promoted standby, its host and zone.
    pub to_instance: String,
    /// Host of the promoted standby.
    pub to_host: String,
    /// Zone of the promoted standby.
    pub to_zone: String,
    /// The generation the failover fenced the old primary at.
    pub generation: u64,
    /// A switchover someone asked for (not a failure).
    pub planned: bool,
    /// When the old primary (or its host) last answered the monitor (0: not known).
    pub last_seen_ms: Millis,
    /// When the monitor concluded the primary failed.
    pub detected_ms: Millis,
    /// When the new generation, the fence and the name's move were committed (one entry).
    pub fenced_ms: Millis,
    /// When the standby reported itself promoted (its host's clock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promoted_ms: Option<Millis>,
    /// When the promotion was committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_committed_ms: Option<Millis>,
    /// The first write on the new primary the monitor saw stored (its archive's heartbeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_write_ms: Option<Millis>,
    /// When the failover job ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<Millis>,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A customer database: desired spec and what is known to run, kept apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Database {
    /// Name (a DNS label), unique in its account.
    pub name: String,
    /// The account that owns it.
    pub account: String,
    /// Desired spec.
    pub spec: DatabaseSpec,
    /// Lifecycle status.
    pub status: DatabaseStatus,
    /// Why it failed, when it did.
    pub status_reason: Option<String>,
    /// Current endpoint.
    pub endpoint: Option<Endpoint>,
    /// Its instances.
    pub instances: Vec<String>,
    /// Fencing generation, bumped before any promote or endpoint move.
    pub generation: u64,
    /// When it was created.
    pub created_at_ms: Millis,
    /// The operation (job id) working on it now; others are refused until it ends.
    pub operation: Option<String>,
    /// A modification waiting for the maintenance window.
    pub pending: Option<Modification>,
    /// The master password's SCRAM-SHA-256 verifier (never the password itself).
    pub master_verifier: String,
    /// Client CIDRs in force on its instances (`None`: made before security groups, open).
    pub access: Option<Vec<String>>,
    /// Where its backups are kept in the stores: fixed at creation, so a later database
    /// of the same name never mixes with this one's WAL ("" for databases made before
    /// backups: they use their key).
    pub lineage: String,
    /// The lineages recoveries replaced, oldest first (a recovery that failed before the
    /// new lineage's first snapshot is retried from them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier_lineages: Vec<String>,
    /// Its latest recovery from a failed instance or host, once one finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_recovery: Option<Recovery>,
    /// The standby the primary waits for on every commit, recorded only once the primary
    /// does (so every acknowledged commit is on it): the one instance a failover may promote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_standby: Option<String>,
    /// A switchover waiting for the maintenance window, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_switchover: Option<PendingSwitchover>,
    /// What it was restored from, for people (`orders.acme at 2026-…`).
    pub restored_from: Option<String>,
}

/// What a recovery did, and what it may have lost, as measured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recovery {
    /// The recovery job.
    pub job_id: String,
    /// When the failed instance was last seen answering (0: not known).
    pub last_seen_ms: Millis,
    /// When the failure was declared (the recovery began).
    pub failed_at_ms: Millis,
    /// The time of the last transaction the new instance replayed (`None`: replay found
    /// no transaction to report).
    pub restored_to_ms: Option<Millis>,
    /// When the database was available again.
    pub recovered_at_ms: Millis,
}

impl Recovery {
    /// Commits after `restored_to_ms` up to the failure are lost: at most this long of them
    /// (up to when the failure was declared), at least the part before the last good probe.
    pub fn lost_window_ms(&self) -> (Millis, Millis) {
        let Some(to) = self.restored_to_ms else {
            return (0, 0);
        };
        (
            self.last_seen_ms.saturating_sub(to),
            self.failed_at_ms.saturating_sub(to),
        )
    }
}

/// The group every database of an account is in unless it names others.
pub const DEFAULT_SECURITY_GROUP: &str = "default";

/// What an account's `default` group allows until an admin or member changes it: clients
/// on the database host itself (loopback), nothing from the network.
pub const DEFAULT_GROUP_CIDRS: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// Client addresses allowed to connect to an account's databases (RDS's DB security group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityGroup {
    /// Name, unique in the account.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// Allowed client networks, canonical CIDRs (`10.0.0.0/8`).
    pub cidrs: std::collections::BTreeSet<String>,
    /// When it was created.
    pub created_at_ms: Millis,
}

impl SecurityGroup {
    /// The `default` group of `account` as it is before anyone changes it.
    pub fn initial_default(account: &str) -> Self {
        Self {
            name: DEFAULT_SECURITY_GROUP.into(),
            account: account.into(),
            cidrs: DEFAULT_GROUP_CIDRS.iter().map(|c| c.to_string()).collect(),
            created_at_ms: 0,
        }
    }
}

impl Database {
    /// Serving with no operation working on it: what the monitor and the scheduler act on.
    pub fn at_rest(&self) -> bool {
        self.operation.is_none() && matches!(self.status, DatabaseStatus::Available | DatabaseStatus::StorageFull)
    }

    /// Its key in the store and name in DNS (see [`database_key`]).
    pub fn key(&self) -> String {
        database_key(&self.name, &self.account)
    }

    /// Its backups' prefix in the stores.
    pub fn lineage(&self) -> String {
        if self.lineage.is_empty() {
            self.key()
        } else {
            self.lineage.clone()
        }
    }
}

/// A change to a database's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Modification {
    /// New class.
    pub class: Option<String>,
    /// New storage (grow only).
    pub storage_gib: Option<u32>,
    /// New backup window.
    pub backup_window: Option<String>,
    /// New maintenance window.
    pub maintenance_window: Option<String>,
    /// New master password, as its SCRAM-SHA-256 verifier (never the password itself).
    pub master_verifier: Option<String>,
    /// New security groups.
    pub security_groups: Option<Vec<String>>,
    /// Client CIDRs to put in force on the instances (the proposer resolves the groups).
    pub access: Option<Vec<String>>,
    /// New recovery mode.
    pub recovery: Option<RecoveryMode>,
    /// Keep (or stop keeping) a synchronous standby in another zone.
    pub multi_az: Option<bool>,
}

/// The role of an instance in its database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceRole {
    /// Takes writes.
    #[default]
    Primary,
    /// Synchronous standby.
    Standby,
    /// Readable replica.
    Replica,
}

/// One running engine process of a database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Instance {
    /// Unique id.
    pub id: String,
    /// Database it belongs to.
    pub database: String,
    /// Role.
    pub role: InstanceRole,
    /// Host it runs on.
    pub host: String,
    /// Port on that host.
    pub port: u16,
    /// When it was placed.
    pub created_at_ms: Millis,
    /// What the monitor last concluded of its engine (only while its database is at rest).
    pub health: InstanceHealth,
    /// Set when a recovery replaced it: the database's generation from then on. Its host
    /// refuses to start it again or run anything on it but a destroy, and nothing points
    /// at it; the record stays (holding its port and slot) until the volume is destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced_at: Option<u64>,
    /// A standby's replication as the monitor last relayed it from its primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
    /// A read replica's: the lineage it was built from, once built. It serves readers
    /// only while that is its database's lineage (a failover starts a new one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

/// How a standby follows its primary, as the primary reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Replication {
    /// `streaming`, `catchup`, `startup`… as the primary's walsender reports it; `down`
    /// when the primary has no connection from it.
    pub state: String,
    /// The primary waits for it on every commit (`sync_state = sync`).
    pub sync: bool,
    /// WAL bytes the primary has written that it has not replayed yet.
    pub lag_bytes: u64,
    /// How long its replay trails the primary's commits (when the primary measured it).
    pub replay_lag_ms: Option<u64>,
    /// When the monitor saw this.
    pub as_of_ms: Millis,
}

/// The monitor's verdict on an instance's engine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum InstanceHealth {
    /// Not judged yet, or answering SQL.
    #[default]
    Healthy,
    /// Failed its health probes several times in a row.
    Unhealthy {
        /// What the last probe saw.
        problem: String,
        /// Since when.
        since_ms: Millis,
    },
}

/// What a job asks the leader to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum JobKind {
    /// A diagnostic job: the leader works on it for `work_ms` and completes it.
    /// It exercises the queue, claims and takeover without touching a host.
    Noop {
        /// How long the work takes.
        #[serde(default)]
        work_ms: u64,
    },
    /// Provision a database's first instance and make it available.
    CreateDatabase {
        /// The database.
        database: String,
    },
    /// Apply a modification to a database.
    ModifyDatabase {
        /// The database.
        database: String,
        /// What changes.
        modification: Modification,
    },
    /// Stop and remove a database and everything it holds.
    DeleteDatabase {
        /// The database.
        database: String,
        /// A final snapshot taken first (its catalog key), kept until deleted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        final_snapshot: Option<String>,
    },
    /// Remove a snapshot's objects (and WAL no snapshot needs any more) from its store.
    DeleteSnapshot {
        /// The snapshot's catalog key.
        snapshot: String,
    },
    /// Copy a snapshot and its lineage's WAL to the control environment's store (daily).
    CopySnapshot {
        /// The snapshot's catalog key.
        snapshot: String,
    },
    /// Take a snapshot of a database into its zone's store.
    SnapshotDatabase {
        /// The database.
        database: String,
        /// The snapshot's catalog key.
        snapshot: String,
    },
    /// Replace a failed instance: fence it, restore a new one elsewhere from the
    /// database's backups to the latest restorable time, move the name.
    RecoverDatabase {
        /// The database.
        database: String,
        /// Where its data comes from (its own backups, latest).
        from: crate::catalog::RestoreSource,
        /// The failed instance it replaces (fenced), if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
        /// When the failed instance was last seen answering (0: not known).
        #[serde(default)]
        last_seen_ms: Millis,
        /// When the failure was declared.
        #[serde(default)]
        failed_at_ms: Millis,
    },
    /// Build a synchronous standby for a Multi-AZ database from its latest snapshot and
    /// archive, start it streaming from the primary, and make the primary wait for it.
    AddStandby {
        /// The database.
        database: String,
        /// The new standby instance.
        standby: String,
    },
    /// Stop waiting for a Multi-AZ database's lost synchronous standby: committed (with
    /// a new generation, the standby fenced) before its primary is told.
    ReleaseStandby {
        /// The database.
        database: String,
        /// The standby released.
        standby: String,
    },
    /// Fail a Multi-AZ database over to its synchronous standby: committed (a new
    /// generation, the old primary fenced, the name moved) before the standby is promoted.
    FailoverDatabase {
        /// The database.
        database: String,
        /// The fenced primary.
        from: String,
        /// The standby being promoted.
        to: String,
        /// A switchover someone asked for: the old primary is stopped before the standby
        /// is promoted.
        #[serde(default)]
        planned: bool,
    },
    /// Destroy a database's fenced instances (a failed-over primary, a released standby)
    /// on hosts that answer, and drop their records: their ports, slots and disk go back.
    ReclaimFenced {
        /// The database.
        database: String,
        /// The fenced instances.
        instances: Vec<String>,
    },
    /// Build a read replica from the database's latest snapshot and archive and start it
    /// streaming from the primary (with `replaces`: in place of one that followed an
    /// earlier lineage, fenced by the same apply).
    AddReplica {
        /// The database.
        database: String,
        /// The new replica instance.
        replica: String,
        /// The stale replica it replaces, if a rebuild.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
        /// The lineage it is built from (the database's when queued): a build a failover
        /// overtook follows a lineage the database left, and is not recorded as serving.
        #[serde(default)]
        lineage: String,
    },
    /// Drop a removed (fenced) replica's slot on the primary and destroy it.
    RemoveReplica {
        /// The database.
        database: String,
        /// The replica.
        replica: String,
    },
    /// Make a read replica a stand-alone database: cut off from its source's primary,
    /// promoted, its own lineage.
    PromoteReplica {
        /// The new database (the replica's record moved to it).
        database: String,
        /// The database it replicated.
        source: String,
        /// The replica instance.
        replica: String,
    },
    /// Make a new database from another's backups.
    RestoreDatabase {
        /// The new database.
        database: String,
        /// Where its data comes from.
        from: crate::catalog::RestoreSource,
    },
}

impl JobKind {
    /// Whether the job is a heavy workflow, counted against its account's cap.
    pub fn is_heavy(&self) -> bool {
        // A recovery is not counted: the system starts it, and a cap must never hold it back.
        matches!(self, JobKind::CreateDatabase { .. } | JobKind::RestoreDatabase { .. })
    }

    /// Short name shown in listings.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Noop { .. } => "noop",
            JobKind::CreateDatabase { .. } => "create-database",
            JobKind::ModifyDatabase { .. } => "modify-database",
            JobKind::DeleteDatabase { .. } => "delete-database",
            JobKind::DeleteSnapshot { .. } => "delete-snapshot",
            JobKind::CopySnapshot { .. } => "copy-snapshot",
            JobKind::SnapshotDatabase { .. } => "snapshot-database",
            JobKind::RestoreDatabase { .. } => "restore-database",
            JobKind::RecoverDatabase { .. } => "recover-database",
            JobKind::AddStandby { .. } => "add-standby",
            JobKind::ReleaseStandby { .. } => "release-standby",
            JobKind::FailoverDatabase { .. } => "failover-database",
            JobKind::ReclaimFenced { .. } => "reclaim-fenced",
            JobKind::AddReplica { .. } => "add-replica",
            JobKind::RemoveReplica { .. } => "remove-replica",
            JobKind::PromoteReplica { .. } => "promote-replica",
        }
    }

    /// The database the job is about, if any.
    pub fn database(&self) -> Option<&str> {
        match self {
            JobKind::Noop { .. } | JobKind::DeleteSnapshot { .. } | JobKind::CopySnapshot { .. } => None,
            JobKind::CreateDatabase { database }
            | JobKind::ModifyDatabase { database, .. }
            | JobKind::DeleteDatabase { database, .. }
            | JobKind::SnapshotDatabase { database, .. }
            | JobKind::RestoreDatabase { database, .. }
            | JobKind::RecoverDatabase { database, .. }
            | JobKind::AddStandby { database, .. }
            | JobKind::ReleaseStandby { database, .. }
            | JobKind::FailoverDatabase { database, .. }
            | JobKind::ReclaimFenced { database, .. }
            | JobKind::AddReplica { database, .. }
            | JobKind::RemoveReplica { database, .. }
            | JobKind::PromoteReplica { database, .. } => Some(database),
        }
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    /// Waiting for the sweeper.
    #[default]
    Pending,
    /// A leader has claimed it and is running it.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
}

impl JobState {
    /// Whether the job is finished.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// A committed claim of a job by the leader services in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Claim {
    /// The claiming services' fencing token ([`LeaderServices::fence`]).
    pub fence: u64,
    /// The Raft term they ran in.
    pub term: u64,
    /// The claiming leader.
    pub node_id: u64,
    /// When it claimed.
    pub at_ms: Millis,
}

/// A client's request id, as a mutating command carries it: the id names one request
/// (the AWS/Stripe idempotency-key rule) for `retention_ms` after its first use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestKey {
    /// The client's id.
    pub id: String,
    /// What the request is (kind, target and parameters, never a secret), so a reuse of the
    /// id for a different request is recognised.
    pub fingerprint: String,
    /// How long the id stays bound to its request, stamped by the proposer from its config.
    pub retention_ms: u64,
}

/// What a request id is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestRecord {
    /// The operation it made.
    pub job_id: String,
    /// The request's fingerprint.
    pub fingerprint: String,
    /// For people: e.g. `create-database orders`.
    pub what: String,
    /// When it was first used.
    pub at_ms: Millis,
    /// How long it stays bound.
    pub retention_ms: u64,
}

impl RequestRecord {
    /// Whether the binding has lapsed at `at` (the id may then name a new request).
    pub fn expired(&self, at: Millis) -> bool {
        at.saturating_sub(self.at_ms) > self.retention_ms
    }
}

/// A request on the replicated queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id (time-ordered).
    pub id: String,
    /// The client's request id, for idempotent retries.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The account whose database it works on ("" for the cluster's own jobs).
    #[serde(default)]
    pub account: String,
    /// What to do.
    pub kind: JobKind,
    /// Where it is.
    #[serde(default)]
    pub state: JobState,
    /// When it was submitted.
    #[serde(default)]
    pub submitted_at_ms: Millis,
    /// Every claim, in order; fences strictly increase.
    #[serde(default)]
    pub claims: Vec<Claim>,
    /// Fence of the claim that completed it.
    #[serde(default)]
    pub completed_fence: Option<u64>,
    /// When it finished.
    #[serde(default)]
    pub finished_at_ms: Option<Millis>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl Job {
    /// The claim in force, if any.
    pub fn current_claim(&self) -> Option<&Claim> {
        self.claims.last()
    }
}

/// State of a workflow or task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Not started.
    #[default]
    Pending,
    /// In progress.
    Running,
    /// Done.
    Succeeded,
    /// Gave up.
    Failed,
}

/// What a task does: the one list of actions, shared by the planner, the workflow
/// engine, the host client and the host service (`keel.host.v1.TaskAction` on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskAction {
    /// Create the volume, data directory and master user.
    #[default]
    Provision,
    /// Start the engine.
    Start,
    /// Observe that the instance accepts SQL connections (the host is asked, nothing is changed).
    Check,
    /// Rewrite settings and restart.
    Restart,
    /// Rewrite settings that need no restart.
    Configure,
    /// Stop the engine on purpose (it stays stopped across host restarts).
    Stop,
    /// Stop and delete the volume.
    Destroy,
    /// Set the master user's password (its SCRAM verifier) on the running engine.
    SetPassword,
    /// Rewrite the client access rules (`pg_hba`) from the security groups and reload.
    SetAccess,
    /// Take an online snapshot, verify it and store it in the zone's backup store.
    Snapshot,
    /// On a primary, before its standby's snapshot: a checkpoint, so the standby can make a
    /// restartpoint at it and the snapshot carries the WAL from there, not from the
    /// primary's last scheduled checkpoint (up to a gigabyte under load).
    Checkpoint,
    /// Make the instance's volume from a snapshot and the WAL archive, replay to the
    /// target and promote it.
    Restore,
    /// Remove backup objects from a store (a deleted or expired snapshot, WAL no
    /// snapshot needs).
    DeleteBackup,
    /// Copy a snapshot and its WAL from a zone's store to the control environment's.
    CopyBackup,
    /// Stop a replaced instance for good (its host refuses to start it again), first
    /// moving the WAL its volume still holds to the archive.
    Fence,
    /// On a primary: the replication role and a slot for a new standby (so the primary
    /// keeps the WAL it will stream), and the replication link's TLS.
    PrepareStandby,
    /// Make a standby from the latest snapshot and the archive, and start it streaming
    /// from its primary.
    BuildStandby,
    /// On a primary: wait for the standby on every commit, once it has caught up.
    SyncStandby,
    /// Promote a synchronous standby to primary and configure it as one (client access,
    /// its archive), after a failover committed it.
    Promote,
}

/// How the workflow engine knows a task's attempt succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessCheck {
    /// The host manager ran the action and journalled `succeeded`.
    HostOutcome,
    /// The host's health report shows the instance answering SQL.
    AcceptsSql,
}

impl TaskAction {
    /// Every action, for tables and tests.
    pub const ALL: [TaskAction; 19] = [
        TaskAction::Provision,
        TaskAction::Start,
        TaskAction::Check,
        TaskAction::Restart,
        TaskAction::Configure,
        TaskAction::Stop,
        TaskAction::Destroy,
        TaskAction::SetPassword,
        TaskAction::SetAccess,
        TaskAction::Snapshot,
        TaskAction::Restore,
        TaskAction::DeleteBackup,
        TaskAction::CopyBackup,
        TaskAction::Fence,
        TaskAction::PrepareStandby,
        TaskAction::BuildStandby,
        TaskAction::SyncStandby,
        TaskAction::Promote,
        TaskAction::Checkpoint,
    ];

    /// Its name on the wire and in listings, e.g. `provision`.
    pub fn name(self) -> &'static str {
        match self {
            TaskAction::Provision => "provision",
            TaskAction::Start => "start",
            TaskAction::Check => "check",
            TaskAction::Restart => "restart",
            TaskAction::Configure => "configure",
            TaskAction::Stop => "stop",
            TaskAction::Destroy => "destroy",
            TaskAction::SetPassword => "set-password",
            TaskAction::SetAccess => "set-access",
            TaskAction::Snapshot => "snapshot",
            TaskAction::Restore => "restore",
            TaskAction::DeleteBackup => "delete-backup",
            TaskAction::CopyBackup => "copy-backup",
            TaskAction::Fence => "fence",
            TaskAction::PrepareStandby => "prepare-standby",
            TaskAction::BuildStandby => "build-standby",
            TaskAction::SyncStandby => "sync-standby",
            TaskAction::Promote => "promote",
            TaskAction::Checkpoint => "checkpoint",
        }
    }

    /// The longest one attempt may take before its outcome counts as unknown. Provision
    /// may have to make the version's template (initdb) first; start and restart wait
    /// for recovery (pg_ctl -t 60); a check waits for the instance to accept connections.
    pub fn deadline(self) -> std::time::Duration {
        let secs = match self {
            TaskAction::Provision => 180,
            TaskAction::Start | TaskAction::Restart => 90,
            TaskAction::Check => 30,
            TaskAction::Configure | TaskAction::SetPassword | TaskAction::SetAccess => 30,
            // Writes the dirty shared buffers: seconds, a minute at worst on a slow disk.
            TaskAction::Checkpoint => 120,
            TaskAction::Stop | TaskAction::Destroy => 90,
            // Bounded by the data's size: an hour covers hundreds of GiB on local disks.
            TaskAction::Snapshot | TaskAction::Restore | TaskAction::CopyBackup => 3600,
            TaskAction::DeleteBackup => 600,
            // Crash recovery of the old volume, then its WAL to the store.
            TaskAction::Fence => 600,
            TaskAction::PrepareStandby => 60,
            // Unpacking the snapshot and replaying the archive, as a restore.
            TaskAction::BuildStandby => 3600,
            // Waits for the standby to catch up with the primary.
            TaskAction::SyncStandby => 600,
            // pg_promote waits for the end of replay: what the standby received and had
            // not replayed yet (seconds at most under synchronous commit).
            TaskAction::Promote => 120,
        };
        std::time::Duration::from_secs(secs)
    }

    /// How success is established.
    pub fn success(self) -> SuccessCheck {
        match self {
            TaskAction::Check => SuccessCheck::AcceptsSql,
            _ => SuccessCheck::HostOutcome,
        }
    }

    /// Whether the host needs the task's work (`TaskRequest.work_json`): which snapshot,
    /// objects or target.
    pub fn needs_work(self) -> bool {
        matches!(
            self,
            TaskAction::Snapshot
                | TaskAction::Restore
                | TaskAction::DeleteBackup
                | TaskAction::CopyBackup
                | TaskAction::Fence
                | TaskAction::BuildStandby
        )
    }

    /// Whether the host needs the instance spec to perform it.
    pub fn needs_spec(self) -> bool {
        matches!(
            self,
            TaskAction::Provision
                | TaskAction::Start
                | TaskAction::Restart
                | TaskAction::Configure
                | TaskAction::SetPassword
                | TaskAction::SetAccess
                | TaskAction::Snapshot
                | TaskAction::Restore
                | TaskAction::Fence
                | TaskAction::PrepareStandby
                | TaskAction::BuildStandby
                | TaskAction::SyncStandby
                | TaskAction::Promote
                | TaskAction::Checkpoint
        )
    }
}

impl std::fmt::Display for TaskAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One step a host manager performs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Task {
    /// Unique id; host managers are idempotent by it.
    pub id: String,
    /// What it does.
    #[serde(alias = "name")]
    pub action: TaskAction,
    /// Target host.
    pub host: String,
    /// Attempts so far.
    pub attempt: u32,
    /// Where it is.
    pub state: StepState,
    /// Outcome detail.
    pub result: Option<String>,
    /// Instance it acts on.
    pub instance: String,
    /// When the current attempt started.
    pub started_at_ms: Option<Millis>,
    /// When it finished.
    pub finished_at_ms: Option<Millis>,
    /// It undoes an earlier task after a failure.
    pub compensation: bool,
    /// What it produced for the catalog, once it succeeded.
    pub output: Option<crate::catalog::TaskOutput>,
}

impl Task {
    /// The id sent to the host manager for the current attempt: a re-send of
    /// the same attempt is deduplicated there, a new attempt runs afresh.
    pub fn attempt_id(&self) -> String {
        format!("{}-a{}", self.id, self.attempt)
    }
}

/// The tasks a job became.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Workflow {
    /// Unique id.
    pub id: String,
    /// The job it came from.
    pub job_id: String,
    /// Ordered tasks.
    pub tasks: Vec<Task>,
    /// Where it is.
    pub state: StepState,
    /// The database it works on.
    pub database: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// What happened, for the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the event stream (the log index that produced it).
    pub seq: u64,
    /// When.
    pub at_ms: Millis,
    /// What kind of thing happened, e.g. `host-added`.
    pub kind: String,
    /// What it happened to, e.g. a host or job id.
    pub subject: String,
    /// The account whose database or operation it is about ("" for the cluster's own).
    #[serde(default)]
    pub account: String,
    /// A sentence for people.
    pub message: String,
}

/// Which node runs the leader services, since when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeaderServices {
    /// The leader.
    pub node_id: u64,
    /// Its term.
    pub term: u64,
    /// The fencing token of these services: the log index at which they started. Every
    /// later start (a new leader, or the same leader's services restarted after a lease
    /// lapse) has a greater one, and only the services in force may claim, progress or
    /// complete jobs, so a stopped worker's late command is refused even within a term.
    pub fence: u64,
    /// When it started them.
    pub since_ms: Millis,
}
