//! The leader's calls to host managers, each carrying the leader's term as the fencing token.
//!
//! Channels are built per term (a [`HostClients`] lives in one term's services)
//! and every host gets a bounded number of concurrent tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_proto::host::host_manager_client::HostManagerClient;
use keel_proto::host::{HealthReply, HealthRequest, TaskRequest};
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

/// Tasks one host runs at once.
pub const PER_HOST_TASKS: usize = 4;

/// What a host manager said about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResult {
    /// Done.
    Succeeded(String),
    /// Not done; `retryable` says whether another attempt may work.
    Failed {
        /// Why.
        detail: String,
        /// Whether to try again.
        retryable: bool,
    },
    /// The host refused our term: a newer leader is in charge, stop acting.
    Fenced(String),
}

/// A channel to one host manager and its task slots.
type HostLink = (Channel, Arc<Semaphore>);

/// Channels and per-host task slots for one term.
#[derive(Clone, Default)]
pub struct HostClients {
    channels: Arc<Mutex<HashMap<String, HostLink>>>,
}

impl HostClients {
    fn get(&self, addr: &str) -> Result<(HostManagerClient<Channel>, Arc<Semaphore>), String> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((c, s)) = map.get(addr) {
            return Ok((HostManagerClient::new(c.clone()), s.clone()));
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad host address {addr}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        let slots = Arc::new(Semaphore::new(PER_HOST_TASKS));
        map.insert(addr.to_string(), (channel.clone(), slots.clone()));
        Ok((HostManagerClient::new(channel), slots))
    }

    /// Run a task to its end (re-sending while the host reports it running), within `deadline`.
    pub async fn run(&self, addr: &str, req: TaskRequest, deadline: Duration) -> TaskResult {
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
            return TaskResult::Failed {
                detail: "host slots closed".into(),
                retryable: true,
            };
        };
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return TaskResult::Failed {
                    detail: format!("task did not finish within {deadline:?}"),
                    retryable: true,
                };
            }
            let mut call = tonic::Request::new(req.clone());
            call.set_timeout(left.min(Duration::from_secs(30)));
            match client.run_task(call).await {
                Ok(reply) => {
                    let r = reply.into_inner();
                    match r.state.as_str() {
                        "succeeded" => return TaskResult::Succeeded(r.detail),
                        "failed" => {
                            return TaskResult::Failed {
                                detail: r.detail,
                                retryable: r.retryable,
                            }
                        }
                        // Still running: the re-send is deduplicated by the host and waits again.
                        _ => continue,
                    }
                }
                Err(s) if s.code() == tonic::Code::FailedPrecondition => return TaskResult::Fenced(s.message().into()),
                Err(s) if s.code() == tonic::Code::InvalidArgument => {
                    return TaskResult::Failed {
                        detail: s.message().into(),
                        retryable: false,
                    }
                }
                Err(s) => {
                    return TaskResult::Failed {
                        detail: format!("host manager at {addr} unreachable: {}", s.message()),
                        retryable: true,
                    }
                }
            }
        }
    }

    /// The host manager's health report.
    pub async fn health(&self, addr: &str, timeout: Duration) -> Result<HealthReply, String> {
        let (mut client, _) = self.get(addr)?;
        let mut call = tonic::Request::new(HealthRequest {});
        call.set_timeout(timeout);
        match tokio::time::timeout(timeout, client.health(call)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("host manager at {addr} unreachable: {}", s.message())),
            Err(_) => Err(format!("host manager at {addr} did not answer within {timeout:?}")),
        }
    }
}
