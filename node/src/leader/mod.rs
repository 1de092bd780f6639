//! The leader services: started when this node leads, stopped the moment it does not.
//!
//! A node runs them only while it is the leader *and* a quorum has
//! acknowledged it within the minimum election timeout — a leader partitioned
//! away stops before the others can elect a successor. Each term gets fresh
//! services under one cancellation token; nothing is carried across terms.

pub mod host_client;
pub mod monitor;
pub mod planner;
pub mod scheduler;
pub mod sweeper;
pub mod workflow;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_raft_store::{Command, Proposal, Response};
use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::server::NodeCtx;

/// What a running term of leader services needs.
#[derive(Clone)]
pub struct Term {
    /// The node.
    pub node: Arc<NodeCtx>,
    /// The term these services act in; stamped on every claim.
    pub term: u64,
    /// Cancelled when leadership is lost.
    pub cancel: CancellationToken,
    /// Host manager channels of this term.
    pub hosts: host_client::HostClients,
}

impl Term {
    /// Commit `command` as this term's leader. Fails if leadership is gone.
    pub async fn commit(&self, command: Command) -> Result<Response, String> {
        let proposal = Proposal {
            at_ms: now_ms(),
            command,
        };
        let write = self.node.local_writes.submit(proposal);
        tokio::select! {
            _ = self.cancel.cancelled() => Err("leadership lost".into()),
            r = tokio::time::timeout(Duration::from_millis(self.node.config.leader_wait_ms), write) => match r {
                Err(_) => Err("commit timed out".into()),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(resp)) => Ok(resp),
            },
        }
    }
}

/// Whether this node should run the leader services now, and in which term.
///
/// The lease is best effort: openraft publishes `millis_since_quorum_ack` once
/// per tick, and a follower that heard from the leader waits its leader lease
/// (the maximum election timeout) plus an election timeout before it stands,
/// so a lease of the maximum election timeout less a heartbeat ends before any
/// successor can exist. Safety does not rest on it: claims and completions
/// carry the term and the state machine refuses stale ones.
fn leading_term(node: &NodeCtx) -> Option<u64> {
    let m = node.raft.metrics().borrow().clone();
    let lease = node
        .config
        .election_timeout_max_ms
        .saturating_sub(node.config.heartbeat_ms);
    let lease_ok = m.millis_since_quorum_ack.is_some_and(|ms| ms < lease);
    (m.state == ServerState::Leader && m.current_leader == Some(node.id) && lease_ok).then_some(m.current_term)
}

/// Services of one term that are running now.
struct Running {
    term: Term,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
}

/// Services that ended on their own (a commit failed) are restarted after this pause.
const RESTART_PAUSE: Duration = Duration::from_millis(500);

/// Watch leadership and start/stop the services until `shutdown`.
pub async fn run(node: Arc<NodeCtx>, shutdown: CancellationToken) {
    // Role and leader changes; the full metrics would wake this loop on every append.
    let mut metrics = node.raft.server_metrics();
    let tick = Duration::from_millis(node.config.heartbeat_ms.max(10) / 2);
    let mut running: Option<Running> = None;
    loop {
        let want = leading_term(&node);
        let keep = match (&running, want) {
            (Some(r), Some(term)) if r.term.term == term => {
                !r.task.is_finished() || r.started.elapsed() < RESTART_PAUSE
            }
            _ => false,
        };
        if !keep {
            if let Some(r) = running.take() {
                if want == Some(r.term.term) {
                    tracing::warn!(
                        term = r.term.term,
                        "The leader services stopped on their own; restarting them."
                    );
                } else {
                    tracing::info!(
                        term = r.term.term,
                        "Leadership lost or lease expired; stopping the leader services."
                    );
                }
                r.term.cancel.cancel();
                node.services_term.store(0, Ordering::SeqCst);
            }
            if let Some(term) = want {
                let t = Term {
                    node: node.clone(),
                    term,
                    cancel: shutdown.child_token(),
                    hosts: host_client::HostClients::default(),
                };
                tracing::info!(term, "This node leads; starting the leader services.");
                node.services_term.store(term, Ordering::SeqCst);
                running = Some(Running {
                    task: tokio::spawn(services(t.clone())),
                    term: t,
                    started: Instant::now(),
                });
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = metrics.changed() => {}
            // The lease can expire without any metrics change.
            _ = tokio::time::sleep(tick) => {}
        }
    }
    if let Some(r) = running {
        r.term.cancel.cancel();
        node.services_term.store(0, Ordering::SeqCst);
    }
}

/// The services of one term: announce, initialise the cluster record, then sweep.
async fn services(t: Term) {
    match t
        .commit(Command::StartLeaderServices {
            node_id: t.node.id,
            term: t.term,
        })
        .await
    {
        Ok(Response::Rejected { rejection }) => {
            tracing::warn!(term = t.term, %rejection, "A newer leader exists; not starting the leader services.");
            return;
        }
        Err(e) => {
            tracing::warn!(term = t.term, error = %e, "Could not announce the leader services.");
            return;
        }
        Ok(_) => {}
    }
    if t.node.state.read(|a| a.state.cluster.is_none()) {
        let name = t.node.config.cluster_name.clone();
        if let Err(e) = t.commit(Command::InitCluster { name }).await {
            tracing::warn!(error = %e, "Could not record the cluster configuration.");
        }
    }
    // Either ending (a commit failed) ends the term's services; `run` restarts them.
    tokio::select! {
        _ = sweeper::run(t.clone()) => {}
        _ = monitor::run(t.clone()) => {}
        _ = scheduler::run(t) => {}
    }
}
