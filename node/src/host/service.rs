//! The `keel.host.v1` service: admit (fence), deduplicate (journal), run, record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_proto::host::host_manager_server::HostManager;
use keel_proto::host::{HealthReply, HealthRequest, InstanceHealth, TaskReply, TaskRequest, TaskStatusRequest};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::engine::postgres::Postgres;
use super::engine::{EngineError, InstanceSpec};
use super::journal::{valid_id, FenceError, Journal, Outcome};
use super::HostConfig;

/// How long a RunTask call waits for the task before answering "running".
const ANSWER_WITHIN: Duration = Duration::from_secs(20);

/// The host manager's gRPC service.
#[derive(Clone)]
pub struct HostService {
    config: HostConfig,
    journal: Arc<Journal>,
    engine: Arc<Postgres>,
    running: Arc<Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>>,
}

fn reply(task_id: &str, outcome: Option<&Outcome>) -> TaskReply {
    match outcome {
        None => TaskReply {
            task_id: task_id.into(),
            state: "running".into(),
            detail: String::new(),
            retryable: true,
        },
        Some(Outcome::Succeeded { detail }) => TaskReply {
            task_id: task_id.into(),
            state: "succeeded".into(),
            detail: detail.clone(),
            retryable: false,
        },
        Some(Outcome::Failed { detail, retryable }) => TaskReply {
            task_id: task_id.into(),
            state: "failed".into(),
            detail: detail.clone(),
            retryable: *retryable,
        },
    }
}

impl HostService {
    /// A service over this journal and engine.
    pub fn new(config: HostConfig, journal: Arc<Journal>, engine: Arc<Postgres>) -> Self {
        Self {
            config,
            journal,
            engine,
            running: Arc::default(),
        }
    }

    fn spec_path(&self, instance: &str) -> std::path::PathBuf {
        self.engine.volume(instance).join("instance.json")
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

    async fn execute(&self, action: &str, instance: &str, spec: Option<InstanceSpec>) -> Outcome {
        let need = |spec: Option<InstanceSpec>| {
            spec.ok_or_else(|| EngineError::Unavailable(format!("action {action} needs an instance spec")))
        };
        let engine = &self.engine;
        let result: Result<String, EngineError> = async {
            match action {
                "provision" => {
                    let spec = need(spec)?;
                    let fresh = !self.spec_path(instance).exists();
                    if fresh && self.instances().len() as u32 >= self.config.instance_slots {
                        return Err(EngineError::Unavailable(format!(
                            "host {} has no free instance slot ({} in use)",
                            self.config.name, self.config.instance_slots
                        )));
                    }
                    engine.provision(&spec).await?;
                    self.save_spec(&spec)?;
                    Ok(format!("volume {} ready", engine.volume(instance).display()))
                }
                "configure" => {
                    let spec = need(spec)?;
                    engine.configure(&spec)?;
                    self.save_spec(&spec)?;
                    Ok("configuration written".into())
                }
                "start" => {
                    engine.start(&need(spec)?).await?;
                    Ok("started".into())
                }
                "restart" => {
                    let spec = need(spec)?;
                    engine.configure(&spec)?;
                    self.save_spec(&spec)?;
                    engine.restart(&spec).await?;
                    Ok("restarted".into())
                }
                "stop" => {
                    engine.stop(instance).await?;
                    Ok("stopped".into())
                }
                "destroy" => {
                    engine.destroy(instance).await?;
                    Ok("volume removed".into())
                }
                other => Err(EngineError::Unavailable(format!("unknown action {other:?}"))),
            }
        }
        .await;
        match result {
            Ok(detail) => Outcome::Succeeded { detail },
            Err(e) => Outcome::Failed {
                retryable: e.retryable(),
                detail: e.to_string(),
            },
        }
    }

    fn save_spec(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        let bytes = serde_json::to_vec_pretty(spec).map_err(|e| EngineError::Io {
            what: "encode instance spec".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(self.spec_path(&spec.id), bytes).map_err(|source| EngineError::Io {
            what: "save instance spec".into(),
            source,
        })
    }

    async fn wait(task_id: &str, mut rx: watch::Receiver<Option<Outcome>>) -> TaskReply {
        let done = tokio::time::timeout(ANSWER_WITHIN, rx.wait_for(|o| o.is_some())).await;
        let outcome = match done {
            Ok(Ok(o)) => o.clone(),
            _ => None,
        };
        reply(task_id, outcome.as_ref())
    }
}

#[tonic::async_trait]
impl HostManager for HostService {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        let specs = self.instances();
        let mut instances_health = Vec::new();
        for spec in &specs {
            let h = self.engine.health(spec).await;
            instances_health.push(InstanceHealth {
                instance_id: spec.id.clone(),
                running: h.running,
                accepting: h.accepting,
                used_bytes: h.used_bytes,
                allocated_bytes: u64::from(spec.storage_gib) << 30,
                problem: h.problem.unwrap_or_default(),
            });
        }
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
        self.journal.admit(&r.instance_id, r.term).map_err(|e| match e {
            FenceError::Stale(s) => Status::failed_precondition(s.to_string()),
            FenceError::Io(e) => Status::unavailable(format!("cannot persist the fencing term: {e}")),
        })?;
        if let Some(done) = self.journal.outcome(&r.task_id) {
            return Ok(Response::new(reply(&r.task_id, Some(&done))));
        }
        let existing = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.task_id)
            .cloned();
        if let Some(rx) = existing {
            return Ok(Response::new(Self::wait(&r.task_id, rx).await));
        }
        let spec: Option<InstanceSpec> = if r.spec_json.is_empty() {
            None
        } else {
            let spec: InstanceSpec = serde_json::from_str(&r.spec_json)
                .map_err(|e| Status::invalid_argument(format!("instance spec is not valid: {e}")))?;
            if spec.id != r.instance_id {
                return Err(Status::invalid_argument("instance spec is for another instance"));
            }
            Some(spec)
        };
        let (tx, rx) = watch::channel(None);
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.task_id.clone(), rx.clone());
        let this = self.clone();
        let (task_id, action, instance) = (r.task_id.clone(), r.action.clone(), r.instance_id.clone());
        // The task runs to the end even if the caller gives up waiting; its outcome is journalled.
        tokio::spawn(async move {
            tracing::info!(task = %task_id, %action, instance = %instance, term = r.term, "Running task.");
            let outcome = this.execute(&action, &instance, spec).await;
            if let Err(e) = this.journal.record(&task_id, &outcome) {
                tracing::error!(task = %task_id, error = %e, "Cannot journal a task outcome; it will run again if re-sent.");
            }
            tracing::info!(task = %task_id, ?outcome, "Task finished.");
            let _ = tx.send(Some(outcome));
            this.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&task_id);
        });
        Ok(Response::new(Self::wait(&r.task_id, rx).await))
    }

    async fn task_status(&self, req: Request<TaskStatusRequest>) -> Result<Response<TaskReply>, Status> {
        let id = req.into_inner().task_id;
        if let Some(done) = self.journal.outcome(&id) {
            return Ok(Response::new(reply(&id, Some(&done))));
        }
        if self.running.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id) {
            return Ok(Response::new(reply(&id, None)));
        }
        Err(Status::not_found(format!(
            "task {id} is unknown to this host manager (never sent, or sent before a restart and not finished); send it again"
        )))
    }
}
