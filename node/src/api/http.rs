//! HTTP/JSON routes over the service layer. Errors are problem JSON.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::databases::{CreateDatabaseRequest, DatabaseOperation, DatabaseView, ModifyDatabaseRequest, OperationView};
use super::error::ApiError;
use super::service::{AddHostRequest, AddNodeRequest, Api, SubmitNoopRequest};

/// A JSON body, or a problem document saying why it is not one.
fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::InvalidArgument(format!("request body is not valid: {}", e.body_text())))
}

type Reply<T> = Result<Json<T>, ApiError>;

/// The `/v1` routes.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/node", get(node_status))
        .route("/v1/hosts", get(list_hosts).post(add_host))
        .route("/v1/hosts/:name", delete(remove_host))
        .route("/v1/hosts/:name/drain", post(drain_host).delete(undrain_host))
        .route("/v1/ops", get(list_ops))
        .route("/v1/ops/noop", post(submit_noop))
        .route("/v1/ops/:id", get(describe_op))
        .route("/v1/databases", get(list_databases).post(create_database))
        .route(
            "/v1/databases/:name",
            get(describe_database).patch(modify_database).delete(delete_database),
        )
        .route("/v1/events", get(events))
        .route("/v1/dns/zone", get(dns_zone))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/cluster/nodes", post(add_node))
        .route("/v1/cluster/nodes/:id", delete(remove_node))
        .fallback(|| async { ApiError::NotFound("no such API path; see `keel --help` for the operations".into()) })
        .with_state(api)
}

/// The OpenAPI 3 document of these routes (kept beside them; a test checks every path in it is served).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The zone this node serves, as a zone file.
async fn dns_zone(State(api): State<Api>) -> Result<impl axum::response::IntoResponse, ApiError> {
    let text = api.dns_zone_file().await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "text/dns; charset=utf-8")], text))
}

async fn node_status(State(api): State<Api>) -> Json<crate::server::peer::NodeStatus> {
    Json(api.node_status())
}

async fn list_hosts(State(api): State<Api>) -> Reply<Vec<keel_raft_store::Host>> {
    Ok(Json(api.list_hosts().await?))
}

async fn add_host(
    State(api): State<Api>,
    req: Result<Json<AddHostRequest>, JsonRejection>,
) -> Reply<super::service::AddHostResponse> {
    Ok(Json(api.add_host(body(req)?).await?))
}

async fn remove_host(State(api): State<Api>, Path(name): Path<String>) -> Reply<keel_raft_store::Host> {
    Ok(Json(api.remove_host(&name).await?))
}

async fn drain_host(State(api): State<Api>, Path(name): Path<String>) -> Reply<keel_raft_store::Host> {
    Ok(Json(api.drain_host(&name, true).await?))
}

async fn undrain_host(State(api): State<Api>, Path(name): Path<String>) -> Reply<keel_raft_store::Host> {
    Ok(Json(api.drain_host(&name, false).await?))
}

async fn list_ops(
    State(api): State<Api>,
    Query(page): Query<super::service::OpsPage>,
) -> Reply<Vec<keel_raft_store::Job>> {
    Ok(Json(api.list_jobs(page).await?))
}

async fn submit_noop(
    State(api): State<Api>,
    req: Result<Json<SubmitNoopRequest>, JsonRejection>,
) -> Reply<keel_raft_store::Job> {
    Ok(Json(api.submit_noop(body(req)?).await?))
}

async fn describe_op(State(api): State<Api>, Path(id): Path<String>) -> Reply<OperationView> {
    Ok(Json(api.describe_operation(&id).await?))
}

async fn list_databases(State(api): State<Api>) -> Reply<Vec<DatabaseView>> {
    Ok(Json(api.list_databases().await?))
}

async fn create_database(
    State(api): State<Api>,
    req: Result<Json<CreateDatabaseRequest>, JsonRejection>,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.create_database(body(req)?).await?))
}

async fn describe_database(State(api): State<Api>, Path(name): Path<String>) -> Reply<DatabaseView> {
    Ok(Json(api.describe_database(&name).await?))
}

async fn modify_database(
    State(api): State<Api>,
    Path(name): Path<String>,
    req: Result<Json<ModifyDatabaseRequest>, JsonRejection>,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.modify_database(&name, body(req)?).await?))
}

/// Query of `DELETE /v1/databases/{name}`.
#[derive(serde::Deserialize)]
struct DeleteQuery {
    request_id: Option<String>,
}

async fn delete_database(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Reply<DatabaseOperation> {
    Ok(Json(api.delete_database(&name, q.request_id).await?))
}

/// Query of `GET /v1/events`.
#[derive(serde::Deserialize)]
struct EventsQuery {
    db: Option<String>,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn events(State(api): State<Api>, Query(q): Query<EventsQuery>) -> Reply<Vec<keel_raft_store::Event>> {
    Ok(Json(
        api.events(q.db.as_deref(), q.after, q.limit.unwrap_or(1000).min(10_000))
            .await?,
    ))
}

async fn cluster_status(State(api): State<Api>) -> Reply<super::service::ClusterStatus> {
    Ok(Json(api.cluster_status().await?))
}

async fn add_node(
    State(api): State<Api>,
    req: Result<Json<AddNodeRequest>, JsonRejection>,
) -> Reply<super::service::ClusterStatus> {
    Ok(Json(api.add_node(body(req)?).await?))
}

async fn remove_node(State(api): State<Api>, Path(id): Path<String>) -> Reply<super::service::ClusterStatus> {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::InvalidArgument(format!("node id {id:?} is not a number")))?;
    Ok(Json(api.remove_node(id).await?))
}
