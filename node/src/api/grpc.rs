//! `keel.v1` over gRPC: converts wire types at the edge and calls the service layer.

use keel_proto::keel as pb;
use keel_proto::keel::keel_server::Keel;
use keel_raft_store::wire_name;
use tonic::{Request, Response, Status};

use super::accounts::{AuditPage, CreateAccountRequest, CreateTokenRequest};
use super::auth::Principal;
use super::backups::SnapshotRequest;
use super::databases::SwitchoverRequest;
use super::grpc_accounts as accounts;
use super::grpc_databases as dbs;
use super::replicas::{AddReplicaRequest, PromoteReplicaRequest};
use super::security_groups::{CreateSecurityGroupRequest, SecurityGroupRulesRequest, SecurityGroupView};
use super::service::{AddHostRequest, AddNodeRequest, Api, SubmitNoopRequest};
use super::views::{ClusterStatusView, HostView, OperationView};

/// The gRPC face of [`Api`].
pub struct GrpcApi {
    api: Api,
}

impl GrpcApi {
    /// Serve `api`.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

fn host(h: HostView) -> pb::Host {
    pb::Host {
        name: h.name,
        addr: h.addr,
        zone: h.zone,
        labels: h.labels.into_iter().collect(),
        health: wire_name(&h.health),
        draining: h.draining,
        added_at_ms: h.added_at_ms,
        instance_slots: h.capacity.instance_slots,
        disk_gib: h.capacity.disk_gib,
    }
}

/// An operation with its tasks: the same content HTTP's `ops list` and `ops describe` give.
fn operation(o: OperationView) -> pb::Operation {
    pb::Operation {
        id: o.id,
        kind: wire_name(&o.kind),
        state: wire_name(&o.state),
        request_id: o.request_id.unwrap_or_default(),
        submitted_at_ms: o.submitted_at_ms,
        finished_at_ms: o.finished_at_ms.unwrap_or(0),
        claims: o
            .claims
            .into_iter()
            .map(|c| pb::Claim {
                term: c.term,
                node_id: c.node_id,
                at_ms: c.at_ms,
                fence: c.fence,
            })
            .collect(),
        completed_fence: o.completed_fence.unwrap_or(0),
        error: o.error.unwrap_or_default(),
        tasks: o
            .tasks
            .into_iter()
            .map(|t| pb::Task {
                id: t.id,
                action: t.action,
                host: t.host,
                instance: t.instance,
                state: wire_name(&t.state),
                attempt: t.attempt,
                result: t.result.unwrap_or_default(),
                started_at_ms: t.started_at_ms.unwrap_or(0),
                finished_at_ms: t.finished_at_ms.unwrap_or(0),
                undo: t.undo,
            })
            .collect(),
        database: o.database.unwrap_or_default(),
        modification: o.modification.map(dbs::modification),
        work_ms: o.work_ms.unwrap_or(0),
    }
}

fn cluster(s: ClusterStatusView) -> pb::ClusterStatusResponse {
    let services = s.leader_services;
    pb::ClusterStatusResponse {
        cluster_name: s.cluster_name,
        leader_id: s.leader.unwrap_or(0),
        term: s.term,
        members: s
            .members
            .into_iter()
            .map(|m| {
                let st = m.status.unwrap_or_default();
                pb::Member {
                    id: m.id,
                    raft_addr: m.raft_addr,
                    api_addr: m.api_addr,
                    role: if m.error.is_some() {
                        "unreachable".into()
                    } else {
                        st.role
                    },
                    reachable: m.error.is_none(),
                    term: st.term,
                    last_log_index: st.last_log_index,
                    applied_index: st.applied_index,
                    lag: m.lag.unwrap_or(0),
                    error: m.error.unwrap_or_default(),
                    voter: m.voter,
                    snapshot_index: st.snapshot_index,
                    purged_index: st.purged_index,
                    snapshots_installed: st.snapshots_installed,
                    leader_id: st.leader.unwrap_or(0),
                    leader_services_term: st.leader_services_term.unwrap_or(0),
                }
            })
            .collect(),
        leader_services_node: services.as_ref().map_or(0, |l| l.node_id),
        leader_services_term: services.as_ref().map_or(0, |l| l.term),
        leader_services_since_ms: services.as_ref().map_or(0, |l| l.since_ms),
        leader_services_fence: services.as_ref().map_or(0, |l| l.fence),
    }
}

/// The caller, as the authentication layer found it (every gRPC call passes through it).
fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| {
        Status::unauthenticated("this call needs credentials: send metadata `authorization: Bearer <token>`")
    })
}

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Keel for GrpcApi {
    async fn add_host(&self, req: Request<pb::AddHostRequest>) -> Result<Response<pb::AddHostResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let out = self
            .api
            .add_host(
                &who,
                AddHostRequest {
                    name: r.name,
                    addr: r.addr,
                    zone: r.zone,
                    labels: r.labels.into_iter().collect(),
                    client_token: opt(r.client_token),
                },
            )
            .await?;
        Ok(Response::new(pb::AddHostResponse {
            host: Some(host(out.host)),
            created: out.created,
        }))
    }

    async fn list_hosts(&self, _: Request<pb::ListHostsRequest>) -> Result<Response<pb::ListHostsResponse>, Status> {
        let hosts = self.api.list_hosts().await?.into_iter().map(host).collect();
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }

    async fn remove_host(
        &self,
        req: Request<pb::RemoveHostRequest>,
    ) -> Result<Response<pb::RemoveHostResponse>, Status> {
        let who = principal(&req)?;
        let removed = self.api.remove_host(&who, &req.into_inner().name).await?;
        Ok(Response::new(pb::RemoveHostResponse {
            removed: true,
            host: Some(host(removed)),
        }))
    }

    async fn submit_noop(&self, req: Request<pb::SubmitNoopRequest>) -> Result<Response<pb::Operation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let op = self
            .api
            .submit_noop(
                &who,
                SubmitNoopRequest {
                    work_ms: r.work_ms,
                    request_id: opt(r.request_id),
                },
            )
            .await?;
        Ok(Response::new(operation(op)))
    }

    async fn list_operations(
        &self,
        req: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let page = super::service::OpsPage {
            db: opt(r.db),
            after: opt(r.after),
            limit: (r.limit > 0).then_some(r.limit as usize),
        };
        let operations = self
            .api
            .list_jobs(&who, page)
            .await?
            .into_iter()
            .map(operation)
            .collect();
        Ok(Response::new(pb::ListOperationsResponse { operations }))
    }

    async fn describe_operation(
        &self,
        req: Request<pb::DescribeOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(operation(
            self.api.describe_operation(&who, &req.into_inner().id).await?,
        )))
    }

    async fn cluster_status(
        &self,
        _: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(cluster(self.api.cluster_status().await?)))
    }

    async fn add_node(&self, req: Request<pb::AddNodeRequest>) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let s = self
            .api
            .add_node(
                &who,
                AddNodeRequest {
                    id: r.id,
                    raft_addr: r.raft_addr,
                    api_addr: r.api_addr,
                },
            )
            .await?;
        Ok(Response::new(cluster(s)))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(cluster(
            self.api.remove_node(&who, req.into_inner().id).await?,
        )))
    }

    async fn create_database(
        &self,
        req: Request<pb::CreateDatabaseRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = dbs::create_request(req.into_inner())?;
        Ok(Response::new(dbs::operation(self.api.create_database(&who, r).await?)))
    }

    async fn modify_database(
        &self,
        req: Request<pb::ModifyDatabaseRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let name = r.name.clone();
        let out = self.api.modify_database(&who, &name, dbs::modify_request(r)?).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn delete_database(
        &self,
        req: Request<pb::DeleteDatabaseRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let out = self
            .api
            .delete_database(&who, &r.name, opt(r.request_id), opt(r.final_snapshot))
            .await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn describe_database(
        &self,
        req: Request<pb::DescribeDatabaseRequest>,
    ) -> Result<Response<pb::Database>, Status> {
        let who = principal(&req)?;
        let d = self.api.describe_database(&who, &req.into_inner().name).await?;
        Ok(Response::new(dbs::database(d)))
    }

    async fn list_databases(
        &self,
        req: Request<pb::ListDatabasesRequest>,
    ) -> Result<Response<pb::ListDatabasesResponse>, Status> {
        let who = principal(&req)?;
        let databases = self
            .api
            .list_databases(&who)
            .await?
            .into_iter()
            .map(dbs::database)
            .collect();
        Ok(Response::new(pb::ListDatabasesResponse { databases }))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let limit = (r.limit > 0).then_some(r.limit as usize);
        let events = self.api.events(&who, opt(r.db).as_deref(), r.after, limit).await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(dbs::event).collect(),
        }))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::WhoAmIResponse>, Status> {
        let who = principal(&req)?;
        Ok(Response::new(accounts::whoami(self.api.whoami(&who))))
    }

    async fn create_account(&self, req: Request<pb::CreateAccountRequest>) -> Result<Response<pb::Account>, Status> {
        let who = principal(&req)?;
        let name = req.into_inner().name;
        let a = self.api.create_account(&who, CreateAccountRequest { name }).await?;
        Ok(Response::new(accounts::account(a)))
    }

    async fn list_accounts(
        &self,
        _: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let all = self
            .api
            .list_accounts()
            .await?
            .into_iter()
            .map(accounts::account)
            .collect();
        Ok(Response::new(pb::ListAccountsResponse { accounts: all }))
    }

    async fn set_account_limits(
        &self,
        req: Request<pb::SetAccountLimitsRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let a = self
            .api
            .set_account_limits(&who, &r.name, accounts::limits_from(r.limits))
            .await?;
        Ok(Response::new(accounts::account(a)))
    }

    async fn create_token(&self, req: Request<pb::CreateTokenRequest>) -> Result<Response<pb::CreatedToken>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let made = self
            .api
            .create_token(
                &who,
                CreateTokenRequest {
                    name: r.name,
                    account: r.account,
                    role: accounts::role(&r.role)?,
                    expires_in_days: (r.expires_in_days > 0).then_some(r.expires_in_days),
                },
            )
            .await?;
        Ok(Response::new(accounts::created(made)))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let account = opt(req.into_inner().account);
        let tokens = self
            .api
            .list_tokens(account)
            .await?
            .into_iter()
            .map(accounts::token)
            .collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::Token>, Status> {
        let who = principal(&req)?;
        let t = self.api.revoke_token(&who, &req.into_inner().id).await?;
        Ok(Response::new(accounts::token(t)))
    }

    async fn create_security_group(
        &self,
        req: Request<pb::CreateSecurityGroupRequest>,
    ) -> Result<Response<pb::SecurityGroup>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let create = CreateSecurityGroupRequest {
            name: r.name,
            cidrs: r.cidrs,
            account: opt(r.account),
        };
        Ok(Response::new(group(
            self.api.create_security_group(&who, create).await?,
        )))
    }

    async fn list_security_groups(
        &self,
        req: Request<pb::ListSecurityGroupsRequest>,
    ) -> Result<Response<pb::ListSecurityGroupsResponse>, Status> {
        let who = principal(&req)?;
        let groups = self
            .api
            .list_security_groups(&who)
            .await?
            .into_iter()
            .map(group)
            .collect();
        Ok(Response::new(pb::ListSecurityGroupsResponse { groups }))
    }

    async fn authorize_security_group(
        &self,
        req: Request<pb::ChangeSecurityGroupRequest>,
    ) -> Result<Response<pb::SecurityGroup>, Status> {
        self.change_group(req, true).await
    }

    async fn revoke_security_group(
        &self,
        req: Request<pb::ChangeSecurityGroupRequest>,
    ) -> Result<Response<pb::SecurityGroup>, Status> {
        self.change_group(req, false).await
    }

    async fn delete_security_group(
        &self,
        req: Request<pb::DeleteSecurityGroupRequest>,
    ) -> Result<Response<pb::SecurityGroup>, Status> {
        let who = principal(&req)?;
        let name = req.into_inner().name;
        Ok(Response::new(group(self.api.delete_security_group(&who, &name).await?)))
    }

    async fn snapshot_database(
        &self,
        req: Request<pb::SnapshotDatabaseRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let snap = SnapshotRequest {
            snapshot: r.snapshot,
            request_id: opt(r.request_id),
        };
        let out = self.api.snapshot_database(&who, &r.name, snap).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn recover_database(
        &self,
        req: Request<pb::RecoverDatabaseRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let out = self.api.recover_database(&who, &r.name, opt(r.request_id)).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn restore_database(
        &self,
        req: Request<pb::RestoreDatabaseRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let source = r.source.clone();
        let out = self
            .api
            .restore_database(&who, &source, dbs::restore_request(r))
            .await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let op = self.api.delete_snapshot(&who, &r.name, opt(r.request_id)).await?;
        Ok(Response::new(operation(op)))
    }

    async fn clone_database(
        &self,
        req: Request<pb::RestoreDatabaseRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let source = r.source.clone();
        let mut restore = dbs::restore_request(r);
        restore.snapshot = None;
        restore.latest = restore.time.is_none();
        let out = self.api.restore_database(&who, &source, restore).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let who = principal(&req)?;
        let db = opt(req.into_inner().db);
        let snapshots = self
            .api
            .list_snapshots(&who, db.as_deref())
            .await?
            .into_iter()
            .map(dbs::snapshot)
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }

    async fn describe_snapshot(
        &self,
        req: Request<pb::DescribeSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        let who = principal(&req)?;
        let s = self.api.describe_snapshot(&who, &req.into_inner().name).await?;
        Ok(Response::new(dbs::snapshot(s)))
    }

    async fn switchover(&self, req: Request<pb::SwitchoverRequest>) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let asked = SwitchoverRequest {
            to_zone: opt(r.to_zone),
            in_maintenance_window: r.in_maintenance_window,
            request_id: opt(r.request_id),
        };
        let out = self.api.switchover(&who, &r.name, asked).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn cancel_switchover(
        &self,
        req: Request<pb::CancelSwitchoverRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let out = self.api.cancel_switchover(&who, &req.into_inner().name).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn list_failovers(
        &self,
        req: Request<pb::ListFailoversRequest>,
    ) -> Result<Response<pb::ListFailoversResponse>, Status> {
        let who = principal(&req)?;
        let list = self.api.failovers(&who, &req.into_inner().name).await?;
        Ok(Response::new(pb::ListFailoversResponse {
            failovers: list.into_iter().map(dbs::failover).collect(),
        }))
    }

    async fn standby_plan(
        &self,
        req: Request<pb::StandbyPlanRequest>,
    ) -> Result<Response<pb::StandbyPlanResponse>, Status> {
        let who = principal(&req)?;
        let plan = self.api.standby_plan(&who, &req.into_inner().name).await?;
        Ok(Response::new(pb::StandbyPlanResponse {
            steps: plan
                .steps
                .into_iter()
                .map(|s| pb::PlanStep {
                    step: s.step,
                    detail: s.detail,
                })
                .collect(),
        }))
    }

    async fn add_replica(
        &self,
        req: Request<pb::AddReplicaRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let asked = AddReplicaRequest {
            zone: opt(r.zone),
            request_id: opt(r.request_id),
        };
        let out = self.api.add_replica(&who, &r.name, asked).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn list_replicas(
        &self,
        req: Request<pb::ListReplicasRequest>,
    ) -> Result<Response<pb::ListReplicasResponse>, Status> {
        let who = principal(&req)?;
        let list = self.api.list_replicas(&who, &req.into_inner().name).await?;
        Ok(Response::new(pb::ListReplicasResponse {
            replicas: list.into_iter().map(dbs::replica).collect(),
        }))
    }

    async fn remove_replica(
        &self,
        req: Request<pb::RemoveReplicaRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let out = self
            .api
            .remove_replica(&who, &r.name, &r.replica, opt(r.request_id))
            .await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn promote_replica(
        &self,
        req: Request<pb::PromoteReplicaRequest>,
    ) -> Result<Response<pb::DatabaseOperation>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let asked = PromoteReplicaRequest {
            to: r.to,
            request_id: opt(r.request_id),
        };
        let out = self.api.promote_replica(&who, &r.name, &r.replica, asked).await?;
        Ok(Response::new(dbs::operation(out)))
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Result<Response<pb::ListAuditResponse>, Status> {
        let r = req.into_inner();
        let page = AuditPage {
            account: opt(r.account),
            since_ms: (r.since_ms > 0).then_some(r.since_ms),
            after: (r.after > 0).then_some(r.after),
            limit: (r.limit > 0).then_some(r.limit as usize),
        };
        let records = self.api.audit(page).await?.into_iter().map(accounts::audit).collect();
        Ok(Response::new(pb::ListAuditResponse { records }))
    }
}

impl GrpcApi {
    async fn change_group(
        &self,
        req: Request<pb::ChangeSecurityGroupRequest>,
        allow: bool,
    ) -> Result<Response<pb::SecurityGroup>, Status> {
        let who = principal(&req)?;
        let r = req.into_inner();
        let rules = SecurityGroupRulesRequest { cidrs: r.cidrs };
        Ok(Response::new(group(
            self.api.change_security_group(&who, &r.name, rules, allow).await?,
        )))
    }
}

fn group(g: SecurityGroupView) -> pb::SecurityGroup {
    pb::SecurityGroup {
        name: g.name,
        account: g.account,
        cidrs: g.cidrs,
    }
}
