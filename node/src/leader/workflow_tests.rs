//! The workflow engine driven in-process through the seams: every case, with leadership
//! lost at every commit point, ends once and matches the (in-memory) host.

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
    control.apply(Command::CreateAccount { name: "acme".into() });
    let r = control.apply(Command::CreateDatabase {
        job_id: "create".into(),
        request: None,
        name: "db".into(),
        account: "acme".into(),
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
    assert_eq!(control.state().databases["db.acme"].status, DatabaseStatus::Available);
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
                name: "db.acme".into(),
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
                name: "db.acme".into(),
                final_snapshot: None,
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
    let db = s.databases.get("db.acme");
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
        .filter(|e| e.seq > seq_of_job && e.subject == "db.acme" && terminal.contains(&e.kind.as_str()))
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

/// A host whose long task runs until released, reporting progress meanwhile.
struct SlowHost {
    released: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl Hosts for SlowHost {
    fn run_task(
        &self,
        _addr: &str,
        _req: keel_proto::host::TaskRequest,
        _deadline: std::time::Duration,
    ) -> futures::future::BoxFuture<'_, super::super::seams::TaskResult> {
        Box::pin(async move {
            while !self.released.load(std::sync::atomic::Ordering::SeqCst) {
                self.wake.notified().await;
            }
            super::super::seams::TaskResult::Succeeded("snapshot stored".into(), None)
        })
    }

    fn task_status(
        &self,
        _addr: &str,
        _task_id: &str,
    ) -> futures::future::BoxFuture<'_, super::super::seams::TaskResult> {
        Box::pin(async move {
            super::super::seams::TaskResult::Running(
                "fetching the backup: 1.0 of 2.0 MiB (1.0 MiB/s, about 1 s left)".into(),
            )
        })
    }

    fn health(
        &self,
        _addr: &str,
        _req: keel_proto::host::HealthRequest,
        _timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'_, Result<keel_proto::host::HealthReply, String>> {
        Box::pin(async move { Err("not used".to_string()) })
    }
}

#[tokio::test]
async fn a_long_tasks_progress_is_recorded_on_the_task_while_it_runs() {
    let control = MemControl::new(base());
    let hosts = MemHosts::default();
    available(&control, &hosts).await;
    let r = control.apply(Command::SnapshotDatabase {
        job_id: "snap".into(),
        request: None,
        name: "db.acme".into(),
        snapshot: "s1".into(),
        kind: keel_raft_store::SnapshotKind::User,
    });
    assert!(matches!(r, Response::Database { created: true, .. }), "{r:?}");
    let slow = Arc::new(SlowHost {
        released: Arc::default(),
        wake: Arc::default(),
    });
    let t = {
        let c: Arc<dyn Control> = control.clone();
        let h: Arc<dyn Hosts> = slow.clone();
        start_services(c, h, 1, 1, CancellationToken::new(), Arc::new(ServerConfig::default()))
            .await
            .expect("services start")
    };
    let driving = tokio::spawn(async move { claim_and_drive(&t, "snap").await });
    let task = |c: &MemControl| c.state().workflow_of("snap").and_then(|w| w.tasks.first().cloned());
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let started = loop {
        if let Some(t) = task(&control).filter(|t| t.result.as_deref().is_some_and(|r| r.contains("fetching"))) {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "no progress recorded: {:?}",
            task(&control)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(started.state, keel_raft_store::StepState::Running);
    slow.released.store(true, std::sync::atomic::Ordering::SeqCst);
    slow.wake.notify_one();
    driving.await.unwrap().expect("the workflow finishes");
    let done = task(&control).unwrap();
    assert_eq!(done.result.as_deref(), Some("snapshot stored"));
    assert_eq!(
        done.started_at_ms, started.started_at_ms,
        "a progress note keeps the attempt's start"
    );
}
