//! The admin store's tables and the deterministic apply of commands.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

mod accounts;
mod backups;
mod databases;
mod failover;
#[cfg(test)]
mod fixtures;
mod history;
mod jobs;
mod monitor;
mod placement;
mod recovery;
mod replicas;
mod security_groups;
mod standby;
mod table;
mod workflows;

pub use backups::RestorableWindow;
pub use table::Table;

use crate::catalog::*;
use crate::command::{Command, Proposal, Rejection, Response};
use crate::records::*;

/// Events kept for `keel events`; older ones are dropped first.
pub const EVENTS_KEPT: usize = 10_000;

/// Every table Keel replicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminState {
    /// Cluster configuration, once initialised.
    pub cluster: Option<ClusterConfig>,
    /// Accounts by name.
    pub accounts: BTreeMap<String, Account>,
    /// Security groups by `<name>.<account>` (an account's `default` group is here once changed).
    pub security_groups: BTreeMap<String, SecurityGroup>,
    /// API tokens by id.
    pub tokens: BTreeMap<String, Token>,
    /// Hosts by name.
    pub hosts: BTreeMap<String, Host>,
    /// Databases by name.
    pub databases: BTreeMap<String, Database>,
    /// Instances by id.
    pub instances: BTreeMap<String, Instance>,
    /// The backup catalog's snapshots by `<name>.<account>` (they outlive their database).
    pub snapshots: BTreeMap<String, Snapshot>,
    /// How far each lineage's WAL archive reaches, by lineage.
    pub archives: BTreeMap<String, WalArchive>,
    /// Failovers by job id (the newest few per database).
    pub failovers: BTreeMap<String, Failover>,
    /// Jobs by id (ids are time-ordered).
    pub jobs: Table<Job>,
    /// Workflows by id.
    pub workflows: Table<Workflow>,
    /// Recent events, oldest first.
    pub events: VecDeque<Event>,
    /// Host idempotency keys: client token or removal request id → the host it named.
    pub idempotency: BTreeMap<String, String>,
    /// Operation request ids → the request each is bound to (until it expires).
    pub requests: Table<RequestRecord>,
    /// Audited API calls by sequence number (zero-padded, so key order is seq order).
    pub audit: Table<AuditRecord>,
    /// The last audit sequence number given.
    pub audit_seq: u64,
    /// Who runs the leader services.
    pub leader_services: Option<LeaderServices>,
    /// Log index of the last change to what DNS publishes (databases' existence, status, endpoint).
    pub dns_serial: u64,
    /// Derived: host name by address. Rebuilt by [`AdminState::reindex`], never stored.
    #[serde(skip)]
    host_by_addr: BTreeMap<String, String>,
    /// Derived: ids of the jobs not yet finished, so the sweeper's scan after every applied
    /// change costs the open jobs, not the whole history. Rebuilt by [`AdminState::reindex`].
    #[serde(skip)]
    open_jobs: BTreeSet<String>,
    /// Derived: workflow id by job id. Rebuilt by [`AdminState::reindex`].
    #[serde(skip)]
    workflow_by_job: BTreeMap<String, String>,
    /// Derived: job ids by database ("" for jobs without one). Rebuilt by [`AdminState::reindex`].
    #[serde(skip)]
    jobs_by_database: BTreeMap<String, BTreeSet<String>>,
}

/// The history tables' rows changed since the last snapshot (`None`: removed).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// Jobs.
    pub jobs: Vec<(String, Option<Job>)>,
    /// Workflows.
    pub workflows: Vec<(String, Option<Workflow>)>,
    /// Request ids.
    pub requests: Vec<(String, Option<RequestRecord>)>,
    /// Audit records.
    pub audit: Vec<(String, Option<AuditRecord>)>,
}

/// A row of a history table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// No table of that name.
    #[error("no table named {0:?}")]
    UnknownTable(String),
    /// The row did not decode.
    #[error(transparent)]
    Undecodable(#[from] crate::codec::CodecError),
}

impl Changes {
    /// Each change as (table, key, encoded row or `None` for removed).
    pub fn encoded(&self) -> impl Iterator<Item = (&'static str, &str, Option<Vec<u8>>)> + '_ {
        fn rows<'a, V: Serialize>(
            table: &'static str,
            rows: &'a [(String, Option<V>)],
        ) -> impl Iterator<Item = (&'static str, &'a str, Option<Vec<u8>>)> + 'a {
            rows.iter()
                .map(move |(k, v)| (table, k.as_str(), v.as_ref().map(|v| crate::codec::encode(v))))
        }
        rows(TABLE_JOBS, &self.jobs)
            .chain(rows(TABLE_WORKFLOWS, &self.workflows))
            .chain(rows(TABLE_REQUESTS, &self.requests))
            .chain(rows(TABLE_AUDIT, &self.audit))
    }

    /// How many rows changed.
    pub fn len(&self) -> usize {
        self.jobs.len() + self.workflows.len() + self.requests.len() + self.audit.len()
    }

    /// Whether no row changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const TABLE_JOBS: &str = "jobs";
const TABLE_WORKFLOWS: &str = "workflows";
const TABLE_REQUESTS: &str = "requests";
const TABLE_AUDIT: &str = "audit";

impl AdminState {
    /// The history tables' changes since the last call, as they are now; forgets them.
    pub fn take_changes(&mut self) -> Changes {
        Changes {
            jobs: self.jobs.take_changes(),
            workflows: self.workflows.take_changes(),
            requests: self.requests.take_changes(),
            audit: self.audit.take_changes(),
        }
    }

    /// Note every history row as changed (the store holds none of them yet).
    pub fn mark_all_changed(&mut self) {
        self.jobs.mark_all_changed();
        self.workflows.mark_all_changed();
        self.requests.mark_all_changed();
        self.audit.mark_all_changed();
    }

    /// A copy of everything but the history tables: the part a snapshot writes whole.
    pub fn without_history(&mut self) -> AdminState {
        let jobs = std::mem::take(&mut self.jobs);
        let workflows = std::mem::take(&mut self.workflows);
        let requests = std::mem::take(&mut self.requests);
        let audit = std::mem::take(&mut self.audit);
        let copy = self.clone();
        self.jobs = jobs;
        self.workflows = workflows;
        self.requests = requests;
        self.audit = audit;
        copy
    }

    /// Put back one stored history row (as [`Changes::encoded`] wrote it), not as a change.
    /// Call [`AdminState::reindex`] once every row is back.
    pub fn load_row(&mut self, table: &str, key: String, bytes: &[u8]) -> Result<(), RowError> {
        use crate::codec::decode;
        match table {
            TABLE_JOBS => self.jobs.load(key, decode(bytes)?),
            TABLE_WORKFLOWS => self.workflows.load(key, decode(bytes)?),
            TABLE_REQUESTS => self.requests.load(key, decode(bytes)?),
            TABLE_AUDIT => self.audit.load(key, decode(bytes)?),
            other => return Err(RowError::UnknownTable(other.to_string())),
        }
        Ok(())
    }

    /// Rebuild the derived indexes after loading the tables from a snapshot.
    pub fn reindex(&mut self) {
        self.host_by_addr = self.hosts.values().map(|h| (h.addr.clone(), h.name.clone())).collect();
        self.open_jobs = self
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal())
            .map(|j| j.id.clone())
            .collect();
        self.workflow_by_job = self
            .workflows
            .values()
            .map(|w| (w.job_id.clone(), w.id.clone()))
            .collect();
        self.jobs_by_database.clear();
        for job in self.jobs.values() {
            let db = job.kind.database().unwrap_or_default().to_string();
            self.jobs_by_database.entry(db).or_default().insert(job.id.clone());
        }
    }

    /// Apply one proposal committed at log `index`. Deterministic: reads only its arguments.
    pub fn apply(&mut self, index: u64, proposal: &Proposal) -> Response {
        let owner = proposal
            .actor
            .as_ref()
            .map(|a| self.target_account(&proposal.command, &a.account));
        let response = self.dispatch(index, proposal);
        if let (Some(actor), Some(owner)) = (&proposal.actor, owner) {
            self.record_audit(proposal, actor, owner, &response);
        }
        // Every command that can change a database's existence, status or endpoint moves the
        // DNS serial, so all nodes publish the same serial for the same zone contents.
        if !self.zone_changes(proposal, &response).is_empty() {
            self.dns_serial = index;
        }
        response
    }

    /// The databases whose published DNS records `proposal`, just applied with `response`,
    /// may have changed (none when it was refused).
    pub fn zone_changes<'a>(&'a self, proposal: &'a Proposal, response: &Response) -> Vec<&'a str> {
        if matches!(response, Response::Rejected { .. }) {
            return Vec::new();
        }
        let key_of = |name: &str, account: &str| {
            self.databases
                .get_key_value(&database_key(name, account))
                .map(|(key, _)| key.as_str())
        };
        let one = match &proposal.command {
            // A create names the database and its account; everything after uses the key.
            Command::CreateDatabase { name, account, .. } | Command::RestoreDatabase { name, account, .. } => {
                key_of(name, account)
            }
            Command::ModifyDatabase { name, .. }
            | Command::DeleteDatabase { name, .. }
            | Command::SnapshotDatabase { name, .. }
            | Command::RecoverDatabase { name, .. }
            | Command::AddStandby { name, .. }
            | Command::ReleaseStandby { name, .. }
            | Command::FailoverDatabase { name, .. }
            | Command::Switchover { name, .. }
            | Command::CancelSwitchover { name }
            | Command::AddReplica { name, .. }
            | Command::RemoveReplica { name, .. }
            | Command::ReclaimFenced { name, .. } => Some(name.as_str()),
            // The source loses a reader, and the new database appears.
            Command::PromoteReplica { name, to, .. } => {
                let account = name.split_once('.').map_or("", |(_, a)| a);
                return [Some(name.as_str()), key_of(to, account)]
                    .into_iter()
                    .flatten()
                    .collect();
            }
            Command::ObserveStorage { database, .. } => Some(database.as_str()),
            // A replica serves readers only while healthy and on a host that answers.
            Command::ObserveInstance { instance, .. } => self.instances.get(instance).map(|i| i.database.as_str()),
            Command::ObserveHost { name, .. } => {
                let mut with_replicas: Vec<&str> = self
                    .instances
                    .values()
                    .filter(|i| i.host == *name && i.role == InstanceRole::Replica)
                    .map(|i| i.database.as_str())
                    .collect();
                with_replicas.sort_unstable();
                with_replicas.dedup();
                return with_replicas;
            }
            Command::FinishWorkflow { workflow_id, .. } => self.workflows.get(workflow_id).map(|w| w.database.as_str()),
            _ => None,
        };
        one.into_iter().collect()
    }

    /// Whose resource a command is about, read before it applies (a delete removes it).
    fn target_account(&self, command: &Command, actor_account: &str) -> String {
        let of_database = |name: &str| self.databases.get(name).map(|d| d.account.clone());
        let owner = match command {
            Command::CreateDatabase { account, .. } | Command::RestoreDatabase { account, .. } => Some(account.clone()),
            Command::ModifyDatabase { name, .. }
            | Command::SnapshotDatabase { name, .. }
            | Command::DeferModification { name, .. }
            | Command::DeleteDatabase { name, .. }
            | Command::RecoverDatabase { name, .. }
            | Command::AddReplica { name, .. }
            | Command::RemoveReplica { name, .. }
            | Command::PromoteReplica { name, .. } => of_database(name),
            Command::CreateToken { token } => Some(token.account.clone()),
            Command::RevokeToken { id } => self.tokens.get(id).map(|t| t.account.clone()),
            Command::CreateAccount { name } | Command::SetAccountLimits { name, .. } => Some(name.clone()),
            Command::PutSecurityGroup { account, .. } | Command::DeleteSecurityGroup { account, .. } => {
                Some(account.clone())
            }
            Command::DeleteSnapshot { snapshot, .. } => self.snapshots.get(snapshot).map(|s| s.account.clone()),
            _ => None,
        };
        owner
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| actor_account.to_string())
    }

    fn record_audit(&mut self, proposal: &Proposal, actor: &Actor, owner: String, response: &Response) {
        self.audit_seq += 1;
        let outcome = match response {
            Response::Rejected { rejection } => format!("refused: {rejection}"),
            _ => "ok".to_string(),
        };
        let record = AuditRecord {
            seq: self.audit_seq,
            at_ms: proposal.at_ms,
            actor: actor.clone(),
            action: match &proposal.command {
                Command::RecordCall { action, .. } => action.clone(),
                other => other.name().to_string(),
            },
            target: proposal.command.target().to_string(),
            target_account: owner,
            request_id: proposal.command.request_id().map(str::to_string),
            outcome,
        };
        self.audit.insert(audit_key(self.audit_seq), record);
    }

    fn dispatch(&mut self, index: u64, proposal: &Proposal) -> Response {
        let at = proposal.at_ms;
        match &proposal.command {
            Command::InitCluster { name, admin_token } => self.init_cluster(index, at, name, admin_token.as_ref()),
            Command::CreateAccount { name } => self.create_account(index, at, name),
            Command::SetAccountLimits { name, limits } => self.set_account_limits(index, at, name, limits),
            Command::PutSecurityGroup {
                name,
                account,
                create,
                authorize,
                revoke,
            } => self.put_security_group(index, at, name, account, *create, authorize, revoke),
            Command::DeleteSecurityGroup { name, account } => self.delete_security_group(index, at, name, account),
            Command::CreateToken { token } => self.create_token(index, at, token),
            Command::RevokeToken { id } => self.revoke_token(index, at, id),
            Command::TouchTokens { used } => self.touch_tokens(used),
            // Its audit record (made by `apply` from the proposal's actor) is all it does.
            Command::RecordCall { .. } => Response::Done,
            Command::AddHost {
                name,
                addr,
                zone,
                labels,
                client_token,
            } => self.add_host(index, at, name, addr, zone, labels, client_token.as_deref()),
            Command::RemoveHost { name, request_id } => self.remove_host(index, at, name, request_id.as_deref()),
            Command::DrainHost { name, draining } => self.drain_host(index, at, name, *draining),
            Command::ObserveHost {
                name,
                reachable,
                capacity,
                problem,
            } => self.observe_host(index, at, name, *reachable, capacity.as_ref(), problem.as_deref()),
            Command::ObserveStorage {
                database,
                full,
                used_bytes,
                allocated_bytes,
            } => self.observe_storage(index, at, database, *full, *used_bytes, *allocated_bytes),
            Command::ObserveInstance {
                instance,
                healthy,
                problem,
            } => self.observe_instance(index, at, instance, *healthy, problem.as_deref()),
            Command::ObserveReplication { standbys } => self.observe_replication(standbys),
            Command::AddStandby {
                job_id,
                name,
                instance_id,
            } => self.add_standby(index, at, job_id, name, instance_id),
            Command::ReleaseStandby {
                job_id,
                name,
                standby,
                reason,
            } => self.release_standby(index, at, job_id, name, standby, reason),
            Command::FailoverDatabase {
                job_id,
                name,
                standby,
                reason,
                detected_ms,
                last_seen_ms,
            } => self.fail_over(
                index,
                at,
                failover::FailOver {
                    job_id,
                    name,
                    standby,
                    reason,
                    detected_ms: *detected_ms,
                    last_seen_ms: *last_seen_ms,
                },
            ),
            Command::Switchover {
                job_id,
                request,
                name,
                to_zone,
                in_maintenance_window,
            } => self.switch_over(
                index,
                at,
                failover::SwitchOver {
                    job_id,
                    request: request.as_ref(),
                    name,
                    to_zone: to_zone.as_deref(),
                    defer: *in_maintenance_window,
                },
            ),
            Command::CancelSwitchover { name } => self.cancel_switchover(index, at, name),
            Command::AddReplica {
                job_id,
                request,
                name,
                instance_id,
                zone,
                replaces,
            } => self.add_replica(
                index,
                at,
                replicas::NewReplica {
                    job_id,
                    request: request.as_ref(),
                    name,
                    instance_id,
                    zone: zone.as_deref(),
                    replaces: replaces.as_deref(),
                },
            ),
            Command::RemoveReplica {
                job_id,
                request,
                name,
                replica,
            } => self.remove_replica(index, at, job_id, request.as_ref(), name, replica),
            Command::PromoteReplica {
                job_id,
                request,
                name,
                replica,
                to,
            } => self.promote_replica(
                index,
                at,
                replicas::Promotion {
                    job_id,
                    request: request.as_ref(),
                    name,
                    replica,
                    to,
                },
            ),
            Command::ReclaimFenced {
                job_id,
                name,
                instances,
            } => self.reclaim_fenced(index, at, job_id, name, instances),
            Command::SubmitJob { job_id, request, kind } => self.submit_job(index, at, job_id, request.as_ref(), kind),
            Command::ClaimJob { job_id, fence, node_id } => self.claim_job(index, at, job_id, *fence, *node_id),
            Command::CompleteJob { job_id, fence, error } => {
                self.complete_job(index, at, job_id, *fence, error.as_deref())
            }
            Command::StartLeaderServices { node_id, term } => self.start_leader_services(index, at, *node_id, *term),
            Command::PruneHistory { before_ms, keep } => self.prune_history(index, at, *before_ms, *keep),
            Command::CreateDatabase {
                job_id,
                request,
                name,
                account,
                spec,
                master_verifier,
                instance_id,
            } => self.create_database(
                index,
                at,
                databases::NewDatabase {
                    job_id,
                    request: request.as_ref(),
                    name,
                    account,
                    spec,
                    master_verifier,
                    instance_id,
                    restore: None,
                },
            ),
            Command::RestoreDatabase {
                job_id,
                request,
                name,
                account,
                spec,
                master_verifier,
                instance_id,
                from,
            } => self.create_database(
                index,
                at,
                databases::NewDatabase {
                    job_id,
                    request: request.as_ref(),
                    name,
                    account,
                    spec,
                    master_verifier,
                    instance_id,
                    restore: Some(from),
                },
            ),
            Command::SnapshotDatabase {
                job_id,
                request,
                name,
                snapshot,
                kind,
            } => self.snapshot_database(index, at, job_id, request.as_ref(), name, snapshot, *kind),
            Command::RecordArchive { archives } => self.record_archive(archives),
            Command::RecoverDatabase {
                job_id,
                request,
                name,
                instance_id,
                reason,
                last_seen_ms,
                automatic,
            } => self.recover_database(
                index,
                at,
                recovery::Recover {
                    job_id,
                    request: request.as_ref(),
                    name,
                    instance_id,
                    reason,
                    last_seen_ms: *last_seen_ms,
                    automatic: *automatic,
                },
            ),
            Command::CopySnapshot { job_id, snapshot } => self.copy_snapshot(index, at, job_id, snapshot),
            Command::ModifyDatabase {
                job_id,
                request,
                name,
                modification,
            } => self.modify_database(index, at, job_id, request.as_ref(), name, modification),
            Command::DeferModification { name, modification } => self.defer_modification(index, at, name, modification),
            Command::DeleteDatabase {
                job_id,
                request,
                name,
                final_snapshot,
            } => self.delete_database(index, at, job_id, request.as_ref(), name, final_snapshot.as_deref()),
            Command::DeleteSnapshot {
                job_id,
                request,
                snapshot,
            } => self.delete_snapshot(index, at, job_id, request.as_ref(), snapshot),
            Command::StartWorkflow {
                workflow_id,
                job_id,
                fence,
                tasks,
                error,
            } => self.start_workflow(index, at, workflow_id, job_id, *fence, tasks, error.as_deref()),
            Command::UpdateTask {
                workflow_id,
                index: task,
                fence,
                state,
                attempt,
                result,
                undo,
                output,
            } => {
                let update = workflows::TaskUpdate {
                    index: *task,
                    state: *state,
                    attempt: *attempt,
                    result: result.as_deref(),
                    undo: undo.as_deref(),
                    output: output.as_ref(),
                };
                self.update_task(index, at, workflow_id, *fence, update)
            }
            Command::FinishWorkflow { workflow_id, fence } => self.finish_workflow(index, at, workflow_id, *fence),
        }
    }

    pub(crate) fn event(&mut self, seq: u64, at_ms: Millis, kind: &str, subject: &str, message: String) {
        // Whose it is, for tenants' event listings: a database's or an operation's account.
        let account = match self.databases.get(subject) {
            Some(d) => d.account.clone(),
            None => self.jobs.get(subject).map(|j| j.account.clone()).unwrap_or_default(),
        };
        self.account_event(seq, at_ms, kind, subject, account, message);
    }

    /// An event about `subject` that belongs to `account`.
    pub(crate) fn account_event(
        &mut self,
        seq: u64,
        at_ms: Millis,
        kind: &str,
        subject: &str,
        account: String,
        message: String,
    ) {
        self.events.push_back(Event {
            seq,
            at_ms,
            kind: kind.to_string(),
            subject: subject.to_string(),
            account,
            message,
        });
        while self.events.len() > EVENTS_KEPT {
            self.events.pop_front();
        }
    }

    fn init_cluster(&mut self, index: u64, at: Millis, name: &str, admin_token: Option<&Token>) -> Response {
        match &self.cluster {
            Some(existing) if existing.name == name => Response::Cluster {
                config: existing.clone(),
            },
            Some(existing) => conflict(format!(
                "the cluster is already initialised as {:?}; it cannot be renamed to {name:?}",
                existing.name
            )),
            None => {
                let config = ClusterConfig {
                    name: name.to_string(),
                    created_at_ms: at,
                };
                self.cluster = Some(config.clone());
                self.event(
                    index,
                    at,
                    "cluster-initialised",
                    name,
                    format!("Cluster {name} was initialised."),
                );
                self.create_account(index, at, ADMIN_ACCOUNT);
                if let Some(token) = admin_token {
                    self.create_token(index, at, token);
                }
                Response::Cluster { config }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_host(
        &mut self,
        index: u64,
        at: Millis,
        name: &str,
        addr: &str,
        zone: &str,
        labels: &BTreeMap<String, String>,
        client_token: Option<&str>,
    ) -> Response {
        let token_key = client_token.map(|t| format!("add-host/{t}"));
        if let Some(key) = &token_key {
            if let Some(made) = self.idempotency.get(key) {
                return match self.hosts.get(made) {
                    Some(host) => Response::Host {
                        host: host.clone(),
                        created: false,
                    },
                    None => conflict(format!(
                        "client token {:?} was used for host {made:?}, which has since been removed; use a new token",
                        client_token.unwrap_or_default()
                    )),
                };
            }
        }
        if let Some(existing) = self.hosts.get(name) {
            if existing.addr == addr && existing.zone == zone && &existing.labels == labels {
                return Response::Host {
                    host: existing.clone(),
                    created: false,
                };
            }
            return conflict(format!(
                "host {name:?} already exists with address {} in zone {}; remove it first or choose another name",
                existing.addr, existing.zone
            ));
        }
        if let Some(other) = self.host_by_addr.get(addr) {
            return conflict(format!(
                "address {addr} is already registered as host {other:?}; each host manager is registered once"
            ));
        }
        let host = Host {
            name: name.to_string(),
            addr: addr.to_string(),
            zone: zone.to_string(),
            labels: labels.clone(),
            added_at_ms: at,
            ..Host::default()
        };
        self.hosts.insert(name.to_string(), host.clone());
        self.host_by_addr.insert(addr.to_string(), name.to_string());
        if let Some(key) = token_key {
            self.idempotency.insert(key, name.to_string());
        }
        self.event(
            index,
            at,
            "host-added",
            name,
            format!("Host {name} ({addr}, zone {zone}) was registered."),
        );
        Response::Host { host, created: true }
    }

    fn drain_host(&mut self, index: u64, at: Millis, name: &str, draining: bool) -> Response {
        let Some(host) = self.hosts.get_mut(name) else {
            return not_found("host", name);
        };
        if host.draining != draining {
            host.draining = draining;
            let (kind, message) = if draining {
                ("host-draining", format!("Host {name} takes no new instances."))
            } else {
                ("host-undrained", format!("Host {name} takes new instances again."))
            };
            self.event(index, at, kind, name, message);
        }
        Response::Host {
            host: self.hosts[name].clone(),
            created: false,
        }
    }

    fn remove_host(&mut self, index: u64, at: Millis, name: &str, request_id: Option<&str>) -> Response {
        let key = request_id.map(|r| format!("remove-host/{r}"));
        if let Some(removed) = key.as_ref().and_then(|k| self.idempotency.get(k)) {
            // A repeat of a removal that already happened: report it again, touch nothing.
            return Response::HostRemoved {
                host: Host {
                    name: removed.clone(),
                    ..Host::default()
                },
            };
        }
        if let Some(instance) = self.instances.values().find(|i| i.host == name) {
            return conflict(format!(
                "host {name:?} still runs instance {} of database {}; move or delete it first",
                instance.id, instance.database
            ));
        }
        match self.hosts.remove(name) {
            Some(host) => {
                self.host_by_addr.remove(&host.addr);
                if let Some(key) = key {
                    self.idempotency.insert(key, name.to_string());
                }
                self.event(
                    index,
                    at,
                    "host-removed",
                    name,
                    format!("Host {name} was deregistered."),
                );
                Response::HostRemoved { host }
            }
            None => not_found("host", name),
        }
    }

    fn start_leader_services(&mut self, index: u64, at: Millis, node_id: u64, term: u64) -> Response {
        if let Some(current) = &self.leader_services {
            if current.term > term {
                return conflict(format!(
                    "the leader services of term {} are in force; node {node_id} of term {term} is deposed",
                    current.term
                ));
            }
        }
        let services = LeaderServices {
            node_id,
            term,
            fence: index,
            since_ms: at,
        };
        self.leader_services = Some(services.clone());
        self.event(
            index,
            at,
            "leader-services-started",
            &node_id.to_string(),
            format!("Node {node_id} runs the leader services from term {term} (fence {index})."),
        );
        Response::LeaderServices { services }
    }

    /// The fence of the leader services in force (0 before any started).
    pub fn fence_in_force(&self) -> u64 {
        self.leader_services.as_ref().map_or(0, |s| s.fence)
    }
}

/// The audit table's key for sequence number `seq`: zero-padded, so keys sort as numbers.
pub fn audit_key(seq: u64) -> String {
    format!("{seq:020}")
}

pub(crate) fn conflict(message: String) -> Response {
    Response::Rejected {
        rejection: Rejection::Conflict { message },
    }
}

pub(crate) fn not_found(kind: &str, name: &str) -> Response {
    Response::Rejected {
        rejection: Rejection::NotFound {
            kind: kind.to_string(),
            name: name.to_string(),
        },
    }
}

pub(crate) fn stale(what: &str, current: u64, given: u64) -> Response {
    Response::Rejected {
        rejection: Rejection::StaleFence {
            what: what.to_string(),
            current,
            given,
        },
    }
}

/// A transition the tables in [`crate::transitions`] refuse, as a rejection naming what and why.
pub(crate) fn refused(what: String, reason: &str) -> Response {
    conflict(format!("{what}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(state: &mut AdminState, index: u64, command: Command) -> Response {
        state.apply(index, &Proposal::new(1000 + index, command))
    }

    fn add_host(name: &str, addr: &str, token: Option<&str>) -> Command {
        Command::AddHost {
            name: name.into(),
            addr: addr.into(),
            zone: "a".into(),
            labels: BTreeMap::new(),
            client_token: token.map(Into::into),
        }
    }

    fn submit(id: &str, request: Option<&str>) -> Command {
        Command::SubmitJob {
            job_id: id.into(),
            request: request.map(|r| RequestKey {
                id: r.into(),
                fingerprint: "noop".into(),
                retention_ms: 1_000,
            }),
            kind: JobKind::Noop { work_ms: 0 },
        }
    }

    fn claim(id: &str, fence: u64) -> Command {
        Command::ClaimJob {
            job_id: id.into(),
            fence,
            node_id: 1,
        }
    }

    fn complete(id: &str, fence: u64) -> Command {
        Command::CompleteJob {
            job_id: id.into(),
            fence,
            error: None,
        }
    }

    /// Start leader services at `index`; their fence is that index.
    fn services(s: &mut AdminState, index: u64, term: u64) -> u64 {
        match apply(s, index, Command::StartLeaderServices { node_id: 1, term }) {
            Response::LeaderServices { services } => services.fence,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn rejected(r: &Response) -> bool {
        matches!(r, Response::Rejected { .. })
    }

    #[test]
    fn add_host_is_idempotent_by_name_and_token_and_refuses_conflicts() {
        let mut s = AdminState::default();
        assert!(matches!(
            apply(&mut s, 1, add_host("h1", "10.0.0.1:7300", Some("t"))),
            Response::Host { created: true, .. }
        ));
        assert!(matches!(
            apply(&mut s, 2, add_host("h1", "10.0.0.1:7300", None)),
            Response::Host { created: false, .. }
        ));
        assert!(matches!(
            apply(&mut s, 3, add_host("h1", "10.0.0.1:7300", Some("t"))),
            Response::Host { created: false, .. }
        ));
        assert!(
            rejected(&apply(&mut s, 4, add_host("h1", "10.0.0.2:7300", None))),
            "same name, other address"
        );
        assert!(
            rejected(&apply(&mut s, 5, add_host("h2", "10.0.0.1:7300", None))),
            "same address, other name"
        );
        assert_eq!(s.hosts.len(), 1);
        let remove = |r: Option<&str>| Command::RemoveHost {
            name: "h1".into(),
            request_id: r.map(Into::into),
        };
        assert!(matches!(
            apply(&mut s, 6, remove(Some("r"))),
            Response::HostRemoved { .. }
        ));
        assert!(
            rejected(&apply(&mut s, 7, remove(None))),
            "a new removal of an absent host"
        );
        apply(&mut s, 8, add_host("h1", "10.0.0.1:7300", None));
        assert!(
            matches!(apply(&mut s, 9, remove(Some("r"))), Response::HostRemoved { .. }),
            "a retry is a repeat"
        );
        assert!(s.hosts.contains_key("h1"), "and does not remove the re-added host");
    }

    #[test]
    fn drain_is_idempotent_and_reversible() {
        let mut s = AdminState::default();
        apply(&mut s, 1, add_host("h1", "10.0.0.1:7300", None));
        let drain = |d| Command::DrainHost {
            name: "h1".into(),
            draining: d,
        };
        apply(&mut s, 2, drain(true));
        apply(&mut s, 3, drain(true));
        assert!(s.hosts["h1"].draining);
        assert_eq!(
            s.events.iter().filter(|e| e.kind == "host-draining").count(),
            1,
            "only transitions are events"
        );
        apply(&mut s, 4, drain(false));
        assert!(!s.hosts["h1"].draining);
        assert!(rejected(&apply(
            &mut s,
            5,
            Command::DrainHost {
                name: "nope".into(),
                draining: true
            }
        )));
    }

    #[test]
    fn submit_is_idempotent_by_request_id() {
        let mut s = AdminState::default();
        apply(&mut s, 1, submit("j1", Some("r1")));
        match apply(&mut s, 2, submit("j2", Some("r1"))) {
            Response::Job { job, created } => {
                assert_eq!(job.id, "j1");
                assert!(!created);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(s.jobs.len(), 1);
        let other = |job: &str| Command::SubmitJob {
            job_id: job.into(),
            request: Some(RequestKey {
                id: "r1".into(),
                fingerprint: "something else".into(),
                retention_ms: 1_000,
            }),
            kind: JobKind::Noop { work_ms: 5 },
        };
        match apply(&mut s, 3, other("j3")) {
            Response::Rejected { rejection } => {
                assert!(rejection.to_string().contains("already used for noop"), "{rejection}")
            }
            r => panic!("a reuse for another request is refused: {r:?}"),
        }
        // Past its retention the id is free again (the helper stamps 1000 + index).
        assert!(matches!(
            apply(&mut s, 1_002, other("j4")),
            Response::Job { created: true, .. }
        ));
    }

    #[test]
    fn only_the_services_in_force_claim_and_complete_even_within_one_term() {
        let mut s = AdminState::default();
        apply(&mut s, 1, submit("j", None));
        assert!(rejected(&apply(&mut s, 2, claim("j", 2))), "no services started yet");
        let first = services(&mut s, 3, 5);
        assert!(!rejected(&apply(&mut s, 4, claim("j", first))));
        // The same leader's services restart in the same term (a lease lapse): a new fence.
        let restarted = services(&mut s, 5, 5);
        assert!(restarted > first);
        assert!(
            rejected(&apply(&mut s, 6, complete("j", first))),
            "the stopped services' late completion is refused"
        );
        assert!(
            rejected(&apply(&mut s, 7, claim("j", first))),
            "stopped services cannot claim"
        );
        assert!(
            rejected(&apply(&mut s, 8, complete("j", restarted))),
            "a completion needs the claim"
        );
        assert!(!rejected(&apply(&mut s, 9, claim("j", restarted))), "takeover");
        assert!(!rejected(&apply(&mut s, 10, complete("j", restarted))));
        assert!(
            !rejected(&apply(&mut s, 11, complete("j", restarted))),
            "a repeated completion is a repeat"
        );
        let newer = services(&mut s, 12, 6);
        assert!(
            rejected(&apply(&mut s, 13, claim("j", newer))),
            "finished jobs are not claimed"
        );
        assert!(
            rejected(&apply(&mut s, 14, Command::StartLeaderServices { node_id: 2, term: 5 })),
            "a deposed term cannot start services"
        );
        let job = &s.jobs["j"];
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(
            job.claims.iter().map(|c| c.fence).collect::<Vec<_>>(),
            vec![first, restarted]
        );
        assert_eq!(job.claims.iter().map(|c| c.term).collect::<Vec<_>>(), vec![5, 5]);
        assert_eq!(job.completed_fence, Some(restarted));
    }

    #[test]
    fn apply_is_deterministic() {
        let commands = [
            add_host("h", "a:1", None),
            submit("j", Some("r")),
            Command::StartLeaderServices { node_id: 1, term: 1 },
            claim("j", 2),
            complete("j", 2),
        ];
        let run = || {
            let mut s = AdminState::default();
            for (i, c) in commands.iter().enumerate() {
                apply(&mut s, i as u64, c.clone());
            }
            s
        };
        assert_eq!(run(), run());
        assert_eq!(run().jobs["j"].state, JobState::Succeeded);
    }

    #[test]
    fn reindex_restores_the_address_check_after_a_snapshot() {
        let mut s = AdminState::default();
        apply(&mut s, 1, add_host("h1", "10.0.0.1:7300", None));
        let mut loaded: AdminState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        loaded.reindex();
        assert_eq!(loaded, s);
        assert!(rejected(&apply(&mut loaded, 2, add_host("h2", "10.0.0.1:7300", None))));
    }

    #[test]
    fn open_jobs_are_exactly_the_unfinished_ones_and_a_snapshot_rebuilds_them() {
        let mut s = AdminState::default();
        for (i, id) in ["j1", "j2", "j3"].into_iter().enumerate() {
            apply(&mut s, i as u64, submit(id, None));
        }
        let fence = services(&mut s, 3, 1);
        apply(&mut s, 4, claim("j1", fence));
        apply(&mut s, 5, claim("j2", fence));
        apply(&mut s, 6, complete("j2", fence));
        let open = |s: &AdminState| s.open_jobs().map(|j| j.id.clone()).collect::<Vec<_>>();
        assert_eq!(open(&s), ["j1", "j3"]);
        let mut loaded: AdminState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(open(&loaded), Vec::<String>::new(), "the index is derived, not stored");
        loaded.reindex();
        assert_eq!(loaded, s);
        apply(&mut loaded, 7, complete("j1", fence));
        assert_eq!(open(&loaded), ["j3"]);
    }

    #[test]
    fn events_are_bounded() {
        let mut s = AdminState::default();
        for i in 0..(EVENTS_KEPT as u64 + 5) {
            apply(&mut s, i, submit(&format!("j{i}"), None));
        }
        assert_eq!(s.events.len(), EVENTS_KEPT);
        assert_eq!(s.events.front().unwrap().seq, 5);
    }
}
