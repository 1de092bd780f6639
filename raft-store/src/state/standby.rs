//! Multi-AZ databases: the synchronous standby in another zone. The scheduler proposes
//! `AddStandby` for a Multi-AZ database at rest without a synchronous standby; this
//! places it (or rebuilds a standby a failed attempt left) and queues the job. The
//! database records its synchronous standby only once the primary waits for it
//! (`TaskOutput::InSync`), so a recorded one holds every acknowledged commit.

use super::{conflict, not_found, AdminState};
use crate::command::Response;
use crate::records::*;

impl AdminState {
    /// The database's standby instance (not fenced), if it has one.
    pub fn standby_of(&self, database: &str) -> Option<&Instance> {
        self.databases.get(database)?.instances.iter().find_map(|id| {
            self.instances
                .get(id)
                .filter(|i| i.role == InstanceRole::Standby && i.fenced_at.is_none())
        })
    }

    /// The database's recorded synchronous standby while it serves: healthy on a healthy
    /// host, streaming in sync. A switchover goes to it; snapshots are taken from it.
    pub fn serving_standby(&self, database: &str) -> Option<&Instance> {
        let db = self.databases.get(database)?;
        let standby = self
            .instances
            .get(db.sync_standby.as_deref()?)
            .filter(|i| i.fenced_at.is_none())?;
        let in_sync = standby
            .replication
            .as_ref()
            .is_some_and(|r| r.sync && r.state == "streaming");
        let host = self.hosts.get(&standby.host);
        let healthy =
            standby.health == InstanceHealth::Healthy && host.is_some_and(|h| h.health == HostHealth::Healthy);
        (in_sync && healthy).then_some(standby)
    }

    /// The database's primary instance (not fenced), if it has one.
    pub fn primary_of(&self, database: &str) -> Option<&Instance> {
        self.databases.get(database)?.instances.iter().find_map(|id| {
            self.instances
                .get(id)
                .filter(|i| i.role == InstanceRole::Primary && i.fenced_at.is_none())
        })
    }

    /// The database's newest add-standby job, if it had one.
    pub fn last_standby_attempt(&self, database: &str) -> Option<&Job> {
        self.last_job_where(database, |k| matches!(k, JobKind::AddStandby { .. }))
    }

    /// The database's newest job of a kind `is` accepts, if it had one.
    pub fn last_job_where(&self, database: &str, is: impl Fn(&JobKind) -> bool) -> Option<&Job> {
        self.jobs_by_database
            .get(database)?
            .iter()
            .rev()
            .filter_map(|id| self.jobs.get(id))
            .find(|j| is(&j.kind))
    }

    pub(super) fn add_standby(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        name: &str,
        instance_id: &str,
    ) -> Response {
        let Some(db) = self.databases.get(name) else {
            return not_found("database", name);
        };
        if let Some(refused) = self.busy(db) {
            return refused;
        }
        let short = db.name.clone();
        if !db.spec.multi_az {
            return conflict(format!("database {short} is not Multi-AZ"));
        }
        if db.status != DatabaseStatus::Available {
            return conflict(format!(
                "database {short} is {}; a standby is added only while it is available",
                wire_name(&db.status)
            ));
        }
        if db.sync_standby.is_some() {
            return conflict(format!("database {short} already has a synchronous standby"));
        }
        if self.snapshots_of(&db.lineage()).next().is_none() {
            return conflict(format!(
                "database {short} has no snapshot yet to build its standby from; it is built after the first"
            ));
        }
        let Some(primary) = self.primary_of(name) else {
            return conflict(format!("database {short} has no primary to follow"));
        };
        let primary_zone = self
            .hosts
            .get(&primary.host)
            .map(|h| h.zone.clone())
            .unwrap_or_default();
        // A standby an earlier attempt left (its volume may be half made) is rebuilt where it is.
        let (standby, host, port) = match self.standby_of(name) {
            Some(left) => (left.id.clone(), left.host.clone(), left.port),
            None => match self.place_standby(&primary_zone, Some(primary.port)) {
                Ok((host, port)) => (instance_id.to_string(), host, port),
                Err(rejection) => return Response::Rejected { rejection },
            },
        };
        let account = db.account.clone();
        let kind = JobKind::AddStandby {
            database: name.to_string(),
            standby: standby.clone(),
        };
        let job = match self.enqueue(index, at, job_id, None, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        if !self.instances.contains_key(&standby) {
            self.instances.insert(
                standby.clone(),
                Instance {
                    id: standby.clone(),
                    database: name.to_string(),
                    role: InstanceRole::Standby,
                    host: host.clone(),
                    port,
                    created_at_ms: at,
                    ..Instance::default()
                },
            );
        }
        let db = self.databases.get_mut(name).expect("checked above");
        if !db.instances.contains(&standby) {
            db.instances.push(standby.clone());
        }
        db.status = DatabaseStatus::Modifying;
        db.operation = Some(job_id.to_string());
        let zone = self.hosts.get(&host).map(|h| h.zone.clone()).unwrap_or_default();
        self.event(
            index,
            at,
            "standby-building",
            name,
            format!("A synchronous standby of {short} is being built on host {host} (zone {zone}), port {port}, from its latest snapshot and archive."),
        );
        self.database_response(&job, true)
    }

    /// Stop waiting for a lost synchronous standby: a new generation, the standby fenced
    /// at it and no longer recorded as synchronous, in this apply; the primary is told
    /// after (the job). Refused unless `standby` is still the recorded one and the
    /// database at rest.
    pub(super) fn release_standby(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        name: &str,
        standby: &str,
        reason: &str,
    ) -> Response {
        let Some(db) = self.databases.get(name) else {
            return not_found("database", name);
        };
        // A lost standby holds every commit: its release pre-empts a snapshot (which
        // finishes on its own, touching only the catalog), as a failover does.
        if !self.only_snapshotting(db) {
            if let Some(refused) = self.busy(db) {
                return refused;
            }
        }
        let short = db.name.clone();
        if db.sync_standby.as_deref() != Some(standby) {
            return conflict(format!("{standby} is not the synchronous standby of {short}"));
        }
        if !matches!(
            db.status,
            DatabaseStatus::Available | DatabaseStatus::StorageFull | DatabaseStatus::BackingUp
        ) {
            return conflict(format!("database {short} is {}", wire_name(&db.status)));
        }
        let (account, generation) = (db.account.clone(), db.generation + 1);
        let kind = JobKind::ReleaseStandby {
            database: name.to_string(),
            standby: standby.to_string(),
        };
        let job = match self.enqueue(index, at, job_id, None, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        if let Some(i) = self.instances.get_mut(standby) {
            i.fenced_at = Some(generation);
        }
        let db = self.databases.get_mut(name).expect("checked above");
        db.generation = generation;
        db.sync_standby = None;
        // Out of the database's members (nothing plans for it); its record stays, fenced,
        // until it is destroyed.
        db.instances.retain(|i| i != standby);
        db.status = DatabaseStatus::Modifying;
        db.operation = Some(job_id.to_string());
        self.event(
            index,
            at,
            "standby-lost",
            name,
            format!("The synchronous standby {standby} of {short} is lost ({reason}); it is fenced (generation {generation}) and the primary stops waiting for it: until a new standby is in sync, commits are on the primary (and the archive) only."),
        );
        self.database_response(&job, true)
    }

    /// A release ended: the database is at rest, its primary no longer waiting (or, if
    /// the primary could not be told, still waiting: the event says so).
    pub(super) fn conclude_release_standby(&mut self, index: u64, at: Millis, database: &str, error: Option<&str>) {
        let Some(short) = self.back_at_rest(database) else {
            return;
        };
        let (kind, message) = match error {
            None => (
                "standby-released",
                format!("The primary of {short} no longer waits for its lost standby; a new one is built from the backups."),
            ),
            Some(e) => (
                "standby-release-failed",
                format!("The primary of {short} could not be told to stop waiting for its lost standby ({e}); its commits wait until it is."),
            ),
        };
        self.event(index, at, kind, database, message);
    }

    /// The primary waits for `standby` now: it may be promoted from here on.
    pub(super) fn record_in_sync(&mut self, database: &str, standby: &str) {
        if let Some(db) = self.databases.get_mut(database) {
            db.sync_standby = Some(standby.to_string());
        }
    }

    /// An add-standby job ended: the database is Multi-AZ, or serves on without a standby
    /// (the scheduler tries again later); either way it is at rest.
    pub(super) fn conclude_add_standby(
        &mut self,
        index: u64,
        at: Millis,
        database: &str,
        standby: &str,
        error: Option<&str>,
        undone: bool,
    ) {
        let standby_at = self.standby_of(database).map(|i| (i.host.clone(), i.port));
        if error.is_some() && undone {
            self.instances.remove(standby);
            if let Some(db) = self.databases.get_mut(database) {
                db.instances.retain(|i| i != standby);
            }
        }
        let Some(short) = self.back_at_rest(database) else {
            return;
        };
        let (kind, message) = match (error, standby_at) {
            (None, Some((host, port))) => (
                "database-multi-az",
                format!("Database {short} is Multi-AZ: every commit now waits for its standby on host {host}, port {port}."),
            ),
            (None, None) => ("database-multi-az", format!("Database {short} is Multi-AZ.")),
            (Some(error), _) => (
                "standby-failed",
                format!("Building a standby of {short} failed ({error}); it serves on without one, and a new attempt starts within minutes."),
            ),
        };
        self.event(index, at, kind, database, message);
    }

    /// Standbys' replication as the monitor relays it.
    pub(super) fn observe_replication(&mut self, standbys: &[(String, Replication)]) -> Response {
        for (id, replication) in standbys {
            if let Some(i) = self.instances.get_mut(id) {
                i.replication = Some(replication.clone());
            }
        }
        Response::Done
    }
}

#[cfg(test)]
mod tests {
    use super::super::databases::Outcome;
    use super::*;
    use crate::catalog::TaskOutput;
    use crate::command::{Command, Proposal};

    use super::super::fixtures::{add_snapshot, with_database, DB};

    /// Hosts h1 (zone a), h2 (zone a) and h3 (zone b); Multi-AZ database orders on h1,
    /// available, with a snapshot when `with_snapshot`.
    fn state(multi_az: bool, with_snapshot: bool) -> AdminState {
        let spec = DatabaseSpec {
            multi_az,
            ..DatabaseSpec::default()
        };
        let mut s = with_database(&[("h1", "a"), ("h2", "a"), ("h3", "b")], spec, "p");
        if with_snapshot {
            add_snapshot(&mut s);
        }
        s
    }

    /// Standby `s-j2` added (indexes 3–5) and in sync: the database is Multi-AZ at rest.
    fn in_sync(s: &mut AdminState) {
        add(s, 3, "j2");
        let job = s.jobs["j2"].kind.clone();
        s.record_output(4, &job, "p", &TaskOutput::InSync { standby: "s-j2".into() });
        s.conclude(5, 5, &job, &Outcome::Succeeded);
    }

    fn add(s: &mut AdminState, index: u64, job: &str) -> Response {
        let cmd = Command::AddStandby {
            job_id: job.into(),
            name: DB.into(),
            instance_id: format!("s-{job}"),
        };
        s.apply(index, &Proposal::new(index, cmd))
    }

    #[test]
    fn a_standby_goes_to_another_zone_on_the_primary_port_and_counts_only_once_in_sync() {
        let mut s = state(true, true);
        assert_eq!(s.instances["p"].host, "h1");
        assert!(matches!(add(&mut s, 3, "j2"), Response::Database { created: true, .. }));
        let standby = &s.instances["s-j2"];
        assert_eq!(
            (standby.host.as_str(), standby.role),
            ("h3", InstanceRole::Standby),
            "zone b, not h2 in a"
        );
        assert_eq!(standby.port, s.instances["p"].port);
        let db = &s.databases[DB];
        assert_eq!(db.instances, ["p", "s-j2"]);
        assert_eq!(db.status, DatabaseStatus::Modifying);
        assert_eq!(db.sync_standby, None, "not before the primary waits for it");
        assert!(s.events.iter().any(|e| e.kind == "standby-building"));
        // Busy: a second attempt is refused.
        assert!(matches!(add(&mut s, 4, "j3"), Response::Rejected { .. }));

        let job = s.jobs["j2"].kind.clone();
        s.record_output(
            5,
            &job,
            "p",
            &TaskOutput::InSync {
                standby: "other".into(),
            },
        );
        assert_eq!(s.databases[DB].sync_standby, None, "only the job's own standby");
        s.record_output(5, &job, "p", &TaskOutput::InSync { standby: "s-j2".into() });
        assert_eq!(s.databases[DB].sync_standby.as_deref(), Some("s-j2"));
        s.conclude(6, 6, &job, &Outcome::Succeeded);
        let db = &s.databases[DB];
        assert_eq!((db.status, db.operation.clone()), (DatabaseStatus::Available, None));
        assert!(s.events.iter().any(|e| e.kind == "database-multi-az"));
        assert!(matches!(add(&mut s, 7, "j4"), Response::Rejected { .. }), "it has one");
    }

    #[test]
    fn refusals_say_why_and_a_failed_attempt_leaves_the_primary_serving() {
        let refused = |s: &mut AdminState| match add(s, 3, "j2") {
            Response::Rejected { rejection } => rejection.to_string(),
            other => panic!("accepted: {other:?}"),
        };
        assert!(refused(&mut state(false, true)).contains("not Multi-AZ"));
        assert!(refused(&mut state(true, false)).contains("no snapshot yet"));
        let mut one_zone = state(true, true);
        one_zone.hosts.remove("h3");
        let why = refused(&mut one_zone);
        assert!(why.contains("second zone") && why.contains("\"a\""), "{why}");

        let mut s = state(true, true);
        add(&mut s, 3, "j2");
        let job = s.jobs["j2"].kind.clone();
        let failed = Outcome::Failed {
            error: "boom".into(),
            undone: true,
        };
        s.conclude(4, 4, &job, &failed);
        let db = &s.databases[DB];
        assert_eq!(db.status, DatabaseStatus::Available, "the primary serves on");
        assert_eq!(db.instances, ["p"]);
        assert!(!s.instances.contains_key("s-j2"), "the undone standby's record goes");
        assert!(s
            .events
            .iter()
            .any(|e| e.kind == "standby-failed" && e.message.contains("boom")));
        assert_eq!(s.last_standby_attempt(DB).map(|j| j.id.as_str()), Some("j2"));

        // A failure whose undo failed leaves the standby's record: the next attempt rebuilds it.
        let mut s = state(true, true);
        add(&mut s, 3, "j2");
        let failed = Outcome::Failed {
            error: "boom".into(),
            undone: false,
        };
        s.conclude(4, 4, &s.jobs["j2"].kind.clone(), &failed);
        assert!(matches!(add(&mut s, 5, "j3"), Response::Database { created: true, .. }));
        assert_eq!(
            s.jobs["j3"].kind,
            JobKind::AddStandby {
                database: DB.into(),
                standby: "s-j2".into()
            }
        );
    }

    #[test]
    fn a_lost_standby_is_released_by_a_committed_generation_before_the_primary_is_told() {
        let mut s = state(true, true);
        in_sync(&mut s);
        let release = |s: &mut AdminState, index: u64, standby: &str| {
            let cmd = Command::ReleaseStandby {
                job_id: format!("r{index}"),
                name: DB.into(),
                standby: standby.into(),
                reason: "its host h3 stopped answering".into(),
            };
            s.apply(index, &Proposal::new(index, cmd))
        };
        assert!(
            matches!(release(&mut s, 6, "other"), Response::Rejected { .. }),
            "a stale report"
        );
        let generation = s.databases[DB].generation;
        assert!(matches!(
            release(&mut s, 7, "s-j2"),
            Response::Database { created: true, .. }
        ));
        let db = &s.databases[DB];
        assert_eq!(db.sync_standby, None);
        assert_eq!(db.generation, generation + 1);
        assert_eq!(s.instances["s-j2"].fenced_at, Some(generation + 1));
        assert!(s.standby_of(DB).is_none(), "a fenced standby is no standby");
        assert_eq!(s.databases[DB].instances, ["p"]);
        assert!(s
            .events
            .iter()
            .any(|e| e.kind == "standby-lost" && e.message.contains("h3")));
        assert!(matches!(release(&mut s, 8, "s-j2"), Response::Rejected { .. }), "once");
        s.conclude(9, 9, &s.jobs["r7"].kind.clone(), &Outcome::Succeeded);
        assert_eq!(s.databases[DB].status, DatabaseStatus::Available);
    }

    #[test]
    fn a_lost_standby_is_released_while_a_snapshot_runs_not_after_it() {
        let mut s = state(true, true);
        in_sync(&mut s);
        let snap = Command::SnapshotDatabase {
            job_id: "snap".into(),
            request: None,
            name: DB.into(),
            snapshot: "mine".into(),
            kind: crate::catalog::SnapshotKind::Automatic,
        };
        assert!(matches!(s.apply(6, &Proposal::new(6, snap)), Response::Database { .. }));
        assert!(s.only_snapshotting(&s.databases[DB]));
        // Every commit waits for the lost standby: its release does not wait for the
        // snapshot (which may be being taken on that very standby).
        let release = Command::ReleaseStandby {
            job_id: "r7".into(),
            name: DB.into(),
            standby: "s-j2".into(),
            reason: "its host h3 stopped answering".into(),
        };
        assert!(matches!(
            s.apply(7, &Proposal::new(7, release)),
            Response::Database { created: true, .. }
        ));
        assert_eq!(s.databases[DB].operation.as_deref(), Some("r7"));
        assert_eq!(s.databases[DB].sync_standby, None);
        // Anything else still waits for the snapshot, as before.
        s.databases.get_mut(DB).unwrap().operation = Some("snap".into());
        s.databases.get_mut(DB).unwrap().status = DatabaseStatus::BackingUp;
        assert!(matches!(add(&mut s, 8, "j8"), Response::Rejected { .. }));
    }

    #[test]
    fn leaving_multi_az_unrecords_the_standby_at_once_and_drops_it_when_done() {
        let mut s = state(true, true);
        in_sync(&mut s);
        let modification = Modification {
            multi_az: Some(false),
            ..Modification::default()
        };
        let cmd = Command::ModifyDatabase {
            job_id: "j3".into(),
            request: None,
            name: DB.into(),
            modification,
        };
        s.apply(6, &Proposal::new(6, cmd));
        assert_eq!(
            s.databases[DB].sync_standby, None,
            "no standby may be promoted from here on"
        );
        s.conclude(7, 7, &s.jobs["j3"].kind.clone(), &Outcome::Succeeded);
        let db = &s.databases[DB];
        assert!(!db.spec.multi_az);
        assert_eq!(db.instances, ["p"]);
        assert!(!s.instances.contains_key("s-j2"));
    }
}
