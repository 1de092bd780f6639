//! The sweeper: claims jobs for this leader's term and runs them.
//!
//! A job is ours to claim when it is pending, or when its claim is from an
//! older term (its leader was deposed). Claims and completions are committed
//! with our term; the state machine refuses them once a newer term exists, so
//! a deposed leader can neither claim nor complete.
//!
//! Jobs run at least once: a job whose completion did not commit is run again
//! (by this term after a restart of the services, or by the next leader), so
//! every job kind must be idempotent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_raft_store::{Command, Job, JobKind, JobState, Response};
use tokio::sync::Semaphore;

use super::{workflow, Term};

/// Claim and run jobs until the term's services are cancelled.
pub async fn run(t: Term) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(t.node.config.max_running_jobs));
    let mut applied = t.node.state.subscribe();
    loop {
        let candidates: Vec<String> = t.node.state.read(|a| {
            let running = running.lock().unwrap_or_else(|p| p.into_inner());
            a.state
                .open_jobs()
                .filter(|j| claimable(j, t.term) && !running.contains(&j.id))
                .map(|j| j.id.clone())
                .collect()
        });
        for job_id in candidates {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            if t.cancel.is_cancelled() {
                return;
            }
            let claimed = t
                .commit(Command::ClaimJob {
                    job_id: job_id.clone(),
                    term: t.term,
                    node_id: t.node.id,
                })
                .await;
            match claimed {
                Ok(Response::Job { job, .. }) => {
                    running.lock().unwrap_or_else(|p| p.into_inner()).insert(job_id.clone());
                    let (t, running) = (t.clone(), running.clone());
                    tokio::spawn(async move {
                        execute(&t, job).await;
                        running.lock().unwrap_or_else(|p| p.into_inner()).remove(&job_id);
                        drop(permit);
                    });
                }
                Ok(Response::Rejected { rejection }) => {
                    tracing::info!(job = %job_id, %rejection, "Claim refused.");
                }
                Ok(other) => tracing::warn!(job = %job_id, ?other, "Unexpected answer to a claim."),
                Err(e) => {
                    // Ends the services; the lifecycle restarts them if this node still leads.
                    tracing::info!(job = %job_id, error = %e, "Claim not committed; the sweeper stops.");
                    return;
                }
            }
        }
        tokio::select! {
            _ = t.cancel.cancelled() => return,
            _ = applied.changed() => {}
            // New jobs wake us through `applied`; this only bounds a missed wake-up.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Jobs this term should (re)claim: pending ones, and running ones claimed in an older term.
fn claimable(job: &Job, term: u64) -> bool {
    match job.state {
        JobState::Pending => true,
        JobState::Running => job.current_claim().is_none_or(|c| c.term <= term),
        JobState::Succeeded | JobState::Failed => false,
    }
}

async fn execute(t: &Term, job: Job) {
    let outcome = match &job.kind {
        JobKind::Noop { work_ms } => {
            tokio::select! {
                _ = t.cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(*work_ms)) => None,
            }
        }
        // Database jobs finish through their workflow, which completes the job when it commits.
        JobKind::CreateDatabase { .. } | JobKind::ModifyDatabase { .. } | JobKind::DeleteDatabase { .. } => {
            if let Err(workflow::Abandoned(why)) = workflow::drive(t, &job).await {
                tracing::info!(job = %job.id, %why, "Stopped driving the workflow; the next leader resumes it.");
            }
            return;
        }
    };
    let done = t
        .commit(Command::CompleteJob {
            job_id: job.id.clone(),
            term: t.term,
            error: outcome,
        })
        .await;
    match done {
        Ok(Response::Job { job, .. }) => tracing::debug!(job = %job.id, state = ?job.state, "Job finished."),
        Ok(Response::Rejected { rejection }) => tracing::info!(job = %job.id, %rejection, "Completion refused."),
        Ok(_) => {}
        Err(e) => {
            tracing::info!(job = %job.id, error = %e, "Completion not committed; the next leader retakes the job.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft_store::Claim;

    fn job(state: JobState, claim_term: Option<u64>) -> Job {
        Job {
            id: "j".into(),
            request_id: None,
            kind: JobKind::Noop { work_ms: 0 },
            state,
            submitted_at_ms: 0,
            claims: claim_term
                .into_iter()
                .map(|term| Claim {
                    term,
                    node_id: 1,
                    at_ms: 0,
                })
                .collect(),
            completed_term: None,
            finished_at_ms: None,
            error: None,
        }
    }

    #[test]
    fn claims_pending_and_deposed_jobs_only() {
        assert!(claimable(&job(JobState::Pending, None), 5));
        assert!(
            claimable(&job(JobState::Running, Some(4)), 5),
            "deposed leader's job is taken over"
        );
        assert!(
            claimable(&job(JobState::Running, Some(5)), 5),
            "our own term's job is resumed"
        );
        assert!(
            !claimable(&job(JobState::Running, Some(6)), 5),
            "a newer leader's job is not touched"
        );
        assert!(!claimable(&job(JobState::Succeeded, Some(5)), 5));
    }
}
