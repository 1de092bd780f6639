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
use hickory_proto::rr::{LowerName, RecordType, RrKey};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::zone::{self, Rr, Zone};
use crate::{DatabaseEntry, DnsError, EndpointTable, ZoneConfig};

/// Idle time allowed on a TCP connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_QUEUE: usize = 32;

/// A bound UDP socket and TCP listener for the zone.
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

/// What was last published, kept to turn the next table into a small update.
struct Published {
    config: ZoneConfig,
    table: EndpointTable,
    handler: Arc<InMemoryZoneHandler>,
}

/// The zone being served and who may transfer it; cheap to clone.
#[derive(Clone)]
pub struct ZoneServer {
    catalog: Arc<ArcSwap<Catalog>>,
    published: Arc<tokio::sync::Mutex<Option<Published>>>,
    transfer_from: Arc<Vec<IpAddr>>,
}

impl ZoneServer {
    /// Serve nothing yet (every query is REFUSED until the first [`Self::publish`]).
    pub fn new(transfer_from: Vec<IpAddr>) -> Self {
        Self {
            catalog: Arc::new(ArcSwap::from_pointee(Catalog::new())),
            published: Arc::new(tokio::sync::Mutex::new(None)),
            transfer_from: Arc::new(transfer_from),
        }
    }

    /// Serve `table` from now on. Readers see the old zone or the new one, never a mix: a
    /// changed configuration or set of nameservers swaps in a whole new zone; otherwise only
    /// the databases that changed, and the SOA, are replaced under one write lock.
    pub async fn publish(&self, config: &ZoneConfig, table: EndpointTable) -> Result<(), DnsError> {
        let mut published = self.published.lock().await;
        if let Some(p) = published.as_mut() {
            if p.config == *config && p.table.nameservers == table.nameservers {
                update(p, &table).await?;
                p.table = table;
                return Ok(());
            }
        }
        let zone = Zone::build(config, &table)?;
        let (catalog, handler) = zone.catalog()?;
        self.catalog.store(Arc::new(catalog));
        *published = Some(Published {
            config: config.clone(),
            table,
            handler,
        });
        Ok(())
    }

    /// The zone being served, if any.
    pub async fn current(&self) -> Option<Zone> {
        let published = self.published.lock().await;
        let p = published.as_ref()?;
        Zone::build(&p.config, &p.table).ok()
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

/// Replace what changed between `p.table` and `next` in the served zone.
async fn update(p: &Published, next: &EndpointTable) -> Result<(), DnsError> {
    let apex = zone_table_apex(next);
    let zone = Zone::build(&p.config, &apex)?;
    let (old, new) = (&p.table.databases, &next.databases);
    let (mut i, mut j) = (0, 0);
    let mut gone: Vec<&str> = Vec::new();
    let mut fresh: Vec<&DatabaseEntry> = Vec::new();
    // Both lists are sorted by name: one merge walk finds what changed.
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a.name == b.name => {
                if a != b {
                    gone.push(&a.name);
                    fresh.push(b);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a.name < b.name => {
                gone.push(&a.name);
                i += 1;
            }
            (Some(a), None) => {
                gone.push(&a.name);
                i += 1;
            }
            (_, Some(b)) => {
                fresh.push(b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    let mut records: Vec<Rr> = fresh.iter().flat_map(|db| zone::database_records(db)).collect();
    records.extend(fresh.iter().filter_map(|db| zone::host_record(db)));
    records.extend(zone::apex_records(&apex));
    let sets = zone.record_sets(&records)?;
    let mut stale = Vec::new();
    for name in gone {
        for owner in zone::database_names(name) {
            let owner = LowerName::from(zone.absolute(&owner)?);
            for kind in [RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::SRV] {
                stale.push(RrKey::new(owner.clone(), kind));
            }
        }
    }
    // One write lock: queries see the zone before or after, never half of it.
    let mut store = p.handler.records_mut().await;
    for key in stale {
        store.remove(&key);
    }
    for (key, set) in sets {
        store.insert(key, Arc::new(set));
    }
    Ok(())
}

/// Just the apex part of a table (SOA and nameservers).
fn zone_table_apex(t: &EndpointTable) -> EndpointTable {
    EndpointTable {
        serial: t.serial,
        nameservers: t.nameservers.clone(),
        databases: Vec::new(),
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
