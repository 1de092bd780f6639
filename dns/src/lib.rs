//! Keel's authoritative DNS for database endpoints.
//!
//! `node/` feeds this crate an immutable [`EndpointTable`] built from the
//! applied admin state; this crate turns it into a zone and serves it. It
//! knows nothing of Raft and never writes state. The zone and its
//! hickory-server listener arrive with the DNS issue; the table is the
//! contract between the two crates.

use std::net::IpAddr;

/// Where one database answers, as DNS will publish it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Endpoint {
    /// Database name (a DNS label).
    pub database: String,
    /// Host name of the primary's host.
    pub host: String,
    /// Address of the primary's host.
    pub primary: IpAddr,
    /// Addresses of readable replicas.
    pub replicas: Vec<IpAddr>,
    /// The database's port.
    pub port: u16,
    /// Status text for the TXT record.
    pub status: String,
}

/// A consistent view of every endpoint at one applied index.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EndpointTable {
    /// The applied log index this table reflects; becomes the SOA serial.
    pub applied_index: u64,
    /// Endpoints sorted by database name.
    pub endpoints: Vec<Endpoint>,
}

impl EndpointTable {
    /// The endpoint of `database`, if it has one.
    pub fn get(&self, database: &str) -> Option<&Endpoint> {
        self.endpoints
            .binary_search_by(|e| e.database.as_str().cmp(database))
            .ok()
            .map(|i| &self.endpoints[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_by_name() {
        let e = |name: &str| Endpoint {
            database: name.into(),
            host: "h1".into(),
            primary: "127.0.1.1".parse().unwrap(),
            replicas: vec![],
            port: 5432,
            status: "available".into(),
        };
        let t = EndpointTable {
            applied_index: 7,
            endpoints: vec![e("a"), e("b")],
        };
        assert_eq!(t.get("b").unwrap().database, "b");
        assert!(t.get("c").is_none());
    }
}
