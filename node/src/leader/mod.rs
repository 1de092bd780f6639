//! The leader services: started when this node leads, stopped the moment it does not.
//!
//! A node runs them only while it is the leader *and* a quorum has
//! acknowledged it within the maximum election timeout less a heartbeat — a
//! leader partitioned away stops before the others can elect a successor. Each
//! start gets fresh services under one cancellation token and a new fence;
//! nothing is carried across starts.

pub mod clone_source;
pub mod host_client;
pub mod monitor;
pub mod planner;
pub mod scheduler;
pub mod seams;
pub mod sweeper;
pub mod workflow;

#[cfg(test)]
mod testing;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_raft_store::{AdminState, Command, Proposal, Response};
use openraft::ServerState;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::server::config::ServerConfig;
use crate::server::NodeCtx;
use seams::{Control, Hosts, NodeControl};

/// What a running instance of the leader services needs.
#[derive(Clone)]
pub struct Term {
    /// Commits commands, reads the applied state.
    pub control: Arc<dyn Control>,
    /// Host manager calls.
    pub hosts: Arc<dyn Hosts>,
    /// The node running the services.
    pub node_id: u64,
    /// The Raft term they run in.
    pub term: u64,
    /// Their fencing token (the log index of their `StartLeaderServices`), stamped on every
    /// claim, workflow command and host call; refused once newer services started.
    pub fence: u64,
    /// Cancelled when leadership (or the lease) is lost.
    pub cancel: CancellationToken,
    /// The node's configuration (intervals, limits).
    pub config: Arc<ServerConfig>,
}

impl Term {
    /// Read the applied state; keep `f` short, it runs under the state's read lock.
    pub fn read<T>(&self, f: impl FnOnce(&AdminState) -> T) -> T {
        let mut f = Some(f);
        let mut out = None;
        self.control.read_state(&mut |s| {
            if let Some(f) = f.take() {
                out = Some(f(s));
            }
        });
        out.expect("read_state calls its closure once")
    }

    /// Commit `command` as these services. Once they are cancelled nothing more is
    /// proposed; a proposal already under way is refused by its stale fence if newer
    /// services started meanwhile.
    pub async fn commit(&self, command: Command) -> Result<Response, String> {
        if self.cancel.is_cancelled() {
            return Err("leadership lost".into());
        }
        let proposal = Proposal::new(now_ms(), command);
        let write = self.control.commit(proposal);
        tokio::select! {
            _ = self.cancel.cancelled() => Err("leadership lost".into()),
            r = tokio::time::timeout(Duration::from_millis(self.config.leader_wait_ms), write) => match r {
                Err(_) => Err("commit timed out".into()),
                Ok(r) => r,
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
/// successor can exist. Safety does not rest on it: claims, workflow commands
/// and host calls carry the services' fence, and the state machine and the host
/// managers refuse stale ones.
///
/// `millis_since_quorum_ack` is measured when openraft publishes its metrics, so
/// after this process was stopped (SIGSTOP, a long GC-like stall, a frozen VM) the
/// value read first is from before the stall and says nothing about now. A loop
/// that did not run for longer than the lease (`stalled`) therefore counts the
/// lease as lapsed.
fn leading_term(node: &NodeCtx, stalled: Duration) -> Option<u64> {
    let m = node.raft.metrics().borrow().clone();
    let lease = lease_ms(&node.config);
    let lease_ok = stalled.as_millis() < u128::from(lease) && m.millis_since_quorum_ack.is_some_and(|ms| ms < lease);
    (m.state == ServerState::Leader && m.current_leader == Some(node.id) && lease_ok).then_some(m.current_term)
}

/// How long a quorum acknowledgement keeps the leader services allowed to act.
fn lease_ms(config: &ServerConfig) -> u64 {
    config.election_timeout_max_ms.saturating_sub(config.heartbeat_ms)
}

/// Services of one term that are running now.
struct Running {
    term: u64,
    cancel: CancellationToken,
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
    let config = Arc::new(node.config.clone());
    let control: Arc<dyn Control> = Arc::new(NodeControl(node.clone()));
    let mut running: Option<Running> = None;
    let mut last_turn = Instant::now();
    loop {
        let stalled = last_turn.elapsed();
        last_turn = Instant::now();
        if stalled.as_millis() >= u128::from(lease_ms(&config)) && running.is_some() {
            tracing::warn!(
                stalled_ms = stalled.as_millis() as u64,
                "This node did not run for longer than its lease; counting the lease as lapsed."
            );
        }
        let want = leading_term(&node, stalled);
        let keep = match (&running, want) {
            (Some(r), Some(term)) if r.term == term => !r.task.is_finished() || r.started.elapsed() < RESTART_PAUSE,
            _ => false,
        };
        if !keep {
            if let Some(r) = running.take() {
                if want == Some(r.term) {
                    tracing::warn!(
                        term = r.term,
                        "The leader services stopped on their own; restarting them."
                    );
                } else {
                    tracing::info!(
                        term = r.term,
                        "Leadership lost or lease expired; stopping the leader services."
                    );
                }
                r.cancel.cancel();
                node.services_term.store(0, Ordering::SeqCst);
            }
            if let Some(term) = want {
                let cancel = shutdown.child_token();
                tracing::info!(term, "This node leads; starting the leader services.");
                node.services_term.store(term, Ordering::SeqCst);
                let start = Start {
                    control: control.clone(),
                    node_id: node.id,
                    term,
                    cancel: cancel.clone(),
                    config: config.clone(),
                    host_tls: node.host_tls.clone(),
                };
                running = Some(Running {
                    task: tokio::spawn(services(start)),
                    term,
                    cancel,
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
        r.cancel.cancel();
        node.services_term.store(0, Ordering::SeqCst);
    }
}

/// What starting the services needs before their fence is known.
struct Start {
    control: Arc<dyn Control>,
    node_id: u64,
    term: u64,
    cancel: CancellationToken,
    config: Arc<ServerConfig>,
    host_tls: Arc<rustls::ClientConfig>,
}

/// Commit `StartLeaderServices` and return the services it put in force.
pub async fn start_services(
    control: Arc<dyn Control>,
    hosts: Arc<dyn Hosts>,
    node_id: u64,
    term: u64,
    cancel: CancellationToken,
    config: Arc<ServerConfig>,
) -> Result<Term, String> {
    let mut t = Term {
        control,
        hosts,
        node_id,
        term,
        fence: 0,
        cancel,
        config,
    };
    match t.commit(Command::StartLeaderServices { node_id, term }).await? {
        Response::LeaderServices { services } => {
            t.fence = services.fence;
            Ok(t)
        }
        Response::Rejected { rejection } => Err(format!("a newer leader exists: {rejection}")),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The services of one term: announce (which yields their fence), initialise the
/// cluster record, then sweep, monitor and schedule.
async fn services(s: Start) {
    let hosts: Arc<dyn Hosts> = Arc::new(host_client::HostClients::new(s.host_tls.clone()));
    let t = match start_services(s.control, hosts, s.node_id, s.term, s.cancel, s.config).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(term = s.term, error = %e, "Could not start the leader services.");
            return;
        }
    };
    tracing::info!(term = t.term, fence = t.fence, "The leader services are in force.");
    if t.read(|a| a.cluster.is_none()) {
        init_cluster(&t).await;
    }
    // Either ending (a commit failed) ends the term's services; `run` restarts them.
    tokio::select! {
        _ = sweeper::run(t.clone()) => {}
        _ = monitor::run(t.clone()) => {}
        _ = scheduler::run(t) => {}
    }
}

/// Record the cluster's configuration with its first admin token. A leader without the
/// bootstrap token leaves the cluster uninitialised (no one could administer it); an
/// initial member that has the token initialises it when it leads.
async fn init_cluster(t: &Term) {
    let token = match t.config.bootstrap_token() {
        Ok(Some(token)) => token,
        Ok(None) => {
            tracing::error!("The cluster is not initialised and this node has no --bootstrap-token-file; it will be initialised by an initial member that has one.");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "Cannot read the bootstrap token; the cluster stays uninitialised.");
            return;
        }
    };
    let admin_token = keel_raft_store::Token {
        id: token.id,
        name: "bootstrap".into(),
        account: keel_raft_store::ADMIN_ACCOUNT.into(),
        role: keel_raft_store::Role::Admin,
        secret_sha256: token.secret_sha256,
        ..Default::default()
    };
    let command = Command::InitCluster {
        name: t.config.cluster_name.clone(),
        admin_token: Some(admin_token),
    };
    if let Err(e) = t.commit(command).await {
        tracing::warn!(error = %e, "Could not record the cluster configuration.");
    }
}
