//! The sweeper: claims jobs for these leader services and runs them.
//!
//! A job is ours to claim when it is pending, or when its claim is from older
//! services (a deposed leader, or this node's services before a restart).
//! Claims and completions carry our fence; the state machine refuses them once
//! newer services started, so stopped services can neither claim nor complete.
//!
//! Jobs run at least once: a job whose completion did not commit is run again
//! (by these services, or the next ones), so every job kind must be idempotent.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_raft_store::{AdminState, Command, Job, JobKind, JobState, Response, ADMIN_ACCOUNT};
use tokio::sync::Semaphore;

use super::{workflow, Term};

/// Pause before these services retry a workflow they stopped driving.
const ABANDON_PAUSE: Duration = Duration::from_secs(1);

/// Claim and run jobs until the term's services are cancelled.
pub async fn run(t: Term) {
    let running: Arc<Mutex<HashSet<String>>> = Arc::default();
    let slots = Arc::new(Semaphore::new(t.config.max_running_jobs));
    let mut applied = t.control.applied();
    loop {
        let candidates: Vec<String> = t.read(|a| {
            let running = running.lock().unwrap_or_else(|p| p.into_inner());
            candidates(a, t.fence, &running, t.config.heavy_workflows_per_account)
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
                    fence: t.fence,
                    node_id: t.node_id,
                })
                .await;
            match claimed {
                Ok(Response::Job { job, .. }) => {
                    running.lock().unwrap_or_else(|p| p.into_inner()).insert(job_id.clone());
                    let (t, running) = (t.clone(), running.clone());
                    tokio::spawn(async move {
                        execute(&t, *job).await;
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

/// The jobs to claim now, oldest first: the claimable ones not already running here,
/// except heavy workflows of an account that already runs its cap of them. Those wait,
/// while other accounts' jobs go ahead, so one tenant's burst cannot starve another's.
/// The operators' own account has no cap.
fn candidates(a: &AdminState, fence: u64, running: &HashSet<String>, default_cap: u32) -> Vec<String> {
    let mut busy: HashMap<&str, u32> = HashMap::new();
    for j in a
        .open_jobs()
        .filter(|j| j.state == JobState::Running && j.kind.is_heavy())
    {
        *busy.entry(j.account.as_str()).or_default() += 1;
    }
    let mut out = Vec::new();
    for j in a.open_jobs() {
        if !claimable(j, fence) || running.contains(&j.id) {
            continue;
        }
        if j.state == JobState::Pending && j.kind.is_heavy() && j.account != ADMIN_ACCOUNT {
            let cap = a
                .accounts
                .get(&j.account)
                .and_then(|acc| acc.limits.heavy_workflows)
                .unwrap_or(default_cap);
            let running_now = busy.entry(j.account.as_str()).or_default();
            if *running_now >= cap {
                continue;
            }
            *running_now += 1;
        }
        out.push(j.id.clone());
    }
    out
}

/// Jobs these services should (re)claim: pending ones, and running ones claimed by them or older ones.
fn claimable(job: &Job, fence: u64) -> bool {
    match job.state {
        JobState::Pending => true,
        JobState::Running => job.current_claim().is_none_or(|c| c.fence <= fence),
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
        JobKind::CreateDatabase { .. }
        | JobKind::ModifyDatabase { .. }
        | JobKind::DeleteDatabase { .. }
        | JobKind::SnapshotDatabase { .. }
        | JobKind::RestoreDatabase { .. }
        | JobKind::RecoverDatabase { .. }
        | JobKind::AddStandby { .. }
        | JobKind::ReleaseStandby { .. }
        | JobKind::FailoverDatabase { .. }
        | JobKind::ReclaimFenced { .. }
        | JobKind::AddReplica { .. }
        | JobKind::RemoveReplica { .. }
        | JobKind::PromoteReplica { .. }
        | JobKind::DeleteSnapshot { .. }
        | JobKind::CopySnapshot { .. } => {
            if let Err(workflow::Abandoned(why)) = workflow::drive(t, &job).await {
                tracing::info!(job = %job.id, %why, "Stopped driving the workflow; it resumes from its record.");
                // If these services still lead, the job is claimable again: pause before the
                // retry so a refusal that persists does not spin.
                tokio::select! {
                    _ = t.cancel.cancelled() => {}
                    _ = tokio::time::sleep(ABANDON_PAUSE) => {}
                }
            }
            return;
        }
    };
    let done = t
        .commit(Command::CompleteJob {
            job_id: job.id.clone(),
            fence: t.fence,
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
            account: String::new(),
            kind: JobKind::Noop { work_ms: 0 },
            state,
            submitted_at_ms: 0,
            claims: claim_term
                .into_iter()
                .map(|fence| Claim {
                    fence,
                    term: 1,
                    node_id: 1,
                    at_ms: 0,
                })
                .collect(),
            completed_fence: None,
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
            "our own services' job is resumed"
        );
        assert!(
            !claimable(&job(JobState::Running, Some(6)), 5),
            "a newer leader's job is not touched"
        );
        assert!(!claimable(&job(JobState::Succeeded, Some(5)), 5));
    }

    /// Jobs `(id, account, heavy, state)` in id order, in a state with account `b` capped at 1.
    fn state(jobs: &[(&str, &str, bool, JobState)]) -> AdminState {
        let mut a = AdminState::default();
        for name in ["a", "b"] {
            a.accounts.insert(name.into(), keel_raft_store::Account::default());
        }
        a.accounts.get_mut("b").unwrap().limits.heavy_workflows = Some(1);
        for (id, account, heavy, state) in jobs {
            let kind = if *heavy {
                JobKind::CreateDatabase {
                    database: format!("{id}.{account}"),
                }
            } else {
                JobKind::Noop { work_ms: 0 }
            };
            let claims = if *state == JobState::Running { Some(1) } else { None };
            a.jobs.insert(
                id.to_string(),
                Job {
                    id: id.to_string(),
                    account: account.to_string(),
                    kind,
                    ..job(*state, claims)
                },
            );
        }
        a.reindex();
        a
    }

    #[test]
    fn heavy_workflows_wait_for_their_accounts_cap_and_others_go_ahead() {
        use JobState::{Pending, Running};
        let none = HashSet::new();
        // Account a (default cap 2) bursts four creates; b has one; a noop is never capped.
        let a = state(&[
            ("1", "a", true, Pending),
            ("2", "a", true, Pending),
            ("3", "a", true, Pending),
            ("4", "a", true, Pending),
            ("5", "b", true, Pending),
            ("6", "a", false, Pending),
        ]);
        assert_eq!(candidates(&a, 1, &none, 2), ["1", "2", "5", "6"]);
        // With two of a's running (one of them ours already), a's third waits; b's own cap
        // of 1 is reached by its running create; the admin account is never capped.
        let a = state(&[
            ("1", "a", true, Running),
            ("2", "a", true, Running),
            ("3", "a", true, Pending),
            ("5", "b", true, Running),
            ("7", "b", true, Pending),
            ("8", "admin", true, Pending),
            ("9", "admin", true, Pending),
        ]);
        let ours: HashSet<String> = ["1".to_string()].into();
        assert_eq!(
            candidates(&a, 1, &ours, 2),
            ["2", "5", "8", "9"],
            "running ones are resumed, not counted twice"
        );
    }
}
