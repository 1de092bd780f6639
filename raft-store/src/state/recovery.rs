//! Recovery: a database whose instance or host failed gets a new instance on another
//! host, restored from its own backups to the latest restorable time, under the same
//! name. The failed instance is fenced at the new generation in the same apply that
//! places its successor, so nothing points at it from then on, and its host refuses to
//! run it again. The recovered database starts a new lineage (the recovery's job id):
//! its host may be in another zone, whose store would otherwise hold only part of the
//! lineage's WAL. Snapshots from before the recovery stay restorable by name.

use super::{conflict, not_found, AdminState};
use crate::catalog::{RestoreSource, RestoreTarget};
use crate::command::Response;
use crate::records::*;
use crate::timefmt::format_ms;

/// What `RecoverDatabase` asks for.
pub(crate) struct Recover<'a> {
    pub job_id: &'a str,
    pub request: Option<&'a RequestKey>,
    pub name: &'a str,
    pub instance_id: &'a str,
    pub reason: &'a str,
    pub last_seen_ms: Millis,
    pub automatic: bool,
}

impl AdminState {
    pub(super) fn recover_database(&mut self, index: u64, at: Millis, r: Recover) -> Response {
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
        let failed = db.status == DatabaseStatus::Failed;
        let at_rest = matches!(db.status, DatabaseStatus::Available | DatabaseStatus::StorageFull);
        if !(at_rest || failed && !r.automatic) {
            return conflict(format!(
                "database {short} is {}; only an available, storage-full or failed database can be recovered",
                wire_name(&db.status)
            ));
        }
        if r.automatic && db.spec.recovery == RecoveryMode::Manual {
            let why = format!(
                "{}; its recovery mode is manual: run `keel db recover {short}` to restore it on another host from its backups",
                r.reason
            );
            return self.recovery_blocked(index, at, r.name, "recovery-needed", why);
        }
        // The newest lineage with a backup: the current one, or (a recovery that failed
        // before the new lineage's first snapshot) one it replaced.
        let lineages: Vec<String> = std::iter::once(db.lineage())
            .chain(db.earlier_lineages.iter().rev().cloned())
            .collect();
        let found = lineages.iter().find_map(|l| {
            self.restore_base(l, &short, &RestoreTarget::Latest, None)
                .ok()
                .map(|b| (l.clone(), b.key()))
        });
        let (lineage, base) = match found {
            Some(found) => found,
            None => {
                let why = format!(
                    "{}; it cannot be recovered: it has no backup (backup retention {} days{}), so its data is only on the failed instance",
                    r.reason,
                    db.spec.backup_retention_days,
                    if db.spec.backup_retention_days == 0 {
                        ": 0 keeps none"
                    } else {
                        ", and no snapshot was taken yet"
                    }
                );
                return self.recovery_blocked(index, at, r.name, "recovery-blocked", why);
            }
        };
        let old = self.primary_of(r.name).cloned();
        let port = old.as_ref().map(|i| i.port).or(db.endpoint.as_ref().map(|e| e.port));
        let (host, port) =
            match self.place_avoiding(db.spec.zone.as_deref(), old.as_ref().map(|i| i.host.as_str()), port) {
                Ok(placed) => placed,
                Err(rejection) => {
                    let why = format!("{}; it cannot be recovered now: {rejection}", r.reason);
                    return self.recovery_blocked(index, at, r.name, "recovery-blocked", why);
                }
            };
        let (account, generation) = (db.account.clone(), db.generation + 1);
        let standbys: Vec<String> = db
            .instances
            .iter()
            .filter(|id| self.instances.get(*id).is_some_and(|i| i.role == InstanceRole::Standby))
            .cloned()
            .collect();
        // The failure was declared when the monitor marked the instance unhealthy, if it did.
        let failed_at = match old.as_ref().map(|i| &i.health) {
            Some(InstanceHealth::Unhealthy { since_ms, .. }) => *since_ms,
            _ => at,
        };
        let kind = JobKind::RecoverDatabase {
            database: r.name.to_string(),
            from: RestoreSource {
                database: r.name.to_string(),
                lineage,
                snapshot: base,
                target: RestoreTarget::Latest,
                prefer_near_within_ms: None,
            },
            replaces: old.as_ref().map(|i| i.id.clone()),
            last_seen_ms: r.last_seen_ms,
            failed_at_ms: failed_at,
        };
        let job = match self.enqueue(index, at, r.job_id, r.request, kind, &account) {
            Ok(job) => job,
            Err(refused) => return refused,
        };
        if let Some(old) = old.as_ref().and_then(|o| self.instances.get_mut(&o.id)) {
            old.fenced_at = Some(generation);
        }
        // A standby followed the failed primary's lineage: it is fenced with it (a new one
        // is built from the recovered database's first snapshot).
        for id in &standbys {
            if let Some(i) = self.instances.get_mut(id) {
                i.fenced_at = Some(generation);
            }
        }
        self.instances.insert(
            r.instance_id.to_string(),
            Instance {
                id: r.instance_id.to_string(),
                database: r.name.to_string(),
                role: InstanceRole::Primary,
                host: host.clone(),
                port,
                created_at_ms: at,
                health: InstanceHealth::Healthy,
                fenced_at: None,
                replication: None,
                follows: None,
            },
        );
        let db = self.databases.get_mut(r.name).expect("checked above");
        db.status = DatabaseStatus::Recovering;
        db.status_reason = Some(r.reason.to_string());
        db.operation = Some(r.job_id.to_string());
        db.generation = generation;
        db.sync_standby = None;
        // Nothing points at the fenced instance from this apply on.
        db.endpoint = None;
        // Read replicas stay members: they follow the old lineage, so they serve no reader
        // until the scheduler has rebuilt them from the new one.
        let replicas = db
            .instances
            .iter()
            .filter(|id| self.instances.get(*id).is_some_and(|i| i.role == InstanceRole::Replica))
            .cloned();
        db.instances = std::iter::once(r.instance_id.to_string()).chain(replicas).collect();
        // A new lineage: its archive and snapshots start in the new instance's zone store.
        let replaced = db.lineage();
        db.earlier_lineages.push(replaced);
        db.lineage = r.job_id.to_string();
        db.last_recovery = Some(Recovery {
            job_id: r.job_id.to_string(),
            last_seen_ms: r.last_seen_ms,
            failed_at_ms: failed_at,
            ..Recovery::default()
        });
        let what = match &old {
            Some(i) => format!(
                "instance {} on host {} is fenced (generation {generation})",
                i.id, i.host
            ),
            None => format!("generation {generation}"),
        };
        let message = format!(
            "Database {short} is being recovered ({}): {what}; a new instance on host {host}, port {port}, is restored from its backups to the latest restorable time.",
            r.reason
        );
        self.event(index, at, "database-recovering", r.name, message);
        self.database_response(&job, true)
    }

    /// Say once (per reason) why a failed database is not being recovered, and refuse.
    fn recovery_blocked(&mut self, index: u64, at: Millis, name: &str, kind: &str, why: String) -> Response {
        let db = self.databases.get_mut(name).expect("checked by the caller");
        if db.status_reason.as_deref() != Some(why.as_str()) {
            db.status_reason = Some(why.clone());
            self.event(index, at, kind, name, format!("Database {name}: {why}."));
        }
        conflict(why)
    }

    /// The event a finished recovery ends with: where the database runs now and what the
    /// failure may have cost, as measured.
    pub(super) fn recovered_message(&self, name: &str) -> String {
        let Some(db) = self.databases.get(name) else {
            return String::new();
        };
        let at = db
            .endpoint
            .as_ref()
            .map(|e| format!(" on host {} at {}:{}", e.host, e.addr, e.port))
            .unwrap_or_default();
        let lost = match &db.last_recovery {
            Some(
                r @ Recovery {
                    restored_to_ms: Some(to),
                    ..
                },
            ) => {
                let (least, most) = r.lost_window_ms();
                let seen = if r.last_seen_ms > 0 {
                    format!(", last seen answering at {}", format_ms(r.last_seen_ms))
                } else {
                    String::new()
                };
                format!(
                    " It holds every transaction committed up to {}; later commits are lost: the instance stopped between {:.1} s and {:.1} s after that (the failure was declared at {}{seen}).",
                    format_ms(*to),
                    least as f64 / 1000.0,
                    most as f64 / 1000.0,
                    format_ms(r.failed_at_ms)
                )
            }
            _ => " Replay reported no transaction time, so the loss could not be measured.".into(),
        };
        format!("Database {} was recovered{at}.{lost}", db.name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::databases::Outcome;
    use super::*;
    use crate::catalog::TaskOutput;
    use crate::command::{Command, Proposal};

    use super::super::fixtures::{add_snapshot, with_database, DB};

    /// A state with hosts h1 (zone a) and h2 (zone b), and database orders on h1, available.
    fn state(mode: RecoveryMode, with_backup: bool) -> AdminState {
        let spec = DatabaseSpec {
            recovery: mode,
            ..DatabaseSpec::default()
        };
        let mut s = with_database(&[("h1", "a"), ("h2", "b")], spec, "old");
        assert_eq!(s.instances["old"].host, "h1");
        if with_backup {
            add_snapshot(&mut s);
        }
        s
    }

    fn recover(s: &mut AdminState, index: u64, automatic: bool) -> Response {
        let command = Command::RecoverDatabase {
            job_id: format!("r{index}"),
            request: None,
            name: DB.into(),
            instance_id: format!("new{index}"),
            reason: "host h1 of instance old stopped answering".into(),
            last_seen_ms: 9_000,
            automatic,
        };
        s.apply(index, &Proposal::new(10_000, command))
    }

    fn kinds(s: &AdminState) -> Vec<&str> {
        s.events
            .iter()
            .map(|e| e.kind.as_str())
            .filter(|k| k.starts_with("recovery") || k.starts_with("database-recover"))
            .collect()
    }

    #[test]
    fn manual_mode_and_missing_backups_are_said_once_and_start_nothing() {
        let mut manual = state(RecoveryMode::Manual, true);
        for i in 10..13 {
            assert!(matches!(recover(&mut manual, i, true), Response::Rejected { .. }));
        }
        assert_eq!(kinds(&manual), ["recovery-needed"], "one event for repeated asks");
        assert!(manual.databases[DB].operation.is_none());
        assert!(manual.databases[DB]
            .status_reason
            .as_deref()
            .unwrap()
            .contains("keel db recover orders"));
        assert!(manual.instances["old"].fenced_at.is_none(), "nothing fenced");
        // A person may recover it.
        assert!(matches!(
            recover(&mut manual, 13, false),
            Response::Database { created: true, .. }
        ));

        let mut bare = state(RecoveryMode::Automatic, false);
        for i in 10..12 {
            assert!(matches!(recover(&mut bare, i, true), Response::Rejected { .. }));
        }
        assert_eq!(kinds(&bare), ["recovery-blocked"]);
        assert!(bare.databases[DB]
            .status_reason
            .as_deref()
            .unwrap()
            .contains("no backup"));
    }

    #[test]
    fn a_recovery_fences_the_old_instance_and_places_the_new_one_elsewhere_on_its_port() {
        let mut s = state(RecoveryMode::Automatic, true);
        let port = s.instances["old"].port;
        let Response::Database { job, .. } = recover(&mut s, 10, true) else {
            panic!("recovery refused: {:?}", s.databases[DB].status_reason)
        };
        assert!(
            matches!(&job.kind, JobKind::RecoverDatabase { replaces: Some(old), from, .. }
            if old == "old" && from.snapshot == "auto1.acme" && from.target == RestoreTarget::Latest)
        );
        let db = &s.databases[DB];
        assert_eq!(
            (db.status, db.generation, db.endpoint.clone()),
            (DatabaseStatus::Recovering, 2, None)
        );
        assert_eq!(db.instances, ["new10"]);
        assert_eq!(db.lineage, "r10", "a new lineage from the recovery on");
        assert_eq!(s.instances["old"].fenced_at, Some(2));
        assert_eq!(
            (s.instances["new10"].host.as_str(), s.instances["new10"].port),
            ("h2", port)
        );
        // One incident, one recovery: another ask is refused while it runs.
        assert!(matches!(recover(&mut s, 11, true), Response::Rejected { .. }));
        assert!(matches!(recover(&mut s, 12, false), Response::Rejected { .. }));

        // It finishes: the name points at the new instance, and the loss is measured.
        let output = TaskOutput::Restored {
            last_commit_ms: Some(8_800),
        };
        s.record_output(10_500, &job.kind, "new10", &output);
        s.conclude(13, 11_000, &job.kind, &Outcome::Succeeded);
        let db = &s.databases[DB];
        assert_eq!(db.status, DatabaseStatus::Available);
        assert_eq!(db.endpoint.as_ref().map(|e| e.host.as_str()), Some("h2"));
        let r = db.last_recovery.clone().unwrap();
        assert_eq!((r.restored_to_ms, r.recovered_at_ms), (Some(8_800), 11_000));
        assert_eq!(r.lost_window_ms(), (200, 1_200));
        let message = &s
            .events
            .iter()
            .rev()
            .find(|e| e.kind == "database-recovered")
            .unwrap()
            .message;
        assert!(message.contains("between 0.2 s and 1.2 s"), "{message}");
        assert_eq!(s.health_reason(DB), None, "the fenced instance no longer counts");
    }

    #[test]
    fn a_failed_recovery_keeps_the_fence_and_can_be_retried_by_hand() {
        let mut s = state(RecoveryMode::Automatic, true);
        let Response::Database { job, .. } = recover(&mut s, 10, true) else {
            panic!()
        };
        let failed = Outcome::Failed {
            error: "fetch failed".into(),
            undone: true,
        };
        s.conclude(11, 11_000, &job.kind, &failed);
        let db = &s.databases[DB];
        assert_eq!(db.status, DatabaseStatus::Failed);
        assert!(db.status_reason.as_deref().unwrap().contains("keel db recover"));
        assert!(db.instances.is_empty() && !s.instances.contains_key("new10"));
        assert_eq!(s.instances["old"].fenced_at, Some(2), "still fenced");
        // The monitor leaves a failed database alone; a person retries, from generation 3.
        assert!(matches!(recover(&mut s, 12, true), Response::Rejected { .. }));
        assert!(matches!(
            recover(&mut s, 13, false),
            Response::Database { created: true, .. }
        ));
        assert_eq!(s.databases[DB].generation, 3);
    }

    #[test]
    fn without_another_host_it_is_blocked_and_says_why() {
        let mut s = state(RecoveryMode::Automatic, true);
        s.hosts.get_mut("h2").unwrap().health = HostHealth::Unreachable;
        assert!(matches!(recover(&mut s, 10, true), Response::Rejected { .. }));
        let reason = s.databases[DB].status_reason.clone().unwrap();
        assert!(reason.contains("no capacity beside host h1"), "{reason}");
        assert_eq!(kinds(&s), ["recovery-blocked"]);
        assert!(s.instances["old"].fenced_at.is_none());
    }
}
