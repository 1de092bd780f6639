//! The `keel.host.v1` service: admit (fence), deduplicate (journal), run, record.

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
use crate::backup::work::{snapshot_prefix, TaskWork};
use keel_raft_store::TaskOutput;

/// How long a RunTask call waits for the task before answering "running".
const ANSWER_WITHIN: Duration = Duration::from_secs(20);
/// How long one instance's SQL probe may take in a health report (probes run concurrently,
/// so a hung instance costs the report this, never its host's reachability).
const PROBE_WITHIN: Duration = Duration::from_millis(800);
/// How often the storage-use cache the health report reads is refreshed.
const USAGE_EVERY: Duration = Duration::from_secs(5);

/// The task running on one instance: its id, what it does, and where its outcome will appear.
struct Running {
    task_id: String,
    action: TaskAction,
    outcome: watch::Receiver<Option<Outcome>>,
}

/// What a RunTask asks to be admitted.
struct Admit {
    task_id: String,
    instance: String,
    action: TaskAction,
    spec: Option<InstanceSpec>,
    work: Option<TaskWork>,
    fence: u64,
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
            if self.engine.stopped_on_purpose(&spec.id) || self.engine.running(&spec.id) {
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
                TaskAction::DeleteBackup => self.delete_backup(work).await,
                TaskAction::CopyBackup => {
                    let (detail, made) = self.copy_backup(work).await?;
                    *output.lock().unwrap_or_else(|p| p.into_inner()) = Some(made);
                    Ok(detail)
                }
                TaskAction::Restore => {
                    let spec = need(spec)?;
                    let detail = self.restore(&spec, work, &progress).await?;
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
        if let Some(done) = self.journal.outcome(&a.task_id) {
            return Ok(Admission::Done(done));
        }
        if let Some(r) = running.get(&a.instance) {
            return Ok(if r.task_id == a.task_id {
                Admission::Wait(r.outcome.clone())
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
        running.insert(
            a.instance.clone(),
            Running {
                task_id: a.task_id.clone(),
                action: a.action,
                outcome: rx.clone(),
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
            let work = {
                let (this, instance) = (this.clone(), instance.clone());
                tokio::spawn(async move { this.execute(action, &instance, spec, work, progress).await })
            };
            // A panic in the work is an outcome too, or the instance would stay busy for ever.
            let outcome = work.await.unwrap_or_else(|e| Outcome::Failed {
                detail: format!("the task stopped unexpectedly: {e}"),
                retryable: true,
            });
            this.record(&task_id, &outcome);
            this.progress.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_id);
            tracing::info!(task = %task_id, ?outcome, "Task finished.");
            let mut running = this.running.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.send(Some(outcome));
            running.remove(&instance);
        });
        Ok(Admission::Wait(rx))
    }

    /// Take a snapshot of the running instance, verify it and store it in this zone's
    /// store; on any failure nothing of it stays in the store.
    async fn snapshot(&self, spec: InstanceSpec, work: Option<TaskWork>) -> Result<(String, TaskOutput), EngineError> {
        let Some(TaskWork::Snapshot { lineage, id }) = work else {
            return Err(EngineError::Unavailable(
                "a snapshot task needs its lineage and id".into(),
            ));
        };
        let store = self
            .stores
            .zone(&self.config.zone)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let dir = self.config.root.join("snapshots").join(&spec.id);
        let taken = self.engine.snapshot(&spec, &dir).await;
        let taken_at_ms = crate::clock::now_ms();
        let snap = match taken {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let prefix = snapshot_prefix(&lineage, &id);
        let mut objects = Vec::new();
        let mut failure = None;
        for file in &snap.files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match store.put_file(&format!("{prefix}{name}"), file).await {
                Ok(o) => objects.push(o),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(e) = failure {
            for o in &objects {
                let _ = store.delete(&o.key).await;
            }
            return Err(EngineError::Command {
                what: "store the snapshot".into(),
                detail: e.to_string(),
            });
        }
        let bytes: u64 = objects.iter().map(|o| o.size).sum();
        let detail = format!(
            "snapshot verified and stored in {} ({bytes} bytes, WAL {} to {})",
            store.name(),
            snap.start_lsn,
            snap.end_lsn
        );
        let output = TaskOutput::Snapshot {
            taken_at_ms,
            timeline: snap.timeline,
            start_lsn: snap.start_lsn,
            end_lsn: snap.end_lsn,
            objects,
            zone: self.config.zone.clone(),
        };
        Ok((detail, output))
    }

    /// Remove a snapshot's objects, and the WAL no remaining snapshot needs, from a
    /// zone's store (idempotent: a missing object counts as removed).
    async fn delete_backup(&self, work: Option<TaskWork>) -> Result<String, EngineError> {
        let Some(TaskWork::DeleteBackup {
            zone,
            keys,
            control_keys,
            wal_before,
        }) = work
        else {
            return Err(EngineError::Unavailable(
                "a delete-backup task needs its objects".into(),
            ));
        };
        let unusable = |e: crate::backup::store::StoreError| EngineError::Unavailable(e.to_string());
        let mut stores = vec![(self.stores.zone(&zone).map_err(unusable)?, keys)];
        // The control store holds a copy only if the daily copy made one; its WAL copy goes too.
        if let Ok(control) = self.stores.control() {
            stores.push((control, control_keys));
        }
        let mut removed = (0, 0);
        for (store, keys) in stores {
            let (objects, wal) =
                Self::remove(&store, &keys, wal_before.as_ref())
                    .await
                    .map_err(|e| EngineError::Command {
                        what: "delete backup objects".into(),
                        detail: e.to_string(),
                    })?;
            removed.0 += objects;
            removed.1 += wal;
        }
        Ok(format!(
            "removed {} snapshot objects and {} WAL objects",
            removed.0, removed.1
        ))
    }

    /// Remove `keys` from `store`, and the WAL `wal_before` says no snapshot needs.
    async fn remove(
        store: &crate::backup::store::BackupStore,
        keys: &[String],
        wal_before: Option<&(String, u64)>,
    ) -> Result<(usize, usize), crate::backup::store::StoreError> {
        for key in keys {
            store.delete(key).await?;
        }
        let mut wal = 0;
        if let Some((lineage, before)) = wal_before {
            let prefix = crate::backup::work::wal_prefix(lineage);
            for key in store.list(&prefix).await? {
                let file = key.rsplit('/').next().unwrap_or(&key);
                let Some(obj) = crate::backup::wal::WalObject::parse(file) else {
                    continue;
                };
                let end = crate::backup::wal::segment_start(obj.name()).map(|s| s + crate::backup::wal::SEGMENT_BYTES);
                // History files go only with the whole lineage.
                let unneeded = match end {
                    Some(end) => end <= *before,
                    None => *before == u64::MAX,
                };
                if unneeded {
                    store.delete(&key).await?;
                    wal += 1;
                }
            }
        }
        Ok((keys.len(), wal))
    }

    /// Make the instance from a snapshot and the archive, replayed to the target.
    async fn restore(
        &self,
        spec: &InstanceSpec,
        work: Option<TaskWork>,
        progress: &Arc<Progress>,
    ) -> Result<String, EngineError> {
        let Some(TaskWork::Restore {
            lineage,
            sources,
            choice,
            target,
        }) = work
        else {
            return Err(EngineError::Unavailable(
                "a restore task needs its snapshot and target".into(),
            ));
        };
        if self.engine.provisioned(&spec.id) {
            self.engine.start(spec).await?;
            return Ok("already restored".into());
        }
        let dir = self.config.root.join("restores").join(&spec.id);
        let (files, wal) = (dir.join("snapshot"), dir.join("wal"));
        // The first copy that fetches whole serves; each failure is kept for the record.
        let mut failures = Vec::new();
        let started = std::time::Instant::now();
        let mut fetched = None;
        for source in &sources {
            progress.phase(&format!("fetching the backup from {}", source.copy));
            match self.fetch(source, &lineage, &dir, progress).await {
                Ok(bytes) => {
                    fetched = Some((source, bytes));
                    break;
                }
                Err(e) => {
                    tracing::warn!(instance = %spec.id, copy = %source.copy, error = %e, "A copy of the backup could not be fetched; trying the next.");
                    failures.push(format!("{}: {e}", source.copy));
                }
            }
        }
        let Some((source, (base, logs))) = fetched else {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(EngineError::Command {
                what: "fetch the backup".into(),
                detail: failures.join("; "),
            });
        };
        let fetch_time = started.elapsed();
        progress.phase(&format!(
            "fetched {:.1} MiB in {:.1} s; replaying WAL to the target and promoting",
            (base + logs) as f64 / (1 << 20) as f64,
            fetch_time.as_secs_f64()
        ));
        let replay = self
            .engine
            .restore(spec, &files, &wal, &target, TaskAction::Restore.deadline())
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        replay?;
        let fallback = if failures.is_empty() {
            format!("chosen: {choice}")
        } else {
            format!("after {} failed: {}", failures.len(), failures.join("; "))
        };
        Ok(format!(
            "restored from {} ({fallback}); {base} bytes of snapshot and {logs} bytes of WAL fetched in {:.1}s, replayed and promoted in {:.1}s",
            source.copy,
            fetch_time.as_secs_f64(),
            (started.elapsed() - fetch_time).as_secs_f64()
        ))
    }

    /// Fetch one copy's snapshot and WAL into `dir` (emptied first); bytes of each.
    async fn fetch(
        &self,
        source: &crate::backup::work::RestoreFrom,
        lineage: &str,
        dir: &std::path::Path,
        progress: &Arc<Progress>,
    ) -> Result<(u64, u64), String> {
        let store = match source.tier {
            keel_raft_store::BackupTier::Zone => self.stores.zone(&source.zone),
            keel_raft_store::BackupTier::Control => self.stores.control(),
        }
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(dir);
        let (files, wal) = (dir.join("snapshot"), dir.join("wal"));
        for d in [&files, &wal] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot make {}: {e}", d.display()))?;
        }
        self.engine.chown(dir).map_err(|e| e.to_string())?;
        let base = crate::backup::fetch::snapshot(&store, &source.objects, &files, progress)
            .await
            .map_err(|e| e.to_string())?;
        let start = crate::backup::wal::parse_lsn(&source.start_lsn).unwrap_or(0);
        let logs = crate::backup::fetch::wal(&store, lineage, start, &wal, progress)
            .await
            .map_err(|e| e.to_string())?;
        Ok((base, logs))
    }

    /// Copy a snapshot and its lineage's WAL from a zone's store to the control store,
    /// every object checked on the way; objects already there (same name, same sum) stay.
    async fn copy_backup(&self, work: Option<TaskWork>) -> Result<(String, TaskOutput), EngineError> {
        let Some(TaskWork::CopyBackup {
            zone,
            lineage,
            objects,
            start_lsn,
            wal_until_ms,
        }) = work
        else {
            return Err(EngineError::Unavailable("a copy-backup task needs its snapshot".into()));
        };
        let unusable = |e: crate::backup::store::StoreError| EngineError::Unavailable(e.to_string());
        let (from, to) = (
            self.stores.zone(&zone).map_err(unusable)?,
            self.stores.control().map_err(unusable)?,
        );
        let failed = |e: crate::backup::store::StoreError| EngineError::Command {
            what: "copy the backup".into(),
            detail: e.to_string(),
        };
        let scratch = self.config.root.join("copies");
        std::fs::create_dir_all(&scratch).map_err(|source| EngineError::Io {
            what: "make the copy directory".into(),
            source,
        })?;
        let tmp = scratch.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
        let copy = |o: crate::backup::store::StoredObject| {
            let (from, to, tmp) = (from.clone(), to.clone(), tmp.clone());
            async move {
                from.get_file(&o, &tmp).await?;
                let stored = to.put_file(&o.key, &tmp).await?;
                let _ = std::fs::remove_file(&tmp);
                Ok::<_, crate::backup::store::StoreError>(stored)
            }
        };
        let mut copied = Vec::new();
        for o in objects {
            copied.push(copy(o).await.map_err(failed)?);
        }
        // The WAL from the snapshot's start on, as far as the zone store has it now.
        let prefix = crate::backup::work::wal_prefix(&lineage);
        let there: std::collections::BTreeSet<String> = to.list(&prefix).await.map_err(failed)?.into_iter().collect();
        let start = crate::backup::wal::parse_lsn(&start_lsn).unwrap_or(0);
        let mut wal = 0;
        for key in from.list(&prefix).await.map_err(failed)? {
            let file = key.rsplit('/').next().unwrap_or(&key).to_string();
            let Some(obj) = crate::backup::wal::WalObject::parse(&file) else {
                continue;
            };
            let needed = crate::backup::wal::segment_start(obj.name())
                .is_none_or(|s| s + crate::backup::wal::SEGMENT_BYTES > start);
            if !needed || there.contains(&key) {
                continue;
            }
            let sha256 = file.rsplit('.').next().unwrap_or_default().to_string();
            copy(crate::backup::store::StoredObject { key, size: 0, sha256 })
                .await
                .map_err(failed)?;
            wal += 1;
        }
        let detail = format!(
            "copied {} snapshot objects and {wal} WAL objects from {} to {}",
            copied.len(),
            from.name(),
            to.name()
        );
        Ok((
            detail,
            TaskOutput::ControlCopy {
                objects: copied,
                wal_until_ms,
            },
        ))
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
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        let specs = self.instances();
        let probes = futures::future::join_all(specs.iter().map(|spec| self.engine.health(spec, PROBE_WITHIN))).await;
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
        let admission = self
            .admit(Admit {
                task_id: r.task_id.clone(),
                instance: r.instance_id.clone(),
                action,
                spec,
                work,
                fence: r.fence,
                join_only: r.join_only,
            })
            .map_err(|e| match e {
                FenceError::Stale(s) => Status::failed_precondition(s.to_string()),
                FenceError::Io(e) => Status::unavailable(format!("cannot persist the fencing token: {e}")),
            })?;
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
