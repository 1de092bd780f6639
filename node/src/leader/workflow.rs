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
    Succeeded(String),
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
        };
        let current = commit_workflow(t, running).await?;
        let this = current.tasks[n].clone();
        let span = tracing::info_span!("task", job = %job.id, task = %this.id, action = %this.action, host = %this.host, attempt);
        let at = At {
            workflow_id: &wf.id,
            n,
            task: &this,
        };
        let outcome = perform(t, job, &at, resumed).instrument(span).await?;
        resumed = false;
        let retry = match &outcome {
            Attempt::Failed { retryable: true, .. } => {
                failures += 1;
                failures < MAX_ATTEMPTS && attempt < MAX_ATTEMPTS_IN_ALL
            }
            Attempt::Lost(_) => attempt < MAX_ATTEMPTS_IN_ALL,
            _ => false,
        };
        let (state, detail, undo) = match outcome {
            Attempt::Succeeded(detail) => (StepState::Succeeded, detail, None),
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
                (StepState::Failed, detail, undo)
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
        };
        return commit_workflow(t, done).await;
    }
}

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
        match t.read(|a| planner::instance_spec(a, job, &task.instance, task.compensation)) {
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
    let req = TaskRequest {
        task_id: task.attempt_id(),
        instance_id: task.instance.clone(),
        fence: t.fence,
        action: action_to_wire(task.action),
        spec_json,
        join_only: false,
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
            TaskResult::Succeeded(detail) => return Ok(Attempt::Succeeded(detail)),
            TaskResult::Failed { detail, retryable } => return Ok(Attempt::Failed { detail, retryable }),
            TaskResult::Fenced(why) => return Err(Abandoned(format!("fenced by host {}: {why}", task.host))),
            TaskResult::Absent => return Ok(lost(task)),
            TaskResult::Running | TaskResult::Unknown(_) => match settle(t, addr, at).await? {
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
            TaskResult::Succeeded(detail) => return Ok(Some(Attempt::Succeeded(detail))),
            TaskResult::Failed { detail, retryable } => return Ok(Some(Attempt::Failed { detail, retryable })),
            TaskResult::Fenced(why) => return Err(Abandoned(format!("fenced by host {}: {why}", task.host))),
            TaskResult::Absent => return Ok(Some(lost(task))),
            TaskResult::Running => return Ok(None),
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
            r = t.hosts.health(addr, Duration::from_secs(5)) => r,
        };
        match report {
            Ok(report) => match report.instances_health.iter().find(|h| h.instance_id == task.instance) {
                Some(h) if h.accepting => return Ok(Attempt::Succeeded("accepting connections".into())),
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
mod tests {
    use std::sync::Arc;

    use keel_raft_store::{
        AdminState, Command, DatabaseSpec, DatabaseStatus, Host, HostHealth, JobState, Modification, Response,
    };
    use tokio_util::sync::CancellationToken;

    use super::super::seams::{Control, Hosts};
    use super::super::testing::{Loss, MemControl, MemHosts, Script};
    use super::super::{start_services, Term};
    use super::*;
    use crate::server::config::ServerConfig;

    const HOST: &str = "127.0.1.1:7300";

    fn base() -> AdminState {
        let mut s = AdminState::default();
        s.hosts.insert(
            "h1".into(),
            Host {
                name: "h1".into(),
                addr: HOST.into(),
                zone: "a".into(),
                health: HostHealth::Healthy,
                ..Host::default()
            },
        );
        s
    }

    async fn services(control: &Arc<MemControl>, hosts: &MemHosts, term: u64, cancel: CancellationToken) -> Term {
        let control: Arc<dyn Control> = control.clone();
        let hosts: Arc<dyn Hosts> = Arc::new(hosts.clone());
        start_services(control, hosts, 1, term, cancel, Arc::new(ServerConfig::default()))
            .await
            .expect("services start")
    }

    /// Claim `job_id` for `t` and drive its workflow.
    async fn claim_and_drive(t: &Term, job_id: &str) -> Result<(), Abandoned> {
        let claim = Command::ClaimJob {
            job_id: job_id.into(),
            fence: t.fence,
            node_id: t.node_id,
        };
        match t.commit(claim).await {
            Ok(Response::Job { job, .. }) => drive(t, &job).await,
            Ok(other) => Err(Abandoned(format!("claim refused: {other:?}"))),
            Err(e) => Err(Abandoned(e)),
        }
    }

    /// Run `job_id` to its end with no faults.
    async fn run_clean(control: &Arc<MemControl>, hosts: &MemHosts, job_id: &str) {
        let t = services(control, hosts, 1, CancellationToken::new()).await;
        claim_and_drive(&t, job_id).await.expect("a clean run finishes");
    }

    fn create(control: &MemControl) -> String {
        let r = control.apply(Command::CreateDatabase {
            job_id: "create".into(),
            request: None,
            name: "db".into(),
            spec: DatabaseSpec {
                class: "small".into(),
                storage_gib: 10,
                master_user: "app".into(),
                ..DatabaseSpec::default()
            },
            master_verifier: postgres_protocol::password::scram_sha_256(b"change me please"),
            instance_id: "i1".into(),
        });
        assert!(matches!(r, Response::Database { created: true, .. }), "{r:?}");
        "create".into()
    }

    async fn available(control: &Arc<MemControl>, hosts: &MemHosts) {
        let job = create(control);
        run_clean(control, hosts, &job).await;
        assert_eq!(control.state().databases["db"].status, DatabaseStatus::Available);
    }

    /// What a case expects once its job has ended.
    #[derive(Debug, Clone, Copy)]
    enum Expect {
        Available,
        CreateUndone,
        /// Failed, and its undo could not run either: the instance record stays for a delete.
        CreateFailedKept,
        Modified,
        RolledBack,
        Deleted,
    }

    #[derive(Debug, Clone, Copy)]
    enum Op {
        Create,
        Modify,
        Delete,
    }

    struct Case {
        name: &'static str,
        op: Op,
        scripts: &'static [(TaskAction, Script)],
        expect: Expect,
        /// How many times each of these actions ran on the host, in all (setup included).
        runs: &'static [(TaskAction, usize)],
    }

    const CASES: &[Case] = &[
        Case {
            name: "create",
            op: Op::Create,
            scripts: &[],
            expect: Expect::Available,
            runs: &[(TaskAction::Provision, 1), (TaskAction::Start, 1)],
        },
        Case {
            name: "create whose provision fails",
            op: Op::Create,
            scripts: &[(
                TaskAction::Provision,
                Script::Fail {
                    retryable: false,
                    times: u32::MAX,
                },
            )],
            expect: Expect::CreateUndone,
            runs: &[(TaskAction::Destroy, 1)],
        },
        Case {
            name: "create whose last task (check) fails",
            op: Op::Create,
            scripts: &[(
                TaskAction::Check,
                Script::Fail {
                    retryable: true,
                    times: u32::MAX,
                },
            )],
            expect: Expect::CreateUndone,
            runs: &[(TaskAction::Destroy, 1)],
        },
        Case {
            name: "create whose start answer is lost",
            op: Op::Create,
            scripts: &[(TaskAction::Start, Script::AnswerLost)],
            expect: Expect::Available,
            runs: &[(TaskAction::Provision, 1), (TaskAction::Start, 1)],
        },
        Case {
            name: "create whose first four provision requests never arrive",
            op: Op::Create,
            scripts: &[(TaskAction::Provision, Script::NeverArrives { times: 4 })],
            expect: Expect::Available,
            runs: &[(TaskAction::Provision, 1), (TaskAction::Destroy, 0)],
        },
        Case {
            name: "create whose host goes silent for good during provision",
            op: Op::Create,
            scripts: &[(TaskAction::Provision, Script::Down)],
            expect: Expect::CreateFailedKept,
            runs: &[(TaskAction::Destroy, 0)],
        },
        Case {
            name: "modify",
            op: Op::Modify,
            scripts: &[],
            expect: Expect::Modified,
            runs: &[(TaskAction::Restart, 1)],
        },
        Case {
            name: "modify whose restart fails once",
            op: Op::Modify,
            scripts: &[(
                TaskAction::Restart,
                Script::Fail {
                    retryable: false,
                    times: 1,
                },
            )],
            expect: Expect::RolledBack,
            runs: &[(TaskAction::Restart, 2)],
        },
        Case {
            name: "delete",
            op: Op::Delete,
            scripts: &[],
            expect: Expect::Deleted,
            runs: &[(TaskAction::Destroy, 1)],
        },
    ];

    /// Set the case up and return the job to drive.
    async fn setup(case: &Case, control: &Arc<MemControl>, hosts: &MemHosts) -> String {
        let job = match case.op {
            Op::Create => create(control),
            Op::Modify => {
                available(control, hosts).await;
                let r = control.apply(Command::ModifyDatabase {
                    job_id: "modify".into(),
                    request: None,
                    name: "db".into(),
                    modification: Modification {
                        class: Some("medium".into()),
                        ..Modification::default()
                    },
                });
                assert!(matches!(r, Response::Database { .. }), "{r:?}");
                "modify".into()
            }
            Op::Delete => {
                available(control, hosts).await;
                let r = control.apply(Command::DeleteDatabase {
                    job_id: "delete".into(),
                    request: None,
                    name: "db".into(),
                });
                assert!(matches!(r, Response::Database { .. }), "{r:?}");
                "delete".into()
            }
        };
        for (action, script) in case.scripts {
            hosts.script(HOST, *action, script.clone());
            if *script == Script::Down {
                // What the monitor would record once the host stops answering.
                control.apply(Command::ObserveHost {
                    name: "h1".into(),
                    reachable: false,
                    capacity: None,
                    problem: Some("no answer".into()),
                });
            }
        }
        job
    }

    /// The job ended in exactly one terminal state that matches the host's reality.
    fn assert_outcome(case: &Case, label: &str, job: &str, s: &AdminState, hosts: &MemHosts) {
        assert!(s.jobs[job].state.is_terminal(), "{label}: job {:?}", s.jobs[job]);
        let wf = s.workflow_of(job).unwrap_or_else(|| panic!("{label}: no workflow"));
        assert!(matches!(next(wf), Next::Done), "{label}: workflow not finished: {wf:?}");
        assert_eq!(s.open_jobs().count(), 0, "{label}: nothing left open");
        let (volume, running) = hosts.with(HOST, |h| (h.volumes.contains("i1"), h.running.contains("i1")));
        let db = s.databases.get("db");
        match case.expect {
            Expect::Available | Expect::Modified | Expect::RolledBack => {
                let db = db.unwrap_or_else(|| panic!("{label}: database gone"));
                assert_eq!(db.status, DatabaseStatus::Available, "{label}: {db:?}");
                assert!(db.endpoint.is_some(), "{label}: an available database has an address");
                assert!(volume && running, "{label}: an available database runs on its host");
                let class = match case.expect {
                    Expect::Modified => "medium",
                    _ => "small",
                };
                assert_eq!(db.spec.class, class, "{label}");
                assert_eq!(
                    s.jobs[job].state == JobState::Succeeded,
                    !matches!(case.expect, Expect::RolledBack),
                    "{label}"
                );
            }
            Expect::CreateUndone => {
                let db = db.unwrap_or_else(|| panic!("{label}: database gone"));
                assert_eq!(db.status, DatabaseStatus::Failed, "{label}: {db:?}");
                assert!(db.endpoint.is_none(), "{label}: no DNS address");
                assert!(s.instances.is_empty(), "{label}: port and slot given back");
                assert!(!volume && !running, "{label}: no volume left on the host");
            }
            Expect::CreateFailedKept => {
                let db = db.unwrap_or_else(|| panic!("{label}: database gone"));
                assert_eq!(db.status, DatabaseStatus::Failed, "{label}: {db:?}");
                assert!(
                    db.status_reason.as_deref().unwrap_or("").contains("unreachable"),
                    "{label}: {db:?}"
                );
                assert_eq!(s.instances.len(), 1, "{label}: the port stays taken until a delete");
            }
            Expect::Deleted => {
                assert!(db.is_none(), "{label}: database still recorded");
                assert!(!volume, "{label}: volume left on the host");
            }
        }
        let terminal = [
            "database-available",
            "database-failed",
            "database-modified",
            "database-modify-rolled-back",
            "database-deleted",
        ];
        let seq_of_job = s
            .events
            .iter()
            .find(|e| e.kind == "job-submitted" && e.subject == job)
            .map(|e| e.seq)
            .unwrap_or(0);
        let ends = s
            .events
            .iter()
            .filter(|e| e.seq > seq_of_job && e.subject == "db" && terminal.contains(&e.kind.as_str()))
            .count();
        assert_eq!(ends, 1, "{label}: exactly one terminal event: {:?}", s.events);
        hosts.with(HOST, |h| {
            let mut ids: Vec<&String> = h.executions.iter().map(|(id, _)| id).collect();
            let all = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), all, "{label}: an attempt ran twice: {:?}", h.executions);
            for (action, n) in case.runs {
                let ran = h.executions.iter().filter(|(_, a)| a == action).count();
                assert_eq!(ran, *n, "{label}: {action} ran {ran} times: {:?}", h.executions);
            }
        });
    }

    /// Every case, with leadership lost before and after every commit of its workflow (the
    /// next services in a new term, or the same term after a lease lapse), ends in exactly
    /// one terminal state that matches what the host holds.
    #[tokio::test(start_paused = true)]
    async fn leadership_lost_at_every_commit_point_still_ends_exactly_once() {
        for case in CASES {
            let mut points = 0;
            for loss in [Loss::Before, Loss::After] {
                for same_term in [false, true] {
                    for at in 1.. {
                        let label = format!(
                            "{} / leadership lost {loss:?} commit {at} / {}",
                            case.name,
                            if same_term { "same term" } else { "new term" }
                        );
                        let control = MemControl::new(base());
                        let hosts = MemHosts::default();
                        let job = setup(case, &control, &hosts).await;
                        let first = CancellationToken::new();
                        let t = services(&control, &hosts, 1, first.clone()).await;
                        control.arm(at, loss, first.clone());
                        let r = claim_and_drive(&t, &job).await;
                        if !control.fired() {
                            r.unwrap_or_else(|e| panic!("{label}: {e:?}"));
                            assert_outcome(case, &label, &job, &control.state(), &hosts);
                            points = points.max(at);
                            break;
                        }
                        assert!(r.is_err(), "{label}: a cancelled run reports it stopped");
                        // The next services take over what is still open (as the sweeper would).
                        let term = if same_term { 1 } else { 2 };
                        let t2 = services(&control, &hosts, term, CancellationToken::new()).await;
                        if !control.state().jobs[&job].state.is_terminal() {
                            claim_and_drive(&t2, &job)
                                .await
                                .unwrap_or_else(|e| panic!("{label}: resumed run: {e:?}"));
                        }
                        assert_outcome(case, &label, &job, &control.state(), &hosts);
                    }
                }
            }
            assert!(points >= 3, "{}: only {points} commit points", case.name);
        }
    }

    #[test]
    fn next_step_is_a_function_of_the_record() {
        let task = |state, compensation| Task {
            state,
            compensation,
            ..Task::default()
        };
        let wf = |tasks: Vec<Task>, error: Option<&str>| Workflow {
            tasks,
            state: StepState::Running,
            error: error.map(Into::into),
            ..Workflow::default()
        };
        use StepState::*;
        let table = [
            (
                wf(vec![task(Succeeded, false), task(Pending, false)], None),
                Next::Run(1),
            ),
            (wf(vec![task(Running, false), task(Pending, false)], None), Next::Run(0)),
            (wf(vec![task(Succeeded, false)], None), Next::Finish),
            (wf(vec![], None), Next::Finish),
            (
                wf(vec![task(Failed, false), task(Pending, true)], Some("provision failed")),
                Next::Run(1),
            ),
            (
                wf(
                    vec![task(Failed, false), task(Failed, true), task(Pending, true)],
                    Some("x"),
                ),
                Next::Finish,
            ),
            (
                wf(vec![task(Failed, false), task(Succeeded, true)], Some("x")),
                Next::Finish,
            ),
        ];
        for (w, expected) in table {
            assert_eq!(next(&w), expected, "{w:?}");
        }
        let done = Workflow {
            state: StepState::Failed,
            ..Workflow::default()
        };
        assert_eq!(next(&done), Next::Done);
    }
}
