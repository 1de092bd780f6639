//! Feeding the DNS zone from the applied state: after every applied change
//! that touches the zone, build a new endpoint table, swap it in, and NOTIFY
//! the configured secondaries.
//!
//! What a name answers by status: a database that serves (available,
//! modifying, backing-up, failing-over, storage-full) has A/AAAA and SRV
//! records; one that does not (creating, hibernating, hibernated, resuming,
//! recovering, deleting, failed) keeps only its TXT `status=…`, so an address
//! query gets NODATA and a client fails fast instead of reaching a stopped
//! port; a deleted one is NXDOMAIN.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use keel_dns::server::ZoneServer;
use keel_dns::{DatabaseEntry, EndpointTable, Nameserver, Primary, ZoneConfig};
use keel_raft_store::{wire_name, AdminState, DatabaseStatus, InstanceRole};

use super::NodeCtx;

/// Whether a database in `status` accepts connections at its endpoint.
pub fn serves(status: DatabaseStatus) -> bool {
    matches!(
        status,
        DatabaseStatus::Available
            | DatabaseStatus::Modifying
            | DatabaseStatus::BackingUp
            | DatabaseStatus::FailingOver
            | DatabaseStatus::StorageFull
    )
}

/// The endpoint table for `state`, with `nameservers` and `serial`.
pub fn table(state: &AdminState, nameservers: Vec<Nameserver>, serial: u32) -> EndpointTable {
    let host_ip = |host: &str| -> Option<IpAddr> {
        let addr = &state.hosts.get(host)?.addr;
        let ip = addr.rsplit_once(':').map_or(addr.as_str(), |(ip, _)| ip);
        ip.trim_matches(['[', ']']).parse().ok()
    };
    let databases = state
        .databases
        .values()
        .map(|db| {
            let primary = db.endpoint.as_ref().filter(|_| serves(db.status)).and_then(|e| {
                Some(Primary {
                    host: e.host.clone(),
                    addr: e.addr.parse().ok().or_else(|| host_ip(&e.host))?,
                    port: e.port,
                })
            });
            let replicas = db
                .instances
                .iter()
                .filter_map(|id| state.instances.get(id))
                .filter(|i| i.role == InstanceRole::Replica)
                .filter_map(|i| host_ip(&i.host))
                .collect();
            DatabaseEntry {
                name: db.name.clone(),
                status: wire_name(&db.status),
                primary,
                replicas,
            }
        })
        .collect();
    EndpointTable {
        serial,
        nameservers,
        databases,
    }
}

/// Control nodes as nameservers: each at the address of its API.
fn nameservers(node: &NodeCtx) -> Vec<Nameserver> {
    node.members()
        .into_iter()
        .filter_map(|(id, (n, _))| {
            let addr: SocketAddr = n.api_addr.parse().ok()?;
            Some(Nameserver { id, addr: addr.ip() })
        })
        .collect()
}

/// The zone configuration of this node.
pub fn zone_config(node: &NodeCtx) -> ZoneConfig {
    ZoneConfig {
        origin: node.config.dns_zone.clone(),
        ttl: node.config.dns_ttl,
    }
}

/// What the zone's contents depend on: the last change to the databases and to the members.
fn version(node: &NodeCtx) -> (u64, u64) {
    let membership_index = node
        .raft
        .metrics()
        .borrow()
        .membership_config
        .log_id()
        .map_or(0, |l| l.index);
    (node.state.read(|a| a.state.dns_serial), membership_index)
}

/// The SOA serial for a [`version`]: one more than the last change's log index (so a node with
/// no members yet publishes a lower serial than any real zone). Serial arithmetic (RFC 1982)
/// wraps, so the low 32 bits of a growing index are a valid serial.
fn serial((dns_serial, membership_index): (u64, u64)) -> u32 {
    (dns_serial.max(membership_index) + 1) as u32
}

/// The endpoint table for the state applied here now.
fn current_table(node: &NodeCtx, version: (u64, u64)) -> EndpointTable {
    let ns = nameservers(node);
    node.state.read(|a| table(&a.state, ns, serial(version)))
}

/// Keep `server` serving the current zone until the node stops.
pub async fn run(node: Arc<NodeCtx>, server: ZoneServer, stop: tokio_util::sync::CancellationToken) {
    let mut applied = node.state.subscribe();
    let mut membership = node.raft.metrics();
    let mut served: Option<(u64, u64)> = None;
    let config = zone_config(&node);
    loop {
        // Most applied entries do not touch the zone: compare versions before building anything.
        let now = version(&node);
        if served != Some(now) {
            match server.publish(&config, current_table(&node, now)).await {
                Ok(()) => {
                    served = Some(now);
                    for secondary in node.config.dns_notify.iter().filter_map(|s| s.parse().ok()) {
                        let origin = config.origin.clone();
                        tokio::spawn(async move { keel_dns::notify::notify(&origin, secondary).await });
                    }
                }
                Err(e) => tracing::error!(error = %e, "Cannot serve the new DNS zone; still serving the old one."),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = applied.changed() => if r.is_err() { return },
            r = membership.changed() => if r.is_err() { return },
        }
    }
}
