//! Bounded history: what `PruneHistory` forgets, and paged reads of jobs and
//! events, so neither the state nor a listing grows with the cluster's age.

use std::collections::{BTreeMap, BTreeSet};

use super::AdminState;
use crate::command::Response;
use crate::records::{AuditRecord, Event, Job, Millis};

/// What one prune would remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Prunable {
    /// Finished jobs (their workflows go with them).
    pub jobs: Vec<String>,
    /// Events, by position in the event list.
    pub events: BTreeSet<usize>,
    /// Request ids whose binding lapsed.
    pub requests: Vec<String>,
    /// Audit records (by key) older than the cut-off.
    pub audit: Vec<String>,
}

impl Prunable {
    /// Whether there is nothing to prune.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.events.is_empty() && self.requests.is_empty() && self.audit.is_empty()
    }
}

impl AdminState {
    /// What `PruneHistory { before_ms, keep }` applied at `at` would remove. Pure, so the
    /// scheduler proposes a prune only when there is something to prune.
    pub fn prunable(&self, at: Millis, before_ms: Millis, keep: u32) -> Prunable {
        let keep = keep as usize;
        let mut jobs = Vec::new();
        for ids in self.jobs_by_database.values() {
            // Ids are time-ordered: everything but the newest `keep` finished ones is a candidate.
            let finished: Vec<&Job> = ids
                .iter()
                .filter_map(|id| self.jobs.get(id))
                .filter(|j| j.state.is_terminal())
                .collect();
            let old = finished.len().saturating_sub(keep);
            jobs.extend(
                finished[..old]
                    .iter()
                    .filter(|j| j.finished_at_ms.is_some_and(|f| f < before_ms))
                    .map(|j| j.id.clone()),
            );
        }
        let events = self.old_events(before_ms, keep);
        let requests = self
            .requests
            .iter()
            .filter(|(_, r)| r.expired(at))
            .map(|(id, _)| id.clone())
            .collect();
        // Audit records are in commit order; proposers' clocks are close enough that the
        // first one inside the retention ends the scan.
        let audit = self
            .audit
            .iter()
            .take_while(|(_, r)| r.at_ms < before_ms)
            .map(|(k, _)| k.clone())
            .collect();
        Prunable {
            jobs,
            events,
            requests,
            audit,
        }
    }

    /// Which database an event is about, for keeping the newest per database: the subject
    /// itself, or a job's database; anything else (hosts, nodes, jobs without a database,
    /// deleted databases) counts as the cluster's ("").
    fn event_group<'a>(&'a self, subject: &'a str) -> &'a str {
        if self.databases.contains_key(subject) {
            return subject;
        }
        self.jobs
            .get(subject)
            .and_then(|j| j.kind.database())
            .unwrap_or_default()
    }

    /// Positions of events older than `before_ms`, except the newest `keep` per database.
    fn old_events(&self, before_ms: Millis, keep: usize) -> BTreeSet<usize> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut old = BTreeSet::new();
        for (n, e) in self.events.iter().enumerate().rev() {
            let count = seen.entry(self.event_group(&e.subject)).or_default();
            *count += 1;
            if *count > keep && e.at_ms < before_ms {
                old.insert(n);
            }
        }
        old
    }

    pub(super) fn prune_history(&mut self, index: u64, at: Millis, before_ms: Millis, keep: u32) -> Response {
        let p = self.prunable(at, before_ms, keep);
        if p.is_empty() {
            return Response::Done;
        }
        for id in &p.jobs {
            let Some(job) = self.jobs.remove(id) else { continue };
            let db = job.kind.database().unwrap_or_default();
            if let Some(ids) = self.jobs_by_database.get_mut(db) {
                ids.remove(id);
                if ids.is_empty() {
                    self.jobs_by_database.remove(db);
                }
            }
            if let Some(wf) = self.workflow_by_job.remove(id) {
                self.workflows.remove(&wf);
            }
        }
        let mut n = 0;
        self.events.retain(|_| {
            n += 1;
            !p.events.contains(&(n - 1))
        });
        for id in &p.requests {
            self.requests.remove(id);
        }
        for key in &p.audit {
            self.audit.remove(key);
        }
        let message = format!(
            "Forgot {} finished operations, {} events, {} lapsed request ids and {} audit records from before {before_ms} (the newest {keep} operations and events per database are kept).",
            p.jobs.len(),
            p.events.len(),
            p.requests.len(),
            p.audit.len()
        );
        self.event(index, at, "history-pruned", "cluster", message);
        Response::Done
    }

    /// Jobs after id `after` (ids are time-ordered), oldest first, at most `limit`;
    /// only `account`'s and only `database`'s when given.
    pub fn jobs_page(
        &self,
        account: Option<&str>,
        database: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<Job> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |a| Excluded(a.to_string()));
        let theirs = |j: &&Job| account.is_none_or(|a| j.account == a);
        match database {
            Some(db) => self
                .jobs_by_database
                .get(db)
                .map(|ids| {
                    ids.range::<String, _>((from, Unbounded))
                        .filter_map(|id| self.jobs.get(id))
                        .filter(theirs)
                        .take(limit)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            None => self
                .jobs
                .range::<String, _>((from, Unbounded))
                .map(|(_, j)| j)
                .filter(theirs)
                .take(limit)
                .cloned()
                .collect(),
        }
    }

    /// Audit records after sequence number `after` and at or after `since_ms`, oldest
    /// first, at most `limit`; only those about `account`'s resources when given.
    pub fn audit_page(&self, account: Option<&str>, since_ms: Millis, after: u64, limit: usize) -> Vec<AuditRecord> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.audit
            .range::<String, _>((Excluded(super::audit_key(after)), Unbounded))
            .map(|(_, r)| r)
            .filter(|r| r.at_ms >= since_ms)
            .filter(|r| account.is_none_or(|a| r.target_account == a || r.actor.account == a))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Events after sequence number `after`, oldest first, at most `limit`; only
    /// `account`'s and only those about `subject` when given.
    pub fn events_page(&self, account: Option<&str>, subject: Option<&str>, after: u64, limit: usize) -> Vec<Event> {
        // Sequence numbers only grow along the list: skip to the first one after `after`.
        let start = self.events.partition_point(|e| e.seq <= after);
        self.events
            .range(start..)
            .filter(|e| account.is_none_or(|a| e.account == a))
            .filter(|e| subject.is_none_or(|s| e.subject == s))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal};
    use crate::records::{JobKind, JobState};

    fn apply(s: &mut AdminState, i: u64, at: Millis, command: Command) -> Response {
        s.apply(i, &Proposal::new(at, command))
    }

    /// `n` finished noop jobs at times 1..=n, and one still open.
    fn history(n: u64) -> AdminState {
        let mut s = AdminState::default();
        let fence = match apply(&mut s, 1, 0, Command::StartLeaderServices { node_id: 1, term: 1 }) {
            Response::LeaderServices { services } => services.fence,
            other => panic!("{other:?}"),
        };
        let mut i = 1;
        for k in 1..=n + 1 {
            let id = format!("j{k:04}");
            i += 1;
            apply(
                &mut s,
                i,
                k,
                Command::SubmitJob {
                    job_id: id.clone(),
                    request: None,
                    kind: JobKind::Noop { work_ms: 0 },
                },
            );
            i += 1;
            apply(
                &mut s,
                i,
                k,
                Command::ClaimJob {
                    job_id: id.clone(),
                    fence,
                    node_id: 1,
                },
            );
            if k <= n {
                i += 1;
                apply(
                    &mut s,
                    i,
                    k,
                    Command::CompleteJob {
                        job_id: id,
                        fence,
                        error: None,
                    },
                );
            }
        }
        s
    }

    #[test]
    fn pruning_keeps_open_jobs_the_newest_per_database_and_recent_ones() {
        let mut s = history(50);
        let prune = |s: &mut AdminState, before_ms, keep| {
            apply(s, 1_000, 1_000, Command::PruneHistory { before_ms, keep });
        };
        prune(&mut s, 20, 10);
        // Jobs 1..=19 finished before 20; the newest 10 finished (41..=50) would be kept anyway.
        assert_eq!(s.jobs.len(), 51 - 19);
        assert!(s.jobs.contains_key("j0020") && !s.jobs.contains_key("j0019"));
        prune(&mut s, 10_000, 10);
        let left: Vec<&str> = s.jobs.keys().map(String::as_str).collect();
        assert_eq!(left.len(), 11, "the newest 10 finished and the open one: {left:?}");
        assert_eq!(s.jobs["j0051"].state, JobState::Running, "open jobs are never pruned");
        assert_eq!(s.open_jobs().count(), 1);
        // Events before the cut-off go, but for the newest 10 per database; these jobs have
        // none, so they all count as the cluster's: the newest 10 of those stay.
        assert!(s.events.iter().any(|e| e.kind == "history-pruned"));
        assert_eq!(
            s.events.len(),
            10 + 1,
            "the newest 10 and the last prune's own event: {:?}",
            s.events
        );
        let mut loaded: AdminState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        loaded.reindex();
        assert_eq!(
            loaded, s,
            "the derived indexes after a prune are what a snapshot rebuilds"
        );
    }

    #[test]
    fn nothing_to_prune_changes_nothing() {
        let mut s = history(5);
        let before = s.clone();
        assert!(s.prunable(1_000, 3, 100).is_empty());
        apply(
            &mut s,
            1_000,
            1_000,
            Command::PruneHistory {
                before_ms: 3,
                keep: 100,
            },
        );
        assert_eq!(s, before);
    }

    #[test]
    fn pages_follow_the_cursor() {
        let s = history(30);
        let first = s.jobs_page(None, None, None, 10);
        assert_eq!(first.len(), 10);
        let next = s.jobs_page(None, None, Some(&first[9].id), 100);
        assert_eq!(next.len(), 21);
        assert_eq!(next[0].id, "j0011");
        assert!(s.jobs_page(None, Some("nothing"), None, 10).is_empty());
        let events = s.events_page(None, None, 0, 5);
        assert_eq!(events.len(), 5);
        let after = s.events_page(None, None, events[4].seq, 1_000);
        assert!(after.iter().all(|e| e.seq > events[4].seq));
        let about = s.events_page(None, Some("j0003"), 0, 1_000);
        assert!(!about.is_empty() && about.iter().all(|e| e.subject == "j0003"));
    }
}
