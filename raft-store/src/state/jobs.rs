//! The job queue: enqueue (idempotent by request id), claims fenced by the
//! leader services in force, completion, and the open-jobs index the sweeper reads.

use super::{conflict, not_found, refused, stale, AdminState, Millis};
use crate::command::Response;
use crate::records::*;
use crate::transitions::{self, JOB};

/// Where a request id is bound: per account, so ids never collide across tenants (and
/// a refusal never names another tenant's operation).
fn request_slot(account: &str, id: &str) -> String {
    format!("{account}/{id}")
}

impl AdminState {
    /// Jobs not yet finished (pending or running), oldest first.
    pub fn open_jobs(&self) -> impl Iterator<Item = &Job> {
        self.open_jobs.iter().filter_map(|id| self.jobs.get(id))
    }

    pub(super) fn submit_job(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request: Option<&RequestKey>,
        kind: &JobKind,
    ) -> Response {
        match self.repeat_of(request, "", at) {
            Err(refused) => return refused,
            Ok(Some(job)) => {
                return Response::Job {
                    job: Box::new(job.clone()),
                    created: false,
                }
            }
            Ok(None) => {}
        }
        match self.enqueue(index, at, job_id, request, kind.clone(), "") {
            Ok(job) => Response::Job {
                job: Box::new(job),
                created: true,
            },
            Err(refused) => refused,
        }
    }

    /// The job an earlier use of this request id made, if this is a repeat of that request;
    /// a refusal if the id is bound to a different request; `None` for a new (or lapsed) id.
    /// Request ids are `account`'s own: another account's use of the same id is unrelated.
    /// A retry of `request` on the database keyed `key` (`<name>.<account>`, whose account
    /// owns the request ids): the original operation's answer, or the refusal of an id
    /// reused for something else; `None` for a new request.
    pub(crate) fn repeated(&self, request: Option<&RequestKey>, key: &str, at: Millis) -> Option<Response> {
        let owner = key.split_once('.').map_or("", |(_, account)| account);
        match self.repeat_of(request, owner, at) {
            Err(refused) => Some(refused),
            Ok(Some(job)) => Some(self.database_response(job, false)),
            Ok(None) => None,
        }
    }

    pub(crate) fn repeat_of(
        &self,
        request: Option<&RequestKey>,
        account: &str,
        at: Millis,
    ) -> Result<Option<&Job>, Response> {
        let Some(r) = request else { return Ok(None) };
        let Some(bound) = self
            .requests
            .get(&request_slot(account, &r.id))
            .filter(|b| !b.expired(at))
        else {
            return Ok(None);
        };
        if bound.fingerprint != r.fingerprint {
            return Err(conflict(format!(
                "request id {:?} was already used for {} (operation {}); a request id names one request: retry that request unchanged, or use a new id",
                r.id, bound.what, bound.job_id
            )));
        }
        Ok(self.jobs.get(&bound.job_id))
    }

    /// Put a new job on the queue.
    pub(crate) fn enqueue(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request: Option<&RequestKey>,
        kind: JobKind,
        account: &str,
    ) -> Result<Job, Response> {
        if self.jobs.contains_key(job_id) {
            return Err(conflict(format!(
                "job id {job_id} is already taken; retry with a fresh id"
            )));
        }
        let job = Job {
            id: job_id.to_string(),
            request_id: request.map(|r| r.id.clone()),
            account: account.to_string(),
            kind,
            state: JobState::Pending,
            submitted_at_ms: at,
            claims: Vec::new(),
            completed_fence: None,
            finished_at_ms: None,
            error: None,
        };
        self.jobs.insert(job_id.to_string(), job.clone());
        self.open_jobs.insert(job_id.to_string());
        let db = job.kind.database().unwrap_or_default().to_string();
        self.jobs_by_database.entry(db).or_default().insert(job_id.to_string());
        if let Some(r) = request {
            let what = match job.kind.database() {
                Some(db) => format!("{} {db}", job.kind.name()),
                None => job.kind.name().to_string(),
            };
            self.requests.insert(
                request_slot(account, &r.id),
                RequestRecord {
                    job_id: job_id.to_string(),
                    fingerprint: r.fingerprint.clone(),
                    what,
                    at_ms: at,
                    retention_ms: r.retention_ms,
                },
            );
        }
        let message = format!("Job {job_id} ({}) was queued.", job.kind.name());
        self.event(index, at, "job-submitted", job_id, message);
        Ok(job)
    }

    /// Refuse unless `fence` is the fence of the leader services in force and holds the
    /// claim on `job` (the check behind every completion and workflow command).
    pub(crate) fn check_claim(&self, job: &Job, fence: u64) -> Result<(), Response> {
        let in_force = self.fence_in_force();
        let held = job.current_claim().map(|c| c.fence);
        if fence != in_force || held != Some(fence) {
            return Err(stale(
                &format!("job {}", job.id),
                in_force.max(held.unwrap_or(0)),
                fence,
            ));
        }
        Ok(())
    }

    pub(super) fn claim_job(&mut self, index: u64, at: Millis, job_id: &str, fence: u64, node_id: u64) -> Response {
        let Some(job) = self.jobs.get(job_id) else {
            return not_found("job", job_id);
        };
        let in_force = self.fence_in_force();
        if fence != in_force {
            return stale(&format!("job {job_id}"), in_force, fence);
        }
        if job.current_claim().is_some_and(|c| c.fence == fence) && job.state == JobState::Running {
            return Response::Job {
                job: Box::new(job.clone()),
                created: false,
            };
        }
        if let Err(why) = transitions::check(&JOB, job.state, JobState::Running) {
            return refused(format!("job {job_id} cannot be claimed"), why);
        }
        let term = self.leader_services.as_ref().map_or(0, |s| s.term);
        let taken_over = job.current_claim().cloned();
        let job = self.jobs.get_mut(job_id).expect("checked above");
        job.claims.push(Claim {
            fence,
            term,
            node_id,
            at_ms: at,
        });
        job.state = JobState::Running;
        let job = job.clone();
        let message = match taken_over {
            Some(old) => format!(
                "Job {job_id} was taken over by node {node_id} (term {term}, fence {fence}) from node {} (term {}, fence {}).",
                old.node_id, old.term, old.fence
            ),
            None => format!("Job {job_id} was claimed by node {node_id} (term {term}, fence {fence})."),
        };
        self.event(index, at, "job-claimed", job_id, message);
        Response::Job {
            job: Box::new(job),
            created: false,
        }
    }

    pub(super) fn complete_job(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        fence: u64,
        error: Option<&str>,
    ) -> Response {
        let Some(job) = self.jobs.get(job_id) else {
            return not_found("job", job_id);
        };
        if job.state.is_terminal() && job.completed_fence == Some(fence) {
            // A retried completion from the same claim is a repeat, not a second run.
            return Response::Job {
                job: Box::new(job.clone()),
                created: false,
            };
        }
        if job.kind.database().is_some() {
            return conflict(format!(
                "job {job_id} is a database job; it finishes only through its workflow"
            ));
        }
        let to = if error.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        };
        if let Err(why) = transitions::check(&JOB, job.state, to) {
            return refused(format!("job {job_id} cannot complete"), why);
        }
        if let Err(refusal) = self.check_claim(job, fence) {
            return refusal;
        }
        let job = self.finish_job(index, at, job_id, fence, error.map(str::to_string));
        Response::Job {
            job: Box::new(job),
            created: false,
        }
    }

    /// Mark open job `job_id` (checked by the caller) finished by the claim of `fence`, failed
    /// when there is an `error`; the one place a job leaves the open set.
    pub(crate) fn finish_job(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        fence: u64,
        error: Option<String>,
    ) -> Job {
        self.open_jobs.remove(job_id);
        let job = self.jobs.get_mut(job_id).expect("checked by the caller");
        job.state = if error.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        };
        job.completed_fence = Some(fence);
        job.finished_at_ms = Some(at);
        let (kind, message) = match &error {
            None => ("job-succeeded", format!("Job {job_id} succeeded.")),
            Some(e) => ("job-failed", format!("Job {job_id} failed: {e}")),
        };
        job.error = error;
        let job = job.clone();
        self.event(index, at, kind, job_id, message);
        job
    }
}
