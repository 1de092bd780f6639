//! The service layer under both gRPC and HTTP: validation, then a command or a read.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_raft_store::{Command, JobKind, KeelNode, NodeId, Proposal, RequestKey, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Principal;
use super::error::ApiError;
use super::validate;
use super::views::{
    AddHostResponse, ClusterStatusView, HostView, LeaderServicesView, MemberView, NodeStatusView, OperationView,
};
use crate::clock::now_ms;
use crate::server::peer::{MembershipChange, NodeStatus};
use crate::server::NodeCtx;

/// `hosts add` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddHostRequest {
    /// Unique host name (a DNS label).
    pub name: String,
    /// host:port of its host manager.
    pub addr: String,
    /// Zone (a DNS label).
    pub zone: String,
    /// Operator labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Retry token.
    #[serde(default)]
    pub client_token: Option<String>,
}

/// `ops noop` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitNoopRequest {
    /// How long the leader works on it.
    #[serde(default, deserialize_with = "super::whole::number")]
    pub work_ms: u64,
    /// Retry id.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// `cluster add-node` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNodeRequest {
    /// New node id.
    #[serde(deserialize_with = "super::whole::number")]
    pub id: NodeId,
    /// Its internal Raft address.
    pub raft_addr: String,
    /// Its public API address.
    pub api_addr: String,
}

/// The API's operations, shared by gRPC and HTTP.
#[derive(Clone)]
pub struct Api {
    pub(crate) node: Arc<NodeCtx>,
    /// Tokens' last use on this node, recorded in batches.
    pub(crate) usage: super::auth::Usage,
    /// Each account's API call bucket on this node.
    pub(crate) throttle: Arc<super::throttle::Throttle>,
}

impl Api {
    /// The request key of a mutating call: the client's id, or else `fallback` (the fresh
    /// operation id, so the routing layer's own retries stay idempotent), bound to what
    /// the request is. `fingerprint` must name the kind, the target and every parameter
    /// except secrets.
    pub(crate) fn request_key(&self, id: Option<String>, fallback: &str, fingerprint: serde_json::Value) -> RequestKey {
        RequestKey {
            id: id.filter(|r| !r.is_empty()).unwrap_or_else(|| fallback.to_string()),
            fingerprint: fingerprint.to_string(),
            retention_ms: self.node.config.request_retention_hours.saturating_mul(3_600_000),
        }
    }
}

/// The longest a noop may work.
pub const NOOP_WORK_MAX_MS: u64 = 3_600_000;

/// Operations a listing returns unless asked otherwise, and at most.
pub const OPS_PAGE: usize = 100;
/// The most a page of operations may hold.
pub const OPS_PAGE_MAX: usize = 1_000;

/// Which page of operations: oldest first, after the operation id `after`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct OpsPage {
    /// Only this database's operations.
    pub db: Option<String>,
    /// Start after this operation id (the last id of the previous page).
    pub after: Option<String>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

pub(crate) fn unexpected(r: Response) -> ApiError {
    match r {
        Response::Rejected { rejection } => rejection.into(),
        other => ApiError::Internal(format!("unexpected result from the store: {other:?}")),
    }
}

impl Api {
    /// The API of `node`.
    pub fn new(node: Arc<NodeCtx>) -> Self {
        Self {
            node,
            usage: Default::default(),
            throttle: Default::default(),
        }
    }

    /// This node's own status, answered locally (for readiness checks).
    pub fn node_status(&self) -> NodeStatusView {
        self.node.status().into()
    }

    /// The DNS zone this node serves now, as a zone file.
    pub async fn dns_zone_file(&self) -> Result<String, ApiError> {
        self.node
            .zone
            .current()
            .await
            .map(|z| z.zone_file())
            .ok_or_else(|| ApiError::Unavailable("this node has not built its DNS zone yet; retry in a moment".into()))
    }

    /// Commit `command` on behalf of `who`: its audit record is applied with it, in the
    /// same entry, so the change is never made unaudited (and an audit record is never
    /// written for a change that was not made).
    pub(crate) async fn commit(&self, who: &Principal, command: Command) -> Result<Response, ApiError> {
        let proposal = Proposal {
            actor: Some(who.actor()),
            ..Proposal::new(now_ms(), command)
        };
        self.node.write(proposal).await
    }

    /// Audit a call whose change is not a command (a Raft membership change) before it
    /// is made: if the record cannot be committed, the change is not attempted.
    async fn record_call(&self, who: &Principal, action: &str, target: String) -> Result<(), ApiError> {
        let command = Command::RecordCall {
            action: action.to_string(),
            target,
        };
        self.commit(who, command).await.map(drop)
    }

    /// Register a host.
    pub async fn add_host(&self, who: &Principal, req: AddHostRequest) -> Result<AddHostResponse, ApiError> {
        validate::dns_label("host name", &req.name)?;
        validate::host_port("host address", &req.addr)?;
        validate::dns_label("zone", &req.zone)?;
        validate::labels(&req.labels)?;
        validate::request_id(req.client_token.as_deref())?;
        match self
            .commit(
                who,
                Command::AddHost {
                    name: req.name,
                    addr: req.addr,
                    zone: req.zone,
                    labels: req.labels,
                    client_token: req.client_token.filter(|t| !t.is_empty()),
                },
            )
            .await?
        {
            Response::Host { host, created } => Ok(AddHostResponse {
                host: HostView::from(&host),
                created,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// All hosts, by name.
    pub async fn list_hosts(&self) -> Result<Vec<HostView>, ApiError> {
        self.node.read(|s| s.hosts.values().map(HostView::from).collect()).await
    }

    /// Deregister a host.
    pub async fn remove_host(&self, who: &Principal, name: &str) -> Result<HostView, ApiError> {
        validate::dns_label("host name", name)?;
        // A fresh id per call: retries inside the routing layer repeat it; a new call does not.
        let request_id = Some(uuid::Uuid::now_v7().to_string());
        let command = Command::RemoveHost {
            name: name.into(),
            request_id,
        };
        match self.commit(who, command).await? {
            Response::HostRemoved { host } => Ok(HostView::from(&host)),
            other => Err(unexpected(other)),
        }
    }

    /// Stop (or resume) placing new instances on a host.
    pub async fn drain_host(&self, who: &Principal, name: &str, draining: bool) -> Result<HostView, ApiError> {
        validate::dns_label("host name", name)?;
        match self
            .commit(
                who,
                Command::DrainHost {
                    name: name.into(),
                    draining,
                },
            )
            .await?
        {
            Response::Host { host, .. } => Ok(HostView::from(&host)),
            other => Err(unexpected(other)),
        }
    }

    /// Queue a diagnostic job.
    pub async fn submit_noop(&self, who: &Principal, req: SubmitNoopRequest) -> Result<OperationView, ApiError> {
        if req.work_ms > NOOP_WORK_MAX_MS {
            return Err(ApiError::InvalidArgument(format!(
                "work_ms must be at most {NOOP_WORK_MAX_MS} (one hour)"
            )));
        }
        validate::request_id(req.request_id.as_deref())?;
        let job_id = uuid::Uuid::now_v7().to_string();
        let request = self.request_key(
            req.request_id,
            &job_id,
            serde_json::json!({"kind": "noop", "work_ms": req.work_ms}),
        );
        match self
            .commit(
                who,
                Command::SubmitJob {
                    job_id,
                    request: Some(request),
                    kind: JobKind::Noop { work_ms: req.work_ms },
                },
            )
            .await?
        {
            Response::Job { job, .. } => Ok(OperationView::of(&job, None)),
            other => Err(unexpected(other)),
        }
    }

    /// A page of the caller's operations (an admin's: everyone's), oldest first.
    pub async fn list_jobs(&self, who: &Principal, page: OpsPage) -> Result<Vec<OperationView>, ApiError> {
        let limit = page.limit.unwrap_or(OPS_PAGE);
        if !(1..=OPS_PAGE_MAX).contains(&limit) {
            return Err(ApiError::InvalidArgument(format!(
                "limit {limit} is out of range: ask for 1 to {OPS_PAGE_MAX} operations a page"
            )));
        }
        let account = who.scope();
        let db = page
            .db
            .as_deref()
            .map(|d| super::databases::key_of(who, d))
            .transpose()?;
        self.node
            .read(move |s| {
                s.jobs_page(account.as_deref(), db.as_deref(), page.after.as_deref(), limit)
                    .iter()
                    .map(|j| OperationView::of(j, s.workflow_of(&j.id)))
                    .collect()
            })
            .await
    }

    /// Every member's state, asking each over the internal transport.
    pub async fn cluster_status(&self) -> Result<ClusterStatusView, ApiError> {
        let (cluster_name, leader_services) = self
            .node
            .read(|s| (s.cluster.as_ref().map(|c| c.name.clone()), s.leader_services.clone()))
            .await?;
        let members = self.node.members();
        let statuses =
            futures::future::join_all(members.iter().map(|(id, (node, _))| self.member_status(*id, node))).await;
        let leader_id = statuses
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .find(|s| s.role == "leader")
            .map(|s| s.id);
        let leader = statuses
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .find(|s| Some(s.id) == leader_id);
        let leader_last = leader.map(|l| l.last_log_index);
        let matched: BTreeMap<NodeId, u64> = leader
            .map(|l| l.replication.iter().copied().collect())
            .unwrap_or_default();
        let term = statuses
            .iter()
            .filter_map(|s| s.as_ref().ok())
            .map(|s| s.term)
            .max()
            .unwrap_or(0);
        let members = members
            .into_iter()
            .zip(statuses)
            .map(|((id, (node, voter)), status)| {
                let lag = leader_last.and_then(|last| matched.get(&id).map(|m| last.saturating_sub(*m)));
                let (status, error) = match status {
                    Ok(s) => (Some(s), None),
                    Err(e) => (None, Some(e)),
                };
                MemberView {
                    id,
                    raft_addr: node.raft_addr,
                    api_addr: node.api_addr,
                    voter,
                    status: status.map(NodeStatusView::from),
                    lag,
                    error,
                }
            })
            .collect();
        Ok(ClusterStatusView {
            cluster_name: cluster_name.unwrap_or_else(|| self.node.config.cluster_name.clone()),
            leader: leader_id,
            term,
            members,
            leader_services: leader_services.as_ref().map(LeaderServicesView::from),
        })
    }

    async fn member_status(&self, id: NodeId, node: &KeelNode) -> Result<NodeStatus, String> {
        if id == self.node.id {
            return Ok(self.node.status());
        }
        let peers = &self.node.peers;
        let mut client = peers.client(&node.raft_addr).map_err(|e| e.to_string())?;
        let req = peers.request(keel_proto::raft::StatusRequest {}, Duration::from_secs(1));
        let reply = tokio::time::timeout(Duration::from_secs(1), client.status(req))
            .await
            .map_err(|_| "no answer within 1 s".to_string())?
            .map_err(|s| format!("unreachable: {}", s.message()))?;
        keel_raft_store::codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())
    }

    /// Add a control node: as a learner until caught up, then as a voter.
    pub async fn add_node(&self, who: &Principal, req: AddNodeRequest) -> Result<ClusterStatusView, ApiError> {
        if req.id == 0 {
            return Err(ApiError::InvalidArgument("node id 0 is reserved; use 1 or more".into()));
        }
        validate::host_port("raft address", &req.raft_addr)?;
        validate::host_port("API address", &req.api_addr)?;
        if let Some((node, _)) = self.node.members().get(&req.id) {
            if node.raft_addr != req.raft_addr || node.api_addr != req.api_addr {
                return Err(ApiError::Conflict(format!(
                    "node {} is already a member at {}; remove it first or use a new id",
                    req.id, node
                )));
            }
        }
        self.record_call(
            who,
            "add-node",
            format!("{}={},{}", req.id, req.raft_addr, req.api_addr),
        )
        .await?;
        self.node
            .change_membership(MembershipChange::AddNode {
                id: req.id,
                node: KeelNode {
                    raft_addr: req.raft_addr,
                    api_addr: req.api_addr,
                },
            })
            .await?;
        self.cluster_status().await
    }

    /// Remove a control node.
    pub async fn remove_node(&self, who: &Principal, id: NodeId) -> Result<ClusterStatusView, ApiError> {
        if !self.node.members().contains_key(&id) {
            return Err(ApiError::NotFound(format!(
                "node {id} is not a member of this cluster; `keel cluster status` lists the members"
            )));
        }
        self.record_call(who, "remove-node", id.to_string()).await?;
        self.node.change_membership(MembershipChange::RemoveNode { id }).await?;
        self.cluster_status().await
    }
}
