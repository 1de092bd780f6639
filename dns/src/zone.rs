//! The zone's contents, built once from an [`EndpointTable`], then rendered
//! either as hickory records (to serve) or as a standard zone file (to dump).
//!
//! Names (all under the zone apex; `<db>.<account>` is a database's key):
//! - `<db>.<account>` A/AAAA → the primary's host; TXT `status=<status>`
//! - `<db>.ro.<account>` A/AAAA → readable replicas, else the primary; TXT as above
//! - `<db>.ro.<zone>.<account>` A/AAAA, for each zone of the primary and the replicas →
//!   the replicas in that zone, else every replica, else the primary
//! - `_postgresql._tcp.<db>.<account>` SRV → `<host>.hosts` and the database's port
//! - `_postgresql._tcp.<reader name>` SRV → the readers' `<host>.hosts` and ports
//! - `<host>.hosts` A/AAAA → the host's address
//! - apex SOA and NS `ns<id>.ns` (with glue) for every control node
//!
//! Host and nameserver names live under their own labels (`hosts`, `ns`), which
//! are reserved account names, so no database name can collide with them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RrKey};
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use crate::{DatabaseEntry, DnsError, EndpointTable, ZoneConfig};

/// SOA timers for secondaries: refresh, retry, expire (seconds).
const SOA_REFRESH: u32 = 60;
const SOA_RETRY: u32 = 10;
const SOA_EXPIRE: u32 = 7 * 24 * 3600;

/// One record's data, independent of how it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Start of authority.
    Soa {
        /// Primary nameserver (relative name).
        mname: String,
        /// Responsible mailbox, as a name (relative).
        rname: String,
        /// Serial.
        serial: u32,
    },
    /// Nameserver (relative name).
    Ns(String),
    /// Address.
    Addr(IpAddr),
    /// Service location.
    Srv {
        /// Port.
        port: u16,
        /// Target (relative name).
        target: String,
    },
    /// Text.
    Txt(String),
}

/// One resource record: a name relative to the apex (`""` is the apex) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    /// Owner, relative to the apex.
    pub name: String,
    /// Data.
    pub data: Data,
}

/// The zone as a list of records, SOA first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Apex with a trailing dot, lower case.
    pub origin: String,
    /// TTL of every record and the negative-caching time.
    pub ttl: u32,
    /// SOA serial.
    pub serial: u32,
    /// Records, SOA first, then in name order.
    pub records: Vec<Rr>,
}

/// The apex in canonical form (lower case, trailing dot), or why it is not a name.
pub fn origin(name: &str) -> Result<String, DnsError> {
    let mut o = name.trim().to_ascii_lowercase();
    if !o.ends_with('.') {
        o.push('.');
    }
    Name::from_ascii(&o).map_err(|e| DnsError::BadZone {
        name: name.into(),
        reason: e.to_string(),
    })?;
    if o == "." {
        return Err(DnsError::BadZone {
            name: name.into(),
            reason: "Keel will not serve the root zone".into(),
        });
    }
    Ok(o)
}

fn ns_name(id: u64) -> String {
    format!("ns{id}.ns")
}

/// The apex records: SOA, NS for every control node, and their glue.
pub fn apex_records(table: &EndpointTable) -> Vec<Rr> {
    let mut records = Vec::new();
    let first_ns = table.nameservers.iter().map(|n| n.id).min().unwrap_or(1);
    records.push(Rr {
        name: String::new(),
        data: Data::Soa {
            mname: ns_name(first_ns),
            rname: "hostmaster".into(),
            serial: table.serial,
        },
    });
    for ns in &table.nameservers {
        records.push(Rr {
            name: String::new(),
            data: Data::Ns(ns_name(ns.id)),
        });
    }
    for ns in &table.nameservers {
        records.push(Rr {
            name: ns_name(ns.id),
            data: Data::Addr(ns.addr),
        });
    }
    records
}

/// The names a database owns (all its records live at these), from its key
/// `<name>.<account>`: `<name>.<account>`, `<name>.ro.<account>` (readers) and
/// `_postgresql._tcp.<name>.<account>`.
pub fn database_names(key: &str) -> [String; 3] {
    let ro = match key.split_once('.') {
        Some((name, account)) => format!("{name}.ro.{account}"),
        None => format!("{key}.ro"),
    };
    [key.to_string(), ro, format!("_postgresql._tcp.{key}")]
}

/// A reader name of database `key` (`<name>.<account>`): `<name>.ro.<account>`, or for
/// `zone`, `<name>.ro.<zone>.<account>`.
fn reader_name(key: &str, zone: Option<&str>) -> String {
    match (key.split_once('.'), zone) {
        (Some((name, account)), Some(z)) => format!("{name}.ro.{z}.{account}"),
        (Some((name, account)), None) => format!("{name}.ro.{account}"),
        (None, Some(z)) => format!("{key}.ro.{z}"),
        (None, None) => format!("{key}.ro"),
    }
}

/// The zones with a reader name of their own: the primary's and the replicas'.
fn reader_zones(db: &DatabaseEntry) -> BTreeSet<&str> {
    let primary = db.primary.as_ref().map(|p| p.zone.as_str());
    primary
        .into_iter()
        .chain(db.readers.iter().map(|r| r.zone.as_str()))
        .filter(|z| !z.is_empty())
        .collect()
}

/// Every name `db`'s records live at (a changed database's old records go from these).
pub fn owner_names(db: &DatabaseEntry) -> Vec<String> {
    let mut names = database_names(&db.name).to_vec();
    let ro = reader_name(&db.name, None);
    names.push(format!("_postgresql._tcp.{ro}"));
    for zone in reader_zones(db) {
        let name = reader_name(&db.name, Some(zone));
        names.push(format!("_postgresql._tcp.{name}"));
        names.push(name);
    }
    names
}

/// The hosts `db`'s SRV records point at: the primary's and the readers' (none while it
/// does not serve), the names [`host_records`] gives addresses.
pub fn hosts_of(db: &DatabaseEntry) -> BTreeSet<&str> {
    let Some(p) = &db.primary else {
        return BTreeSet::new();
    };
    std::iter::once(p.host.as_str())
        .chain(db.readers.iter().map(|r| r.host.as_str()))
        .collect()
}

/// Address and SRV records at reader name `name` for `readers` (each `(host, addr, port)`).
fn reader_records(name: &str, readers: &[(&str, IpAddr, u16)]) -> Vec<Rr> {
    let addrs: BTreeSet<IpAddr> = readers.iter().map(|r| r.1).collect();
    let mut records: Vec<Rr> = addrs
        .into_iter()
        .map(|addr| Rr {
            name: name.to_string(),
            data: Data::Addr(addr),
        })
        .collect();
    let targets: BTreeSet<(u16, &str)> = readers.iter().map(|r| (r.2, r.0)).collect();
    records.extend(targets.into_iter().map(|(port, host)| Rr {
        name: format!("_postgresql._tcp.{name}"),
        data: Data::Srv {
            port,
            target: format!("{host}.hosts"),
        },
    }));
    records
}

/// One database's records (without its hosts' address records, see [`host_records`]).
pub fn database_records(db: &DatabaseEntry) -> Vec<Rr> {
    let [name, ro, srv] = database_names(&db.name);
    let mut records = vec![
        Rr {
            name: name.clone(),
            data: Data::Txt(format!("status={}", db.status)),
        },
        Rr {
            name: ro.clone(),
            data: Data::Txt(format!("status={}", db.status)),
        },
    ];
    let Some(p) = &db.primary else {
        return records;
    };
    records.push(Rr {
        name,
        data: Data::Addr(p.addr),
    });
    // Readers: the replicas (in the zone asked for, if any there), else the primary.
    let all: Vec<(&str, IpAddr, u16)> = db.readers.iter().map(|r| (r.host.as_str(), r.addr, r.port)).collect();
    let anyone = if all.is_empty() {
        vec![(p.host.as_str(), p.addr, p.port)]
    } else {
        all
    };
    records.extend(reader_records(&ro, &anyone));
    for zone in reader_zones(db) {
        let here: Vec<(&str, IpAddr, u16)> = db
            .readers
            .iter()
            .filter(|r| r.zone == zone)
            .map(|r| (r.host.as_str(), r.addr, r.port))
            .collect();
        let readers = if here.is_empty() { anyone.clone() } else { here };
        records.extend(reader_records(&reader_name(&db.name, Some(zone)), &readers));
    }
    records.push(Rr {
        name: srv,
        data: Data::Srv {
            port: p.port,
            target: format!("{}.hosts", p.host),
        },
    });
    records
}

/// The address records of the hosts a serving database's SRV records point at.
pub fn host_records(db: &DatabaseEntry) -> Vec<Rr> {
    let Some(p) = &db.primary else {
        return Vec::new();
    };
    let mut addrs: BTreeMap<&str, IpAddr> = db.readers.iter().map(|r| (r.host.as_str(), r.addr)).collect();
    addrs.insert(&p.host, p.addr);
    addrs
        .into_iter()
        .map(|(host, addr)| Rr {
            name: format!("{host}.hosts"),
            data: Data::Addr(addr),
        })
        .collect()
}

impl Zone {
    /// The zone for `table` under `config`.
    pub fn build(config: &ZoneConfig, table: &EndpointTable) -> Result<Self, DnsError> {
        let origin = origin(&config.origin)?;
        let mut records = apex_records(table);
        let mut hosts: BTreeMap<String, Rr> = BTreeMap::new();
        for db in &table.databases {
            records.extend(database_records(db));
            for h in host_records(db) {
                hosts.insert(h.name.clone(), h);
            }
        }
        records.extend(hosts.into_values());
        Ok(Self {
            origin,
            ttl: config.ttl,
            serial: table.serial,
            records,
        })
    }

    /// An owner name made absolute under this zone's apex.
    pub fn absolute(&self, relative: &str) -> Result<Name, DnsError> {
        let text = if relative.is_empty() {
            self.origin.clone()
        } else {
            format!("{relative}.{}", self.origin)
        };
        Name::from_ascii(&text).map_err(|e| DnsError::BadName {
            name: text,
            reason: e.to_string(),
        })
    }

    fn rdata(&self, data: &Data) -> Result<RData, DnsError> {
        Ok(match data {
            Data::Soa { mname, rname, serial } => RData::SOA(SOA::new(
                self.absolute(mname)?,
                self.absolute(rname)?,
                *serial,
                SOA_REFRESH as i32,
                SOA_RETRY as i32,
                SOA_EXPIRE as i32,
                self.ttl,
            )),
            Data::Ns(target) => RData::NS(NS(self.absolute(target)?)),
            Data::Addr(IpAddr::V4(a)) => RData::A(A(*a)),
            Data::Addr(IpAddr::V6(a)) => RData::AAAA(AAAA(*a)),
            Data::Srv { port, target } => RData::SRV(SRV::new(0, 0, *port, self.absolute(target)?)),
            Data::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
        })
    }

    /// `records` as hickory record sets keyed for the zone store.
    pub fn record_sets(&self, records: &[Rr]) -> Result<BTreeMap<RrKey, RecordSet>, DnsError> {
        let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
        for rr in records {
            let record = Record::from_rdata(self.absolute(&rr.name)?, self.ttl, self.rdata(&rr.data)?);
            sets.entry(RrKey::new(LowerName::from(&record.name), record.record_type()))
                .or_insert_with(|| RecordSet::new(record.name.clone(), record.record_type(), self.serial))
                .insert(record, self.serial);
        }
        Ok(sets)
    }

    /// A hickory zone handler serving this zone, and a catalog holding it (AXFR allowed:
    /// the server checks who asks).
    pub fn catalog(&self) -> Result<(Catalog, Arc<InMemoryZoneHandler>), DnsError> {
        let origin = self.absolute("")?;
        let sets = self.record_sets(&self.records)?;
        let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            origin.clone(),
            sets,
            ZoneType::Primary,
            AxfrPolicy::AllowAll,
        )
        .map_err(DnsError::Zone)?;
        let handler = Arc::new(handler);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::from(&origin),
            vec![Arc::new(crate::indexed::IndexedZone::new(handler.clone()))],
        );
        Ok((catalog, handler))
    }

    /// The zone as a standard (RFC 1035) zone file, loadable by BIND, NSD or Knot.
    pub fn zone_file(&self) -> String {
        let mut out = format!(
            "; Keel's endpoint zone, serial {}. Generated; do not edit.\n$ORIGIN {}\n$TTL {}\n",
            self.serial, self.origin, self.ttl
        );
        for rr in &self.records {
            let owner = if rr.name.is_empty() { "@" } else { rr.name.as_str() };
            let (kind, rdata) = match &rr.data {
                Data::Soa { mname, rname, serial } => (
                    "SOA",
                    format!(
                        "{mname} {rname} {serial} {SOA_REFRESH} {SOA_RETRY} {SOA_EXPIRE} {}",
                        self.ttl
                    ),
                ),
                Data::Ns(target) => ("NS", target.clone()),
                Data::Addr(IpAddr::V4(a)) => ("A", a.to_string()),
                Data::Addr(IpAddr::V6(a)) => ("AAAA", a.to_string()),
                Data::Srv { port, target } => ("SRV", format!("0 0 {port} {target}")),
                Data::Txt(text) => (
                    "TXT",
                    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")),
                ),
            };
            let _ = writeln!(out, "{owner}\t{}\tIN\t{kind}\t{rdata}", self.ttl);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DatabaseEntry, Nameserver, Primary};

    fn table() -> EndpointTable {
        EndpointTable {
            serial: 42,
            nameservers: vec![Nameserver {
                id: 1,
                addr: "127.0.0.1".parse().unwrap(),
            }],
            databases: vec![
                DatabaseEntry {
                    name: "orders.acme".into(),
                    status: "available".into(),
                    primary: Some(Primary {
                        host: "h1".into(),
                        addr: "127.0.1.1".parse().unwrap(),
                        port: 5433,
                        zone: "a".into(),
                    }),
                    readers: vec![],
                },
                DatabaseEntry {
                    name: "sleepy".into(),
                    status: "hibernated".into(),
                    primary: None,
                    readers: vec![],
                },
            ],
        }
    }

    fn config() -> ZoneConfig {
        ZoneConfig {
            origin: "DB.Keel.Internal".into(),
            ttl: 5,
        }
    }

    #[test]
    fn builds_every_record_kind_and_a_loadable_zone_file() {
        let z = Zone::build(&config(), &table()).unwrap();
        assert_eq!(z.origin, "db.keel.internal.");
        let file = z.zone_file();
        for line in [
            "$ORIGIN db.keel.internal.",
            "@\t5\tIN\tSOA\tns1.ns hostmaster 42 60 10 604800 5",
            "@\t5\tIN\tNS\tns1.ns",
            "ns1.ns\t5\tIN\tA\t127.0.0.1",
            "orders.acme\t5\tIN\tA\t127.0.1.1",
            "orders.ro.acme\t5\tIN\tA\t127.0.1.1",
            "orders.acme\t5\tIN\tTXT\t\"status=available\"",
            "_postgresql._tcp.orders.acme\t5\tIN\tSRV\t0 0 5433 h1.hosts",
            "h1.hosts\t5\tIN\tA\t127.0.1.1",
            "sleepy\t5\tIN\tTXT\t\"status=hibernated\"",
        ] {
            assert!(file.contains(line), "missing {line:?} in\n{file}");
        }
        assert!(
            !file.contains("sleepy\t5\tIN\tA"),
            "a database that does not serve has no address"
        );
        z.catalog().expect("hickory accepts the zone");
    }

    #[test]
    fn reader_names_answer_the_replicas_of_their_zone_then_all_then_the_primary() {
        let reader = |host: &str, n: u8, zone: &str| crate::Reader {
            host: host.into(),
            addr: format!("127.0.1.{n}").parse().unwrap(),
            port: 5500 + n as u16,
            zone: zone.into(),
        };
        let mut t = table();
        t.databases[0].readers = vec![reader("h2", 2, "b"), reader("h3", 3, "c")];
        let file = Zone::build(&config(), &t).unwrap().zone_file();
        for line in [
            "orders.ro.acme\t5\tIN\tA\t127.0.1.2",
            "orders.ro.acme\t5\tIN\tA\t127.0.1.3",
            "_postgresql._tcp.orders.ro.acme\t5\tIN\tSRV\t0 0 5502 h2.hosts",
            "orders.ro.b.acme\t5\tIN\tA\t127.0.1.2",
            "_postgresql._tcp.orders.ro.c.acme\t5\tIN\tSRV\t0 0 5503 h3.hosts",
            // The primary's zone has no replica: every replica answers there.
            "orders.ro.a.acme\t5\tIN\tA\t127.0.1.3",
            "h3.hosts\t5\tIN\tA\t127.0.1.3",
        ] {
            assert!(file.contains(line), "missing {line:?} in\n{file}");
        }
        for absent in [
            "orders.ro.b.acme\t5\tIN\tA\t127.0.1.3",
            "orders.ro.acme\t5\tIN\tA\t127.0.1.1",
        ] {
            assert!(!file.contains(absent), "{absent:?} in\n{file}");
        }
        // No replica: every reader name is the primary.
        let file = Zone::build(&config(), &table()).unwrap().zone_file();
        assert!(file.contains("orders.ro.a.acme\t5\tIN\tA\t127.0.1.1"), "{file}");
        assert!(
            file.contains("_postgresql._tcp.orders.ro.acme\t5\tIN\tSRV\t0 0 5433 h1.hosts"),
            "{file}"
        );
    }

    #[test]
    fn refuses_bad_zone_names() {
        for bad in [".", "a..b", "exa mple."] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
