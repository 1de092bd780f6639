//! Serving the zone over UDP and TCP, swapping it atomically on every change.
//!
//! Queries are answered by hickory's catalog (AA bit, NXDOMAIN, NODATA with
//! the SOA, REFUSED outside the zone, EDNS, truncation over UDP). In front of
//! it we allow zone transfers only over TCP and only from configured
//! addresses, and answer IXFR with NOTIMP so secondaries fall back to AXFR.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, Metadata, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::zone::Zone;
use crate::DnsError;

/// Idle time allowed on a TCP connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_QUEUE: usize = 32;

/// A bound UDP socket and TCP listener for the zone.
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

/// The zone being served and who may transfer it; cheap to clone.
#[derive(Clone)]
pub struct ZoneServer {
    catalog: Arc<ArcSwap<Catalog>>,
    zone: Arc<ArcSwap<Option<Zone>>>,
    transfer_from: Arc<Vec<IpAddr>>,
}

impl ZoneServer {
    /// Serve nothing yet (every query is REFUSED until the first [`Self::publish`]).
    pub fn new(transfer_from: Vec<IpAddr>) -> Self {
        Self {
            catalog: Arc::new(ArcSwap::from_pointee(Catalog::new())),
            zone: Arc::new(ArcSwap::from_pointee(None)),
            transfer_from: Arc::new(transfer_from),
        }
    }

    /// Serve `zone` from now on; queries in flight finish on the old one.
    pub fn publish(&self, zone: Zone) -> Result<(), DnsError> {
        let catalog = zone.catalog()?;
        self.catalog.store(Arc::new(catalog));
        self.zone.store(Arc::new(Some(zone)));
        Ok(())
    }

    /// The zone being served, if any.
    pub fn current(&self) -> Option<Zone> {
        self.zone.load().as_ref().clone()
    }

    /// Bind UDP and TCP on `addr` (before serving, so a clash fails a start, not a later query).
    pub async fn bind(addr: SocketAddr) -> Result<Sockets, DnsError> {
        let io = |source| DnsError::Io {
            addr: addr.to_string(),
            source,
        };
        Ok(Sockets {
            udp: UdpSocket::bind(addr).await.map_err(io)?,
            tcp: TcpListener::bind(addr).await.map_err(io)?,
        })
    }

    /// Answer on `sockets` until `stop` resolves.
    pub async fn serve(
        &self,
        sockets: Sockets,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), DnsError> {
        let addr = sockets.udp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut server = Server::new(self.clone());
        server.register_socket(sockets.udp);
        server.register_listener(sockets.tcp, TCP_IDLE, TCP_QUEUE);
        let token = server.shutdown_token().clone();
        tokio::select! {
            r = server.block_until_done() => r.map_err(|e| DnsError::Io { addr, source: std::io::Error::other(e.to_string()) }),
            _ = stop => {
                token.cancel();
                Ok(())
            }
        }
    }

    fn transfer_refused(&self, request: &Request) -> Option<ResponseCode> {
        let info = request.request_info().ok()?;
        match info.query.query_type() {
            RecordType::AXFR | RecordType::IXFR
                if request.protocol() != Protocol::Tcp || !self.transfer_from.contains(&request.src().ip()) =>
            {
                Some(ResponseCode::Refused)
            }
            RecordType::IXFR => Some(ResponseCode::NotImp),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ZoneServer {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        if let Some(code) = self.transfer_refused(request) {
            let msg = MessageResponseBuilder::from_message_request(request).error_msg(&request.metadata, code);
            return response.send_response(msg).await.unwrap_or_else(|_| {
                let mut m = Metadata::response_from_request(&request.metadata);
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: m,
                    counts: Default::default(),
                })
            });
        }
        let catalog = self.catalog.load_full();
        catalog.handle_request::<R, T>(request, response).await
    }
}
