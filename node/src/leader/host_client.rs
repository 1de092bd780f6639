//! The leader's gRPC calls to host managers, each carrying the services' fence.
//!
//! Channels are built per run of the services (a [`HostClients`] lives in one
//! run) and every host gets a bounded number of concurrent tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use keel_proto::host::host_manager_client::HostManagerClient;
use keel_proto::host::{HealthReply, HealthRequest, TaskReply, TaskRequest, TaskState, TaskStatusRequest};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use super::seams::{Hosts, TaskResult};
use crate::host::wire::state_from_wire;

/// Tasks one host runs at once.
pub const PER_HOST_TASKS: usize = 4;
/// Pause before re-sending to a host that is busy with another task on the instance.
const BUSY_PAUSE: Duration = Duration::from_millis(200);

/// A channel to one host manager and its task slots.
type HostLink = (Channel, Arc<Semaphore>);

/// Channels (mutual TLS: only a host manager of this cluster is called) and per-host task slots.
#[derive(Clone)]
pub struct HostClients {
    tls: Arc<rustls::ClientConfig>,
    channels: Arc<Mutex<HashMap<String, HostLink>>>,
}

/// A reply's meaning; `Running` also stands for `Busy` (nothing of ours runs yet: send again).
fn result_of(r: TaskReply) -> TaskResult {
    match state_from_wire(r.state) {
        TaskState::Succeeded if r.output_json.is_empty() => TaskResult::Succeeded(r.detail, None),
        TaskState::Succeeded => match serde_json::from_str(&r.output_json) {
            Ok(output) => TaskResult::Succeeded(r.detail, Some(output)),
            Err(e) => TaskResult::Failed {
                detail: format!("the host's output for the catalog is not readable ({e}): {}", r.detail),
                retryable: false,
            },
        },
        TaskState::Failed => TaskResult::Failed {
            detail: r.detail,
            retryable: r.retryable,
        },
        TaskState::Running => TaskResult::Running(r.detail),
        TaskState::Busy => TaskResult::Running(String::new()),
        TaskState::Unknown => TaskResult::Absent,
        TaskState::Unspecified => TaskResult::Unknown(format!("the host answered an unknown task state {}", r.state)),
    }
}

/// A failed call's meaning: refusals are final, everything else leaves the outcome unknown.
fn status_result(addr: &str, s: &tonic::Status) -> TaskResult {
    match s.code() {
        tonic::Code::FailedPrecondition => TaskResult::Fenced(s.message().into()),
        tonic::Code::InvalidArgument => TaskResult::Failed {
            detail: s.message().into(),
            retryable: false,
        },
        _ => TaskResult::Unknown(format!("host manager at {addr} did not answer: {}", s.message())),
    }
}

impl HostClients {
    /// Clients whose connections are configured by `tls`.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            tls,
            channels: Arc::default(),
        }
    }

    fn get(&self, addr: &str) -> Result<(HostManagerClient<Channel>, Arc<Semaphore>), String> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, s)) = map.get(addr) {
            return Ok((HostManagerClient::new(c.clone()), s.clone()));
        }
        let channel = crate::tls::link::channel(addr, self.tls.clone(), Duration::from_secs(2))
            .map_err(|e| format!("bad host address {addr}: {e}"))?;
        let slots = Arc::new(Semaphore::new(PER_HOST_TASKS));
        map.insert(addr.to_string(), (channel.clone(), slots.clone()));
        Ok((HostManagerClient::new(channel), slots))
    }

    async fn run(&self, addr: &str, req: TaskRequest, deadline: Duration) -> TaskResult {
        let (mut client, slots) = match self.get(addr) {
            Ok(c) => c,
            Err(e) => {
                return TaskResult::Failed {
                    detail: e,
                    retryable: false,
                }
            }
        };
        let Ok(_slot) = slots.acquire_owned().await else {
            return TaskResult::Unknown("host slots closed".into());
        };
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return TaskResult::Unknown(format!("no outcome within {deadline:?}"));
            }
            let mut call = tonic::Request::new(req.clone());
            call.set_timeout(left.min(Duration::from_secs(30)));
            match client.run_task(call).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    let busy = state_from_wire(reply.state) == TaskState::Busy;
                    match result_of(reply) {
                        // Still running (re-sends are deduplicated by the host and wait again),
                        // or another task holds the instance: nothing of ours started yet.
                        TaskResult::Running(_) => {
                            if busy {
                                tokio::time::sleep(BUSY_PAUSE.min(left)).await;
                            }
                        }
                        other => return other,
                    }
                }
                Err(s) => return status_result(addr, &s),
            }
        }
    }

    async fn status(&self, addr: &str, task_id: &str) -> TaskResult {
        let (mut client, _) = match self.get(addr) {
            Ok(c) => c,
            Err(e) => return TaskResult::Unknown(e),
        };
        let mut call = tonic::Request::new(TaskStatusRequest {
            task_id: task_id.to_string(),
        });
        call.set_timeout(Duration::from_secs(5));
        match client.task_status(call).await {
            Ok(reply) => result_of(reply.into_inner()),
            Err(s) => status_result(addr, &s),
        }
    }

    async fn health_report(&self, addr: &str, req: HealthRequest, timeout: Duration) -> Result<HealthReply, String> {
        let (mut client, _) = self.get(addr)?;
        let mut call = tonic::Request::new(req);
        call.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.health(call)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("host manager at {addr} unreachable: {}", s.message())),
            Err(_) => Err(format!("host manager at {addr} did not answer within {timeout:?}")),
        }
    }
}

impl Hosts for HostClients {
    fn run_task(&self, addr: &str, req: TaskRequest, deadline: Duration) -> BoxFuture<'_, TaskResult> {
        let addr = addr.to_string();
        Box::pin(async move { self.run(&addr, req, deadline).await })
    }

    fn task_status(&self, addr: &str, task_id: &str) -> BoxFuture<'_, TaskResult> {
        let (addr, task_id) = (addr.to_string(), task_id.to_string());
        Box::pin(async move { self.status(&addr, &task_id).await })
    }

    fn health(&self, addr: &str, req: HealthRequest, timeout: Duration) -> BoxFuture<'_, Result<HealthReply, String>> {
        let addr = addr.to_string();
        Box::pin(async move { self.health_report(&addr, req, timeout).await })
    }
}
