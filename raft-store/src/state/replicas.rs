//! Read replicas: asynchronous, readable copies of a database, each built from its latest
//! snapshot and archive and then streaming from the primary (the same build as a
//! standby's, with client access). A replica serves readers (`<db>.ro…` in DNS) once it
//! follows the database's current lineage; a failover or recovery starts a new lineage,
//! and the scheduler rebuilds each replica in its zone. A replica can be removed, or
//! promoted to a stand-alone database of its own.

use super::{conflict, not_found, AdminState};
use crate::command::Response;
use crate::records::*;

/// The most read replicas one database may have.
pub const MAX_REPLICAS: usize = 5;

/// What `AddReplica` asks for.
pub(crate) struct NewReplica<'a> {
    pub job_id: &'a str,
    pub request: Option<&'a RequestKey>,
    pub name: &'a str,
    pub instance_id: &'a str,
    pub zone: Option<&'a str>,
    pub replaces: Option<&'a str>,
}

/// What `PromoteReplica` asks for.
pub(crate) struct Promotion<'a> {
    pub job_id: &'a str,
    pub request: Option<&'a RequestKey>,
    pub name: &'a str,
    pub replica: &'a str,
    pub to: &'a str,
}

impl AdminState {
    /// The database's read replicas (not fenced), in the order they were added.
    pub fn replicas_of<'a>(&'a self, database: &str) -> impl Iterator<Item = &'a Instance> + 'a {
        let ids = self
            .databases
            .get(database)
            .map(|d| d.instances.as_slice())
            .unwrap_or_default();
        ids.iter()
            .filter_map(|id| self.instances.get(id))
            .filter(|i| i.role == InstanceRole::Replica && i.fenced_at.is_none())
    }

    /// Whether replica `i` serves readers: built from its database's current lineage, so it
    /// follows the primary that takes writes now, healthy, and on a host that answers.
    pub fn replica_serves(&self, i: &Instance) -> bool {
        let current = self.databases.get(&i.database).map(Database::lineage);
        let host_up = self
            .hosts
            .get(&i.host)
            .is_some_and(|h| h.health != HostHealth::Unreachable);
        i.role == InstanceRole::Replica
            && i.fenced_at.is_none()
            && i.follows.is_some()
            && i.follows == current
            && i.health == InstanceHealth::Healthy
            && host_up
    }

    /// The zone of `host` (empty if it is not registered).
    fn zone_of(&self, host: &str) -> String {
        self.hosts.get(host).map(|h| h.zone.clone()).unwrap_or_default()
    }

    /// A replica asked for (or, with `replaces`, the rebuild of one that follows an
    /// earlier lineage): placed in the zone named, on a host none of the database's
    /// instances use, and built by the job.
    pub(super) fn add_replica(&mut self, index: u64, at: Millis, r: NewReplica) -> Response {
        if let Some(answer) = self.repeated(r.request, r.name, at) {
            return answer;
        }
        let Some(db) = self.databases.get(r.name) else {
            return not_found("database", r.name);
        };
        if let Some(refused) = self.busy(db) {
            return refused;
        }
        let short = db.name.clone();
        if !db.at_rest() {
            return conflict(format!(
                "database {short} is {}; a replica is added only while it is available",
                wire_name(&db.status)
            ));
        }
        if db.spec.backup_retention_days == 0 {
            return conflict(format!(
                "database {short} keeps no backups (retention 0), and a replica is built from them; `keel db modify {short} --backup-retention-days 7` turns them on"
            ));
        }
        if self.snapshots_of(&db.lineage()).next().is_none() {
            return conflict(format!(
                "database {short} has no snapshot yet to build a replica from; retry after its first (`keel db snapshot {short} NAME` takes one now)"
            ));
        }
        let replaced = match r.replaces {
            Some(old) => match self
                .instances
                .get(old)
                .filter(|i| i.database == r.name && i.role == InstanceRole::Replica && i.fenced_at.is_none())
            {
                Some(i) => Some(i.clone()),
                None => return conflict(format!("{old} is not a replica of {short}")),
            },
            None => None,
        };
        if replaced.is_none() && self.replicas_of(r.name).count() >= MAX_REPLICAS {
            return conflict(format!(
                "database {short} has {MAX_REPLICAS} replicas, the most it may have; remove one first"
            ));
        }
        let Some(primary) = self.primary_of(r.name) else {
            return conflict(format!("database {short} has no primary to follow"));
        };
        let zone = r
            .zone
            .map(str::to_string)
            .or_else(|| replaced.as_ref().map(|i| self.zone_of(&i.host)));
        // On a host of its own: a replica beside another member shares its fate (the one it
        // replaces goes, so its host may take the new one).
        let busy_hosts: Vec<&str> = db
            .instances
            .iter()
            .filter(|id| Some(id.as_str()) != r.replaces)
            .filter_map(|id| self.instances.get(id))
            .map(|i| i.host.as_str())
            .collect();
        // A rebuild goes back to its old zone if that has room, else anywhere; a zone a
        // user named is kept to.
        let placed = self
            .place_beside(zone.as_deref(), &busy_hosts, Some(primary.port))
            .or_else(|refused| match (r.zone, r.replaces) {
                (None, Some(_)) => self.place_beside(None, &busy_hosts, Some(primary.port)),
                _ => Err(refused),
            });
        let (host, port) = match placed {
            Ok(p) => p,
            Err(rejection) => return Response::Rejected { rejection },
        };
        let (account, generation) = (db.account.clone(), db.generation);
        let kind = JobKind::AddReplica {
            database: r.name.to_string(),
            replica: r.instance_id.to_string(),
            replaces: r.replaces.map(str::to_string),
            lineage: db.lineage(),
        };
        let job = match self.enqueue(index, at, r.job_id, r.request, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        self.instances.insert(
            r.instance_id.to_string(),
            Instance {
                id: r.instance_id.to_string(),
                database: r.name.to_string(),
                role: InstanceRole::Replica,
                host: host.clone(),
                port,
                created_at_ms: at,
                ..Instance::default()
            },
        );
        if let Some(old) = r.replaces {
            // It followed a primary that no longer takes writes: fenced, and reclaimed.
            if let Some(i) = self.instances.get_mut(old) {
                i.fenced_at = Some(generation);
            }
        }
        let db = self.databases.get_mut(r.name).expect("checked above");
        db.instances.retain(|id| Some(id.as_str()) != r.replaces);
        db.instances.push(r.instance_id.to_string());
        db.status = DatabaseStatus::Modifying;
        db.operation = Some(r.job_id.to_string());
        let zone = self.zone_of(&host);
        let message = match r.replaces {
            Some(old) => format!("Replica {old} of {short} followed its earlier primary; replica {} is being built in its place on host {host} (zone {zone}), port {port}, from the latest snapshot and archive.", r.instance_id),
            None => format!("A read replica {} of {short} is being built on host {host} (zone {zone}), port {port}, from its latest snapshot and archive.", r.instance_id),
        };
        self.event(index, at, "replica-building", r.name, message);
        self.database_response(&job, true)
    }

    /// An add-replica job ended: the replica serves readers, or (failed) is gone; a failed
    /// rebuild keeps its record, so the scheduler tries again. A build from a lineage the
    /// database has left since (a failover overtook it) is recorded as following none, so
    /// it serves no reader and is rebuilt.
    pub(super) fn conclude_add_replica(&mut self, index: u64, at: Millis, kind: &JobKind, error: Option<&str>) {
        let JobKind::AddReplica {
            database,
            replica,
            replaces,
            lineage: built_from,
        } = kind
        else {
            return;
        };
        let (database, replica, rebuild) = (database.as_str(), replica.as_str(), replaces.is_some());
        let current = self.databases.get(database).map(Database::lineage);
        let place = self
            .instances
            .get(replica)
            .map(|i| (i.host.clone(), self.zone_of(&i.host), i.port));
        // Removed (fenced) meanwhile: its record stays for the reclaim to destroy it.
        let fenced = self.instances.get(replica).is_some_and(|i| i.fenced_at.is_some());
        match error {
            None => {
                if let Some(i) = self.instances.get_mut(replica) {
                    i.follows = current.filter(|l| l == built_from);
                }
            }
            Some(_) if !rebuild && !fenced => {
                self.instances.remove(replica);
                if let Some(db) = self.databases.get_mut(database) {
                    db.instances.retain(|i| i != replica);
                }
            }
            Some(_) => {}
        }
        let Some(short) = self.back_at_rest(database) else {
            return;
        };
        let (host, zone, port) = place.unwrap_or_default();
        let (kind, message) = match error {
            None => (
                "replica-available",
                format!("Replica {replica} of {short} serves readers on host {host} (zone {zone}), port {port}."),
            ),
            Some(e) if rebuild => (
                "replica-failed",
                format!("Rebuilding replica {replica} of {short} failed ({e}); a new attempt starts within minutes."),
            ),
            Some(e) => (
                "replica-failed",
                format!("Building replica {replica} of {short} failed ({e}); nothing was kept. Retry `keel db replica add {short}`."),
            ),
        };
        self.event(index, at, kind, database, message);
    }

    /// A replica removed: out of the members (and of DNS) and fenced in this apply; the job
    /// drops its slot on the primary and destroys it. It touches only the fenced replica,
    /// so, like a reclaim, it holds no operation slot.
    pub(super) fn remove_replica(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request: Option<&RequestKey>,
        name: &str,
        replica: &str,
    ) -> Response {
        if let Some(answer) = self.repeated(request, name, at) {
            return answer;
        }
        let Some(db) = self.databases.get(name) else {
            return not_found("database", name);
        };
        let short = db.name.clone();
        if !self.replicas_of(name).any(|i| i.id == replica) {
            return not_found(
                "replica",
                &format!("{replica} of {short} (`keel db replica list {short}` lists them)"),
            );
        }
        // One being built is the build's until it ends.
        let building = db
            .operation
            .as_ref()
            .and_then(|op| self.jobs.get(op))
            .is_some_and(|j| matches!(&j.kind, JobKind::AddReplica { replica: r, .. } if r == replica));
        if building {
            if let Some(refused) = self.busy(db) {
                return refused;
            }
        }
        let (account, generation) = (db.account.clone(), db.generation);
        let kind = JobKind::RemoveReplica {
            database: name.to_string(),
            replica: replica.to_string(),
        };
        let job = match self.enqueue(index, at, job_id, request, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        if let Some(i) = self.instances.get_mut(replica) {
            i.fenced_at = Some(generation);
        }
        if let Some(db) = self.databases.get_mut(name) {
            db.instances.retain(|i| i != replica);
        }
        self.event(
            index,
            at,
            "replica-removing",
            name,
            format!("Replica {replica} of {short} no longer serves readers and is being destroyed."),
        );
        self.database_response(&job, true)
    }

    /// A replica made a database of its own, `to`, in the source's account: its record
    /// moves to the new database as its primary, out of the source's members (and DNS), in
    /// this apply; the job cuts it off the source's primary and promotes it.
    pub(super) fn promote_replica(&mut self, index: u64, at: Millis, p: Promotion) -> Response {
        let Some((_, account)) = p.name.split_once('.') else {
            return not_found("database", p.name);
        };
        let account = account.to_string();
        if let Some(answer) = self.repeated(p.request, p.name, at) {
            return answer;
        }
        let Some(source) = self.databases.get(p.name) else {
            return not_found("database", p.name);
        };
        let short = source.name.clone();
        if let Some(refused) = self.busy(source) {
            return refused;
        }
        let Some(replica) = self.replicas_of(p.name).find(|i| i.id == p.replica).cloned() else {
            return not_found(
                "replica",
                &format!("{} of {short} (`keel db replica list {short}` lists them)", p.replica),
            );
        };
        if !self.replica_serves(&replica) {
            return conflict(format!(
                "replica {} of {short} is not streaming from the current primary and healthy now; promote it once it serves readers",
                p.replica
            ));
        }
        let key = database_key(p.to, &account);
        if let Some(existing) = self.databases.get(&key) {
            return conflict(format!(
                "database {:?} already exists in account {account} ({}); choose another name",
                p.to,
                wire_name(&existing.status)
            ));
        }
        let new = Database {
            name: p.to.to_string(),
            account: account.clone(),
            spec: DatabaseSpec {
                multi_az: false,
                zone: Some(self.zone_of(&replica.host)),
                ..source.spec.clone()
            },
            status: DatabaseStatus::Creating,
            instances: vec![p.replica.to_string()],
            // The replica's host has seen the source's generation: the new database goes on
            // from it, so its tasks are never refused as stale.
            generation: source.generation,
            created_at_ms: at,
            operation: Some(p.job_id.to_string()),
            master_verifier: source.master_verifier.clone(),
            access: source.access.clone(),
            lineage: p.job_id.to_string(),
            restored_from: Some(format!("replica {} of {short}", p.replica)),
            ..Database::default()
        };
        let kind = JobKind::PromoteReplica {
            database: key.clone(),
            source: p.name.to_string(),
            replica: p.replica.to_string(),
        };
        let job = match self.enqueue(index, at, p.job_id, p.request, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        if let Some(i) = self.instances.get_mut(p.replica) {
            i.database = key.clone();
            i.role = InstanceRole::Primary;
            i.follows = None;
            i.replication = None;
        }
        if let Some(db) = self.databases.get_mut(p.name) {
            db.instances.retain(|i| i != p.replica);
        }
        self.databases.insert(key.clone(), new);
        self.event(
            index,
            at,
            "replica-promoting",
            p.name,
            format!(
                "Replica {} of {short} is being promoted to database {}.",
                p.replica, p.to
            ),
        );
        self.event(
            index,
            at,
            "database-creating",
            &key,
            format!("Database {} is being made from replica {} of {short}.", p.to, p.replica),
        );
        self.database_response(&job, true)
    }

    /// Whether replica `i` needs rebuilding: it follows a lineage the database left (a
    /// failover or recovery made a new primary), or its last build failed.
    pub fn replica_stale(&self, i: &Instance) -> bool {
        let current = self.databases.get(&i.database).map(Database::lineage);
        i.role == InstanceRole::Replica && i.fenced_at.is_none() && i.follows != current
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{add_snapshot, with_database, DB};
    use super::*;
    use crate::command::{Command, Proposal};

    /// Hosts h1, h2 (zone a) and h3 (zone b); `orders` on h1 with a snapshot.
    fn state() -> AdminState {
        let mut s = with_database(&[("h1", "a"), ("h2", "a"), ("h3", "b")], DatabaseSpec::default(), "p");
        add_snapshot(&mut s);
        s
    }

    fn add(s: &mut AdminState, index: u64, job: &str, zone: Option<&str>, replaces: Option<&str>) -> Response {
        let cmd = Command::AddReplica {
            job_id: job.into(),
            request: None,
            name: DB.into(),
            instance_id: format!("r-{job}"),
            zone: zone.map(str::to_string),
            replaces: replaces.map(str::to_string),
        };
        s.apply(index, &Proposal::new(index, cmd))
    }

    /// Conclude job `job`'s workflow as the engine would: succeeded or failed.
    fn finish(s: &mut AdminState, job: &str, error: Option<&str>) {
        let kind = s.jobs[job].kind.clone();
        let outcome = match error {
            None => super::super::databases::Outcome::Succeeded,
            Some(e) => super::super::databases::Outcome::Failed {
                error: e.into(),
                undone: true,
            },
        };
        s.conclude(100, 100, &kind, &outcome);
    }

    fn refused(r: Response) -> String {
        match r {
            Response::Rejected { rejection } => rejection.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_replica_goes_to_the_zone_named_on_a_host_of_its_own_and_serves_once_built() {
        let mut s = state();
        assert!(matches!(
            add(&mut s, 3, "j2", Some("a"), None),
            Response::Database { created: true, .. }
        ));
        let r = &s.instances["r-j2"];
        // Zone a, but not h1 (the primary's); the primary's port.
        assert_eq!(
            (r.host.as_str(), r.port, r.role),
            ("h2", s.instances["p"].port, InstanceRole::Replica)
        );
        assert!(!s.replica_serves(r), "not before it is built");
        assert_eq!(s.databases[DB].status, DatabaseStatus::Modifying);
        finish(&mut s, "j2", None);
        assert!(s.replica_serves(&s.instances["r-j2"]));
        assert_eq!(s.replicas_of(DB).count(), 1);
        assert!(s.databases[DB].at_rest());
    }

    #[test]
    fn a_failed_add_leaves_nothing_and_a_failed_rebuild_keeps_the_record_for_a_retry() {
        let mut s = state();
        add(&mut s, 3, "j2", None, None);
        finish(&mut s, "j2", Some("boom"));
        assert!(!s.instances.contains_key("r-j2"));
        assert_eq!(s.databases[DB].instances, vec!["p".to_string()]);

        add(&mut s, 4, "j3", Some("b"), None);
        finish(&mut s, "j3", None);
        // A failover made a new lineage: the replica follows the old one.
        s.databases.get_mut(DB).unwrap().lineage = "j9".into();
        assert!(s.replica_stale(&s.instances["r-j3"]) && !s.replica_serves(&s.instances["r-j3"]));
        add_snapshot(&mut s);
        s.snapshots.get_mut("auto1.acme").unwrap().lineage = "j9".into();
        assert!(matches!(
            add(&mut s, 5, "j4", None, Some("r-j3")),
            Response::Database { .. }
        ));
        // Rebuilt in the old one's zone; the old one fenced and out of the members.
        assert_eq!(s.instances["r-j4"].host, "h3");
        assert!(s.instances["r-j3"].fenced_at.is_some());
        assert!(!s.databases[DB].instances.contains(&"r-j3".to_string()));
        finish(&mut s, "j4", Some("boom"));
        assert!(s.replica_stale(&s.instances["r-j4"]), "kept, to be rebuilt again");
    }

    #[test]
    fn bad_adds_are_refused_with_what_to_do() {
        let mut s = with_database(&[("h1", "a"), ("h2", "b")], DatabaseSpec::default(), "p");
        assert!(refused(add(&mut s, 3, "j2", None, None)).contains("no snapshot yet"));
        add_snapshot(&mut s);
        assert!(refused(add(&mut s, 4, "j3", Some("z"), None)).contains("zone \"z\" has no hosts"));
        // Only h1 in zone a, and the primary is there.
        assert!(refused(add(&mut s, 5, "j4", Some("a"), None)).contains("no capacity"));
        assert!(refused(add(&mut s, 6, "j5", None, Some("p"))).contains("not a replica"));
        add(&mut s, 7, "j6", None, None);
        assert!(refused(add(&mut s, 8, "j7", None, None)).contains("busy"));
        s.databases.get_mut(DB).unwrap().spec.backup_retention_days = 0;
        finish(&mut s, "j6", None);
        assert!(refused(add(&mut s, 9, "j8", None, None)).contains("retention 0"));
        assert!(!s.jobs.contains_key("j2") && !s.jobs.contains_key("j8"));
    }

    #[test]
    fn removing_a_replica_fences_it_and_takes_it_out_of_the_members_at_once() {
        let mut s = state();
        add(&mut s, 3, "j2", None, None);
        finish(&mut s, "j2", None);
        let remove = |replica: &str| Command::RemoveReplica {
            job_id: "j3".into(),
            request: None,
            name: DB.into(),
            replica: replica.into(),
        };
        assert!(refused(s.apply(4, &Proposal::new(4, remove("p")))).contains("replica list"));
        assert!(matches!(
            s.apply(5, &Proposal::new(5, remove("r-j2"))),
            Response::Database { .. }
        ));
        assert!(s.instances["r-j2"].fenced_at.is_some());
        assert_eq!(s.replicas_of(DB).count(), 0);
        // It holds no operation slot: the database stays at rest.
        assert!(s.databases[DB].at_rest());
        finish(&mut s, "j3", None);
        assert!(!s.instances.contains_key("r-j2"));
    }

    #[test]
    fn a_promoted_replica_becomes_the_primary_of_a_new_database() {
        let mut s = state();
        add(&mut s, 3, "j2", None, None);
        let promote = |job: &str, to: &str| Command::PromoteReplica {
            job_id: job.into(),
            request: None,
            name: DB.into(),
            replica: "r-j2".into(),
            to: to.into(),
        };
        assert!(refused(s.apply(4, &Proposal::new(4, promote("j3", "copy")))).contains("busy"));
        finish(&mut s, "j2", None);
        assert!(refused(s.apply(5, &Proposal::new(5, promote("j3", "orders")))).contains("already exists"));
        assert!(matches!(
            s.apply(6, &Proposal::new(6, promote("j4", "copy"))),
            Response::Database { created: true, .. }
        ));
        let copy = &s.databases["copy.acme"];
        assert_eq!((copy.status, copy.lineage.as_str()), (DatabaseStatus::Creating, "j4"));
        assert_eq!(copy.generation, s.databases[DB].generation);
        let i = &s.instances["r-j2"];
        assert_eq!((i.database.as_str(), i.role), ("copy.acme", InstanceRole::Primary));
        assert_eq!(s.databases[DB].instances, vec!["p".to_string()]);
        finish(&mut s, "j4", None);
        let copy = &s.databases["copy.acme"];
        assert_eq!(copy.status, DatabaseStatus::Available);
        assert_eq!(copy.endpoint.as_ref().map(|e| e.host.as_str()), Some(i_host(&s)));
    }

    #[test]
    fn a_failover_pre_empts_a_replica_build_and_the_replica_is_rebuilt_from_the_new_lineage() {
        let mut s = state();
        // A synchronous standby on h3 (zone b).
        s.instances.insert(
            "s".into(),
            Instance {
                id: "s".into(),
                database: DB.into(),
                role: InstanceRole::Standby,
                host: "h3".into(),
                port: 5432,
                ..Instance::default()
            },
        );
        let db = s.databases.get_mut(DB).unwrap();
        db.spec.multi_az = true;
        db.instances.push("s".into());
        db.sync_standby = Some("s".into());
        add(&mut s, 3, "j2", Some("a"), None);
        assert!(s.watched(&s.databases[DB]), "a replica's build does not hide a failure");
        let fail = Command::FailoverDatabase {
            job_id: "f4".into(),
            name: DB.into(),
            standby: "s".into(),
            reason: "primary gone".into(),
            detected_ms: 4,
            last_seen_ms: 3,
        };
        assert!(matches!(s.apply(4, &Proposal::new(4, fail)), Response::Database { .. }));
        let db = &s.databases[DB];
        assert_eq!(db.operation.as_deref(), Some("f4"));
        assert_eq!(db.instances, vec!["s".to_string(), "r-j2".to_string()]);
        // The build's workflow ends later: nothing changes; the replica follows no lineage,
        // so it serves no reader until the scheduler has rebuilt it.
        let kind = s.jobs["j2"].kind.clone();
        s.conclude_preempted(5, 5, &kind, &super::super::databases::Outcome::Succeeded);
        assert!(s.replica_stale(&s.instances["r-j2"]) && !s.replica_serves(&s.instances["r-j2"]));
        assert_eq!(s.databases[DB].operation.as_deref(), Some("f4"));
    }

    #[test]
    fn a_build_a_failover_overtook_never_serves_and_one_under_way_cannot_be_removed() {
        let mut s = state();
        add(&mut s, 3, "j2", None, None);
        let remove = Command::RemoveReplica {
            job_id: "j3".into(),
            request: None,
            name: DB.into(),
            replica: "r-j2".into(),
        };
        assert!(refused(s.apply(4, &Proposal::new(4, remove))).contains("busy"));
        // A failover came and went while it was built from the old lineage.
        let db = s.databases.get_mut(DB).unwrap();
        db.lineage = "f9".into();
        db.operation = None;
        db.status = DatabaseStatus::Available;
        finish(&mut s, "j2", None);
        let r = &s.instances["r-j2"];
        assert_eq!(r.follows, None, "it follows the old primary: no lineage");
        assert!(s.replica_stale(r) && !s.replica_serves(r));
    }

    #[test]
    fn a_replica_on_a_host_that_stopped_answering_serves_no_reader() {
        let mut s = state();
        add(&mut s, 3, "j2", None, None);
        finish(&mut s, "j2", None);
        let host = s.instances["r-j2"].host.clone();
        assert!(s.replica_serves(&s.instances["r-j2"]));
        let lost = Command::ObserveHost {
            name: host,
            reachable: false,
            capacity: None,
            problem: Some("gone".into()),
        };
        let p = Proposal::new(5, lost);
        let r = s.apply(5, &p);
        assert_eq!(s.zone_changes(&p, &r), [DB], "its reader names are republished");
        assert!(!s.replica_serves(&s.instances["r-j2"]));
    }

    fn i_host(s: &AdminState) -> &str {
        &s.instances["r-j2"].host
    }
}
