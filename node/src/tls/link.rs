//! Mutual TLS on internal links: who may call whom, the server's accepted connections and
//! the client's connector, both over tonic.
//!
//! Each side checks the other's chain against its own trust bundle and then the
//! identity in it: a caller must be a control node of the same cluster (host managers
//! and Raft accept nothing else), and a callee must have the role the caller dialled
//! (a host manager, or a control node). Names and addresses are not checked: identity
//! is the `keel://` URI. TLS 1.3 session tickets are off, so every connection is a full
//! handshake against the material in force (connections are long-lived; the cost is
//! once per connection).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use super::credentials::{provider, Credentials};
use super::identity::Identity;

/// Which peers a side accepts, given its own cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Control nodes of the same cluster.
    ControlNode,
    /// Host managers of the same cluster.
    HostManager,
}

impl Peer {
    fn admits(self, peer: &Identity, own_cluster: &str) -> bool {
        match self {
            Peer::ControlNode => peer.is_node_of(own_cluster),
            Peer::HostManager => peer.is_host_of(own_cluster),
        }
    }
}

fn refuse(why: String) -> rustls::Error {
    rustls::Error::General(why)
}

/// The identity `end_entity` carries, if `expected` admits it in our cluster.
fn check_identity(creds: &Credentials, end_entity: &CertificateDer<'_>, expected: Peer) -> Result<(), rustls::Error> {
    let own = creds
        .current()
        .identity
        .clone()
        .ok_or_else(|| refuse("this process's own certificate names no keel:// identity".into()))?;
    let peer = Identity::of_certificate(end_entity).map_err(|e| refuse(e.to_string()))?;
    if expected.admits(&peer, &own.cluster) {
        Ok(())
    } else {
        Err(refuse(format!(
            "{peer} may not take part in this link of cluster {} (expected a {expected:?})",
            own.cluster
        )))
    }
}

/// Handshake signature checks, the same for both sides: the provider's algorithms.
mod signatures {
    use rustls::client::danger::HandshakeSignatureValid;
    use rustls::pki_types::CertificateDer;
    use rustls::{DigitallySignedStruct, SignatureScheme};

    use super::provider;

    pub(super) fn tls12(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    pub(super) fn tls13(
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    pub(super) fn schemes() -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The server side's check of a caller.
#[derive(Debug)]
struct CallerCheck {
    creds: Arc<Credentials>,
    accept: Peer,
}

impl ClientCertVerifier for CallerCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.creds
            .current()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        check_identity(&self.creds, end_entity, self.accept)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes()
    }
}

/// The client side's check of the callee.
#[derive(Debug)]
struct CalleeCheck {
    creds: Arc<Credentials>,
    expect: Peer,
}

impl ServerCertVerifier for CalleeCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.creds.current().roots,
            intermediates,
            now,
            provider().signature_verification_algorithms.all,
        )?;
        check_identity(&self.creds, end_entity, self.expect)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        signatures::tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures::schemes()
    }
}

/// Presents the certificate in force, on either side.
#[derive(Debug)]
pub(crate) struct OwnCertificate(pub(crate) Arc<Credentials>);

impl ResolvesServerCert for OwnCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }
}

impl ResolvesClientCert for OwnCertificate {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A server configuration presenting `creds` and admitting only `accept` callers.
pub fn server_config(creds: &Arc<Credentials>, accept: Peer) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_client_cert_verifier(Arc::new(CallerCheck {
            creds: creds.clone(),
            accept,
        }))
        .with_cert_resolver(Arc::new(OwnCertificate(creds.clone())));
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A client configuration presenting `creds` and accepting only `expect` servers.
pub fn client_config(creds: &Arc<Credentials>, expect: Peer) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CalleeCheck {
            creds: creds.clone(),
            expect,
        }))
        .with_client_cert_resolver(Arc::new(OwnCertificate(creds.clone())));
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Who is on the other end of an accepted connection (in each tonic request's extensions).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its address.
    pub remote: Option<SocketAddr>,
    /// The identity its certificate carries.
    pub identity: Option<Identity>,
}

/// An accepted, authenticated connection.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How long a caller has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections accepted on `listener` that completed a handshake under `config` (each
/// handshake runs on its own task, so a slow or hostile caller delays nobody else;
/// refused handshakes are logged and dropped).
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> impl futures::Stream<Item = std::io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(inner)) => {
                        let identity = inner
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| Identity::of_certificate(c).ok());
                        let info = PeerInfo {
                            remote: Some(remote),
                            identity,
                        };
                        let _ = tx.send(Ok(TlsConn { inner, info })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, error = %e, "Refused an internal connection at the TLS handshake.")
                    }
                    Err(_) => {
                        tracing::warn!(%remote, "Dropped an internal connection whose TLS handshake did not finish in time.")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Makes TLS connections for a tonic channel.
#[derive(Clone)]
pub struct Connector {
    tls: tokio_rustls::TlsConnector,
    /// Whether the server's name is the URI's host (the public API) or is not checked
    /// (internal links, where the verifier checks the `keel://` identity instead).
    by_name: bool,
}

impl Connector {
    /// Internal-link connections under `config`.
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(config),
            by_name: false,
        }
    }

    /// Connections under `config` to a server named by the URI's host.
    pub fn by_name(config: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls: tokio_rustls::TlsConnector::from(config),
            by_name: true,
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (tls, by_name) = (self.tls.clone(), self.by_name);
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("no address in {uri}")))?
                .to_string();
            let tcp = TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            // Internal links: identity is checked by the verifier, not the name.
            let host = if by_name {
                uri.host().unwrap_or_default()
            } else {
                "keel.internal"
            };
            let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// A lazily connected channel to `addr` (host:port) over mutual TLS.
pub fn channel(addr: &str, config: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    Ok(endpoint.connect_with_connector_lazy(Connector::new(config)))
}
