//! HTTP/JSON routes over the service layer. Every route is registered through
//! `routes!`, which documents it in the OpenAPI document from its `#[utoipa::path]`,
//! so a route cannot be served undocumented. Errors are problem JSON.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::accounts::{
    AccountView, AuditPage, AuditView, CreateAccountRequest, CreateTokenRequest, CreatedToken, LimitsView, TokenView,
    WhoAmI,
};
use super::auth::Principal;
use super::backups::{CloneRequest, RestoreRequest, SnapshotRequest};
use super::databases::{CreateDatabaseRequest, ModifyDatabaseRequest, SwitchoverRequest};
use super::error::ApiError;
use super::openapi;
use super::replicas::{AddReplicaRequest, PromoteReplicaRequest, ReplicaView};
use super::security_groups::{CreateSecurityGroupRequest, SecurityGroupRulesRequest, SecurityGroupView};
use super::service::{AddHostRequest, AddNodeRequest, Api, OpsPage, SubmitNoopRequest};
use super::views::{
    AddHostResponse, ClusterStatusView, DatabaseOperation, DatabaseView, EventView, FailoverView, HostView,
    NodeStatusView, OperationView, SnapshotView, StandbyPlanView,
};

/// A request body as sent: any JSON, checked by [`body`].
type Body = Result<Json<serde_json::Value>, JsonRejection>;

/// A JSON object body as `T`, or a problem document saying why it is not one. (serde
/// would also read a struct from a JSON array; the document says object.)
fn body<T: serde::de::DeserializeOwned>(b: Body) -> Result<T, ApiError> {
    let Json(v) = b.map_err(|e| match e {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("send the request body as JSON with Content-Type: application/json".into())
        }
        e => ApiError::InvalidArgument(format!("request body is not valid: {}", e.body_text())),
    })?;
    if !v.is_object() {
        return Err(ApiError::InvalidArgument(
            "request body is not valid: send a JSON object".into(),
        ));
    }
    serde_json::from_value(v).map_err(|e| ApiError::InvalidArgument(format!("request body is not valid: {e}")))
}

type Reply<T> = Result<Json<T>, ApiError>;

/// A query string as sent, checked by [`query`].
type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The query as `T`, or a problem document saying why it is not one.
fn query<T>(q: QueryOf<T>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::InvalidArgument(format!("query is not valid: {}", e.body_text())))
}

/// The `/v1` routes and the OpenAPI document that describes exactly them.
pub fn router(api: Api) -> Router {
    let (router, doc) = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(node_status))
        .routes(routes!(list_hosts, add_host))
        .routes(routes!(remove_host))
        .routes(routes!(drain_host, undrain_host))
        .routes(routes!(list_ops))
        .routes(routes!(submit_noop))
        .routes(routes!(describe_op))
        .routes(routes!(list_databases, create_database))
        .routes(routes!(describe_database, modify_database, delete_database))
        .routes(routes!(events))
        .routes(routes!(snapshot_database))
        .routes(routes!(recover_database))
        .routes(routes!(list_failovers))
        .routes(routes!(standby_plan))
        .routes(routes!(switchover, cancel_switchover))
        .routes(routes!(list_replicas, add_replica))
        .routes(routes!(remove_replica))
        .routes(routes!(promote_replica))
        .routes(routes!(restore_database))
        .routes(routes!(clone_database))
        .routes(routes!(list_snapshots))
        .routes(routes!(describe_snapshot, delete_snapshot))
        .routes(routes!(dns_zone))
        .routes(routes!(cluster_status))
        .routes(routes!(add_node))
        .routes(routes!(remove_node))
        .routes(routes!(openapi_document))
        .routes(routes!(health))
        .routes(routes!(whoami))
        .routes(routes!(list_accounts, create_account))
        .routes(routes!(set_account_limits))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(audit))
        .routes(routes!(list_security_groups, create_security_group))
        .routes(routes!(delete_security_group))
        .routes(routes!(authorize_security_group))
        .routes(routes!(revoke_security_group))
        .split_for_parts();
    let document = openapi::finish(doc);
    router
        .fallback(|| async { ApiError::NotFound("no such API path; see `keel --help` for the operations".into()) })
        .layer(axum::middleware::map_response(openapi::problem_for_every_error))
        .layer(axum::Extension(document))
        .with_state(api)
}

/// The OpenAPI 3.1 document of these routes, generated from the handlers and view types.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_document(
    axum::Extension(doc): axum::Extension<openapi::Document>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.0.as_ref().clone(),
    )
}

/// The DNS zone this node serves now, as a zone file.
#[utoipa::path(get, path = "/v1/dns/zone", tag = "dns",
    responses((status = 200, description = "The zone file", body = String, content_type = "text/dns")))]
async fn dns_zone(State(api): State<Api>) -> Result<impl axum::response::IntoResponse, ApiError> {
    let text = api.dns_zone_file().await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/dns; charset=utf-8")], text))
}

/// This node's own status, answered locally (for readiness checks).
#[utoipa::path(get, path = "/v1/node", tag = "cluster", responses((status = 200, body = NodeStatusView)))]
async fn node_status(State(api): State<Api>) -> Json<NodeStatusView> {
    Json(api.node_status())
}

/// All data hosts, by name.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", responses((status = 200, body = Vec<HostView>)))]
async fn list_hosts(State(api): State<Api>) -> Reply<Vec<HostView>> {
    Ok(Json(api.list_hosts().await?))
}

/// Register a data host (idempotent: the same host again answers `created: false`).
#[utoipa::path(post, path = "/v1/hosts", tag = "hosts", request_body = AddHostRequest,
    responses((status = 200, body = AddHostResponse)))]
async fn add_host(State(api): State<Api>, Extension(who): Extension<Principal>, req: Body) -> Reply<AddHostResponse> {
    Ok(Json(api.add_host(&who, body(req)?).await?))
}

/// Deregister a host that runs no instance.
#[utoipa::path(delete, path = "/v1/hosts/{name}", tag = "hosts",
    params(("name" = String, Path, description = "Host name")), responses((status = 200, body = HostView)))]
async fn remove_host(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<HostView> {
    Ok(Json(api.remove_host(&who, &name).await?))
}

/// Stop placing new instances on a host.
#[utoipa::path(post, path = "/v1/hosts/{name}/drain", tag = "hosts",
    params(("name" = String, Path, description = "Host name")), responses((status = 200, body = HostView)))]
async fn drain_host(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<HostView> {
    Ok(Json(api.drain_host(&who, &name, true).await?))
}

/// Place new instances on a host again.
#[utoipa::path(delete, path = "/v1/hosts/{name}/drain", tag = "hosts",
    params(("name" = String, Path, description = "Host name")), responses((status = 200, body = HostView)))]
async fn undrain_host(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<HostView> {
    Ok(Json(api.drain_host(&who, &name, false).await?))
}

/// A page of operations, oldest first.
#[utoipa::path(get, path = "/v1/ops", tag = "operations", params(OpsPage),
    responses((status = 200, body = Vec<OperationView>)))]
async fn list_ops(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    page: QueryOf<OpsPage>,
) -> Reply<Vec<OperationView>> {
    Ok(Json(api.list_jobs(&who, query(page)?).await?))
}

/// Queue a diagnostic operation that touches no host.
#[utoipa::path(post, path = "/v1/ops/noop", tag = "operations", request_body = SubmitNoopRequest,
    responses((status = 200, body = OperationView)))]
async fn submit_noop(State(api): State<Api>, Extension(who): Extension<Principal>, req: Body) -> Reply<OperationView> {
    Ok(Json(api.submit_noop(&who, body(req)?).await?))
}

/// One operation with its tasks.
#[utoipa::path(get, path = "/v1/ops/{id}", tag = "operations",
    params(("id" = String, Path, description = "Operation id")), responses((status = 200, body = OperationView)))]
async fn describe_op(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Reply<OperationView> {
    Ok(Json(api.describe_operation(&who, &id).await?))
}

/// All databases.
#[utoipa::path(get, path = "/v1/databases", tag = "databases", responses((status = 200, body = Vec<DatabaseView>)))]
async fn list_databases(State(api): State<Api>, Extension(who): Extension<Principal>) -> Reply<Vec<DatabaseView>> {
    Ok(Json(api.list_databases(&who).await?))
}

/// Create a database; answers at once with the operation that creates it.
#[utoipa::path(post, path = "/v1/databases", tag = "databases", request_body = CreateDatabaseRequest,
    responses((status = 200, body = DatabaseOperation)))]
async fn create_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    req: Body,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.create_database(&who, body(req)?).await?))
}

/// One database.
#[utoipa::path(get, path = "/v1/databases/{name}", tag = "databases",
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = DatabaseView)))]
async fn describe_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<DatabaseView> {
    Ok(Json(api.describe_database(&who, &name).await?))
}

/// Switch a Multi-AZ database's primary over to its standby in another zone: planned, no
/// acknowledged commit lost, writes paused for the promotion; now, or in the maintenance window.
#[utoipa::path(post, path = "/v1/databases/{name}/failover", tag = "databases", request_body = SwitchoverRequest,
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = DatabaseOperation)))]
async fn switchover(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.switchover(&who, &name, body(req)?).await?))
}

/// Cancel a switchover waiting for the maintenance window.
#[utoipa::path(delete, path = "/v1/databases/{name}/failover", tag = "databases",
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = DatabaseOperation)))]
async fn cancel_switchover(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.cancel_switchover(&who, &name).await?))
}

/// Add a read replica: asynchronous and readable, built from the latest snapshot and
/// archive, then streaming from the primary; readers reach it by `<db>.ro…` in DNS.
#[utoipa::path(post, path = "/v1/databases/{name}/replicas", tag = "databases", request_body = AddReplicaRequest,
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = DatabaseOperation)))]
async fn add_replica(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.add_replica(&who, &name, body(req)?).await?))
}

/// A database's read replicas, with their state and lag.
#[utoipa::path(get, path = "/v1/databases/{name}/replicas", tag = "databases",
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = Vec<ReplicaView>)))]
async fn list_replicas(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<Vec<ReplicaView>> {
    Ok(Json(api.list_replicas(&who, &name).await?))
}

/// Query of `DELETE /v1/databases/{name}/replicas/{replica}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RemoveReplicaQuery {
    /// Retry id.
    request_id: Option<String>,
}

/// Remove a read replica: out of the reader name at once, then destroyed.
#[utoipa::path(delete, path = "/v1/databases/{name}/replicas/{replica}", tag = "databases",
    params(("name" = String, Path, description = "Database name"), ("replica" = String, Path, description = "Replica id"), RemoveReplicaQuery),
    responses((status = 200, body = DatabaseOperation)))]
async fn remove_replica(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path((name, replica)): Path<(String, String)>,
    q: QueryOf<RemoveReplicaQuery>,
) -> Reply<DatabaseOperation> {
    let q = query(q)?;
    Ok(Json(api.remove_replica(&who, &name, &replica, q.request_id).await?))
}

/// Promote a read replica to a stand-alone database of its own (its own name, endpoint
/// and backups); the source is unchanged but for losing the replica.
#[utoipa::path(post, path = "/v1/databases/{name}/replicas/{replica}/promote", tag = "databases", request_body = PromoteReplicaRequest,
    params(("name" = String, Path, description = "Database name"), ("replica" = String, Path, description = "Replica id")),
    responses((status = 200, body = DatabaseOperation)))]
async fn promote_replica(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path((name, replica)): Path<(String, String)>,
    req: Body,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.promote_replica(&who, &name, &replica, body(req)?).await?))
}

/// What adding a synchronous standby would do now, read from what runs (members, health,
/// the engine version each host reports): the plan `modify --multi-az true` would carry
/// out. Nothing is changed.
#[utoipa::path(get, path = "/v1/databases/{name}/standby-plan", tag = "databases",
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = StandbyPlanView)))]
async fn standby_plan(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<StandbyPlanView> {
    Ok(Json(api.standby_plan(&who, &name).await?))
}

/// A Multi-AZ database's failovers, oldest first, each step with its time.
#[utoipa::path(get, path = "/v1/databases/{name}/failovers", tag = "databases",
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = Vec<FailoverView>)))]
async fn list_failovers(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<Vec<FailoverView>> {
    Ok(Json(api.failovers(&who, &name).await?))
}

/// Modify a database: now, or in its maintenance window.
#[utoipa::path(patch, path = "/v1/databases/{name}", tag = "databases", request_body = ModifyDatabaseRequest,
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = DatabaseOperation)))]
async fn modify_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.modify_database(&who, &name, body(req)?).await?))
}

/// Query of `DELETE /v1/databases/{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteQuery {
    /// Retry id.
    request_id: Option<String>,
    /// Take a final snapshot of this name first (kept until deleted).
    final_snapshot: Option<String>,
}

/// Delete a database and everything it holds.
#[utoipa::path(delete, path = "/v1/databases/{name}", tag = "databases",
    params(("name" = String, Path, description = "Database name"), DeleteQuery),
    responses((status = 200, body = DatabaseOperation)))]
async fn delete_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    q: QueryOf<DeleteQuery>,
) -> Reply<DatabaseOperation> {
    let q = query(q)?;
    Ok(Json(
        api.delete_database(&who, &name, q.request_id, q.final_snapshot).await?,
    ))
}

/// Query of `POST /v1/databases/{name}/recover`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct RecoverQuery {
    /// Retry id: the same id within its retention answers the first call's operation.
    request_id: Option<String>,
}

/// Recover a database whose instance or host failed: a new instance on another host,
/// restored from its backups to the latest restorable time, under the same name.
#[utoipa::path(post, path = "/v1/databases/{name}/recover", tag = "databases",
    params(("name" = String, Path, description = "Database name"), RecoverQuery),
    responses((status = 200, body = DatabaseOperation)))]
async fn recover_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    q: QueryOf<RecoverQuery>,
) -> Reply<DatabaseOperation> {
    let q = query(q)?;
    Ok(Json(api.recover_database(&who, &name, q.request_id).await?))
}

/// Take a snapshot of a database (kept until deleted).
#[utoipa::path(post, path = "/v1/databases/{name}/snapshots", tag = "backups", request_body = SnapshotRequest,
    params(("name" = String, Path, description = "Database name")), responses((status = 200, body = DatabaseOperation)))]
async fn snapshot_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.snapshot_database(&who, &name, body(req)?).await?))
}

/// Make a new database from this one's backups: to a time, the latest restorable time, or a snapshot.
#[utoipa::path(post, path = "/v1/databases/{name}/restore", tag = "backups", request_body = RestoreRequest,
    params(("name" = String, Path, description = "Source database name")), responses((status = 200, body = DatabaseOperation)))]
async fn restore_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.restore_database(&who, &name, body(req)?).await?))
}

/// Clone a database: a new one from its backups at a time (default: the latest), with
/// the source's settings unless changed; the source is not touched.
#[utoipa::path(post, path = "/v1/databases/{name}/clone", tag = "backups", request_body = CloneRequest,
    params(("name" = String, Path, description = "Source database name")), responses((status = 200, body = DatabaseOperation)))]
async fn clone_database(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<DatabaseOperation> {
    let clone: CloneRequest = body(req)?;
    Ok(Json(api.restore_database(&who, &name, clone.into()).await?))
}

/// Query of `GET /v1/snapshots`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SnapshotsQuery {
    /// Only this database's snapshots.
    db: Option<String>,
}

/// The caller's snapshots, oldest first.
#[utoipa::path(get, path = "/v1/snapshots", tag = "backups", params(SnapshotsQuery),
    responses((status = 200, body = Vec<SnapshotView>)))]
async fn list_snapshots(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    q: QueryOf<SnapshotsQuery>,
) -> Reply<Vec<SnapshotView>> {
    let q = query(q)?;
    Ok(Json(api.list_snapshots(&who, q.db.as_deref()).await?))
}

/// One snapshot, with its stored objects and their checksums.
#[utoipa::path(get, path = "/v1/snapshots/{name}", tag = "backups",
    params(("name" = String, Path, description = "Snapshot name")), responses((status = 200, body = SnapshotView)))]
async fn describe_snapshot(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<SnapshotView> {
    Ok(Json(api.describe_snapshot(&who, &name).await?))
}

/// Query of `DELETE /v1/snapshots/{name}`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeleteSnapshotQuery {
    /// Retry id.
    request_id: Option<String>,
}

/// Delete a snapshot: its objects leave the store (and WAL no remaining snapshot needs).
#[utoipa::path(delete, path = "/v1/snapshots/{name}", tag = "backups",
    params(("name" = String, Path, description = "Snapshot name"), DeleteSnapshotQuery),
    responses((status = 200, body = OperationView)))]
async fn delete_snapshot(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    q: QueryOf<DeleteSnapshotQuery>,
) -> Reply<OperationView> {
    let q = query(q)?;
    Ok(Json(api.delete_snapshot(&who, &name, q.request_id).await?))
}

/// Query of `GET /v1/events`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only this database's events.
    db: Option<String>,
    /// Only events after this sequence number.
    after: Option<u64>,
    /// At most this many (default 1000, at most 10000).
    limit: Option<usize>,
}

/// Events, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = Vec<EventView>)))]
async fn events(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    q: QueryOf<EventsQuery>,
) -> Reply<Vec<EventView>> {
    let q = query(q)?;
    let after = q.after.unwrap_or(0);
    // JSON clients (and the document's int64) stop at 2^63-1; no sequence number is larger.
    if after > i64::MAX as u64 {
        return Err(ApiError::InvalidArgument(format!(
            "after {after} is out of range: use a sequence number from an earlier page"
        )));
    }
    Ok(Json(api.events(&who, q.db.as_deref(), after, q.limit).await?))
}

/// The control cluster: every member's state.
#[utoipa::path(get, path = "/v1/cluster/status", tag = "cluster", responses((status = 200, body = ClusterStatusView)))]
async fn cluster_status(State(api): State<Api>) -> Reply<ClusterStatusView> {
    Ok(Json(api.cluster_status().await?))
}

/// Add a control node: a learner until it has caught up, then a voter.
#[utoipa::path(post, path = "/v1/cluster/nodes", tag = "cluster", request_body = AddNodeRequest,
    responses((status = 200, body = ClusterStatusView)))]
async fn add_node(State(api): State<Api>, Extension(who): Extension<Principal>, req: Body) -> Reply<ClusterStatusView> {
    Ok(Json(api.add_node(&who, body(req)?).await?))
}

/// Remove a control node.
#[utoipa::path(delete, path = "/v1/cluster/nodes/{id}", tag = "cluster",
    params(("id" = u64, Path, description = "Node id")), responses((status = 200, body = ClusterStatusView)))]
async fn remove_node(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Reply<ClusterStatusView> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::InvalidArgument(format!("node id {id:?} is not a number")))?;
    Ok(Json(api.remove_node(&who, id).await?))
}

/// Whether this node answers: the one call that needs no credentials.
#[utoipa::path(get, path = "/v1/health", tag = "meta", security(()),
    responses((status = 200, description = "The node answers", body = Object)))]
async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The caller's security groups (an admin's: every account's), `default` included.
#[utoipa::path(get, path = "/v1/security-groups", tag = "security-groups",
    responses((status = 200, body = Vec<SecurityGroupView>)))]
async fn list_security_groups(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
) -> Reply<Vec<SecurityGroupView>> {
    Ok(Json(api.list_security_groups(&who).await?))
}

/// Create a security group (client networks allowed to connect to the account's databases).
#[utoipa::path(post, path = "/v1/security-groups", tag = "security-groups", request_body = CreateSecurityGroupRequest,
    responses((status = 200, body = SecurityGroupView)))]
async fn create_security_group(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    req: Body,
) -> Reply<SecurityGroupView> {
    Ok(Json(api.create_security_group(&who, body(req)?).await?))
}

/// Delete a security group no database uses (not `default`).
#[utoipa::path(delete, path = "/v1/security-groups/{name}", tag = "security-groups",
    params(("name" = String, Path, description = "Group name (an admin may add .ACCOUNT)")),
    responses((status = 200, body = SecurityGroupView)))]
async fn delete_security_group(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Reply<SecurityGroupView> {
    Ok(Json(api.delete_security_group(&who, &name).await?))
}

/// Allow more client networks; the group's databases follow through a modify workflow each.
#[utoipa::path(post, path = "/v1/security-groups/{name}/authorize", tag = "security-groups",
    params(("name" = String, Path, description = "Group name (an admin may add .ACCOUNT)")),
    request_body = SecurityGroupRulesRequest, responses((status = 200, body = SecurityGroupView)))]
async fn authorize_security_group(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<SecurityGroupView> {
    Ok(Json(api.change_security_group(&who, &name, body(req)?, true).await?))
}

/// Stop allowing client networks; new connections from them are refused once the
/// group's databases have followed (no restart).
#[utoipa::path(post, path = "/v1/security-groups/{name}/revoke", tag = "security-groups",
    params(("name" = String, Path, description = "Group name (an admin may add .ACCOUNT)")),
    request_body = SecurityGroupRulesRequest, responses((status = 200, body = SecurityGroupView)))]
async fn revoke_security_group(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<SecurityGroupView> {
    Ok(Json(api.change_security_group(&who, &name, body(req)?, false).await?))
}

/// The caller's token: its account and role.
#[utoipa::path(get, path = "/v1/whoami", tag = "accounts", responses((status = 200, body = WhoAmI)))]
async fn whoami(State(api): State<Api>, Extension(who): Extension<Principal>) -> Json<WhoAmI> {
    Json(api.whoami(&who))
}

/// Every account (admins only).
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", responses((status = 200, body = Vec<AccountView>)))]
async fn list_accounts(State(api): State<Api>) -> Reply<Vec<AccountView>> {
    Ok(Json(api.list_accounts().await?))
}

/// Create an account (admins only; a repeat answers the existing one).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = CreateAccountRequest,
    responses((status = 200, body = AccountView)))]
async fn create_account(State(api): State<Api>, Extension(who): Extension<Principal>, req: Body) -> Reply<AccountView> {
    Ok(Json(api.create_account(&who, body(req)?).await?))
}

/// Query of `GET /v1/tokens`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TokensQuery {
    /// Only this account's tokens.
    account: Option<String>,
}

/// Tokens, never their secrets (admins only).
#[utoipa::path(get, path = "/v1/tokens", tag = "accounts", params(TokensQuery),
    responses((status = 200, body = Vec<TokenView>)))]
async fn list_tokens(State(api): State<Api>, q: QueryOf<TokensQuery>) -> Reply<Vec<TokenView>> {
    Ok(Json(api.list_tokens(query(q)?.account).await?))
}

/// Make a token for an account (admins only); the answer is the only place its secret appears.
#[utoipa::path(post, path = "/v1/tokens", tag = "accounts", request_body = CreateTokenRequest,
    responses((status = 200, body = CreatedToken)))]
async fn create_token(State(api): State<Api>, Extension(who): Extension<Principal>, req: Body) -> Reply<CreatedToken> {
    Ok(Json(api.create_token(&who, body(req)?).await?))
}

/// Revoke a token (admins only).
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "accounts",
    params(("id" = String, Path, description = "Token id")), responses((status = 200, body = TokenView)))]
async fn revoke_token(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Reply<TokenView> {
    Ok(Json(api.revoke_token(&who, &id).await?))
}

/// The audit log: every authenticated call that reached the store, oldest first (admins only).
#[utoipa::path(get, path = "/v1/audit", tag = "accounts", params(AuditPage),
    responses((status = 200, body = Vec<AuditView>)))]
async fn audit(State(api): State<Api>, page: QueryOf<AuditPage>) -> Reply<Vec<AuditView>> {
    Ok(Json(api.audit(query(page)?).await?))
}

/// Set an account's throttling limits (admins only); absent ones are the cluster's defaults.
#[utoipa::path(patch, path = "/v1/accounts/{name}", tag = "accounts", request_body = LimitsView,
    params(("name" = String, Path, description = "Account name")), responses((status = 200, body = AccountView)))]
async fn set_account_limits(
    State(api): State<Api>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    req: Body,
) -> Reply<AccountView> {
    Ok(Json(api.set_account_limits(&who, &name, body(req)?).await?))
}
