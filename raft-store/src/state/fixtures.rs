//! Test fixtures for the apply tests: hosts, and one database at rest made through the
//! real commands.

use super::AdminState;
use crate::catalog::{Snapshot, SnapshotState};
use crate::command::{Command, Proposal};
use crate::records::*;

/// The database every fixture makes: `orders` in account `acme`, lineage `j1`.
pub const DB: &str = "orders.acme";

/// Healthy hosts `(name, zone)`, `hN` at 127.0.1.N, and `orders` (with `spec`'s class,
/// storage and retention filled in) created on the least loaded as instance `instance`,
/// then at rest.
pub fn with_database(hosts: &[(&str, &str)], spec: DatabaseSpec, instance: &str) -> AdminState {
    let mut s = AdminState::default();
    for (name, zone) in hosts {
        s.hosts.insert(
            name.to_string(),
            Host {
                name: name.to_string(),
                addr: format!("127.0.1.{}:7300", &name[1..]),
                zone: zone.to_string(),
                health: HostHealth::Healthy,
                ..Host::default()
            },
        );
    }
    s.apply(1, &Proposal::new(1, Command::CreateAccount { name: "acme".into() }));
    let create = Command::CreateDatabase {
        job_id: "j1".into(),
        request: None,
        name: "orders".into(),
        account: "acme".into(),
        spec: DatabaseSpec {
            class: "small".into(),
            storage_gib: 1,
            backup_retention_days: 7,
            ..spec
        },
        master_verifier: "v".into(),
        instance_id: instance.into(),
    };
    s.apply(2, &Proposal::new(2, create));
    let db = s.databases.get_mut(DB).expect("created");
    db.status = DatabaseStatus::Available;
    db.operation = None;
    s
}

/// An available snapshot `auto1` of `orders`, taken at 1 s.
pub fn add_snapshot(s: &mut AdminState) {
    s.snapshots.insert(
        "auto1.acme".into(),
        Snapshot {
            name: "auto1".into(),
            account: "acme".into(),
            database: DB.into(),
            lineage: "j1".into(),
            state: SnapshotState::Available,
            taken_at_ms: 1_000,
            ..Snapshot::default()
        },
    );
}
