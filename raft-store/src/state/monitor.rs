//! What the monitor observed: host and instance health transitions and
//! storage-full marks. Only changes are proposed, so each apply here is a
//! transition with its event.

use super::{not_found, AdminState};
use crate::command::Response;
use crate::records::{DatabaseStatus, HostCapacity, HostHealth, InstanceHealth, Millis};

impl AdminState {
    pub(super) fn observe_instance(
        &mut self,
        index: u64,
        at: Millis,
        id: &str,
        healthy: bool,
        problem: Option<&str>,
    ) -> Response {
        let Some(instance) = self.instances.get_mut(id) else {
            return not_found("instance", id);
        };
        let was_healthy = instance.health == InstanceHealth::Healthy;
        if was_healthy == healthy {
            return Response::Done;
        }
        let problem = problem.unwrap_or("no answer").to_string();
        instance.health = if healthy {
            InstanceHealth::Healthy
        } else {
            InstanceHealth::Unhealthy {
                problem: problem.clone(),
                since_ms: at,
            }
        };
        let (database, host) = (instance.database.clone(), instance.host.clone());
        // The status stays (DNS keeps answering for a primary that may only be slow); the
        // reason says what is wrong while the database is at rest.
        let reason = self.health_reason(&database);
        if let Some(db) = self.databases.get_mut(&database) {
            if matches!(db.status, DatabaseStatus::Available | DatabaseStatus::StorageFull) {
                db.status_reason = reason;
            }
        }
        let (kind, message) = if healthy {
            (
                "instance-recovered",
                format!("Instance {id} of database {database} on host {host} answers SQL again."),
            )
        } else {
            (
                "instance-unhealthy",
                format!("Instance {id} of database {database} on host {host} is unhealthy: {problem}."),
            )
        };
        self.event(index, at, kind, &database, message);
        Response::Done
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal};
    use crate::records::{Database, Host};

    fn apply(s: &mut AdminState, i: u64, command: Command) -> Response {
        s.apply(i, &Proposal::new(i, command))
    }

    fn observe(reachable: bool) -> Command {
        Command::ObserveHost {
            name: "h1".into(),
            reachable,
            capacity: reachable.then_some(HostCapacity {
                instance_slots: 8,
                disk_gib: 100,
                ..HostCapacity::default()
            }),
            problem: (!reachable).then(|| "connection refused".into()),
        }
    }

    fn kinds(s: &AdminState) -> Vec<&str> {
        s.events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn host_transitions_are_events_and_capacity_is_recorded() {
        let mut s = AdminState::default();
        s.hosts.insert(
            "h1".into(),
            Host {
                name: "h1".into(),
                ..Host::default()
            },
        );
        apply(&mut s, 1, observe(true));
        assert_eq!(s.hosts["h1"].health, HostHealth::Healthy);
        assert_eq!(s.hosts["h1"].capacity.instance_slots, 8);
        assert!(kinds(&s).is_empty(), "first contact is not an event");
        apply(&mut s, 2, observe(false));
        apply(&mut s, 3, observe(false));
        assert_eq!(s.hosts["h1"].health, HostHealth::Unreachable);
        assert_eq!(
            s.hosts["h1"].capacity.instance_slots, 8,
            "capacity kept while unreachable"
        );
        apply(&mut s, 4, observe(true));
        assert_eq!(kinds(&s), ["host-unreachable", "host-recovered"]);
        assert!(matches!(
            apply(
                &mut s,
                5,
                Command::ObserveHost {
                    name: "gone".into(),
                    reachable: true,
                    capacity: None,
                    problem: None
                }
            ),
            Response::Rejected { .. }
        ));
    }

    #[test]
    fn storage_full_only_moves_a_database_at_rest() {
        let mut s = AdminState::default();
        let db = |status| Database {
            name: "d".into(),
            status,
            ..Database::default()
        };
        let mark = |full| Command::ObserveStorage {
            database: "d".into(),
            full,
            used_bytes: 1 << 30,
            allocated_bytes: 1 << 30,
        };
        s.databases.insert("d".into(), db(DatabaseStatus::Modifying));
        apply(&mut s, 1, mark(true));
        assert_eq!(
            s.databases["d"].status,
            DatabaseStatus::Modifying,
            "an operation owns the status"
        );
        s.databases.insert("d".into(), db(DatabaseStatus::Available));
        apply(&mut s, 2, mark(true));
        assert_eq!(s.databases["d"].status, DatabaseStatus::StorageFull);
        apply(&mut s, 3, mark(false));
        assert_eq!(s.databases["d"].status, DatabaseStatus::Available);
        assert_eq!(kinds(&s), ["storage-full", "storage-ok"]);
    }
}
