//! TLS on the public API: HTTPS and gRPC over TLS on the one port, with the certificate
//! reloaded from disk like every other; and the client side for callers that trust a
//! Keel CA bundle (the CLI, tests, benchmarks).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use super::ca::certificates;
use super::credentials::{provider, Credentials};
use super::link::{Connector, OwnCertificate};
use super::TlsError;

/// The API's server configuration: no client certificates (callers bring tokens), h2 for
/// gRPC and HTTP/1.1 for everything else.
pub fn server_config(creds: &Arc<Credentials>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OwnCertificate(creds.clone())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `app` over TLS on `listener` until `shutdown`, then let open calls finish (up to 5 s).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%remote, error = %e, "API TLS handshake failed"),
                Err(_) => return tracing::debug!(%remote, "API TLS handshake timed out"),
            };
            let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                // What axum's connect-info would give: the auth layer audits the source address.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo::<SocketAddr>(remote));
                let mut app = app.clone();
                async move { tower_service::Service::call(&mut app, req).await }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%remote, error = %e, "API connection ended with an error");
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

/// A client configuration trusting only the CA certificates in `ca_file` (PEM).
pub fn client_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(ca_file)? {
        roots.add(ca).map_err(|e| TlsError::Pem {
            path: ca_file.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A gRPC channel to the API at `url` (`https://host:port`), trusting `ca_file`.
pub fn grpc_channel(url: &str, ca_file: &Path) -> Result<Channel, String> {
    let config = client_config(ca_file).map_err(|e| e.to_string())?;
    // The connector does TLS; tonic is given the plain scheme so it does not try to.
    let plain = url.replacen("https://", "http://", 1);
    let endpoint = Endpoint::from_shared(plain).map_err(|e| format!("bad API address {url}: {e}"))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_with_connector_lazy(Connector::by_name(config)))
}
