//! The job queue: enqueue (idempotent by request id), claims fenced by the
//! leader's term, completion, and the open-jobs index the sweeper reads.

use super::{conflict, not_found, stale, AdminState, Millis};
use crate::command::Response;
use crate::records::*;

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
        request_id: Option<&str>,
        kind: &JobKind,
    ) -> Response {
        if let Some(job) = self.repeat_of(request_id) {
            return Response::Job {
                job: job.clone(),
                created: false,
            };
        }
        match self.enqueue(index, at, job_id, request_id, kind.clone()) {
            Ok(job) => Response::Job { job, created: true },
            Err(refused) => refused,
        }
    }

    /// The job an earlier request with this id made, if any.
    pub(crate) fn repeat_of(&self, request_id: Option<&str>) -> Option<&Job> {
        let existing = self.idempotency.get(&format!("submit-job/{}", request_id?))?;
        self.jobs.get(existing)
    }

    /// Put a new job on the queue.
    pub(crate) fn enqueue(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        request_id: Option<&str>,
        kind: JobKind,
    ) -> Result<Job, Response> {
        if self.jobs.contains_key(job_id) {
            return Err(conflict(format!(
                "job id {job_id} is already taken; retry with a fresh id"
            )));
        }
        let job = Job {
            id: job_id.to_string(),
            request_id: request_id.map(str::to_string),
            kind,
            state: JobState::Pending,
            submitted_at_ms: at,
            claims: Vec::new(),
            completed_term: None,
            finished_at_ms: None,
            error: None,
        };
        self.jobs.insert(job_id.to_string(), job.clone());
        self.open_jobs.insert(job_id.to_string());
        if let Some(r) = request_id {
            self.idempotency.insert(format!("submit-job/{r}"), job_id.to_string());
        }
        let message = format!("Job {job_id} ({}) was queued.", job.kind.name());
        self.event(index, at, "job-submitted", job_id, message);
        Ok(job)
    }

    /// The newest term any leader has announced or claimed with.
    pub(crate) fn term_in_force(&self, job: &Job) -> u64 {
        let services = self.leader_services.as_ref().map_or(0, |s| s.term);
        services.max(job.current_claim().map_or(0, |c| c.term))
    }

    pub(super) fn claim_job(&mut self, index: u64, at: Millis, job_id: &str, term: u64, node_id: u64) -> Response {
        let Some(job) = self.jobs.get(job_id) else {
            return not_found("job", job_id);
        };
        if job.state.is_terminal() {
            return conflict(format!("job {job_id} is already {:?}; it cannot be claimed", job.state));
        }
        let in_force = self.term_in_force(job);
        if term < in_force {
            return stale(job_id, in_force, term);
        }
        if job.current_claim().is_some_and(|c| c.term == term) {
            return Response::Job {
                job: job.clone(),
                created: false,
            };
        }
        let taken_over = job.current_claim().cloned();
        let job = self.jobs.get_mut(job_id).expect("checked above");
        job.claims.push(Claim {
            term,
            node_id,
            at_ms: at,
        });
        job.state = JobState::Running;
        let job = job.clone();
        let message = match taken_over {
            Some(old) => format!(
                "Job {job_id} was taken over by node {node_id} in term {term} from node {} (term {}).",
                old.node_id, old.term
            ),
            None => format!("Job {job_id} was claimed by node {node_id} in term {term}."),
        };
        self.event(index, at, "job-claimed", job_id, message);
        Response::Job { job, created: false }
    }

    pub(super) fn complete_job(
        &mut self,
        index: u64,
        at: Millis,
        job_id: &str,
        term: u64,
        error: Option<&str>,
    ) -> Response {
        let Some(job) = self.jobs.get(job_id) else {
            return not_found("job", job_id);
        };
        if job.state.is_terminal() {
            // A retried completion from the same claim is a repeat, not a second run.
            if job.completed_term == Some(term) {
                return Response::Job {
                    job: job.clone(),
                    created: false,
                };
            }
            return conflict(format!(
                "job {job_id} was already completed in term {:?}",
                job.completed_term
            ));
        }
        let in_force = self.term_in_force(job);
        let held = job.current_claim().map(|c| c.term);
        if held != Some(term) || term < in_force {
            return stale(job_id, in_force, term);
        }
        let job = self.finish_job(index, at, job_id, term, error.map(str::to_string));
        Response::Job { job, created: false }
    }

    /// Mark open job `job_id` (checked by the caller) finished by the claim of `term`, failed
    /// when there is an `error`; the one place a job leaves the open set.
    pub(crate) fn finish_job(&mut self, index: u64, at: Millis, job_id: &str, term: u64, error: Option<String>) -> Job {
        self.open_jobs.remove(job_id);
        let job = self.jobs.get_mut(job_id).expect("checked by the caller");
        job.state = if error.is_some() {
            JobState::Failed
        } else {
            JobState::Succeeded
        };
        job.completed_term = Some(term);
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
