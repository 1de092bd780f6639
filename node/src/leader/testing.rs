//! In-memory stand-ins for the leader services' seams, for in-process tests:
//! the real `AdminState::apply` behind an instant commit that can be told to
//! lose leadership at a chosen commit, and host managers that keep a journal
//! and instance state and can be told to fail, hang or answer late.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use keel_proto::host::{HealthReply, HealthRequest, InstanceHealth, TaskRequest};
use keel_raft_store::{AdminState, Proposal, Response, TaskAction, TaskOutput};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::seams::{Control, Hosts, TaskResult};
use crate::host::engine::InstanceSpec;
use crate::host::wire::action_from_wire;

/// How leadership is lost at the chosen commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Before the command applies: it never commits.
    Before,
    /// After it applies: it commits, but the services never hear the answer.
    After,
}

/// A state machine applied in place, one index per commit.
pub struct MemControl {
    state: Mutex<AdminState>,
    index: Mutex<u64>,
    applied: watch::Sender<u64>,
    /// Lose leadership at this commit (counted from 1 after [`MemControl::arm`]).
    plan: Mutex<Option<(usize, Loss, CancellationToken)>>,
    commits: Mutex<usize>,
}

impl MemControl {
    /// A control over `state`.
    pub fn new(state: AdminState) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(state),
            index: Mutex::new(0),
            applied: watch::channel(0).0,
            plan: Mutex::new(None),
            commits: Mutex::new(0),
        })
    }

    /// Cancel `token` (the services' leadership) at the `at`-th commit from now.
    pub fn arm(&self, at: usize, loss: Loss, token: CancellationToken) {
        *self.commits.lock().unwrap() = 0;
        *self.plan.lock().unwrap() = Some((at, loss, token));
    }

    /// Whether the armed loss has happened.
    pub fn fired(&self) -> bool {
        self.plan.lock().unwrap().is_none()
    }

    /// Apply `command` directly (as a client of the API would have it committed).
    pub fn apply(&self, command: keel_raft_store::Command) -> Response {
        self.apply_proposal(&Proposal::new(1, command))
    }

    fn apply_proposal(&self, proposal: &Proposal) -> Response {
        let mut index = self.index.lock().unwrap();
        *index += 1;
        let r = self.state.lock().unwrap().apply(*index, proposal);
        self.applied.send_replace(*index);
        r
    }

    /// A copy of the applied state.
    pub fn state(&self) -> AdminState {
        self.state.lock().unwrap().clone()
    }
}

impl Control for MemControl {
    fn read_state(&self, f: &mut dyn FnMut(&AdminState)) {
        f(&self.state.lock().unwrap())
    }

    fn commit(&self, proposal: Proposal) -> BoxFuture<'_, Result<Response, String>> {
        Box::pin(async move {
            let n = {
                let mut c = self.commits.lock().unwrap();
                *c += 1;
                *c
            };
            let fire = {
                let mut plan = self.plan.lock().unwrap();
                match plan.as_ref() {
                    Some((at, _, _)) if *at == n => plan.take(),
                    _ => None,
                }
            };
            match fire {
                Some((_, Loss::Before, token)) => {
                    token.cancel();
                    Err("leadership lost before the commit".into())
                }
                Some((_, Loss::After, token)) => {
                    self.apply_proposal(&proposal);
                    token.cancel();
                    Err("leadership lost after the commit".into())
                }
                None => Ok(self.apply_proposal(&proposal)),
            }
        })
    }

    fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

/// What a scripted host does with one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Fail the first `times` executions (checks: refuse connections while scripted).
    Fail {
        /// Whether the failure says a retry may work.
        retryable: bool,
        /// How many executions fail.
        times: u32,
    },
    /// Perform it, but the first answer is lost (the caller sees no answer).
    AnswerLost,
    /// The host goes silent when asked for it, for good: no answers to anything.
    Down,
    /// The first `times` requests for it never arrive (the caller sees no answer).
    NeverArrives {
        /// How many are lost.
        times: u32,
    },
}

/// One in-memory host manager's world.
#[derive(Debug, Default)]
pub struct MemHost {
    /// Instances with a volume.
    pub volumes: BTreeSet<String>,
    /// Instances whose engine runs.
    pub running: BTreeSet<String>,
    /// Outcomes by task id (the journal).
    pub journal: BTreeMap<String, TaskResult>,
    /// Every execution, in order (task id, action).
    pub executions: Vec<(String, TaskAction)>,
    /// Scripts by action.
    pub scripts: BTreeMap<TaskAction, Script>,
    /// Answers lost so far, by task id.
    lost: BTreeSet<String>,
    /// Scripted misbehaviours so far (failures, lost requests), by action.
    scripted: BTreeMap<TaskAction, u32>,
    /// Silent (a `Down` script fired).
    pub down: bool,
}

/// What a host records for a task it was asked about and had no record of.
fn absent() -> TaskResult {
    TaskResult::Failed {
        detail: "declared absent".into(),
        retryable: true,
    }
}

/// Host managers by address.
#[derive(Clone, Default)]
pub struct MemHosts(pub Arc<Mutex<BTreeMap<String, MemHost>>>);

impl MemHosts {
    /// Script `action` on the host at `addr`.
    pub fn script(&self, addr: &str, action: TaskAction, script: Script) {
        self.0
            .lock()
            .unwrap()
            .entry(addr.to_string())
            .or_default()
            .scripts
            .insert(action, script);
    }

    /// Read one host's world.
    pub fn with<T>(&self, addr: &str, f: impl FnOnce(&MemHost) -> T) -> T {
        f(self.0.lock().unwrap().entry(addr.to_string()).or_default())
    }

    fn perform(host: &mut MemHost, action: TaskAction, instance: &str, spec: Option<InstanceSpec>) -> TaskResult {
        if let Some(Script::Fail { retryable, times }) = host.scripts.get(&action) {
            let failed = host.scripted.entry(action).or_default();
            if *failed < *times {
                *failed += 1;
                return TaskResult::Failed {
                    detail: format!("{action} failed (scripted)"),
                    retryable: *retryable,
                };
            }
        }
        match action {
            TaskAction::Provision => {
                host.volumes.insert(instance.to_string());
            }
            TaskAction::Start | TaskAction::Restart => {
                if !host.volumes.contains(instance) {
                    return TaskResult::Failed {
                        detail: "no volume".into(),
                        retryable: false,
                    };
                }
                host.running.insert(instance.to_string());
            }
            TaskAction::Configure
            | TaskAction::Check
            | TaskAction::Snapshot
            | TaskAction::Checkpoint
            | TaskAction::DeleteBackup
            | TaskAction::CopyBackup => {}
            TaskAction::Restore | TaskAction::BuildStandby => {
                host.volumes.insert(instance.to_string());
                host.running.insert(instance.to_string());
            }
            // A primary's slot, and (sync) the standby its spec names, as a real host reports.
            TaskAction::PrepareStandby => {
                let lsn = "0/3000000".to_string();
                return TaskResult::Succeeded("slots made".into(), Some(TaskOutput::StandbySlot { lsn }));
            }
            TaskAction::Promote => {
                if !host.running.contains(instance) {
                    return TaskResult::Failed {
                        detail: "not running".into(),
                        retryable: true,
                    };
                }
                let promoted_at_ms = 1;
                return TaskResult::Succeeded("promoted".into(), Some(TaskOutput::Promoted { promoted_at_ms }));
            }
            TaskAction::SyncStandby => {
                let standby = spec
                    .and_then(|s| s.replication)
                    .and_then(|r| r.sync_standby)
                    .unwrap_or_default();
                return TaskResult::Succeeded("in sync".into(), Some(TaskOutput::InSync { standby }));
            }
            TaskAction::SetPassword | TaskAction::SetAccess => {
                if !host.running.contains(instance) {
                    return TaskResult::Failed {
                        detail: "not running".into(),
                        retryable: true,
                    };
                }
            }
            TaskAction::Stop | TaskAction::Fence => {
                host.running.remove(instance);
            }
            TaskAction::Destroy => {
                host.running.remove(instance);
                host.volumes.remove(instance);
            }
        }
        TaskResult::Succeeded(format!("{action} done"), None)
    }
}

impl Hosts for MemHosts {
    fn run_task(&self, addr: &str, req: TaskRequest, _deadline: Duration) -> BoxFuture<'_, TaskResult> {
        let addr = addr.to_string();
        Box::pin(async move {
            let mut hosts = self.0.lock().unwrap();
            let host = hosts.entry(addr).or_default();
            let action = action_from_wire(req.action).expect("a known action");
            if host.scripts.get(&action) == Some(&Script::Down) {
                host.down = true;
            }
            if host.down {
                return TaskResult::Unknown("no answer (scripted: host down)".into());
            }
            if let Some(Script::NeverArrives { times }) = host.scripts.get(&action) {
                let lost = host.scripted.entry(action).or_default();
                if *lost < *times {
                    *lost += 1;
                    return TaskResult::Unknown("the request never arrived (scripted)".into());
                }
            }
            if let Some(done) = host.journal.get(&req.task_id) {
                return done.clone();
            }
            if req.join_only {
                host.journal.insert(req.task_id.clone(), absent());
                return TaskResult::Absent;
            }
            host.executions.push((req.task_id.clone(), action));
            let spec = serde_json::from_str(&req.spec_json).ok();
            let outcome = Self::perform(host, action, &req.instance_id, spec);
            host.journal.insert(req.task_id.clone(), outcome.clone());
            if host.scripts.get(&action) == Some(&Script::AnswerLost) && host.lost.insert(req.task_id.clone()) {
                return TaskResult::Unknown("the answer was lost (scripted)".into());
            }
            outcome
        })
    }

    fn task_status(&self, addr: &str, task_id: &str) -> BoxFuture<'_, TaskResult> {
        let (addr, task_id) = (addr.to_string(), task_id.to_string());
        Box::pin(async move {
            let mut hosts = self.0.lock().unwrap();
            let host = hosts.entry(addr).or_default();
            if host.down {
                return TaskResult::Unknown("no answer (scripted: host down)".into());
            }
            match host.journal.get(&task_id) {
                Some(done) => done.clone(),
                None => {
                    // As the real host manager: an id asked about is recorded absent for good.
                    host.journal.insert(task_id, absent());
                    TaskResult::Absent
                }
            }
        })
    }

    fn health(
        &self,
        addr: &str,
        _req: HealthRequest,
        _timeout: Duration,
    ) -> BoxFuture<'_, Result<HealthReply, String>> {
        let addr = addr.to_string();
        Box::pin(async move {
            let mut hosts = self.0.lock().unwrap();
            let host = hosts.entry(addr.clone()).or_default();
            if host.down {
                return Err("no answer (scripted: host down)".into());
            }
            let checks_fail = matches!(host.scripts.get(&TaskAction::Check), Some(Script::Fail { .. }));
            Ok(HealthReply {
                name: addr,
                instances_health: host
                    .volumes
                    .iter()
                    .map(|id| InstanceHealth {
                        instance_id: id.clone(),
                        running: host.running.contains(id),
                        accepting: host.running.contains(id) && !checks_fail,
                        problem: if checks_fail {
                            "refuses connections (scripted)".into()
                        } else {
                            String::new()
                        },
                        ..InstanceHealth::default()
                    })
                    .collect(),
                ..HealthReply::default()
            })
        })
    }
}
