//! The `keel.host.v1` service: admit (fence), deduplicate (journal), run, record. The
//! backup tasks' work is in [`backup_tasks`].

mod backup_tasks;
mod fencing;
mod standby_tasks;

use std::collections::HashMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_proto::host::host_manager_server::HostManager;
use keel_proto::host::{
    HealthReply, HealthRequest, InstanceHealth, TaskReply, TaskRequest, TaskState, TaskStatusRequest,
};
use keel_raft_store::TaskAction;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::engine::postgres::Postgres;
use super::engine::{EngineError, InstanceSpec};
use super::journal::{valid_id, FenceError, Journal, Outcome};
use super::wire::action_from_wire;
use super::HostConfig;
use crate::backup::archive::Archives;
use crate::backup::progress::Progress;
use crate::backup::stores::Stores;
use crate::backup::work::TaskWork;
use keel_raft_store::TaskOutput;

/// How long a RunTask call waits for the task before answering "running".
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// How long one instance's SQL probe may take in a health report (probes run concurrently,
/// so a hung instance costs the report this, never its host's reachability).
pub const PROBE_WITHIN: Duration = Duration::from_millis(800);
/// How often the storage-use cache the health report reads is refreshed.
const USAGE_EVERY: Duration = Duration::from_secs(5);

/// The task running on one instance: its id, what it does, and where its outcome will appear.
struct Running {
    task_id: String,
    action: TaskAction,
    outcome: watch::Receiver<Option<Outcome>>,
    /// Cancelled when a task that does not wait for this one arrives ([`preempts`]).
    yield_to: tokio_util::sync::CancellationToken,
}

/// Whether `next` stops `running` on the same instance instead of waiting for it. A
/// snapshot (minutes, on a standby or a primary) yields to a promotion (a failover must
/// not wait for it), a fence, a stop and a destroy (the instance is leaving).
fn preempts(next: TaskAction, running: TaskAction) -> bool {
    running == TaskAction::Snapshot
        && matches!(
            next,
            TaskAction::Promote | TaskAction::Fence | TaskAction::Stop | TaskAction::Destroy
        )
}

/// What a RunTask asks to be admitted.
#[derive(Clone)]
struct Admit {
    task_id: String,
    instance: String,
    action: TaskAction,
    spec: Option<InstanceSpec>,
    work: Option<TaskWork>,
    fence: u64,
    generation: u64,
    join_only: bool,
}

/// The host manager's gRPC service.
#[derive(Clone)]
pub struct HostService {
    config: HostConfig,
    journal: Arc<Journal>,
    engine: Arc<Postgres>,
    /// At most one task per instance, by instance id. Admission (journal check, lookup,
    /// insert) happens under this one lock, so a task can never start twice, nor two
    /// tasks on one instance at once.
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// Bytes each instance's volume holds, refreshed in the background ([`HostService::watch_usage`]).
    usage: Arc<Mutex<HashMap<String, u64>>>,
    /// Where backups go.
    stores: Stores,
    /// The WAL archives running, by instance ([`HostService::watch_archives`]).
    archives: Archives,
    /// How far each running task has got, by task id (answered while it runs).
    progress: Arc<Mutex<HashMap<String, Arc<Progress>>>>,
    /// Whether the monitor has probed since this host manager started (and so told it
    /// which instances were fenced); instances that are down start only after that.
    confirmed: Arc<watch::Sender<bool>>,
}

/// The answer for a task this host has no record of (and now records as absent).
fn unknown(task_id: &str) -> TaskReply {
    TaskReply {
        task_id: task_id.into(),
        state: TaskState::Unknown as i32,
        detail: format!(
            "task {task_id} is unknown to this host manager: it never arrived, or it was running when the host manager stopped and did not finish; nothing of it runs now, and it never will"
        ),
        retryable: true,
        output_json: String::new(),
    }
}

fn reply(task_id: &str, outcome: Option<&Outcome>) -> TaskReply {
    let (state, detail, retryable) = match outcome {
        None => (TaskState::Running, String::new(), true),
        Some(Outcome::Succeeded { detail, .. }) => (TaskState::Succeeded, detail.clone(), false),
        Some(Outcome::Failed { detail, retryable }) => (TaskState::Failed, detail.clone(), *retryable),
    };
    let output_json = match outcome {
        Some(Outcome::Succeeded { output: Some(o), .. }) => serde_json::to_string(o).unwrap_or_default(),
        _ => String::new(),
    };
    TaskReply {
        task_id: task_id.into(),
        state: state as i32,
        detail,
        retryable,
        output_json,
    }
}

/// What admission decided for a RunTask call.
enum Admission {
    /// Already finished: its journalled outcome.
    Done(Outcome),
    /// Running (just started, or started earlier under the same id): wait on it.
    Wait(watch::Receiver<Option<Outcome>>),
    /// Another task holds the instance.
    Busy(String),
    /// Another task holds the instance and was told to stop: admit again once it has.
    Preempting(watch::Receiver<Option<Outcome>>),
    /// `join_only`, and this host has no record of the task (now recorded as absent).
    Absent,
}

/// The outcome recorded for a task id this host was asked about and had no record of: a
/// request for it that arrives later gets this instead of running.
fn absent() -> Outcome {
    Outcome::Failed {
        detail: "this host manager had no record of the task when asked, so it will never run it".into(),
        retryable: true,
    }
}

impl HostService {
    /// A service over this journal and engine.
    pub fn new(config: HostConfig, journal: Arc<Journal>, engine: Arc<Postgres>, stores: Stores) -> Self {
        Self {
            config,
            journal,
            engine,
            running: Arc::default(),
            usage: Arc::default(),
            stores,
            archives: Archives::default(),
            progress: Arc::default(),
            confirmed: Arc::new(watch::channel(false).0),
        }
    }

    /// The answer for a task still running: its progress, if it reports one.
    fn running_reply(&self, task_id: &str) -> TaskReply {
        TaskReply {
            detail: self.progress_of(task_id),
            ..reply(task_id, None)
        }
    }

    /// What a running task says of its progress ("" if nothing).
    fn progress_of(&self, task_id: &str) -> String {
        let map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        map.get(task_id).map(|p| p.describe()).unwrap_or_default()
    }

    /// Keep a WAL archive running for every running instance whose database keeps
    /// backups, until `stop` (checked every second: an instance started, restored or
    /// restarted is archived again within it).
    pub async fn watch_archives(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            for spec in self.instances() {
                // A fenced instance's last WAL is moved by its fence task alone.
                if self.engine.fenced_at(&spec.id).is_some() {
                    continue;
                }
                let Some(lineage) = spec.backup_lineage.clone() else {
                    self.archives.stop(&spec.id);
                    continue;
                };
                if !self.engine.running(&spec.id) {
                    self.archives.stop(&spec.id);
                    continue;
                }
                // The store is opened only to start an archive, not on every pass.
                if self.archives.archiving(&spec.id, &lineage) {
                    continue;
                }
                match self.stores.zone(&self.config.zone) {
                    Ok(store) => {
                        let spool = self.spool(&spec.id);
                        self.archives.ensure(self.engine.clone(), &spec, &lineage, store, spool)
                    }
                    Err(e) => tracing::warn!(instance = %spec.id, error = %e, "Cannot archive WAL."),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn spool(&self, instance: &str) -> std::path::PathBuf {
        self.config.root.join("archive").join(instance)
    }

    /// Refresh the storage-use cache every few seconds until `stop` (a directory walk per
    /// instance is too slow to do inside a health report).
    pub async fn watch_usage(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let ids: Vec<String> = self.instances().into_iter().map(|s| s.id).collect();
            let engine = self.engine.clone();
            let measured = tokio::task::spawn_blocking(move || {
                ids.into_iter()
                    .map(|id| {
                        let bytes = engine.used_bytes(&id);
                        (id, bytes)
                    })
                    .collect::<HashMap<_, _>>()
            })
            .await
            .unwrap_or_default();
            *self.usage.lock().unwrap_or_else(|p| p.into_inner()) = measured;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(USAGE_EVERY) => {}
            }
        }
    }

    fn spec_path(&self, instance: &str) -> std::path::PathBuf {
        self.engine.volume(instance).join("instance.json")
    }

    /// At start, before serving: what a crashed host manager left half-made goes. A volume
    /// whose provisioning never completed, and any process still working in it, is removed
    /// (the leader sees that attempt as unknown to this host and runs a new one); a partial
    /// template's processes are killed (the next provision redoes it). Running postmasters
    /// of provisioned instances are adopted as they are.
    pub async fn reconcile(&self) {
        let partial = self.config.root.join("templates");
        if let Ok(entries) = std::fs::read_dir(&partial) {
            for e in entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            {
                let killed = self.engine.kill_orphans(&e.path());
                let _ = std::fs::remove_dir_all(e.path());
                tracing::warn!(path = %e.path().display(), killed, "Removed a half-made template.");
            }
        }
        let Ok(entries) = std::fs::read_dir(self.config.root.join("volumes")) else {
            return;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if self.engine.provisioned(&id) {
                if self.engine.running(&id) {
                    tracing::info!(instance = %id, "Adopted a running instance.");
                }
                continue;
            }
            let killed = self.engine.kill_orphans(&e.path());
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::warn!(instance = %id, killed, "Removed the volume of an interrupted provision."),
                Err(err) => {
                    tracing::error!(instance = %id, error = %err, "Cannot remove the volume of an interrupted provision.")
                }
            }
        }
    }

    /// Start every provisioned instance that was not stopped on purpose (after a host restart).
    pub async fn restore_instances(&self) {
        for spec in self.instances() {
            let fenced = self.engine.fenced_at(&spec.id).is_some();
            if fenced || self.engine.stopped_on_purpose(&spec.id) || self.engine.running(&spec.id) {
                continue;
            }
            match self.engine.start(&spec).await {
                Ok(()) => tracing::info!(instance = %spec.id, "Started an instance that should be running."),
                Err(e) => {
                    tracing::warn!(instance = %spec.id, error = %e, "Could not start an instance that should be running.")
                }
            }
        }
    }

    /// Stop every running instance, keeping what the control plane wants (used when the host shuts down).
    pub async fn shut_down_instances(&self) {
        for spec in self.instances() {
            if let Err(e) = self.engine.shut_down(&spec.id).await {
                tracing::warn!(instance = %spec.id, error = %e, "Could not stop an instance.");
            }
        }
    }

    fn instances(&self) -> Vec<InstanceSpec> {
        let Ok(entries) = std::fs::read_dir(self.config.root.join("volumes")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path().join("instance.json")).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    async fn execute(
        &self,
        action: TaskAction,
        instance: &str,
        spec: Option<InstanceSpec>,
        work: Option<TaskWork>,
        generation: u64,
        progress: Arc<Progress>,
    ) -> Outcome {
        let need = |spec: Option<InstanceSpec>| {
            spec.ok_or_else(|| EngineError::Unavailable(format!("action {action} needs an instance spec")))
        };
        let engine = &self.engine;
        let output: Mutex<Option<TaskOutput>> = Mutex::new(None);
        let output = &output;
        let run = async {
            let done: Result<String, EngineError> = match action {
                TaskAction::Provision => {
                    let spec = need(spec)?;
                    engine.provision(&spec).await?;
                    self.save_spec(&spec)?;
                    Ok(format!("volume {} ready", engine.volume(instance).display()))
                }
                TaskAction::Configure => {
                    let spec = need(spec)?;
                    engine.configure(&spec)?;
                    self.save_spec(&spec)?;
                    Ok("configuration written".into())
                }
                TaskAction::Start => {
                    engine.start(&need(spec)?).await?;
                    Ok("started".into())
                }
                TaskAction::Restart => {
                    let spec = need(spec)?;
                    engine.configure(&spec)?;
                    self.save_spec(&spec)?;
                    engine.restart(&spec).await?;
                    Ok("restarted".into())
                }
                TaskAction::Stop => {
                    self.archives.stop(instance);
                    engine.stop(instance).await?;
                    Ok("stopped".into())
                }
                TaskAction::Destroy => {
                    self.archives.stop(instance);
                    engine.destroy(instance).await?;
                    let _ = std::fs::remove_dir_all(self.spool(instance));
                    Ok("volume removed".into())
                }
                TaskAction::SetPassword => {
                    let spec = need(spec)?;
                    engine.set_password(&spec).await?;
                    // The saved spec carries the verifier a restart of this host restores with.
                    self.save_spec(&spec)?;
                    Ok("master password set".into())
                }
                TaskAction::SetAccess => {
                    let spec = need(spec)?;
                    engine.configure(&spec)?;
                    self.save_spec(&spec)?;
                    engine.reload(&spec).await?;
                    Ok("client access rules in force".into())
                }
                TaskAction::Check => Err(EngineError::Unavailable(
                    "check is observed through Health, not run as a task".into(),
                )),
                TaskAction::Snapshot => {
                    let (detail, made) = self.snapshot(need(spec)?, work).await?;
                    *output.lock().unwrap_or_else(|p| p.into_inner()) = Some(made);
                    Ok(detail)
                }
                TaskAction::Checkpoint => {
                    let made = engine.checkpoint(&need(spec)?).await?;
                    Ok(made.to_string())
                }
                TaskAction::DeleteBackup => self.delete_backup(work).await,
                TaskAction::CopyBackup => {
                    let (detail, made) = self.copy_backup(work).await?;
                    *output.lock().unwrap_or_else(|p| p.into_inner()) = Some(made);
                    Ok(detail)
                }
                TaskAction::Restore => {
                    let spec = need(spec)?;
                    let (detail, made) = self.restore(&spec, work, &progress).await?;
                    self.save_spec(&spec)?;
                    *output.lock().unwrap_or_else(|p| p.into_inner()) = Some(made);
                    Ok(detail)
                }
                TaskAction::Fence => self.fence(need(spec)?, work, generation).await,
                TaskAction::PrepareStandby | TaskAction::SyncStandby => {
                    let wait = action == TaskAction::SyncStandby;
                    let (detail, made) = self.replicate(&need(spec)?, wait).await?;
                    *output.lock().unwrap_or_else(|p| p.into_inner()) = Some(made);
                    Ok(detail)
                }
                TaskAction::Promote => {
                    let spec = need(spec)?;
                    // Leave the task's deadline a margin to configure and report in.
                    let within = TaskAction::Promote.deadline().saturating_sub(Duration::from_secs(30));
                    let promoted_at_ms = engine.promote(&spec, within).await?;
                    self.save_spec(&spec)?;
                    *output.lock().unwrap_or_else(|p| p.into_inner()) = Some(TaskOutput::Promoted { promoted_at_ms });
                    Ok("promoted: the primary now, taking writes".into())
                }
                TaskAction::BuildStandby => {
                    let spec = need(spec)?;
                    let detail = self.build_standby(&spec, work, &progress).await?;
                    self.save_spec(&spec)?;
                    Ok(detail)
                }
            };
            done
        };
        // The action's deadline is enforced here: dropping the work kills its child processes.
        let deadline = action.deadline();
        match tokio::time::timeout(deadline, run).await {
            Ok(Ok(detail)) => Outcome::Succeeded {
                detail,
                output: output.lock().unwrap_or_else(|p| p.into_inner()).take(),
            },
            Ok(Err(e)) => Outcome::Failed {
                retryable: e.retryable(),
                detail: e.to_string(),
            },
            Err(_) => Outcome::Failed {
                detail: format!("{action} did not finish within {deadline:?}; it was stopped"),
                retryable: true,
            },
        }
    }

    /// Admit a task in one step under the running-table lock: the fence check, the journal,
    /// the instance's running task, the slot count and the insert, so no task starts twice
    /// and no two run on one instance.
    fn admit(&self, a: Admit) -> Result<Admission, FenceError> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        self.journal.admit(&a.instance, a.fence)?;
        if let Some(fenced) = self.engine.fenced_at(&a.instance) {
            // Only the fence itself (again), a stop and a destroy, from the generation that
            // fenced it on.
            let allowed = matches!(a.action, TaskAction::Fence | TaskAction::Stop | TaskAction::Destroy)
                && a.generation >= fenced;
            if !allowed {
                return Err(FenceError::Fenced {
                    instance: a.instance.clone(),
                    generation: fenced,
                    given: a.generation,
                });
            }
        }
        if let Some(done) = self.journal.outcome(&a.task_id) {
            return Ok(Admission::Done(done));
        }
        if let Some(r) = running.get(&a.instance) {
            return Ok(if r.task_id == a.task_id {
                Admission::Wait(r.outcome.clone())
            } else if preempts(a.action, r.action) {
                tracing::warn!(instance = %a.instance, stopped = %r.task_id, by = %a.task_id, action = %a.action, "Stopping a snapshot: the instance is being promoted, fenced, stopped or destroyed.");
                r.yield_to.cancel();
                Admission::Preempting(r.outcome.clone())
            } else {
                Admission::Busy(r.task_id.clone())
            });
        }
        if a.join_only {
            self.record(&a.task_id, &absent());
            return Ok(Admission::Absent);
        }
        if a.action == TaskAction::Provision && !self.spec_path(&a.instance).exists() {
            // Provisions under way count against the slots too.
            let provisioning = running
                .iter()
                .filter(|(i, r)| r.action == TaskAction::Provision && !self.spec_path(i).exists())
                .count();
            let in_use = self.instances().len() + provisioning;
            if in_use as u32 >= self.config.instance_slots {
                let full = Outcome::Failed {
                    detail: format!(
                        "host {} has no free instance slot ({} of {} in use)",
                        self.config.name, in_use, self.config.instance_slots
                    ),
                    retryable: false,
                };
                self.record(&a.task_id, &full);
                return Ok(Admission::Done(full));
            }
        }
        let (tx, rx) = watch::channel(None);
        let yield_to = tokio_util::sync::CancellationToken::new();
        running.insert(
            a.instance.clone(),
            Running {
                task_id: a.task_id.clone(),
                action: a.action,
                outcome: rx.clone(),
                yield_to: yield_to.clone(),
            },
        );
        let this = self.clone();
        let Admit {
            task_id,
            instance,
            action,
            spec,
            work,
            fence,
            generation,
            ..
        } = a;
        let progress = Arc::new(Progress::default());
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task_id.clone(), progress.clone());
        // The task runs to the end even if the caller gives up waiting; its outcome is journalled.
        tokio::spawn(async move {
            tracing::info!(task = %task_id, %action, instance = %instance, fence, "Running task.");
            let mut work = {
                let (this, instance) = (this.clone(), instance.clone());
                tokio::spawn(async move { this.execute(action, &instance, spec, work, generation, progress).await })
            };
            let outcome = tokio::select! {
                // A panic in the work is an outcome too, or the instance would stay busy for ever.
                done = &mut work => done.unwrap_or_else(|e| Outcome::Failed {
                    detail: format!("the task stopped unexpectedly: {e}"),
                    retryable: true,
                }),
                () = yield_to.cancelled() => {
                    // Dropping the work kills its child processes, as a deadline does.
                    work.abort();
                    let _ = work.await;
                    Outcome::Failed {
                        detail: format!("{action} was stopped before it finished: the instance is being promoted, fenced, stopped or destroyed, which does not wait for it"),
                        retryable: true,
                    }
                }
            };
            this.record(&task_id, &outcome);
            this.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_id);
            tracing::info!(task = %task_id, ?outcome, "Task finished.");
            let mut running = this.running.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(Some(outcome));
            running.remove(&instance);
        });
        Ok(Admission::Wait(rx))
    }

    fn record(&self, task_id: &str, outcome: &Outcome) {
        if let Err(e) = self.journal.record(task_id, outcome) {
            tracing::error!(task = %task_id, error = %e, "Cannot journal a task outcome; it will run again if re-sent.");
        }
    }

    fn save_spec(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec_pretty(spec).map_err(|e| EngineError::Io {
            what: "encode instance spec".into(),
            source: std::io::Error::other(e),
        })?;
        // The spec holds the master password's verifier: readable by the host manager only.
        let path = self.spec_path(&spec.id);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            std::io::Write::write_all(&mut f, &bytes)
        };
        write().map_err(|source| EngineError::Io {
            what: "save instance spec".into(),
            source,
        })
    }

    async fn wait(&self, task_id: &str, mut rx: watch::Receiver<Option<Outcome>>) -> TaskReply {
        let done = tokio::time::timeout(ANSWER_WITHIN, rx.wait_for(|o| o.is_some())).await;
        let outcome = match done {
            Ok(Ok(o)) => o.clone(),
            _ => None,
        };
        match outcome {
            Some(o) => reply(task_id, Some(&o)),
            None => self.running_reply(task_id),
        }
    }
}

#[tonic::async_trait]
impl HostManager for HostService {
    async fn health(&self, req: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        let req = req.into_inner();
        self.fence_named(&req.fenced);
        if req.from_monitor {
            self.confirmed.send_replace(true);
        }
        let specs = self.instances();
        let probes = futures::future::join_all(specs.iter().map(|spec| self.engine.health(spec, PROBE_WITHIN))).await;
        self.engine.retain_probes(|id| specs.iter().any(|s| s.id == id));
        let usage = self.usage.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let instances_health = specs
            .iter()
            .zip(probes)
            .map(|(spec, h)| {
                let archive = self.archives.coverage(&spec.id).unwrap_or_default();
                InstanceHealth {
                    instance_id: spec.id.clone(),
                    running: h.running,
                    accepting: h.accepting,
                    used_bytes: usage.get(&spec.id).copied().unwrap_or(0),
                    allocated_bytes: u64::from(spec.storage_gib) << 30,
                    problem: h.problem.unwrap_or_default(),
                    archive_lineage: archive.lineage,
                    archive_timeline: archive.timeline,
                    archived_lsn: if archive.archived_lsn > 0 {
                        crate::backup::wal::format_lsn(archive.archived_lsn)
                    } else {
                        String::new()
                    },
                    restorable_until_ms: archive.restorable_until_ms,
                    archive_problem: archive.problem.unwrap_or_default(),
                    fenced_at: self.engine.fenced_at(&spec.id).unwrap_or(0),
                    standbys: h
                        .standbys
                        .into_iter()
                        .map(|(id, s)| keel_proto::host::StandbyHealth {
                            instance_id: id,
                            state: s.state,
                            sync: s.sync,
                            lag_bytes: s.lag_bytes,
                            replay_lag_ms: s.replay_lag_ms,
                            silent_ms: s.silent_ms,
                        })
                        .collect(),
                    upstream: h.upstream.map(|u| keel_proto::host::UpstreamHealth {
                        streaming: u.streaming,
                        silent_ms: u.silent_ms,
                    }),
                }
            })
            .collect();
        Ok(Response::new(HealthReply {
            name: self.config.name.clone(),
            zone: self.config.zone.clone(),
            instance_slots: self.config.instance_slots,
            instances: specs.len() as u32,
            disk_gib: self.config.disk_gib,
            engine_version: self.engine.version(),
            instances_health,
        }))
    }

    async fn run_task(&self, req: Request<TaskRequest>) -> Result<Response<TaskReply>, Status> {
        let r = req.into_inner();
        if !valid_id(&r.task_id) || !valid_id(&r.instance_id) {
            return Err(Status::invalid_argument(
                "task and instance ids must be 1-128 letters, digits, '-' or '_'",
            ));
        }
        let action = action_from_wire(r.action)
            .filter(|a| *a != TaskAction::Check)
            .ok_or_else(|| Status::invalid_argument(format!("task action {} is not one this host runs", r.action)))?;
        let spec: Option<InstanceSpec> = if r.spec_json.is_empty() {
            None
        } else {
            let spec: InstanceSpec = serde_json::from_str(&r.spec_json)
                .map_err(|e| Status::invalid_argument(format!("instance spec is not valid: {e}")))?;
            if spec.id != r.instance_id {
                return Err(Status::invalid_argument("instance spec is for another instance"));
            }
            let valid = if action == TaskAction::Provision {
                spec.validate_new()
            } else {
                spec.validate()
            };
            valid.map_err(|e| Status::invalid_argument(e.to_string()))?;
            Some(spec)
        };
        let work: Option<TaskWork> = if r.work_json.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str(&r.work_json)
                    .map_err(|e| Status::invalid_argument(format!("task work is not valid: {e}")))?,
            )
        };
        let admit = Admit {
            task_id: r.task_id.clone(),
            instance: r.instance_id.clone(),
            action,
            spec,
            work,
            fence: r.fence,
            generation: r.generation,
            join_only: r.join_only,
        };
        let admission = loop {
            let admission = self.admit(admit.clone()).map_err(|e| match e {
                FenceError::Stale(s) => Status::failed_precondition(s.to_string()),
                e @ FenceError::Fenced { .. } => Status::failed_precondition(e.to_string()),
                FenceError::Io(e) => Status::unavailable(format!("cannot persist the fencing token: {e}")),
            })?;
            match admission {
                // Its outcome is sent as it leaves the running table (one lock): admitted
                // again once it is there.
                Admission::Preempting(mut stopping) => {
                    let _ = stopping.wait_for(Option::is_some).await;
                }
                other => break other,
            }
        };
        match admission {
            Admission::Done(outcome) => Ok(Response::new(reply(&r.task_id, Some(&outcome)))),
            Admission::Wait(rx) => Ok(Response::new(self.wait(&r.task_id, rx).await)),
            Admission::Busy(other) => Ok(Response::new(TaskReply {
                task_id: r.task_id,
                state: TaskState::Busy as i32,
                detail: format!(
                    "task {other} is running on instance {}; nothing was started",
                    r.instance_id
                ),
                retryable: true,
                output_json: String::new(),
            })),
            Admission::Absent => Ok(Response::new(unknown(&r.task_id))),
            Admission::Preempting(_) => unreachable!("admitted again above until it is not"),
        }
    }

    async fn task_status(&self, req: Request<TaskStatusRequest>) -> Result<Response<TaskReply>, Status> {
        let id = req.into_inner().task_id;
        if !valid_id(&id) {
            return Err(Status::invalid_argument(
                "task ids are 1-128 letters, digits, '-' or '_'",
            ));
        }
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = self.journal.outcome(&id) {
            return Ok(Response::new(reply(&id, Some(&done))));
        }
        if running.values().any(|r| r.task_id == id) {
            return Ok(Response::new(self.running_reply(&id)));
        }
        // Recorded as absent, under the lock, so a request for it still in flight never runs.
        self.record(&id, &absent());
        Ok(Response::new(unknown(&id)))
    }
}
