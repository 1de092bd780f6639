//! What the monitor observed: host health transitions and storage-full marks.
//! Only changes are proposed, so each apply here is a transition with its event.

use super::{not_found, AdminState};
use crate::command::Response;
use crate::records::{DatabaseStatus, HostCapacity, HostHealth, Millis};

impl AdminState {
    pub(super) fn observe_host(
        &mut self,
        index: u64,
        at: Millis,
        name: &str,
        reachable: bool,
        capacity: Option<&HostCapacity>,
        problem: Option<&str>,
    ) -> Response {
        let Some(host) = self.hosts.get_mut(name) else {
            return not_found("host", name);
        };
        let was = host.health;
        host.health = if reachable {
            HostHealth::Healthy
        } else {
            HostHealth::Unreachable
        };
        if let Some(c) = capacity {
            host.capacity = c.clone();
        }
        let host = host.clone();
        match (was, host.health) {
            (HostHealth::Unreachable, HostHealth::Healthy) => self.event(
                index,
                at,
                "host-recovered",
                name,
                format!("Host {name} answers its health checks again."),
            ),
            (w, HostHealth::Unreachable) if w != HostHealth::Unreachable => self.event(
                index,
                at,
                "host-unreachable",
                name,
                format!(
                    "Host {name} ({}) stopped answering health checks: {}. No new instances go there until it recovers.",
                    host.addr,
                    problem.unwrap_or("no answer")
                ),
            ),
            _ => {}
        }
        Response::Host { host, created: false }
    }

    pub(super) fn observe_storage(
        &mut self,
        index: u64,
        at: Millis,
        name: &str,
        full: bool,
        used_bytes: u64,
        allocated_bytes: u64,
    ) -> Response {
        let Some(db) = self.databases.get_mut(name) else {
            return not_found("database", name);
        };
        // Only a database at rest changes here; an operation owns the status while it runs.
        let next = match (db.status, full) {
            (DatabaseStatus::Available, true) => DatabaseStatus::StorageFull,
            (DatabaseStatus::StorageFull, false) => DatabaseStatus::Available,
            _ => return Response::Done,
        };
        db.status = next;
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        let (kind, message) = if full {
            (
                "storage-full",
                format!(
                    "Database {name} uses {:.2} of its {:.2} GiB: writes will fail. Grow it with `keel db modify {name} --storage-gib N --apply-immediately` or delete data.",
                    gib(used_bytes),
                    gib(allocated_bytes)
                ),
            )
        } else {
            (
                "storage-ok",
                format!(
                    "Database {name} has room again ({:.2} of {:.2} GiB used).",
                    gib(used_bytes),
                    gib(allocated_bytes)
                ),
            )
        };
        self.event(index, at, kind, name, message);
        Response::Done
    }
}
