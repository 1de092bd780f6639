//! The one way the admin store changes: a [`Proposal`] carrying a [`Command`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{RestoreSource, SnapshotKind, TaskOutput, WalArchive};
use crate::records::{
    Account, Actor, ClusterConfig, Database, DatabaseSpec, Host, HostCapacity, Job, JobKind, LeaderServices, Limits,
    Millis, Modification, RequestKey, SecurityGroup, StepState, Task, Token, Workflow,
};

/// A command as proposed: the proposer stamps the time so apply never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Proposer's wall clock, milliseconds since the Unix epoch.
    pub at_ms: Millis,
    /// What to change.
    pub command: Command,
    /// Who asked, when an API call did: apply records it in the audit log in the same
    /// entry as the change, so a change is never made without its audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}

impl Proposal {
    /// A proposal made by Keel itself (leader services, background work).
    pub fn new(at_ms: Millis, command: Command) -> Self {
        Self {
            at_ms,
            command,
            actor: None,
        }
    }
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.command.name(), self.at_ms)
    }
}

/// The payload of one Raft entry: proposals that arrived together, applied in order.
///
/// Batching is what makes the write path cheap under load: one log write,
/// one replication message and one fsync carry every proposal in the batch.
/// Apply is atomic per entry, so a reader sees all of a batch or none of it.
/// Shared (`Arc`) because the log store keeps recent entries in memory and hands
/// out copies for replication and apply; the encoding is the plain list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProposalBatch(pub std::sync::Arc<[Proposal]>);

impl std::fmt::Display for ProposalBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            [one] => write!(f, "{one}"),
            many => write!(f, "batch of {}", many.len()),
        }
    }
}

/// Every state transition of the admin store, one verb-noun variant each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    /// Record the cluster's configuration (the first write of a new cluster).
    InitCluster {
        /// Cluster name.
        name: String,
        /// The first admin token (in the `admin` account, created with it), so the
        /// cluster is never open and never without an administrator.
        #[serde(default)]
        admin_token: Option<Token>,
    },
    /// Create an account (idempotent by name).
    CreateAccount {
        /// Account name.
        name: String,
    },
    /// Create a security group in an account, or (when `create` is false) add and remove
    /// CIDRs of an existing one (the `default` group exists in every account).
    PutSecurityGroup {
        /// Group name.
        name: String,
        /// Owning account.
        account: String,
        /// Make a new group (refused if it exists) rather than change one.
        create: bool,
        /// Canonical CIDRs to allow.
        authorize: Vec<String>,
        /// Canonical CIDRs to stop allowing.
        revoke: Vec<String>,
    },
    /// Delete a security group no database uses (never `default`).
    DeleteSecurityGroup {
        /// Group name.
        name: String,
        /// Owning account.
        account: String,
    },
    /// Set an account's throttling limits (`None`s fall back to the cluster's defaults).
    SetAccountLimits {
        /// Account name.
        name: String,
        /// The limits.
        limits: Limits,
    },
    /// Record a new API token (id and secret hash stamped by the proposer).
    CreateToken {
        /// The token, with the hash of its secret.
        token: Token,
    },
    /// Revoke a token: it stops working at once.
    RevokeToken {
        /// Token id.
        id: String,
    },
    /// Record, in the audit log only, an API call that changes something outside the
    /// replicated tables (a Raft membership change), before the change is made.
    RecordCall {
        /// What was asked, e.g. `add-node`.
        action: String,
        /// On what.
        target: String,
    },
    /// Record when tokens were last used (batched by each node).
    TouchTokens {
        /// Token id → when it was last used.
        used: BTreeMap<String, Millis>,
    },
    /// Register a data host; idempotent by name and by client token.
    AddHost {
        /// Unique host name.
        name: String,
        /// host:port of its host manager.
        addr: String,
        /// Zone.
        zone: String,
        /// Operator labels.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// Client token for retries.
        #[serde(default)]
        client_token: Option<String>,
    },
    /// Deregister a data host; idempotent by request id.
    RemoveHost {
        /// Host name.
        name: String,
        /// Request id stamped by the proposer, so a retried removal is a repeat.
        #[serde(default)]
        request_id: Option<String>,
    },
    /// Stop (or resume) placing new instances on a host; running instances stay.
    DrainHost {
        /// Host name.
        name: String,
        /// True to drain, false to take placements again.
        draining: bool,
    },
    /// What the monitor saw of a host manager; proposed only when health or capacity changed.
    ObserveHost {
        /// Host name.
        name: String,
        /// Whether it answered its health checks.
        reachable: bool,
        /// Capacity it reported, when it answered.
        capacity: Option<HostCapacity>,
        /// Why it is unreachable, when it is.
        problem: Option<String>,
    },
    /// An instance's engine became unhealthy or recovered; proposed only on a change.
    ObserveInstance {
        /// Instance id.
        instance: String,
        /// Whether it answers SQL.
        healthy: bool,
        /// What the probes saw, when unhealthy.
        #[serde(default)]
        problem: Option<String>,
    },
    /// Standbys' replication as their primaries report it; proposed by the monitor when
    /// a state changes, and for lag at most every few seconds.
    ObserveReplication {
        /// Standby instance id → what its primary reports of it.
        standbys: Vec<(String, crate::records::Replication)>,
    },
    /// Build the missing synchronous standby of a Multi-AZ database (proposed by the
    /// scheduler): placed in another zone than the primary's, here.
    AddStandby {
        /// Job id stamped by the proposer.
        job_id: String,
        /// Database key.
        name: String,
        /// Id for the standby instance, stamped by the proposer.
        instance_id: String,
    },
    /// A Multi-AZ database's synchronous standby is lost (proposed by the monitor): the
    /// primary is to stop waiting for it. Applied only if it is still the recorded one.
    ReleaseStandby {
        /// Job id stamped by the proposer.
        job_id: String,
        /// Database key.
        name: String,
        /// The lost standby.
        standby: String,
        /// What the monitor saw.
        reason: String,
    },
    /// A Multi-AZ database's primary failed and its synchronous standby no longer hears
    /// from it (proposed by the monitor): fence the primary at a new generation, move the
    /// name to the standby and promote it. Applied only if `standby` is still the
    /// recorded synchronous standby and the database at rest.
    FailoverDatabase {
        /// Job id stamped by the proposer.
        job_id: String,
        /// Database key.
        name: String,
        /// The synchronous standby to promote.
        standby: String,
        /// What the monitor and the standby saw.
        reason: String,
        /// When the monitor first saw the primary fail.
        detected_ms: u64,
        /// When the primary (or its host) last answered the monitor (0: not known).
        #[serde(default)]
        last_seen_ms: u64,
    },
    /// Destroy a database's fenced instances on hosts that answer (proposed by the
    /// scheduler). Applied only while the database is at rest and each is fenced.
    ReclaimFenced {
        /// Job id stamped by the proposer.
        job_id: String,
        /// Database key.
        name: String,
        /// The fenced instances.
        instances: Vec<String>,
    },
    /// Switch a Multi-AZ database's primary over to its synchronous standby (planned: the
    /// old primary stops first, nothing is lost), now or in its maintenance window.
    Switchover {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database key.
        name: String,
        /// The zone the primary is to move to (its standby's), if named.
        #[serde(default)]
        to_zone: Option<String>,
        /// Record it for the maintenance window instead of starting it.
        #[serde(default)]
        in_maintenance_window: bool,
    },
    /// Add a read replica (a user's), or rebuild a stale one in its zone (the scheduler's,
    /// with `replaces`).
    AddReplica {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database key.
        name: String,
        /// Id for the replica instance, stamped by the proposer.
        instance_id: String,
        /// The zone to place it in (any, if not named; a rebuild's: the old one's).
        #[serde(default)]
        zone: Option<String>,
        /// The stale replica a rebuild replaces.
        #[serde(default)]
        replaces: Option<String>,
    },
    /// Remove a read replica: out of DNS and fenced at once, then destroyed.
    RemoveReplica {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database key.
        name: String,
        /// The replica instance.
        replica: String,
    },
    /// Promote a read replica to a stand-alone database named `to` (same account).
    PromoteReplica {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// The source database's key.
        name: String,
        /// The replica instance.
        replica: String,
        /// The new database's name (in the source's account).
        to: String,
    },
    /// Drop a switchover waiting for the maintenance window.
    CancelSwitchover {
        /// Database key.
        name: String,
    },
    /// A database's storage use crossed the full mark, either way.
    ObserveStorage {
        /// Database name.
        database: String,
        /// Whether it is now full.
        full: bool,
        /// Bytes in use.
        used_bytes: u64,
        /// Bytes allocated.
        allocated_bytes: u64,
    },
    /// Put a job on the queue; idempotent by request id.
    SubmitJob {
        /// Id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// What to do.
        kind: JobKind,
    },
    /// The leader services in force claim a job.
    ClaimJob {
        /// Job id.
        job_id: String,
        /// The services' fence.
        fence: u64,
        /// Claiming leader.
        node_id: u64,
    },
    /// A leader finishes a job it claimed.
    CompleteJob {
        /// Job id.
        job_id: String,
        /// Fence of the claim.
        fence: u64,
        /// `None` for success, or the reason it failed.
        #[serde(default)]
        error: Option<String>,
    },
    /// Record a new database (status `creating`), place its first instance and queue its job.
    CreateDatabase {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database name.
        name: String,
        /// The account that will own it.
        #[serde(default)]
        account: String,
        /// What was asked for.
        spec: DatabaseSpec,
        /// SCRAM verifier of the master password.
        master_verifier: String,
        /// Id for the first instance, stamped by the proposer.
        instance_id: String,
    },
    /// Queue a modification of a database.
    ModifyDatabase {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database name.
        name: String,
        /// What changes.
        modification: Modification,
    },
    /// Record a modification to apply in the database's next maintenance window
    /// (merged into any already pending).
    DeferModification {
        /// Database name.
        name: String,
        /// What changes.
        modification: Modification,
    },
    /// Queue the deletion of a database.
    DeleteDatabase {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database name.
        name: String,
        /// Take a final snapshot of this name first (kept until deleted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        final_snapshot: Option<String>,
    },
    /// Queue the deletion of a snapshot (a user's, or by the scheduler an expired one).
    DeleteSnapshot {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// The snapshot's catalog key.
        snapshot: String,
    },
    /// Queue a snapshot of a database (recorded as `creating` in the catalog).
    SnapshotDatabase {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database key.
        name: String,
        /// Snapshot name, unique in the database's account.
        snapshot: String,
        /// Why it is taken.
        kind: SnapshotKind,
    },
    /// Record a new database made from another's backups (status `creating`), place its
    /// instance and queue the restore. The source and target are checked against the
    /// catalog here, before any work.
    RestoreDatabase {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// New database name.
        name: String,
        /// The account that will own it (the source's).
        account: String,
        /// What the new database is (the source's, with the caller's changes).
        spec: DatabaseSpec,
        /// The source's master password verifier (the data holds the source's roles).
        master_verifier: String,
        /// Id for the instance, stamped by the proposer.
        instance_id: String,
        /// Where its data comes from.
        from: RestoreSource,
    },
    /// Recover a database whose instance or host failed: fence the instance, place a new
    /// one on another host (the same port if free there), bump the generation, point the
    /// name at nothing until the new one is restored from the backups to the latest
    /// restorable time. The monitor proposes it (`automatic`) or a user does
    /// (`keel db recover`); for a database in manual recovery mode, the monitor's only
    /// raises an event.
    RecoverDatabase {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The client's request id, for retries.
        #[serde(default)]
        request: Option<RequestKey>,
        /// Database key.
        name: String,
        /// Id for the new instance, stamped by the proposer.
        instance_id: String,
        /// What failed, for the event.
        reason: String,
        /// When the failed instance was last seen answering (0: not known).
        #[serde(default)]
        last_seen_ms: Millis,
        /// The monitor proposes it (else a user asked).
        #[serde(default)]
        automatic: bool,
    },
    /// Queue the daily copy of a snapshot to the control environment's store (the scheduler).
    CopySnapshot {
        /// Job id stamped by the proposer.
        job_id: String,
        /// The snapshot's catalog key.
        snapshot: String,
    },
    /// What the hosts report of their WAL archives (the monitor proposes it when one moved).
    RecordArchive {
        /// Each lineage's coverage as now reported.
        archives: Vec<WalArchive>,
    },
    /// The leader records the planned tasks of a job's workflow.
    StartWorkflow {
        /// Workflow id.
        workflow_id: String,
        /// The job it serves.
        job_id: String,
        /// The services' fence.
        fence: u64,
        /// The planned tasks, in order.
        tasks: Vec<Task>,
        /// Why nothing could be planned: the workflow is recorded as failed at once.
        #[serde(default)]
        error: Option<String>,
    },
    /// The leader records a task's progress; the next task starts only after this commits.
    UpdateTask {
        /// Workflow id.
        workflow_id: String,
        /// Index of the task.
        index: usize,
        /// The services' fence.
        fence: u64,
        /// New state.
        state: StepState,
        /// Attempt number (1-based).
        attempt: u32,
        /// What the host manager said.
        #[serde(default)]
        result: Option<String>,
        /// With the failure of a forward task, and only then: the tasks that undo the
        /// workflow's work, in order (possibly none). Recording them in the same command
        /// means no committed state has a failed task and no plan to undo it.
        #[serde(default)]
        undo: Option<Vec<Task>>,
        /// With a success: what the task produced for the catalog.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<TaskOutput>,
    },
    /// The workflow's tasks are over: record its outcome, apply its effect on the
    /// database and finish the job.
    FinishWorkflow {
        /// Workflow id.
        workflow_id: String,
        /// The services' fence. The outcome is the tasks': success only if every
        /// forward task succeeded.
        fence: u64,
    },
    /// Forget finished history: jobs (with their workflows) finished before `before_ms`
    /// and events from before it, always keeping the newest `keep` of each per database,
    /// and request ids whose binding has lapsed.
    PruneHistory {
        /// The cut-off, stamped by the proposer (now less the retention).
        before_ms: Millis,
        /// Finished jobs and events kept per database (and for the cluster) whatever their age.
        keep: u32,
    },
    /// A new leader announces it runs the leader services.
    StartLeaderServices {
        /// The leader.
        node_id: u64,
        /// Its term.
        term: u64,
    },
}

/// Who may propose a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The API, on any node (a follower forwards it to the leader).
    Api,
    /// Only the leader's own services, on the leader itself: never forwarded.
    LeaderServices,
}

impl Command {
    /// Who may propose this command. The leader refuses a forwarded batch holding
    /// anything but API commands, so the Raft port cannot be used to drive the job
    /// queue, the workflows or the monitor's observations.
    pub fn origin(&self) -> Origin {
        match self {
            Command::AddHost { .. }
            | Command::RemoveHost { .. }
            | Command::DrainHost { .. }
            | Command::SubmitJob { .. }
            | Command::CreateDatabase { .. }
            | Command::ModifyDatabase { .. }
            | Command::DeferModification { .. }
            | Command::Switchover { .. }
            | Command::CancelSwitchover { .. }
            | Command::DeleteDatabase { .. }
            | Command::SnapshotDatabase { .. }
            | Command::RestoreDatabase { .. }
            | Command::RecoverDatabase { .. }
            | Command::DeleteSnapshot { .. }
            | Command::CreateAccount { .. }
            | Command::SetAccountLimits { .. }
            | Command::PutSecurityGroup { .. }
            | Command::DeleteSecurityGroup { .. }
            | Command::CreateToken { .. }
            | Command::RevokeToken { .. }
            | Command::TouchTokens { .. }
            | Command::RecordCall { .. }
            | Command::AddReplica { .. }
            | Command::RemoveReplica { .. }
            | Command::PromoteReplica { .. } => Origin::Api,
            Command::InitCluster { .. }
            | Command::StartLeaderServices { .. }
            | Command::ClaimJob { .. }
            | Command::CompleteJob { .. }
            | Command::StartWorkflow { .. }
            | Command::UpdateTask { .. }
            | Command::FinishWorkflow { .. }
            | Command::PruneHistory { .. }
            | Command::ObserveHost { .. }
            | Command::ObserveStorage { .. }
            | Command::ObserveInstance { .. }
            | Command::ObserveReplication { .. }
            | Command::AddStandby { .. }
            | Command::ReleaseStandby { .. }
            | Command::FailoverDatabase { .. }
            | Command::ReclaimFenced { .. }
            | Command::RecordArchive { .. }
            | Command::CopySnapshot { .. } => Origin::LeaderServices,
        }
    }

    /// What the command is about (a host, database, job, account or token), for the audit log.
    pub fn target(&self) -> &str {
        match self {
            Command::AddHost { name, .. }
            | Command::RemoveHost { name, .. }
            | Command::DrainHost { name, .. }
            | Command::CreateDatabase { name, .. }
            | Command::ModifyDatabase { name, .. }
            | Command::DeferModification { name, .. }
            | Command::DeleteDatabase { name, .. }
            | Command::SnapshotDatabase { name, .. }
            | Command::RestoreDatabase { name, .. }
            | Command::RecoverDatabase { name, .. }
            | Command::AddStandby { name, .. }
            | Command::ReleaseStandby { name, .. }
            | Command::FailoverDatabase { name, .. }
            | Command::Switchover { name, .. }
            | Command::CancelSwitchover { name }
            | Command::ReclaimFenced { name, .. }
            | Command::AddReplica { name, .. }
            | Command::RemoveReplica { name, .. }
            | Command::PromoteReplica { name, .. }
            | Command::CreateAccount { name }
            | Command::SetAccountLimits { name, .. }
            | Command::PutSecurityGroup { name, .. }
            | Command::DeleteSecurityGroup { name, .. }
            | Command::InitCluster { name, .. } => name,
            Command::SubmitJob { job_id, .. }
            | Command::ClaimJob { job_id, .. }
            | Command::CompleteJob { job_id, .. } => job_id,
            Command::CreateToken { token } => &token.id,
            Command::DeleteSnapshot { snapshot, .. } | Command::CopySnapshot { snapshot, .. } => snapshot,
            Command::RevokeToken { id } => id,
            Command::RecordCall { target, .. } => target,
            Command::StartWorkflow { workflow_id, .. }
            | Command::UpdateTask { workflow_id, .. }
            | Command::FinishWorkflow { workflow_id, .. } => workflow_id,
            Command::ObserveHost { name, .. } => name,
            Command::ObserveStorage { database, .. } => database,
            Command::ObserveInstance { instance, .. } => instance,
            Command::TouchTokens { .. }
            | Command::PruneHistory { .. }
            | Command::StartLeaderServices { .. }
            | Command::ObserveReplication { .. }
            | Command::RecordArchive { .. } => "",
        }
    }

    /// The client's request id or retry token, if the command carries one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Command::SubmitJob { request, .. }
            | Command::CreateDatabase { request, .. }
            | Command::ModifyDatabase { request, .. }
            | Command::DeleteDatabase { request, .. }
            | Command::SnapshotDatabase { request, .. }
            | Command::RestoreDatabase { request, .. }
            | Command::RecoverDatabase { request, .. }
            | Command::Switchover { request, .. }
            | Command::AddReplica { request, .. }
            | Command::RemoveReplica { request, .. }
            | Command::PromoteReplica { request, .. }
            | Command::DeleteSnapshot { request, .. } => request.as_ref().map(|r| r.id.as_str()),
            Command::AddHost { client_token, .. } => client_token.as_deref(),
            Command::RemoveHost { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "init-cluster",
            Command::CreateAccount { .. } => "create-account",
            Command::SetAccountLimits { .. } => "set-account-limits",
            Command::PutSecurityGroup { create: true, .. } => "create-security-group",
            Command::PutSecurityGroup { .. } => "change-security-group",
            Command::DeleteSecurityGroup { .. } => "delete-security-group",
            Command::CreateToken { .. } => "create-token",
            Command::RevokeToken { .. } => "revoke-token",
            Command::TouchTokens { .. } => "touch-tokens",
            Command::RecordCall { .. } => "record-call",
            Command::AddHost { .. } => "add-host",
            Command::RemoveHost { .. } => "remove-host",
            Command::DrainHost { .. } => "drain-host",
            Command::ObserveHost { .. } => "observe-host",
            Command::ObserveStorage { .. } => "observe-storage",
            Command::ObserveInstance { .. } => "observe-instance",
            Command::ObserveReplication { .. } => "observe-replication",
            Command::AddStandby { .. } => "add-standby",
            Command::ReleaseStandby { .. } => "release-standby",
            Command::FailoverDatabase { .. } => "failover-database",
            Command::Switchover { .. } => "switchover",
            Command::ReclaimFenced { .. } => "reclaim-fenced",
            Command::CancelSwitchover { .. } => "cancel-switchover",
            Command::AddReplica { replaces: None, .. } => "add-replica",
            Command::AddReplica { .. } => "rebuild-replica",
            Command::RemoveReplica { .. } => "remove-replica",
            Command::PromoteReplica { .. } => "promote-replica",
            Command::SubmitJob { .. } => "submit-job",
            Command::ClaimJob { .. } => "claim-job",
            Command::CompleteJob { .. } => "complete-job",
            Command::StartLeaderServices { .. } => "start-leader-services",
            Command::PruneHistory { .. } => "prune-history",
            Command::CreateDatabase { .. } => "create-database",
            Command::ModifyDatabase { .. } => "modify-database",
            Command::DeferModification { .. } => "defer-modification",
            Command::DeleteDatabase { .. } => "delete-database",
            Command::SnapshotDatabase { .. } => "snapshot-database",
            Command::RestoreDatabase { .. } => "restore-database",
            Command::RecoverDatabase { .. } => "recover-database",
            Command::RecordArchive { .. } => "record-archive",
            Command::DeleteSnapshot { .. } => "delete-snapshot",
            Command::CopySnapshot { .. } => "copy-snapshot",
            Command::StartWorkflow { .. } => "start-workflow",
            Command::UpdateTask { .. } => "update-task",
            Command::FinishWorkflow { .. } => "finish-workflow",
        }
    }
}

/// The result of applying a command. Rejections are values, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Nothing to report (blank and membership entries).
    Done,
    /// The cluster configuration in force.
    Cluster {
        /// The configuration.
        config: ClusterConfig,
    },
    /// An account, and whether this command created it.
    Account {
        /// The account.
        account: Account,
        /// False for an idempotent repeat.
        created: bool,
    },
    /// A security group as it now is (or was, when deleted).
    SecurityGroup {
        /// The group.
        group: SecurityGroup,
    },
    /// A token as it now is (or was, when revoked).
    Token {
        /// The token.
        token: Token,
    },
    /// A host, and whether this command created it.
    Host {
        /// The host.
        host: Host,
        /// False for an idempotent repeat.
        created: bool,
    },
    /// A host was removed.
    HostRemoved {
        /// The host as it was.
        host: Host,
    },
    /// A job, and whether this command created it.
    Job {
        /// The job as it now is.
        job: Box<Job>,
        /// False for an idempotent repeat.
        created: bool,
    },
    /// A database and the job working on it.
    Database {
        /// The database as it now is.
        database: Box<Database>,
        /// The job queued for it.
        job: Box<Job>,
        /// False for an idempotent repeat.
        created: bool,
    },
    /// A workflow as it now is.
    Workflow {
        /// The workflow.
        workflow: Box<Workflow>,
    },
    /// The leader services now in force.
    LeaderServices {
        /// Who runs them, and their fence.
        services: LeaderServices,
    },
    /// A modification was recorded for the maintenance window; no operation started.
    Deferred {
        /// The database, with its pending modification.
        database: Box<Database>,
    },
    /// The command was refused; nothing changed.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Rejection {
    /// The named thing does not exist.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// What kind of thing.
        kind: String,
        /// Its name or id.
        name: String,
    },
    /// It conflicts with what exists.
    #[error("{message}")]
    Conflict {
        /// A sentence saying what conflicts and what to do.
        message: String,
    },
    /// A leader command from services that are no longer in force.
    #[error("{what} is held by the leader services of fence {current}; fence {given} is stale (a newer leader, or a restart of the services, took over)")]
    StaleFence {
        /// What the command was about (a job, or the leader services).
        what: String,
        /// Fence in force.
        current: u64,
        /// Fence the command carried.
        given: u64,
    },
}
