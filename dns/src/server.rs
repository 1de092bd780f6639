//! Serving the zone over UDP and TCP, swapping it atomically on every change.
//!
//! Queries are answered by hickory's catalog (AA bit, NXDOMAIN, NODATA with
//! the SOA, REFUSED outside the zone, EDNS, truncation over UDP). In front of
//! it we allow zone transfers only over TCP and only from configured
//! addresses, and answer IXFR with NOTIMP so secondaries fall back to AXFR.
//! UDP is read by our own loop ([`crate::udp`]), which resends hickory's
//! earlier answer to a repeated query; TCP is hickory's server.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, Metadata, ResponseCode};
use hickory_proto::rr::{LowerName, Name, Record, RecordType, RrKey};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::udp::{self, AnswerCache};
use crate::zone::{self, Rr, Zone};
use crate::{DatabaseEntry, DnsError, EndpointTable, Nameserver, ZoneConfig};

/// Idle time allowed on a TCP connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection. hickory drops what does not fit, and a zone
/// transfer queues all its messages at once: 1,024 of [`AXFR_MESSAGE_BYTES`] is ~48 MiB.
const TCP_QUEUE: usize = 1024;
/// UDP receive buffer asked for. The default (about 200 KiB) holds only ~2 ms of queries
/// at 100k qps, so a burst while the loop is descheduled overflows it and queries are
/// dropped; NSD and Knot also raise theirs. The kernel caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 8 * 1024 * 1024;
/// Uncompressed record bytes per AXFR message (a message holds at most 64 KiB).
const AXFR_MESSAGE_BYTES: usize = 48 * 1024;

/// A bound UDP socket and TCP listener for the zone.
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Sockets {
    /// The address bound (useful after binding port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }
}

/// What was last published, kept to turn the next change into a small update.
struct Published {
    config: ZoneConfig,
    serial: u32,
    nameservers: Vec<Nameserver>,
    databases: BTreeMap<String, DatabaseEntry>,
    /// Serving databases per host: a host's address record goes when its last one does.
    host_users: BTreeMap<String, usize>,
    handler: Arc<InMemoryZoneHandler>,
}

impl Published {
    fn table(&self) -> EndpointTable {
        EndpointTable {
            serial: self.serial,
            nameservers: self.nameservers.clone(),
            databases: self.databases.values().cloned().collect(),
        }
    }
}

/// New contents for some databases: `None` removes the database from the zone.
pub type DatabaseChanges = Vec<(String, Option<DatabaseEntry>)>;

/// The zone being served and who may transfer it; cheap to clone.
#[derive(Clone)]
pub struct ZoneServer {
    catalog: Arc<ArcSwap<Catalog>>,
    published: Arc<tokio::sync::Mutex<Option<Published>>>,
    transfer_from: Arc<Vec<IpAddr>>,
    /// UDP answers to repeated queries (see [`crate::udp`]); emptied on every change.
    pub(crate) answers: Arc<AnswerCache>,
}

impl ZoneServer {
    /// Serve nothing yet (every query is REFUSED until the first [`Self::publish`]).
    pub fn new(transfer_from: Vec<IpAddr>) -> Self {
        Self {
            catalog: Arc::new(ArcSwap::from_pointee(Catalog::new())),
            published: Arc::new(tokio::sync::Mutex::new(None)),
            transfer_from: Arc::new(transfer_from),
            answers: Arc::default(),
        }
    }

    /// Serve `table` from now on. Readers see the old zone or the new one, never a mix: a
    /// changed configuration or set of nameservers swaps in a whole new zone; otherwise only
    /// the databases that differ, and the SOA, are replaced under one write lock.
    pub async fn publish(&self, config: &ZoneConfig, table: EndpointTable) -> Result<(), DnsError> {
        let mut published = self.published.lock().await;
        if let Some(p) = published.as_mut() {
            if p.config == *config && p.nameservers == table.nameservers {
                let changes = differences(&p.databases, table.databases);
                let applied = apply_changes(p, table.serial, changes).await;
                self.answers.invalidate();
                return applied;
            }
        }
        let zone = Zone::build(config, &table)?;
        let (catalog, handler) = zone.catalog()?;
        self.catalog.store(Arc::new(catalog));
        self.answers.invalidate();
        let mut host_users = BTreeMap::new();
        for host in table.databases.iter().flat_map(zone::hosts_of) {
            *host_users.entry(host.to_string()).or_default() += 1;
        }
        *published = Some(Published {
            config: config.clone(),
            serial: table.serial,
            nameservers: table.nameservers,
            databases: table.databases.into_iter().map(|d| (d.name.clone(), d)).collect(),
            host_users,
            handler,
        });
        Ok(())
    }

    /// Replace just `changes` and move the SOA to `serial`, as one atomic update. Returns
    /// `false`, changing nothing, when no zone with this `config` is served yet (publish a
    /// whole table first).
    pub async fn publish_changes(
        &self,
        config: &ZoneConfig,
        serial: u32,
        changes: DatabaseChanges,
    ) -> Result<bool, DnsError> {
        let mut published = self.published.lock().await;
        match published.as_mut() {
            Some(p) if p.config == *config => {
                let applied = apply_changes(p, serial, changes).await;
                self.answers.invalidate();
                applied.map(|()| true)
            }
            _ => Ok(false),
        }
    }

    /// The zone being served, if any.
    pub async fn current(&self) -> Option<Zone> {
        let published = self.published.lock().await;
        let p = published.as_ref()?;
        Zone::build(&p.config, &p.table()).ok()
    }

    /// Bind UDP and TCP on `addr` (before serving, so a clash fails a start, not a later query).
    pub async fn bind(addr: SocketAddr) -> Result<Sockets, DnsError> {
        let io = |source| DnsError::Io {
            addr: addr.to_string(),
            source,
        };
        let udp = UdpSocket::bind(addr).await.map_err(io)?;
        raise_receive_buffer(&udp);
        // The same port for TCP, also when `addr` asked for any free port.
        let tcp = TcpListener::bind(udp.local_addr().map_err(io)?).await.map_err(io)?;
        Ok(Sockets { udp, tcp })
    }

    /// Answer on `sockets` until `stop` resolves.
    pub async fn serve(
        &self,
        sockets: Sockets,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), DnsError> {
        let addr = sockets.udp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut server = Server::new(self.clone());
        server.register_listener(sockets.tcp, TCP_IDLE, TCP_QUEUE);
        let token = server.shutdown_token().clone();
        tokio::select! {
            r = server.block_until_done() => r.map_err(|e| DnsError::Io { addr, source: std::io::Error::other(e.to_string()) }),
            r = udp::serve(sockets.udp, self.clone()) => {
                token.cancel();
                r.map_err(|source| DnsError::Io { addr, source })
            }
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

    /// The zone as AXFR sends it (SOA, every other record, SOA again), if `request` is an
    /// allowed AXFR of the zone served here.
    async fn transfer(&self, request: &Request) -> Option<Vec<Record>> {
        let info = request.request_info().ok()?;
        if info.query.query_type() != RecordType::AXFR {
            return None;
        }
        let handler = {
            let published = self.published.lock().await;
            let p = published.as_ref()?;
            if info.query.name() != &LowerName::from(Name::from_ascii(&p.config.origin).ok()?) {
                return None;
            }
            p.handler.clone()
        };
        let records = handler.records().await;
        let soa = records
            .iter()
            .find(|(k, _)| k.record_type == RecordType::SOA)?
            .1
            .records_without_rrsigs()
            .next()?
            .clone();
        let mut out = vec![soa.clone()];
        for (_, set) in records.iter().filter(|(k, _)| k.record_type != RecordType::SOA) {
            out.extend(set.records_without_rrsigs().cloned());
        }
        out.push(soa);
        Some(out)
    }

    /// Send `records` as a multi-message AXFR: hickory puts a transfer in one message and
    /// cuts a zone over 64 KiB short (hickory-dns#351).
    async fn send_transfer<R: ResponseHandler>(
        &self,
        request: &Request,
        records: &[Record],
        mut response: R,
    ) -> Result<ResponseInfo, NetError> {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let mut info = None;
        for chunk in messages(records) {
            let none = std::iter::empty::<&Record>;
            let message = MessageResponseBuilder::from_message_request(request).build(
                metadata,
                chunk.iter(),
                none(),
                none(),
                none(),
            );
            info = Some(response.send_response(message).await?);
        }
        info.ok_or_else(|| NetError::from("empty zone transfer"))
    }
}

/// The changes that turn `old` into `new` (entries that stay the same are dropped by
/// [`apply_changes`]).
fn differences(old: &BTreeMap<String, DatabaseEntry>, new: Vec<DatabaseEntry>) -> DatabaseChanges {
    let kept: std::collections::BTreeSet<&str> = new.iter().map(|d| d.name.as_str()).collect();
    let gone = old.keys().filter(|name| !kept.contains(name.as_str()));
    let mut changes: DatabaseChanges = gone.map(|name| (name.clone(), None)).collect();
    changes.extend(new.into_iter().map(|d| (d.name.clone(), Some(d))));
    changes
}

/// Apply `changes` and the SOA for `serial` to the served zone and to `p`.
async fn apply_changes(p: &mut Published, serial: u32, changes: DatabaseChanges) -> Result<(), DnsError> {
    let apex = EndpointTable {
        serial,
        nameservers: p.nameservers.clone(),
        databases: Vec::new(),
    };
    let zone = Zone::build(&p.config, &apex)?;
    let changes: DatabaseChanges = changes
        .into_iter()
        .filter(|(name, entry)| p.databases.get(name) != entry.as_ref())
        .collect();
    let fresh = changes.iter().filter_map(|(_, entry)| entry.as_ref());
    let mut records: Vec<Rr> = fresh.clone().flat_map(zone::database_records).collect();
    records.extend(fresh.flat_map(zone::host_records));
    records.extend(zone::apex_records(&apex));
    let sets = zone.record_sets(&records)?;
    // Users per host after the change, for the hosts it touches.
    let mut host_users: BTreeMap<String, usize> = BTreeMap::new();
    let mut count = |host: &str, delta: isize| {
        let users = host_users
            .entry(host.to_string())
            .or_insert_with(|| p.host_users.get(host).copied().unwrap_or(0));
        *users = users.saturating_add_signed(delta);
    };
    for (name, entry) in &changes {
        for host in p.databases.get(name).map(zone::hosts_of).unwrap_or_default() {
            count(host, -1);
        }
        for host in entry.as_ref().map(zone::hosts_of).unwrap_or_default() {
            count(host, 1);
        }
    }
    let mut stale = Vec::new();
    for host in host_users.iter().filter(|(_, &n)| n == 0).map(|(h, _)| h) {
        let owner = LowerName::from(zone.absolute(&format!("{host}.hosts"))?);
        for kind in [RecordType::A, RecordType::AAAA] {
            stale.push(RrKey::new(owner.clone(), kind));
        }
    }
    for (name, _) in &changes {
        // The old entry's names (its reader names follow its zones), and the fixed ones.
        let old = p.databases.get(name).map(zone::owner_names).unwrap_or_default();
        for owner in old.into_iter().chain(zone::database_names(name)) {
            let owner = LowerName::from(zone.absolute(&owner)?);
            for kind in [RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::SRV] {
                stale.push(RrKey::new(owner.clone(), kind));
            }
        }
    }
    {
        // One write lock: queries see the zone before or after, never half of it.
        let mut store = p.handler.records_mut().await;
        for key in stale {
            store.remove(&key);
        }
        for (key, set) in sets {
            store.insert(key, Arc::new(set));
        }
    }
    p.serial = serial;
    for (host, users) in host_users {
        match users {
            0 => p.host_users.remove(&host),
            n => p.host_users.insert(host, n),
        };
    }
    for (name, entry) in changes {
        match entry {
            Some(entry) => p.databases.insert(name, entry),
            None => p.databases.remove(&name),
        };
    }
    Ok(())
}

/// `records` cut into runs that each fit in one message.
fn messages(records: &[Record]) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    let mut buf = Vec::new();
    for (i, record) in records.iter().enumerate() {
        buf.clear();
        // Encoding a plain record cannot fail; were it to, count it as large.
        let size = match record.emit(&mut BinEncoder::new(&mut buf)) {
            Ok(()) => buf.len(),
            Err(_) => AXFR_MESSAGE_BYTES,
        };
        if bytes + size > AXFR_MESSAGE_BYTES && i > start {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// What to report when an answer could not be sent.
fn servfail(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: Default::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for ZoneServer {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        if let Some(code) = self.transfer_refused(request) {
            let msg = MessageResponseBuilder::from_message_request(request).error_msg(&request.metadata, code);
            return response.send_response(msg).await.unwrap_or_else(|_| servfail(request));
        }
        if let Some(records) = self.transfer(request).await {
            return self
                .send_transfer(request, &records, response)
                .await
                .unwrap_or_else(|_| servfail(request));
        }
        let catalog = self.catalog.load_full();
        catalog.handle_request::<R, T>(request, response).await
    }
}

/// Ask for [`UDP_RECEIVE_BUFFER`]. A smaller buffer still works (only bursts suffer), so a
/// refusal is logged, not fatal.
fn raise_receive_buffer(udp: &UdpSocket) {
    let socket = socket2::SockRef::from(udp);
    if let Err(e) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!("could not raise the DNS UDP receive buffer: {e}");
    }
    match socket.recv_buffer_size() {
        Ok(size) => tracing::debug!(bytes = size, "DNS UDP receive buffer"),
        Err(e) => tracing::debug!("could not read the DNS UDP receive buffer size: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Primary;

    #[tokio::test]
    async fn the_udp_socket_gets_a_larger_receive_buffer() {
        let sockets = ZoneServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let got = socket2::SockRef::from(&sockets.udp).recv_buffer_size().unwrap();
        // The kernel caps the request at rmem_max (and reports twice what it grants).
        let cap: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // And more than a socket gets by default, so a kernel whose cap leaves nothing to
        // raise fails this test instead of passing it without the call.
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let default = socket2::SockRef::from(&plain).recv_buffer_size().unwrap();
        assert!(
            got >= UDP_RECEIVE_BUFFER.min(cap) && got > default,
            "receive buffer {got} bytes; asked for {UDP_RECEIVE_BUFFER}, rmem_max {cap}, default {default}"
        );
    }

    fn db(name: &str, status: &str, host: Option<(&str, &str)>) -> DatabaseEntry {
        DatabaseEntry {
            name: name.into(),
            status: status.into(),
            primary: host.map(|(host, addr)| Primary {
                host: host.into(),
                addr: addr.parse().unwrap(),
                port: 5433,
                zone: "a".into(),
            }),
            readers: vec![],
        }
    }

    fn table(serial: u32, databases: Vec<DatabaseEntry>) -> EndpointTable {
        EndpointTable {
            serial,
            nameservers: vec![Nameserver {
                id: 1,
                addr: "127.0.0.1".parse().unwrap(),
            }],
            databases,
        }
    }

    fn config() -> ZoneConfig {
        ZoneConfig {
            origin: "db.keel.internal.".into(),
            ttl: 5,
        }
    }

    async fn records(server: &ZoneServer) -> Vec<(RrKey, Vec<hickory_proto::rr::Record>)> {
        let published = server.published.lock().await;
        let handler = published.as_ref().expect("published").handler.clone();
        let records = handler.records().await;
        records
            .iter()
            .map(|(k, set)| (k.clone(), set.records_without_rrsigs().cloned().collect()))
            .collect()
    }

    fn reader(host: &str, addr: &str, zone: &str) -> crate::Reader {
        crate::Reader {
            host: host.into(),
            addr: addr.parse().unwrap(),
            port: 5434,
            zone: zone.into(),
        }
    }

    #[tokio::test]
    async fn changes_serve_exactly_what_a_whole_table_would() {
        // `a` loses its replica in zone b (its reader names there and h4's address go);
        // `c` gains one in zone c.
        let mut a_before = db("a", "available", Some(("h1", "10.0.0.1")));
        a_before.readers = vec![reader("h4", "10.0.0.4", "b")];
        let mut c_after = db("c", "available", Some(("h1", "10.0.0.1")));
        c_after.readers = vec![reader("h5", "10.0.0.5", "c")];
        let before = vec![
            a_before,
            db("b", "available", Some(("h2", "10.0.0.2"))),
            db("c", "creating", None),
            db("e", "available", Some(("h1", "10.0.0.1"))),
        ];
        let after = vec![
            db("a", "available", Some(("h3", "10.0.0.3"))),
            c_after,
            db("d", "available", Some(("h1", "10.0.0.1"))),
            db("e", "hibernated", None),
        ];
        let changes: DatabaseChanges = vec![
            ("a".into(), Some(after[0].clone())),
            ("b".into(), None),
            ("c".into(), Some(after[1].clone())),
            ("d".into(), Some(after[2].clone())),
            ("e".into(), Some(after[3].clone())),
            ("never-existed".into(), None),
        ];

        let whole = ZoneServer::new(vec![]);
        whole.publish(&config(), table(8, after.clone())).await.unwrap();
        let expected = records(&whole).await;

        let incremental = ZoneServer::new(vec![]);
        assert!(
            !incremental
                .publish_changes(&config(), 8, changes.clone())
                .await
                .unwrap(),
            "nothing to change before a first publish"
        );
        incremental.publish(&config(), table(7, before.clone())).await.unwrap();
        assert!(incremental.publish_changes(&config(), 8, changes).await.unwrap());
        assert_eq!(records(&incremental).await, expected);

        let diffed = ZoneServer::new(vec![]);
        diffed.publish(&config(), table(7, before)).await.unwrap();
        diffed.publish(&config(), table(8, after)).await.unwrap();
        assert_eq!(records(&diffed).await, expected);
        // h2 lost its only database; h1 still serves c and d.
        let names: Vec<String> = expected.iter().map(|(k, _)| k.name().to_string()).collect();
        assert!(!names.iter().any(|n| n.starts_with("h2.hosts")), "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("h1.hosts")), "{names:?}");
        // a's old replica: its zone's reader names and its host's address are gone.
        assert!(
            !names.iter().any(|n| n.contains("a.ro.b") || n.starts_with("h4.hosts")),
            "{names:?}"
        );
        assert!(
            names.iter().any(|n| n.starts_with("c.ro.c")) && names.iter().any(|n| n.starts_with("h5.hosts")),
            "{names:?}"
        );
    }
}
