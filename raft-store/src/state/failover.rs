//! Failover of a Multi-AZ database: its primary failed and its synchronous standby no
//! longer hears from it. One apply commits the decision: a new generation, the old
//! primary fenced at it (its host refuses it from then on), the standby recorded as the
//! primary and the name moved to it, and a new lineage for the backups from here on
//! (the standby's zone store takes the archive). The job then promotes the standby.
//!
//! Why no acknowledged commit is lost, and no second primary can acknowledge one: the
//! standby is promoted only while it is the recorded synchronous standby, which holds
//! every commit the primary acknowledged (see `standby.rs`). The old primary waits, for
//! every commit, for that standby's flush; once the standby is promoted it never flushes
//! for the old primary again, so whatever the old primary still commits is never
//! acknowledged, reachable or not. The name leaves it in the same apply as the fence.

use super::{conflict, not_found, AdminState};
use crate::command::Response;
use crate::records::*;

/// The failovers kept per database (older ones are dropped first).
pub const FAILOVERS_KEPT: usize = 20;

/// What `FailoverDatabase` asks for.
pub(crate) struct FailOver<'a> {
    pub job_id: &'a str,
    pub name: &'a str,
    pub standby: &'a str,
    pub reason: &'a str,
    pub detected_ms: Millis,
    pub last_seen_ms: Millis,
}

/// What `Switchover` asks for.
pub(crate) struct SwitchOver<'a> {
    pub job_id: &'a str,
    pub request: Option<&'a RequestKey>,
    pub name: &'a str,
    pub to_zone: Option<&'a str>,
    pub defer: bool,
}

impl AdminState {
    /// Whether the monitor may act on a failure of `db`'s primary: at rest, or busy only
    /// with a snapshot or a read replica's build, which a failover pre-empts (neither
    /// changes anything the failover relies on, and each finishes on its own; a replica
    /// the failover caught half built follows no lineage, and is rebuilt from the new one).
    pub fn watched(&self, db: &Database) -> bool {
        if db.at_rest() || self.only_snapshotting(db) {
            return true;
        }
        let kind = self.operation_kind(db);
        matches!(kind, Some(JobKind::AddReplica { .. })) && db.status == DatabaseStatus::Modifying
    }

    /// What the job holding `db`'s operation slot does, if one holds it.
    pub fn operation_kind(&self, db: &Database) -> Option<&JobKind> {
        db.operation.as_ref().and_then(|op| self.jobs.get(op)).map(|j| &j.kind)
    }

    /// Whether `db` is busy with a snapshot and nothing else: what a failure of its
    /// primary or its standby pre-empts.
    pub fn only_snapshotting(&self, db: &Database) -> bool {
        let kind = self.operation_kind(db);
        matches!(kind, Some(JobKind::SnapshotDatabase { .. }))
            && matches!(
                db.status,
                DatabaseStatus::Available | DatabaseStatus::StorageFull | DatabaseStatus::BackingUp
            )
    }

    /// The database's failovers, oldest first.
    pub fn failovers_of<'a>(&'a self, database: &'a str) -> impl Iterator<Item = &'a Failover> + 'a {
        self.failovers.values().filter(move |f| f.database == database)
    }

    pub(super) fn fail_over(&mut self, index: u64, at: Millis, f: FailOver) -> Response {
        self.take_over(index, at, f, None, false)
    }

    /// A switchover asked for: checked now (a Multi-AZ database whose standby is in sync,
    /// healthy, and in the zone named), then started, or recorded for the maintenance
    /// window.
    pub(super) fn switch_over(&mut self, index: u64, at: Millis, s: SwitchOver) -> Response {
        if let Some(answer) = self.repeated(s.request, s.name, at) {
            return answer;
        }
        let Some(db) = self.databases.get(s.name) else {
            return not_found("database", s.name);
        };
        let short = db.name.clone();
        if !db.spec.multi_az {
            return conflict(format!(
                "database {short} is not Multi-AZ: it has no standby to switch over to (`keel db modify {short} --multi-az true` adds one)"
            ));
        }
        let Some(standby) = db.sync_standby.as_deref().and_then(|id| self.instances.get(id)) else {
            return conflict(format!(
                "database {short} has no standby in sync yet; it switches over once one is (`keel db describe {short}` shows it)"
            ));
        };
        let host = self.hosts.get(&standby.host);
        let zone = host.map(|h| h.zone.clone()).unwrap_or_default();
        if let Some(to) = s.to_zone.filter(|to| *to != zone) {
            return conflict(format!(
                "the standby of {short} is in zone {zone}, not {to}: a switchover moves the primary to its standby's zone"
            ));
        }
        if self.serving_standby(s.name).is_none() {
            return conflict(format!(
                "the standby {} of {short} is not healthy and streaming in sync now; a switchover would not be lossless: retry when it is",
                standby.id
            ));
        }
        let standby = standby.id.clone();
        if s.defer {
            let db = self.databases.get_mut(s.name).expect("checked above");
            db.pending_switchover = Some(PendingSwitchover {
                to_zone: Some(zone.clone()),
                requested_at_ms: at,
            });
            let message = format!(
                "Database {short} will switch over to its standby in zone {zone} in its maintenance window ({} UTC); `keel db failover {short} --cancel` cancels it.",
                db.spec.maintenance_window
            );
            let database = Box::new(db.clone());
            self.event(index, at, "switchover-pending", s.name, message);
            return Response::Deferred { database };
        }
        let f = FailOver {
            job_id: s.job_id,
            name: s.name,
            standby: &standby,
            reason: &format!("a switchover to zone {zone} was asked for"),
            detected_ms: at,
            last_seen_ms: 0,
        };
        let response = self.take_over(index, at, f, s.request, true);
        if matches!(response, Response::Database { .. }) {
            if let Some(db) = self.databases.get_mut(s.name) {
                db.pending_switchover = None;
            }
        }
        response
    }

    /// Drop the switchover waiting for the maintenance window.
    pub(super) fn cancel_switchover(&mut self, index: u64, at: Millis, name: &str) -> Response {
        let Some(db) = self.databases.get_mut(name) else {
            return not_found("database", name);
        };
        if db.pending_switchover.take().is_none() {
            return conflict(format!("database {} has no switchover pending", db.name));
        }
        let message = format!(
            "The switchover of {} pending for its maintenance window was cancelled.",
            db.name
        );
        let database = Box::new(db.clone());
        self.event(index, at, "switchover-cancelled", name, message);
        Response::Deferred { database }
    }

    /// Fence the primary, move the name to the standby and queue its promotion: a
    /// failover, or (`planned`) a switchover.
    fn take_over(
        &mut self,
        index: u64,
        at: Millis,
        f: FailOver,
        request: Option<&RequestKey>,
        planned: bool,
    ) -> Response {
        let Some(db) = self.databases.get(f.name) else {
            return not_found("database", f.name);
        };
        // A failure pre-empts a snapshot or a reclaim (it finishes on its own, touching only
        // the catalog); a switchover waits for the database to be at rest.
        if planned || !self.watched(db) {
            if let Some(refused) = self.busy(db) {
                return refused;
            }
        }
        let short = db.name.clone();
        if !self.watched(db) {
            return conflict(format!("database {short} is {}", wire_name(&db.status)));
        }
        if db.sync_standby.as_deref() != Some(f.standby) {
            return conflict(format!(
                "{} is not the synchronous standby of {short}: only a standby every acknowledged commit waited for is promoted",
                f.standby
            ));
        }
        let Some(standby) = self.instances.get(f.standby).filter(|i| i.fenced_at.is_none()).cloned() else {
            return conflict(format!("standby {} of {short} is gone", f.standby));
        };
        let old = self.primary_of(f.name).cloned();
        let (account, generation) = (db.account.clone(), db.generation + 1);
        let kind = JobKind::FailoverDatabase {
            database: f.name.to_string(),
            from: old.as_ref().map(|o| o.id.clone()).unwrap_or_default(),
            to: standby.id.clone(),
            planned,
        };
        let job = match self.enqueue(index, at, f.job_id, request, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        let zone_of = |s: &AdminState, host: &str| s.hosts.get(host).map(|h| h.zone.clone()).unwrap_or_default();
        let record = Failover {
            id: f.job_id.to_string(),
            database: f.name.to_string(),
            reason: f.reason.to_string(),
            planned,
            from_instance: old.as_ref().map(|o| o.id.clone()).unwrap_or_default(),
            from_host: old.as_ref().map(|o| o.host.clone()).unwrap_or_default(),
            from_zone: old.as_ref().map(|o| zone_of(self, &o.host)).unwrap_or_default(),
            to_instance: standby.id.clone(),
            to_host: standby.host.clone(),
            to_zone: zone_of(self, &standby.host),
            generation,
            last_seen_ms: f.last_seen_ms,
            detected_ms: f.detected_ms.min(at),
            fenced_ms: at,
            ..Failover::default()
        };
        if let Some(o) = old.as_ref().and_then(|o| self.instances.get_mut(&o.id)) {
            o.fenced_at = Some(generation);
        }
        if let Some(s) = self.instances.get_mut(&standby.id) {
            s.role = InstanceRole::Primary;
            s.replication = None;
        }
        let endpoint = self.primary_endpoint(f.name);
        let replicas: Vec<String> = self.replicas_of(f.name).map(|i| i.id.clone()).collect();
        let db = self.databases.get_mut(f.name).expect("checked above");
        db.generation = generation;
        db.sync_standby = None;
        // Read replicas stay members; they followed the old primary's lineage, so they serve
        // no reader until the scheduler has rebuilt them from the new one.
        db.instances = std::iter::once(standby.id.clone()).chain(replicas).collect();
        // The name moves with the fence: it never points at the fenced primary again. Until
        // the standby is promoted it refuses clients (its pg_hba admits none), so one that
        // arrives early is refused and retries, never served stale.
        db.endpoint = endpoint;
        db.status = DatabaseStatus::FailingOver;
        db.status_reason = Some(f.reason.to_string());
        db.operation = Some(f.job_id.to_string());
        // The standby's zone store takes the archive from here on: a new lineage, as a
        // recovery starts one (a lineage's WAL is in one store).
        let replaced = db.lineage();
        db.earlier_lineages.push(replaced);
        db.lineage = f.job_id.to_string();
        self.keep_failover(record);
        let from = old
            .as_ref()
            .map(|o| format!("primary {} on host {}", o.id, o.host))
            .unwrap_or_else(|| "its primary".into());
        let (kind, doing) = match planned {
            true => ("switchover-started", "switching over"),
            false => ("failover-started", "failing over"),
        };
        self.event(
            index,
            at,
            kind,
            f.name,
            format!(
                "Database {short} is {doing} ({}): {from} is fenced (generation {generation}) and the name now points at standby {} on host {}, which is being promoted; it holds every acknowledged commit.",
                f.reason, standby.id, standby.host
            ),
        );
        self.database_response(&job, true)
    }

    fn keep_failover(&mut self, record: Failover) {
        let database = record.database.clone();
        self.failovers.insert(record.id.clone(), record);
        let ids: Vec<String> = self.failovers_of(&database).map(|f| f.id.clone()).collect();
        for id in ids.iter().take(ids.len().saturating_sub(FAILOVERS_KEPT)) {
            self.failovers.remove(id);
        }
    }

    /// The fenced instances of `database` (not members any more), oldest first.
    pub fn fenced_of<'a>(&'a self, database: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.instances
            .values()
            .filter(move |i| i.database == database && i.fenced_at.is_some())
    }

    pub(super) fn reclaim_fenced(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        name: &str,
        instances: &[String],
    ) -> Response {
        let Some(db) = self.databases.get(name) else {
            return not_found("database", name);
        };
        // It touches only fenced instances, which no other operation uses: it does not
        // hold the database's operation slot (a user's modify is never refused for it).
        if instances.is_empty()
            || !instances.iter().all(|id| {
                self.instances
                    .get(id)
                    .is_some_and(|i| i.database == name && i.fenced_at.is_some())
            })
        {
            return conflict(format!("only fenced instances of {} are reclaimed", db.name));
        }
        let account = db.account.clone();
        let kind = JobKind::ReclaimFenced {
            database: name.to_string(),
            instances: instances.to_vec(),
        };
        let job = match self.enqueue(index, at, job_id, None, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        self.database_response(&job, true)
    }

    /// Reclaimed: the destroyed instances' records go (their ports and slots are free);
    /// a failed attempt keeps them for the next.
    pub(super) fn conclude_reclaim(&mut self, instances: &[String], ok: bool) {
        if ok {
            for id in instances {
                self.instances.remove(id);
            }
        }
    }

    /// The database's failover under way, if one is.
    fn open_failover(&mut self, database: &str) -> Option<&mut Failover> {
        self.failovers
            .values_mut()
            .filter(|f| f.database == database && f.finished_ms.is_none())
            .last()
    }

    /// The promoted standby's word: when it left recovery.
    pub(super) fn record_promoted(&mut self, at: Millis, database: &str, promoted_at_ms: Millis) {
        if let Some(f) = self.open_failover(database) {
            f.promoted_ms = Some(promoted_at_ms);
            f.promotion_committed_ms = Some(at);
        }
    }

    /// A stored heartbeat of `lineage` at `written_ms`: the first write a failover's new
    /// primary took, if it was waiting for one (a failover's lineage is its job id, the
    /// record's key, so this is one lookup on every archive report).
    pub(super) fn record_first_write(&mut self, lineage: &str, written_ms: Millis) {
        if written_ms == 0 {
            return;
        }
        if let Some(f) = self
            .failovers
            .get_mut(lineage)
            .filter(|f| f.first_write_ms.is_none() && f.promoted_ms.is_some())
        {
            f.first_write_ms = Some(written_ms);
        }
    }

    /// A failover ended: the database at rest on its new primary (a new standby is built
    /// by the scheduler), or, if the promotion failed, left to the monitor, which
    /// recovers it from its backups.
    pub(super) fn conclude_failover(&mut self, index: u64, at: Millis, database: &str, error: Option<&str>) {
        let Some(short) = self.back_at_rest(database) else {
            return;
        };
        let record = self.open_failover(database);
        let planned = record.as_ref().is_some_and(|f| f.planned);
        let (kind, message) = match (error, record) {
            (None, Some(f)) if f.planned => {
                f.finished_ms = Some(at);
                (
                    "switchover-finished",
                    format!(
                        "Database {short} switched over to {} on host {} (zone {}); a new standby is built from the backups.",
                        f.to_instance, f.to_host, f.to_zone
                    ),
                )
            }
            (None, Some(f)) => {
                f.finished_ms = Some(at);
                let took = f.promotion_committed_ms.unwrap_or(at).saturating_sub(f.detected_ms);
                (
                    "failover-finished",
                    format!(
                        "Database {short} failed over to {} on host {} (zone {}) {took} ms after the failure was detected; a new standby is built from the backups.",
                        f.to_instance, f.to_host, f.to_zone
                    ),
                )
            }
            (None, None) => ("failover-finished", format!("Database {short} failed over.")),
            (Some(e), record) => {
                if let Some(f) = record {
                    f.finished_ms = Some(at);
                    f.error = Some(e.to_string());
                }
                (
                    if planned {
                        "switchover-failed"
                    } else {
                        "failover-failed"
                    },
                    format!("Promoting the standby of {short} failed ({e}); the monitor recovers it from its backups."),
                )
            }
        };
        self.event(index, at, kind, database, message);
    }
}

#[cfg(test)]
mod tests {
    use super::super::databases::Outcome;
    use super::*;
    use crate::catalog::{TaskOutput, WalArchive};
    use crate::command::{Command, Proposal};

    use super::super::fixtures::{add_snapshot, with_database, DB};

    /// Multi-AZ orders: primary p on h1 (zone a), standby s-j2 on h3 (zone b), in sync.
    fn multi_az() -> AdminState {
        let spec = DatabaseSpec {
            multi_az: true,
            ..DatabaseSpec::default()
        };
        let mut s = with_database(&[("h1", "a"), ("h2", "a"), ("h3", "b")], spec, "p");
        add_snapshot(&mut s);
        let add = Command::AddStandby {
            job_id: "j2".into(),
            name: DB.into(),
            instance_id: "s-j2".into(),
        };
        s.apply(3, &Proposal::new(3, add));
        let job = s.jobs["j2"].kind.clone();
        s.record_output(4, &job, "p", &TaskOutput::InSync { standby: "s-j2".into() });
        s.conclude(5, 5, &job, &Outcome::Succeeded);
        s
    }

    fn fail_over(s: &mut AdminState, index: u64, standby: &str) -> Response {
        let cmd = Command::FailoverDatabase {
            job_id: format!("f{index}"),
            name: DB.into(),
            standby: standby.into(),
            reason: "host h1 stopped answering".into(),
            detected_ms: 1,
            last_seen_ms: 0,
        };
        s.apply(index, &Proposal::new(index, cmd))
    }

    #[test]
    fn one_apply_fences_the_primary_moves_the_name_and_makes_the_standby_primary() {
        let mut s = multi_az();
        let generation = s.databases[DB].generation;
        assert!(matches!(
            fail_over(&mut s, 10, "s-j2"),
            Response::Database { created: true, .. }
        ));
        let db = &s.databases[DB];
        assert_eq!(db.generation, generation + 1);
        assert_eq!(s.instances["p"].fenced_at, Some(generation + 1));
        assert_eq!(s.instances["s-j2"].role, InstanceRole::Primary);
        assert_eq!(s.primary_of(DB).map(|i| i.id.as_str()), Some("s-j2"));
        assert_eq!(db.instances, ["s-j2"]);
        assert_eq!(
            db.sync_standby, None,
            "nothing else may be promoted until a new one is in sync"
        );
        let endpoint = db.endpoint.as_ref().expect("the name points somewhere");
        assert_eq!((endpoint.host.as_str(), endpoint.addr.as_str()), ("h3", "127.0.1.3"));
        assert_eq!(db.status, DatabaseStatus::FailingOver);
        assert_eq!(db.lineage, "f10", "the standby's zone store takes a new lineage");
        assert_eq!(db.earlier_lineages, ["j1"]);
        let f = &s.failovers["f10"];
        assert_eq!(
            (
                f.from_instance.as_str(),
                f.from_zone.as_str(),
                f.to_instance.as_str(),
                f.to_zone.as_str()
            ),
            ("p", "a", "s-j2", "b")
        );
        assert_eq!((f.detected_ms, f.fenced_ms, f.generation), (1, 10, generation + 1));
        assert!(s
            .events
            .iter()
            .any(|e| e.kind == "failover-started" && e.message.contains("fenced")));
        assert_eq!(
            s.jobs["f10"].kind,
            JobKind::FailoverDatabase {
                database: DB.into(),
                from: "p".into(),
                to: "s-j2".into(),
                planned: false,
            }
        );

        // The standby's word, a stored write, the end: the timeline fills in.
        s.record_output(
            11,
            &s.jobs["f10"].kind.clone(),
            "s-j2",
            &TaskOutput::Promoted { promoted_at_ms: 11 },
        );
        s.record_archive(&[WalArchive {
            lineage: "j1".into(),
            restorable_until_ms: 12,
            ..WalArchive::default()
        }]);
        assert_eq!(
            s.failovers["f10"].first_write_ms, None,
            "the old lineage's is not the new primary's"
        );
        s.record_archive(&[WalArchive {
            lineage: "f10".into(),
            restorable_until_ms: 13,
            ..WalArchive::default()
        }]);
        s.conclude(14, 14, &s.jobs["f10"].kind.clone(), &Outcome::Succeeded);
        let f = &s.failovers["f10"];
        assert_eq!(
            (f.promoted_ms, f.promotion_committed_ms, f.first_write_ms, f.finished_ms),
            (Some(11), Some(11), Some(13), Some(14))
        );
        assert_eq!(s.databases[DB].status, DatabaseStatus::Available);
        assert!(s.events.iter().any(|e| e.kind == "failover-finished"));
        assert!(
            matches!(fail_over(&mut s, 15, "s-j2"), Response::Rejected { .. }),
            "no standby is recorded in sync any more"
        );
    }

    #[test]
    fn only_the_recorded_synchronous_standby_of_a_database_at_rest_is_promoted() {
        let refused = |s: &mut AdminState, standby: &str| match fail_over(s, 10, standby) {
            Response::Rejected { rejection } => rejection.to_string(),
            other => panic!("accepted: {other:?}"),
        };
        let mut s = multi_az();
        assert!(refused(&mut s, "p").contains("not the synchronous standby"));
        // Released: no longer in sync, never promoted.
        let mut s = multi_az();
        let release = Command::ReleaseStandby {
            job_id: "r".into(),
            name: DB.into(),
            standby: "s-j2".into(),
            reason: "lost".into(),
        };
        s.apply(6, &Proposal::new(6, release));
        assert!(refused(&mut s, "s-j2").contains("busy"));
        s.conclude(7, 7, &s.jobs["r"].kind.clone(), &Outcome::Succeeded);
        assert!(refused(&mut s, "s-j2").contains("not the synchronous standby"));
        assert_eq!(s.primary_of(DB).map(|i| i.id.as_str()), Some("p"), "nothing changed");
    }

    #[test]
    fn a_failed_promotion_leaves_the_database_to_recovery_and_says_so() {
        let mut s = multi_az();
        fail_over(&mut s, 10, "s-j2");
        let failed = Outcome::Failed {
            error: "pg_promote timed out".into(),
            undone: false,
        };
        s.conclude(11, 11, &s.jobs["f10"].kind.clone(), &failed);
        assert_eq!(s.failovers["f10"].error.as_deref(), Some("pg_promote timed out"));
        assert!(s.events.iter().any(|e| e.kind == "failover-failed"));
        assert_eq!(s.databases[DB].operation, None, "at rest: the monitor may recover it");
    }

    #[test]
    fn a_switchover_is_checked_first_then_started_or_kept_for_the_window_and_cancellable() {
        let switch = |s: &mut AdminState, index: u64, to_zone: Option<&str>, defer: bool| {
            let cmd = Command::Switchover {
                job_id: format!("w{index}"),
                request: None,
                name: DB.into(),
                to_zone: to_zone.map(str::to_string),
                in_maintenance_window: defer,
            };
            s.apply(index, &Proposal::new(index, cmd))
        };
        let why = |r: Response| match r {
            Response::Rejected { rejection } => rejection.to_string(),
            other => panic!("accepted: {other:?}"),
        };
        let mut s = multi_az();
        assert!(why(switch(&mut s, 10, None, false)).contains("not healthy and streaming in sync"));
        s.instances.get_mut("s-j2").unwrap().replication = Some(Replication {
            state: "streaming".into(),
            sync: true,
            ..Replication::default()
        });
        assert!(why(switch(&mut s, 11, Some("c"), false)).contains("is in zone b, not c"));

        // For the window: recorded, shown, cancellable; nothing else changes.
        assert!(matches!(switch(&mut s, 12, Some("b"), true), Response::Deferred { .. }));
        assert_eq!(
            s.databases[DB]
                .pending_switchover
                .as_ref()
                .and_then(|p| p.to_zone.as_deref()),
            Some("b")
        );
        assert_eq!(s.primary_of(DB).map(|i| i.id.as_str()), Some("p"));
        assert!(matches!(
            s.apply(13, &Proposal::new(13, Command::CancelSwitchover { name: DB.into() })),
            Response::Deferred { .. }
        ));
        assert_eq!(s.databases[DB].pending_switchover, None);
        assert!(s.events.iter().any(|e| e.kind == "switchover-cancelled"));

        // Now: the same committed steps as a failover, planned.
        switch(&mut s, 14, None, true);
        assert!(matches!(
            switch(&mut s, 15, None, false),
            Response::Database { created: true, .. }
        ));
        assert_eq!(s.databases[DB].pending_switchover, None, "done, so no longer pending");
        assert!(matches!(
            s.jobs["w15"].kind,
            JobKind::FailoverDatabase { planned: true, .. }
        ));
        assert!(s.failovers["w15"].planned);
        assert_eq!(s.primary_of(DB).map(|i| i.id.as_str()), Some("s-j2"));
        assert_eq!(s.instances["p"].fenced_at, Some(s.databases[DB].generation));
        s.conclude(16, 16, &s.jobs["w15"].kind.clone(), &Outcome::Succeeded);
        assert!(s.events.iter().any(|e| e.kind == "switchover-finished"));
    }

    #[test]
    fn fenced_instances_are_reclaimed_beside_other_operations_and_their_records_go() {
        let mut s = multi_az();
        fail_over(&mut s, 10, "s-j2");
        let reclaim = |s: &mut AdminState, index: u64, ids: &[&str]| {
            let cmd = Command::ReclaimFenced {
                job_id: format!("c{index}"),
                name: DB.into(),
                instances: ids.iter().map(|i| i.to_string()).collect(),
            };
            s.apply(index, &Proposal::new(index, cmd))
        };
        s.conclude(12, 12, &s.jobs["f10"].kind.clone(), &Outcome::Succeeded);
        assert_eq!(s.fenced_of(DB).map(|i| i.id.as_str()).collect::<Vec<_>>(), ["p"]);
        assert!(
            matches!(reclaim(&mut s, 13, &["s-j2"]), Response::Rejected { .. }),
            "not fenced"
        );
        assert!(matches!(
            reclaim(&mut s, 14, &["p"]),
            Response::Database { created: true, .. }
        ));
        let db = &s.databases[DB];
        assert_eq!(
            (db.status, db.operation.as_deref()),
            (DatabaseStatus::Available, None),
            "the database stays free for its user's operations"
        );
        let failed = Outcome::Failed {
            error: "host gone".into(),
            undone: false,
        };
        s.conclude(15, 15, &s.jobs["c14"].kind.clone(), &failed);
        assert!(s.instances.contains_key("p"), "kept for the next attempt");
        reclaim(&mut s, 16, &["p"]);
        s.conclude(17, 17, &s.jobs["c16"].kind.clone(), &Outcome::Succeeded);
        assert!(!s.instances.contains_key("p"));
        assert_eq!(s.databases[DB].operation, None);
    }

    #[test]
    fn a_failure_pre_empts_a_snapshot_which_then_touches_only_the_catalog() {
        let mut s = multi_az();
        let snap = Command::SnapshotDatabase {
            job_id: "snap".into(),
            request: None,
            name: DB.into(),
            snapshot: "mine".into(),
            kind: crate::catalog::SnapshotKind::User,
        };
        assert!(matches!(
            s.apply(10, &Proposal::new(10, snap)),
            Response::Database { .. }
        ));
        assert!(s.watched(&s.databases[DB]), "a snapshot does not hide a failure");
        // A switchover waits for it; a failure does not.
        s.instances.get_mut("s-j2").unwrap().replication = Some(Replication {
            state: "streaming".into(),
            sync: true,
            ..Replication::default()
        });
        let switch = Command::Switchover {
            job_id: "w".into(),
            request: None,
            name: DB.into(),
            to_zone: None,
            in_maintenance_window: false,
        };
        assert!(matches!(
            s.apply(11, &Proposal::new(11, switch)),
            Response::Rejected { .. }
        ));
        assert!(matches!(
            fail_over(&mut s, 12, "s-j2"),
            Response::Database { created: true, .. }
        ));
        assert_eq!(s.databases[DB].operation.as_deref(), Some("f12"));
        // The snapshot's workflow ends later (its host is gone): the catalog forgets it,
        // and the database stays the failover's.
        let key = s
            .snapshots
            .keys()
            .find(|k| k.starts_with("mine"))
            .cloned()
            .expect("recorded");
        s.conclude_preempted(
            13,
            13,
            &s.jobs["snap"].kind.clone(),
            &Outcome::Failed {
                error: "host gone".into(),
                undone: false,
            },
        );
        assert!(!s.snapshots.contains_key(&key));
        let db = &s.databases[DB];
        assert_eq!(
            (db.status, db.operation.as_deref()),
            (DatabaseStatus::FailingOver, Some("f12"))
        );
    }

    #[test]
    fn a_database_keeps_its_newest_failovers() {
        let mut s = AdminState::default();
        for n in 0..(FAILOVERS_KEPT as u64 + 3) {
            s.keep_failover(Failover {
                id: format!("f{n:03}"),
                database: DB.into(),
                ..Failover::default()
            });
        }
        let kept: Vec<_> = s.failovers_of(DB).map(|f| f.id.clone()).collect();
        assert_eq!(kept.len(), FAILOVERS_KEPT);
        assert_eq!(kept[0], "f003");
    }
}
