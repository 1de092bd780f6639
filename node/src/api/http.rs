//! HTTP/JSON routes over the service layer. Errors are problem JSON.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

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
        .route("/v1/node", get(node_status))
        .route("/v1/hosts", get(list_hosts).post(add_host))
        .route("/v1/hosts/:name", delete(remove_host))
        .route("/v1/ops", get(list_ops))
        .route("/v1/ops/noop", post(submit_noop))
        .route("/v1/ops/:id", get(describe_op))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/cluster/nodes", post(add_node))
        .route("/v1/cluster/nodes/:id", delete(remove_node))
        .fallback(|| async { ApiError::NotFound("no such API path; see `keel --help` for the operations".into()) })
        .with_state(api)
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

async fn list_ops(State(api): State<Api>) -> Reply<Vec<keel_raft_store::Job>> {
    Ok(Json(api.list_jobs().await?))
}

async fn submit_noop(
    State(api): State<Api>,
    req: Result<Json<SubmitNoopRequest>, JsonRejection>,
) -> Reply<keel_raft_store::Job> {
    Ok(Json(api.submit_noop(body(req)?).await?))
}

async fn describe_op(State(api): State<Api>, Path(id): Path<String>) -> Reply<keel_raft_store::Job> {
    Ok(Json(api.describe_job(&id).await?))
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
