//! The public API: gRPC `keel.v1` and HTTP/JSON on one port, over one service layer.

pub mod accounts;
pub mod auth;
pub mod backups;
pub mod databases;
pub mod error;
pub mod grpc;
pub mod grpc_accounts;
pub mod grpc_databases;
pub mod http;
pub mod openapi;
pub mod replicas;
pub mod routing;
pub mod security_groups;
pub mod service;
pub mod throttle;
pub mod validate;
pub mod views;
pub mod whole;

use std::sync::Arc;

use keel_proto::keel::keel_server::KeelServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::NodeCtx;

/// Serve the public API on `listener` until `shutdown`: over TLS when `tls` is given.
pub async fn serve(
    listener: TcpListener,
    node: Arc<NodeCtx>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let api = service::Api::new(node);
    tokio::spawn(auth::flush_usage(api.clone(), shutdown.clone()));
    // gRPC requests are routed by path, so both protocols share the port, and the one
    // authentication layer wraps both (added last, so it runs before any route).
    let app = http::router(api.clone())
        .route_service("/keel.v1.Keel/*rest", KeelServer::new(grpc::GrpcApi::new(api.clone())))
        .layer(axum::middleware::from_fn_with_state(api, auth::layer));
    if let Some(tls) = tls {
        return crate::tls::api::serve(listener, tls, app, shutdown).await;
    }
    // Without TCP_NODELAY small replies wait on delayed ACKs (~40 ms each).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .tcp_nodelay(true)
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}
