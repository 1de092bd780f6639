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

use keel_dns::server::{DatabaseChanges, ZoneServer};
use keel_dns::{DatabaseEntry, EndpointTable, Nameserver, Primary, Reader, ZoneConfig};
use keel_raft_store::{wire_name, AdminState, Database, DatabaseStatus};

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
    EndpointTable {
        serial,
        nameservers,
        databases: state.databases.values().map(|db| entry(state, db)).collect(),
    }
}

/// What the zone publishes for `db`.
fn entry(state: &AdminState, db: &Database) -> DatabaseEntry {
    let host_ip = |host: &str| -> Option<IpAddr> {
        let addr = &state.hosts.get(host)?.addr;
        let ip = addr.rsplit_once(':').map_or(addr.as_str(), |(ip, _)| ip);
        ip.trim_matches(['[', ']']).parse().ok()
    };
    let zone = |host: &str| state.hosts.get(host).map(|h| h.zone.clone()).unwrap_or_default();
    let primary = db.endpoint.as_ref().filter(|_| serves(db.status)).and_then(|e| {
        Some(Primary {
            host: e.host.clone(),
            addr: e.addr.parse().ok().or_else(|| host_ip(&e.host))?,
            port: e.port,
            zone: zone(&e.host),
        })
    });
    // Replicas that follow the current primary and are healthy, while the database serves.
    let readers = state
        .replicas_of(&db.key())
        .filter(|i| primary.is_some() && state.replica_serves(i))
        .filter_map(|i| {
            Some(Reader {
                host: i.host.clone(),
                addr: host_ip(&i.host)?,
                port: i.port,
                zone: zone(&i.host),
            })
        })
        .collect();
    DatabaseEntry {
        name: db.key(),
        status: wire_name(&db.status),
        primary,
        readers,
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

/// What the zone takes from the membership: its log index and the nameservers themselves (a
/// node that learns the initial membership sees its index stay 0, so the index alone misses
/// that change).
#[derive(Debug, Clone, PartialEq)]
struct Membership {
    index: u64,
    nameservers: Vec<Nameserver>,
}

impl Membership {
    /// The membership this node knows now.
    fn now(node: &NodeCtx) -> Self {
        let index = node
            .raft
            .server_metrics()
            .borrow()
            .membership_config
            .log_id()
            .map_or(0, |l| l.index);
        Self {
            index,
            nameservers: nameservers(node),
        }
    }
}

/// What the zone's contents depend on: the last change to the databases (`dns_serial`) and
/// the membership.
#[derive(Debug, Clone, PartialEq)]
struct Version {
    dns_serial: u64,
    membership: Membership,
}

/// The SOA serial for a [`Version`]: one more than the last change's log index (so a node with
/// no members yet publishes a lower serial than any real zone). Serial arithmetic (RFC 1982)
/// wraps, so the low 32 bits of a growing index are a valid serial.
fn serial(v: &Version) -> u32 {
    (v.dns_serial.max(v.membership.index) + 1) as u32
}

/// What to publish to move the zone from `served` to the state applied here now.
enum Update {
    /// Nothing changed.
    None,
    /// Only these databases changed (the journal reaches back to `served`).
    Changes(Version, DatabaseChanges),
    /// Rebuild: first publish, new members, or the journal does not reach back far enough.
    Full(Version, EndpointTable),
}

fn next_update(node: &NodeCtx, served: Option<&Version>, membership: &Membership) -> Update {
    node.state.read(|a| {
        let same_membership = served.filter(|s| s.membership == *membership);
        if same_membership.is_some_and(|s| s.dns_serial == a.state.dns_serial) {
            return Update::None;
        }
        let now = Version {
            dns_serial: a.state.dns_serial,
            membership: membership.clone(),
        };
        let changed = same_membership.and_then(|s| a.zone_journal.changed_since(s.dns_serial));
        match changed {
            Some(names) => Update::Changes(
                now,
                names
                    .into_iter()
                    .map(|name| {
                        (
                            name.to_string(),
                            a.state.databases.get(name).map(|db| entry(&a.state, db)),
                        )
                    })
                    .collect(),
            ),
            None => {
                let table = table(&a.state, now.membership.nameservers.clone(), serial(&now));
                Update::Full(now, table)
            }
        }
    })
}

/// Keep `server` serving the current zone until the node stops. Each change costs the
/// databases it touched, not the size of the zone (see `ZoneJournal`).
pub async fn run(node: Arc<NodeCtx>, server: ZoneServer, stop: tokio_util::sync::CancellationToken) {
    let mut applied = node.state.subscribe();
    // Server metrics change with membership and leadership, not with every append.
    let mut membership_changes = node.raft.server_metrics();
    let mut membership = Membership::now(&node);
    let mut served: Option<Version> = None;
    let config = zone_config(&node);
    loop {
        let published = match next_update(&node, served.as_ref(), &membership) {
            Update::None => None,
            Update::Changes(now, changes) => match server.publish_changes(&config, serial(&now), changes).await {
                Ok(true) => Some(Ok(now)),
                // Nothing served yet to change: publish everything.
                Ok(false) => match next_update(&node, None, &membership) {
                    Update::Full(now, table) => Some(server.publish(&config, table).await.map(|()| now)),
                    _ => None,
                },
                Err(e) => Some(Err(e)),
            },
            Update::Full(now, table) => Some(server.publish(&config, table).await.map(|()| now)),
        };
        match published {
            None => {}
            Some(Ok(now)) => {
                served = Some(now);
                for secondary in node.config.dns_notify.iter().filter_map(|s| s.parse().ok()) {
                    let origin = config.origin.clone();
                    tokio::spawn(async move { keel_dns::notify::notify(&origin, secondary).await });
                }
            }
            Some(Err(e)) => {
                // Forget what was served so the next change rebuilds everything.
                served = None;
                tracing::error!(error = %e, "Cannot serve the new DNS zone; still serving the old one.");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = applied.changed() => if r.is_err() { return },
            r = membership_changes.changed() => {
                if r.is_err() {
                    return;
                }
                membership = Membership::now(&node);
            }
        }
    }
}
