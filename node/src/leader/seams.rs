//! The two seams of the leader services: committing commands against the
//! applied admin state ([`Control`]) and talking to host managers ([`Hosts`]).
//!
//! A running node wires in Raft ([`NodeControl`]) and gRPC
//! ([`super::host_client::HostClients`]); tests wire in an in-memory state
//! machine and scripted host managers, so the workflow engine, the sweeper and
//! resumption after a leader change are tested in-process, as data.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use keel_proto::host::{HealthReply, HealthRequest, TaskRequest};
use keel_raft_store::{AdminState, Proposal, Response};
use tokio::sync::watch;

use crate::server::NodeCtx;

/// What a host manager said (or could not say) about one task attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskResult {
    /// It succeeded, with what it produced for the catalog.
    Succeeded(String, Option<keel_raft_store::TaskOutput>),
    /// It failed; `retryable` says whether another attempt may work.
    Failed {
        /// Why.
        detail: String,
        /// Whether to try again.
        retryable: bool,
    },
    /// The host refused our fence: newer leader services are in charge; stop acting.
    Fenced(String),
    /// The host still runs it; what it says of its progress ("" if nothing).
    Running(String),
    /// The host has no record of it and runs nothing of it (never arrived, or the host
    /// manager restarted before it finished).
    Absent,
    /// No answer (transport failure or no outcome within the deadline): the attempt may
    /// or may not be running. Never a failure: ask again.
    Unknown(String),
}

/// The applied admin state and a way to change it.
pub trait Control: Send + Sync + 'static {
    /// Call `f` with the applied state (under the state's read lock: keep it short).
    fn read_state(&self, f: &mut dyn FnMut(&AdminState));
    /// Commit a proposal and return what applying it answered.
    fn commit(&self, proposal: Proposal) -> BoxFuture<'_, Result<Response, String>>;
    /// Wakes after every applied change.
    fn applied(&self) -> watch::Receiver<u64>;
}

/// Calls to host managers, by address.
pub trait Hosts: Send + Sync + 'static {
    /// Send an attempt and wait for its outcome (re-sending while the host reports it
    /// running or busy) for at most `deadline`.
    fn run_task(&self, addr: &str, req: TaskRequest, deadline: Duration) -> BoxFuture<'_, TaskResult>;
    /// Ask what became of attempt `task_id`: `Running`, `Absent`, an outcome, or `Unknown`.
    fn task_status(&self, addr: &str, task_id: &str) -> BoxFuture<'_, TaskResult>;
    /// The host manager's health report.
    fn health(&self, addr: &str, req: HealthRequest, timeout: Duration) -> BoxFuture<'_, Result<HealthReply, String>>;
}

/// Raft as the leader services' [`Control`].
pub struct NodeControl(pub Arc<NodeCtx>);

impl Control for NodeControl {
    fn read_state(&self, f: &mut dyn FnMut(&AdminState)) {
        self.0.state.read(|a| f(&a.state))
    }

    fn commit(&self, proposal: Proposal) -> BoxFuture<'_, Result<Response, String>> {
        Box::pin(async move { self.0.local_writes.submit(proposal).await.map_err(|e| e.to_string()) })
    }

    fn applied(&self) -> watch::Receiver<u64> {
        self.0.state.subscribe()
    }
}
