//! The workflow engine: drives one job's tasks in order, committing each
//! task's progress before the next starts, so new leader services resume
//! exactly where the old ones stopped.
//!
//! Rules (the state machine enforces them too, see `raft_store::transitions`):
//! - an attempt is committed as running before it is sent, and its outcome after;
//! - a forward task's failure is committed together with the tasks that undo
//!   the workflow's work, so no committed state has a failure and no undo plan;
//! - losing leadership is never an outcome: the engine stops committing and
//!   the next services resume from the record;
//! - an attempt whose outcome is unknown (no answer) is never followed by
//!   another attempt until its host says it is no longer running.

use std::time::Duration;

use tracing::Instrument;

use keel_proto::host::TaskRequest;
use keel_raft_store::transitions::Phase;
use keel_raft_store::{Command, Job, Response, StepState, SuccessCheck, Task, TaskAction, Workflow};

use super::planner;
use super::seams::TaskResult;
use super::Term;
use crate::host::wire::action_to_wire;

/// Failed attempts per task (in one run of the services) before the task fails.
pub const MAX_ATTEMPTS: u32 = 3;
/// Attempts per task in all, lost ones included: an attempt its host never ran (lost to a
/// restart of the host manager or of the services) is retried without counting as a
/// failure, up to this many attempts.
pub const MAX_ATTEMPTS_IN_ALL: u32 = 10;
/// How long the leader waits past an action's own deadline (the host enforces that one)
/// before it asks the host what became of the attempt.
const DEADLINE_GRACE: Duration = Duration::from_secs(10);
/// Pause between questions to a host about an attempt whose outcome is unknown.
const SETTLE_PAUSE: Duration = Duration::from_millis(500);
/// How long an attempt's outcome may stay unknown while the monitor holds its host
/// unreachable before the task fails (so its undo runs, or the workflow ends): a dead host
/// must not hold a database, and a sweeper slot, for ever. Nothing else is sent to that
/// instance meanwhile; the host manager runs one task per instance, so an undo that reaches
/// it later waits for anything still running there.
const HOST_LOST_AFTER: Duration = Duration::from_secs(60);

/// Why the engine stopped driving a workflow without finishing it.
#[derive(Debug)]
pub struct Abandoned(pub String);

/// How one attempt ended, as far as the engine is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Succeeded(String, Option<keel_raft_store::TaskOutput>),
    Failed {
        detail: String,
        retryable: bool,
    },
    /// The host never ran it (it has no record of it, and now never will).
    Lost(String),
}

/// What the engine does next with a workflow, decided from its record alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Run (or resume) task `n`.
    Run(usize),
    /// Record the outcome.
    Finish,
    /// Nothing: it has finished.
    Done,
}

/// The next step of `wf`.
pub fn next(wf: &Workflow) -> Next {
    if matches!(Phase::of(wf), Phase::Succeeded | Phase::Failed) {
        return Next::Done;
    }
    // A failed undo task ends the workflow: the rest of the undo is skipped.
    if wf.tasks.iter().any(|t| t.compensation && t.state == StepState::Failed) {
        return Next::Finish;
    }
    match wf
        .tasks
        .iter()
        .position(|t| matches!(t.state, StepState::Pending | StepState::Running))
    {
        Some(n) => Next::Run(n),
        None => Next::Finish,
    }
}

async fn commit_workflow(t: &Term, command: Command) -> Result<Workflow, Abandoned> {
    match t.commit(command).await {
        Ok(Response::Workflow { workflow }) => Ok(*workflow),
        Ok(Response::Rejected { rejection }) => Err(Abandoned(rejection.to_string())),
        Ok(other) => Err(Abandoned(format!("unexpected answer {other:?}"))),
        Err(e) => Err(Abandoned(e)),
    }
}

/// Drive `job`'s workflow to its end, or until these services can no longer act.
pub async fn drive(t: &Term, job: &Job) -> Result<(), Abandoned> {
    let existing = t.read(|a| a.workflow_of(&job.id).cloned());
    let mut wf = match existing {
        Some(wf) => wf,
        None => start(t, job).await?,
    };
    loop {
        match next(&wf) {
            Next::Done => return Ok(()),
            Next::Finish => {
                let finish = Command::FinishWorkflow {
                    workflow_id: wf.id.clone(),
                    fence: t.fence,
                };
                commit_workflow(t, finish).await?;
                return Ok(());
            }
            Next::Run(n) => wf = run_task(t, job, &wf, n).await?,
        }
    }
}

/// Plan and record the workflow; a plan that cannot be made is recorded as its failure.
async fn start(t: &Term, job: &Job) -> Result<Workflow, Abandoned> {
    let workflow_id = uuid::Uuid::now_v7().simple().to_string();
    let (tasks, error) = match t.read(|a| planner::plan(a, job, &workflow_id)) {
        Ok(tasks) => (tasks, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let start = Command::StartWorkflow {
        workflow_id,
        job_id: job.id.clone(),
        fence: t.fence,
        tasks,
        error,
    };
    commit_workflow(t, start).await
}

/// Run task `n` through its attempts; returns the workflow after its outcome is committed.
async fn run_task(t: &Term, job: &Job, wf: &Workflow, n: usize) -> Result<Workflow, Abandoned> {
    let task = &wf.tasks[n];
    // A task found running was started by earlier services: find out what became of that
    // attempt before anything else is sent.
    let mut resumed = task.state == StepState::Running;
    let mut attempt = if resumed { task.attempt } else { task.attempt + 1 };
    let mut failures = 0;
    loop {
        let running = Command::UpdateTask {
            workflow_id: wf.id.clone(),
            index: n,
            fence: t.fence,
            state: StepState::Running,
            attempt,
            result: None,
            undo: None,
            output: None,
        };
        let current = commit_workflow(t, running).await?;
        let this = current.tasks[n].clone();
        let span = tracing::info_span!("task", job = %job.id, task = %this.id, action = %this.action, host = %this.host, attempt);
        let at = At {
            workflow_id: &wf.id,
            n,
            task: &this,
        };
        let outcome = with_progress(t, &at, perform(t, job, &at, resumed))
            .instrument(span)
            .await?;
        resumed = false;
        let retry = match &outcome {
            Attempt::Failed { retryable: true, .. } => {
                failures += 1;
                failures < MAX_ATTEMPTS && attempt < MAX_ATTEMPTS_IN_ALL
            }
            Attempt::Lost(_) => attempt < MAX_ATTEMPTS_IN_ALL,
            _ => false,
        };
        let (state, detail, undo, output) = match outcome {
            Attempt::Succeeded(detail, output) => (StepState::Succeeded, detail, None, output),
            Attempt::Failed { detail, .. } | Attempt::Lost(detail) if retry => {
                tracing::info!(task = %this.id, %detail, attempt, "Task attempt did not succeed; retrying.");
                tokio::select! {
                    _ = t.cancel.cancelled() => return Err(Abandoned("leadership lost".into())),
                    _ = tokio::time::sleep(Duration::from_millis(250 << failures.min(6))) => {}
                }
                attempt += 1;
                continue;
            }
            Attempt::Failed { detail, .. } | Attempt::Lost(detail) => {
                // A forward task's failure carries the plan that undoes the workflow's work.
                let undo = (!this.compensation).then(|| {
                    let mut failed = current.clone();
                    failed.tasks[n].state = StepState::Failed;
                    planner::compensation(job, &failed)
                });
                if let Some(undo) = &undo {
                    tracing::warn!(job = %job.id, task = %this.id, %detail, undo = undo.len(), "Task failed; undoing the workflow's work.");
                }
                (StepState::Failed, detail, undo, None)
            }
        };
        let done = Command::UpdateTask {
            workflow_id: wf.id.clone(),
            index: n,
            fence: t.fence,
            state,
            attempt,
            result: Some(detail),
            undo,
            output,
        };
        return commit_workflow(t, done).await;
    }
}

/// Run `work` (one attempt of a long task: snapshot, restore, copy), and meanwhile record
/// on the task what its host says of its progress whenever that changes, so
/// `ops describe` and `--wait` show bytes, throughput and time left.
async fn with_progress(
    t: &Term,
    at: &At<'_>,
    work: impl std::future::Future<Output = Result<Attempt, Abandoned>>,
) -> Result<Attempt, Abandoned> {
    let task = at.task;
    let addr = t.read(|a| a.hosts.get(&task.host).map(|h| h.addr.clone()));
    let (true, Some(addr)) = (task.action.needs_work(), addr) else {
        return work.await;
    };
    let report = async {
        let mut said = String::new();
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let TaskResult::Running(now) = t.hosts.task_status(&addr, &task.attempt_id()).await else {
                continue;
            };
            if now.is_empty() || now == said {
                continue;
            }
            let note = Command::UpdateTask {
                workflow_id: at.workflow_id.to_string(),
                index: at.n,
                fence: t.fence,
                state: StepState::Running,
                attempt: task.attempt,
                result: Some(now.clone()),
                undo: None,
                output: None,
            };
            // A note that does not commit is only a missed report; the attempt goes on.
            if t.commit(note).await.is_ok() {
                said = now;
            }
        }
    };
    tokio::pin!(work);
    tokio::select! {
        done = &mut work => done,
        never = report => never,
    }
}

/// How often a long task's progress is asked for.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The outcome of an attempt its host has no record of: retry it as a new attempt.
fn lost(task: &Task) -> Attempt {
    Attempt::Lost(format!(
        "host {} has no record of attempt {} (it never arrived, or the host manager restarted before it finished)",
        task.host,
        task.attempt_id()
    ))
}

/// A task and where it is in its workflow.
struct At<'a> {
    workflow_id: &'a str,
    n: usize,
    task: &'a Task,
}

/// Perform one attempt of a task and return its outcome; `Abandoned` if these services
/// lose the right to act first. `resumed`: the attempt may already have been sent.
async fn perform(t: &Term, job: &Job, at: &At<'_>, resumed: bool) -> Result<Attempt, Abandoned> {
    let task = at.task;
    let addr = t.read(|a| a.hosts.get(&task.host).map(|h| h.addr.clone()));
    let Some(addr) = addr else {
        return Ok(Attempt::Failed {
            detail: format!("host {} is no longer registered", task.host),
            retryable: false,
        });
    };
    if task.action.success() == SuccessCheck::AcceptsSql {
        return check(t, &addr, task).await;
    }
    let spec_json = if task.action.needs_spec() {
        match t.read(|a| planner::instance_spec(a, job, &task.instance, task.compensation, task.action)) {
            Ok(spec) => serde_json::to_string(&spec).expect("serializable"),
            Err(e) => {
                return Ok(Attempt::Failed {
                    detail: e,
                    retryable: false,
                })
            }
        }
    } else {
        String::new()
    };
    let zones = t.config.zone_distances.parse().unwrap_or_default();
    let work_json = match t.read(|a| planner::task_work(a, job, task.action, &zones)) {
        Ok(Some(work)) if task.action.needs_work() => serde_json::to_string(&work).expect("serializable"),
        Ok(_) => String::new(),
        Err(e) => {
            return Ok(Attempt::Failed {
                detail: e,
                retryable: false,
            })
        }
    };
    let req = TaskRequest {
        task_id: task.attempt_id(),
        instance_id: task.instance.clone(),
        fence: t.fence,
        action: action_to_wire(task.action),
        spec_json,
        join_only: false,
        work_json,
        generation: t.read(|a| {
            job.kind
                .database()
                .and_then(|d| a.databases.get(d))
                .map_or(0, |d| d.generation)
        }),
    };
    // Waiting on an attempt that may already have been sent never starts it again.
    let join = TaskRequest {
        join_only: true,
        ..req.clone()
    };
    let addr = addr.as_str();
    let send = |req: TaskRequest| async move {
        tokio::select! {
            _ = t.cancel.cancelled() => Err(Abandoned("leadership lost".into())),
            r = t.hosts.run_task(addr, req, task.action.deadline() + DEADLINE_GRACE) => Ok(r),
        }
    };
    let mut result = if resumed {
        // Ask first: the earlier services may or may not have sent it.
        match settle(t, addr, at).await? {
            Some(done) => return Ok(done),
            None => send(join.clone()).await?,
        }
    } else {
        send(req).await?
    };
    loop {
        match result {
            TaskResult::Succeeded(detail, output) => return Ok(Attempt::Succeeded(detail, output)),
            TaskResult::Failed { detail, retryable } => return Ok(Attempt::Failed { detail, retryable }),
            TaskResult::Fenced(why) => return Err(Abandoned(format!("fenced by host {}: {why}", task.host))),
            TaskResult::Absent => return Ok(lost(task)),
            TaskResult::Running(_) | TaskResult::Unknown(_) => match settle(t, addr, at).await? {
                Some(done) => return Ok(done),
                // Still running: wait on it through a join-only re-send.
                None => result = send(join.clone()).await?,
            },
        }
    }
}

/// Ask the host what became of the task's current attempt until it says: an outcome
/// (returned), `Absent` (a retryable failure), or `Running` (`None`: the caller waits on it).
/// While the host does not answer, the task's result says so, and nothing else is sent.
async fn settle(t: &Term, addr: &str, at: &At<'_>) -> Result<Option<Attempt>, Abandoned> {
    let task = at.task;
    let mut noted = false;
    let since = tokio::time::Instant::now();
    loop {
        let status = tokio::select! {
            _ = t.cancel.cancelled() => return Err(Abandoned("leadership lost".into())),
            s = t.hosts.task_status(addr, &task.attempt_id()) => s,
        };
        match status {
            TaskResult::Succeeded(detail, output) => return Ok(Some(Attempt::Succeeded(detail, output))),
            TaskResult::Failed { detail, retryable } => return Ok(Some(Attempt::Failed { detail, retryable })),
            TaskResult::Fenced(why) => return Err(Abandoned(format!("fenced by host {}: {why}", task.host))),
            TaskResult::Absent => return Ok(Some(lost(task))),
            TaskResult::Running(_) => return Ok(None),
            TaskResult::Unknown(why) if !noted => {
                noted = true;
                let note = Command::UpdateTask {
                    workflow_id: at.workflow_id.to_string(),
                    index: at.n,
                    fence: t.fence,
                    state: StepState::Running,
                    attempt: task.attempt,
                    result: Some(format!(
                        "outcome unknown ({why}); waiting for host {} to say what became of it",
                        task.host
                    )),
                    undo: None,
                    output: None,
                };
                commit_workflow(t, note).await?;
            }
            TaskResult::Unknown(why) => {
                let unreachable = t.read(|a| {
                    a.hosts
                        .get(&task.host)
                        .is_some_and(|h| h.health == keel_raft_store::HostHealth::Unreachable)
                });
                if unreachable && since.elapsed() >= HOST_LOST_AFTER {
                    return Ok(Some(Attempt::Failed {
                        detail: format!(
                            "host {} has been unreachable for {}s ({why}); the outcome of attempt {} is unknown",
                            task.host,
                            since.elapsed().as_secs(),
                            task.attempt_id()
                        ),
                        retryable: false,
                    }));
                }
            }
        }
        tokio::select! {
            _ = t.cancel.cancelled() => return Err(Abandoned("leadership lost".into())),
            _ = tokio::time::sleep(SETTLE_PAUSE) => {}
        }
    }
}

/// Success is an observed state: the instance answers SQL on its host, within the check's deadline.
async fn check(t: &Term, addr: &str, task: &Task) -> Result<Attempt, Abandoned> {
    let until = tokio::time::Instant::now() + TaskAction::Check.deadline();
    let mut last = String::from("no report yet");
    while tokio::time::Instant::now() < until {
        let report = tokio::select! {
            _ = t.cancel.cancelled() => return Err(Abandoned("leadership lost".into())),
            r = t.hosts.health(addr, keel_proto::host::HealthRequest::default(), Duration::from_secs(5)) => r,
        };
        match report {
            Ok(report) => match report.instances_health.iter().find(|h| h.instance_id == task.instance) {
                Some(h) if h.accepting => return Ok(Attempt::Succeeded("accepting connections".into(), None)),
                Some(h) => last = h.problem.clone(),
                None => last = format!("host does not know instance {}", task.instance),
            },
            Err(e) => last = e,
        }
        tokio::select! {
            _ = t.cancel.cancelled() => return Err(Abandoned("leadership lost".into())),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    Ok(Attempt::Failed {
        detail: format!("instance is not accepting connections: {last}"),
        retryable: true,
    })
}

#[cfg(test)]
#[path = "workflow_tests.rs"]
mod tests;
