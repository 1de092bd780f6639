//! The workflow engine: drives one job's tasks in order, committing each
//! task's progress before the next starts, so a new leader resumes exactly
//! where the old one stopped. A task that exhausts its retries fails the
//! workflow; the completed work is then undone by compensation tasks.

use std::time::Duration;

use tracing::Instrument;

use keel_proto::host::TaskRequest;
use keel_raft_store::{Command, Job, Response, StepState, Task, Workflow};

use super::host_client::TaskResult;
use super::planner::{self, action};
use super::Term;

/// Attempts per task before the workflow fails.
pub const MAX_ATTEMPTS: u32 = 3;
/// Deadline of one attempt.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(120);
/// How long a `check` task waits for the instance to accept connections.
const CHECK_DEADLINE: Duration = Duration::from_secs(30);

/// Why the engine stopped driving a workflow without finishing it.
#[derive(Debug)]
pub struct Abandoned(pub String);

async fn commit_workflow(t: &Term, command: Command) -> Result<Workflow, Abandoned> {
    match t.commit(command).await {
        Ok(Response::Workflow { workflow }) => Ok(*workflow),
        Ok(Response::Rejected { rejection }) => Err(Abandoned(rejection.to_string())),
        Ok(other) => Err(Abandoned(format!("unexpected answer {other:?}"))),
        Err(e) => Err(Abandoned(e)),
    }
}

/// Drive `job`'s workflow to its end, or until this term can no longer act.
pub async fn drive(t: &Term, job: &Job) -> Result<(), Abandoned> {
    let existing = t
        .node
        .state
        .read(|a| a.state.workflows.values().find(|w| w.job_id == job.id).cloned());
    let mut wf = match existing {
        Some(wf) => wf,
        None => {
            let workflow_id = uuid::Uuid::now_v7().simple().to_string();
            let planned = t.node.state.read(|a| planner::plan(&a.state, job, &workflow_id));
            let tasks = match planned {
                Ok(tasks) => tasks,
                Err(e) => {
                    // Nothing can be planned (e.g. the database vanished): record the failure as the outcome.
                    let start = Command::StartWorkflow {
                        workflow_id: workflow_id.clone(),
                        job_id: job.id.clone(),
                        term: t.term,
                        tasks: vec![],
                    };
                    commit_workflow(t, start).await?;
                    let finish = Command::FinishWorkflow {
                        workflow_id,
                        term: t.term,
                        error: Some(e),
                    };
                    commit_workflow(t, finish).await?;
                    return Ok(());
                }
            };
            let start = Command::StartWorkflow {
                workflow_id,
                job_id: job.id.clone(),
                term: t.term,
                tasks,
            };
            commit_workflow(t, start).await?
        }
    };
    loop {
        let next = wf
            .tasks
            .iter()
            .position(|task| matches!(task.state, StepState::Pending | StepState::Running));
        let Some(index) = next else {
            let finish = Command::FinishWorkflow {
                workflow_id: wf.id.clone(),
                term: t.term,
                error: None,
            };
            commit_workflow(t, finish).await?;
            return Ok(());
        };
        let task = wf.tasks[index].clone();
        let (after, failure) = run_task(t, job, &wf, index, &task).await?;
        wf = after;
        if let Some(error) = failure {
            if !task.compensation && wf.error.is_none() {
                let undo = planner::compensation(job, &wf);
                tracing::warn!(job = %job.id, task = %task.id, %error, undo = undo.len(), "Workflow failed; compensating.");
                let compensate = Command::CompensateWorkflow {
                    workflow_id: wf.id.clone(),
                    term: t.term,
                    error: format!("{} failed: {error}", task.name),
                    tasks: undo,
                };
                wf = commit_workflow(t, compensate).await?;
            }
        }
    }
}

/// Run one task through its attempts; returns the workflow after the last commit and the failure, if any.
async fn run_task(
    t: &Term,
    job: &Job,
    wf: &Workflow,
    index: usize,
    task: &Task,
) -> Result<(Workflow, Option<String>), Abandoned> {
    // A task found running was started by an earlier leader: re-send the same attempt first.
    let mut attempt = if task.state == StepState::Running {
        task.attempt
    } else {
        task.attempt + 1
    };
    loop {
        let running = Command::UpdateTask {
            workflow_id: wf.id.clone(),
            index,
            term: t.term,
            state: StepState::Running,
            attempt,
            result: None,
        };
        let current = commit_workflow(t, running).await?;
        let this = current.tasks[index].clone();
        let span = tracing::info_span!("task", job = %job.id, task = %this.id, action = %this.name, host = %this.host, attempt);
        let result = execute(t, job, &this).instrument(span).await;
        let (state, detail, retry) = match result {
            TaskResult::Succeeded(d) => (StepState::Succeeded, d, false),
            TaskResult::Fenced(why) => return Err(Abandoned(format!("fenced by host {}: {why}", this.host))),
            TaskResult::Failed { detail, retryable } => {
                (StepState::Failed, detail, retryable && attempt < MAX_ATTEMPTS)
            }
        };
        if retry {
            tracing::info!(%detail, "Task attempt failed; retrying.");
            tokio::select! {
                _ = t.cancel.cancelled() => return Err(Abandoned("leadership lost".into())),
                _ = tokio::time::sleep(Duration::from_millis(250 << attempt.min(6))) => {}
            }
            attempt += 1;
            continue;
        }
        let done = Command::UpdateTask {
            workflow_id: wf.id.clone(),
            index,
            term: t.term,
            state,
            attempt,
            result: Some(detail.clone()),
        };
        let after = commit_workflow(t, done).await?;
        let failure = (state == StepState::Failed).then_some(detail);
        return Ok((after, failure));
    }
}

/// Perform one attempt of a task against its host.
async fn execute(t: &Term, job: &Job, task: &Task) -> TaskResult {
    let addr = t
        .node
        .state
        .read(|a| a.state.hosts.get(&task.host).map(|h| h.addr.clone()));
    let Some(addr) = addr else {
        return TaskResult::Failed {
            detail: format!("host {} is no longer registered", task.host),
            retryable: false,
        };
    };
    if task.name == action::CHECK {
        return check(t, &addr, &task.instance).await;
    }
    let spec_json = if matches!(task.name.as_str(), action::DESTROY) {
        String::new()
    } else {
        match t
            .node
            .state
            .read(|a| planner::instance_spec(&a.state, job, &task.instance))
        {
            Ok(spec) => serde_json::to_string(&spec).expect("serializable"),
            Err(e) => {
                return TaskResult::Failed {
                    detail: e,
                    retryable: false,
                }
            }
        }
    };
    let req = TaskRequest {
        task_id: task.attempt_id(),
        instance_id: task.instance.clone(),
        term: t.term,
        action: task.name.clone(),
        spec_json,
    };
    tokio::select! {
        _ = t.cancel.cancelled() => TaskResult::Failed { detail: "leadership lost".into(), retryable: true },
        r = t.hosts.run(&addr, req, ATTEMPT_DEADLINE) => r,
    }
}

/// Success is an observed state: the instance answers SQL on its host.
async fn check(t: &Term, addr: &str, instance: &str) -> TaskResult {
    let until = tokio::time::Instant::now() + CHECK_DEADLINE;
    let mut last = String::from("no report yet");
    while tokio::time::Instant::now() < until {
        match t.hosts.health(addr, Duration::from_secs(5)).await {
            Ok(report) => match report.instances_health.iter().find(|h| h.instance_id == instance) {
                Some(h) if h.accepting => return TaskResult::Succeeded("accepting connections".into()),
                Some(h) => last = h.problem.clone(),
                None => last = format!("host does not know instance {instance}"),
            },
            Err(e) => last = e,
        }
        tokio::select! {
            _ = t.cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    TaskResult::Failed {
        detail: format!("instance is not accepting connections: {last}"),
        retryable: true,
    }
}
