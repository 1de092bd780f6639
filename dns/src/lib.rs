//! Keel's authoritative DNS for database endpoints.
//!
//! `node/` feeds this crate an immutable [`EndpointTable`] built from the
//! applied admin state; [`zone`] turns it into hickory records (and a zone
//! file), [`server`] serves the current zone over UDP and TCP and swaps it
//! atomically, [`notify`] tells secondaries about a new serial. The crate
//! knows nothing of Raft and never writes state.

pub mod indexed;
pub mod notify;
pub mod server;
mod udp;
pub mod zone;

use std::net::IpAddr;

/// Where a database's primary runs, as DNS publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// Name of the host running the primary (a DNS label).
    pub host: String,
    /// That host's address.
    pub addr: IpAddr,
    /// The database's port.
    pub port: u16,
    /// The host's zone.
    pub zone: String,
}

/// A readable replica serving a database's readers, as DNS publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// Name of the host running it (a DNS label).
    pub host: String,
    /// That host's address.
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
    /// The host's zone (a DNS label).
    pub zone: String,
}

/// One database in the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseEntry {
    /// Database key, `<name>.<account>` (two DNS labels).
    pub name: String,
    /// Lifecycle status, published as TXT `status=<status>`.
    pub status: String,
    /// Where to connect; `None` while the database does not serve (its name
    /// then answers NODATA for A, and TXT says why).
    pub primary: Option<Primary>,
    /// Read replicas that serve readers (`<db>.ro…` falls back to the primary).
    pub readers: Vec<Reader>,
}

/// A control node serving the zone: `ns<id>.<zone>` with glue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nameserver {
    /// Node id.
    pub id: u64,
    /// Address resolvers reach it at.
    pub addr: IpAddr,
}

/// A consistent view of the zone's contents at one applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointTable {
    /// SOA serial: increases with every committed change that touches the zone.
    pub serial: u32,
    /// Control nodes (NS records and glue), by id.
    pub nameservers: Vec<Nameserver>,
    /// Databases, by name.
    pub databases: Vec<DatabaseEntry>,
}

/// How the zone is named and cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Zone apex, e.g. `db.keel.internal.`.
    pub origin: String,
    /// TTL of every record, also the SOA minimum (negative caching).
    pub ttl: u32,
}

/// Why a zone could not be built or served.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The zone name is not a valid DNS name.
    #[error("zone name {name:?} is not a valid DNS name: {reason}")]
    BadZone {
        /// The configured name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record name built from state is not a valid DNS name (a bug: names are DNS labels).
    #[error("cannot publish {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// hickory refused the assembled zone.
    #[error("the zone could not be assembled: {0}")]
    Zone(String),
    /// A socket could not be bound or used.
    #[error("DNS socket on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}
