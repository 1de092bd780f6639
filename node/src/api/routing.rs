//! Any node takes any call: run it here if this node leads, else forward it to the leader.
//!
//! While there is no leader, a call waits up to `leader_wait_ms` for one and
//! then fails as retryable — never with a wrong answer. Forwarded writes are
//! retried with the same proposal, and every command is idempotent, so a
//! retry after an ambiguous failure cannot apply twice.

use std::future::Future;
use std::time::Duration;

use keel_raft_store::{KeelNode, Proposal, Response};
use tokio::time::Instant;

use super::error::ApiError;
use crate::server::on_leader;
use crate::server::peer::{MembershipChange, PeerError, RemoteFailure};
use crate::server::NodeCtx;

/// Adding a node waits for it to catch up (by log or snapshot), which outlasts a write.
const MEMBERSHIP_PATIENCE: Duration = Duration::from_secs(120);

/// Where to send the next attempt.
enum Target {
    Here,
    Remote(KeelNode),
}

impl NodeCtx {
    async fn on_leader<T, L, LF, R, RF>(
        &self,
        what: &str,
        patience: Duration,
        local: L,
        remote: R,
    ) -> Result<T, ApiError>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<T, RemoteFailure>>,
        R: Fn(String, Duration) -> RF,
        RF: Future<Output = Result<Result<T, RemoteFailure>, PeerError>>,
    {
        if !self.is_member(self.id) {
            return Err(ApiError::Unavailable(format!(
                "node {} is not a member of the cluster (it was removed, or has not been added yet); send calls to a member",
                self.id
            )));
        }
        let deadline = Instant::now() + patience;
        let mut target = Target::Here;
        // Server metrics change with the leader, not with every append as the full metrics do.
        let mut metrics = self.raft.server_metrics();
        let mut last_problem = String::from("no leader is known");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::Unavailable(format!(
                    "could not {what} within {} ms: {last_problem}; the cluster may be electing a leader or have lost its majority — retry",
                    patience.as_millis()
                )));
            }
            let outcome = match &target {
                Target::Here => match tokio::time::timeout(left, local()).await {
                    Ok(r) => Ok(r),
                    Err(_) => continue,
                },
                Target::Remote(node) => remote(node.raft_addr.clone(), left).await,
            };
            match outcome {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(RemoteFailure::NotLeader {
                    leader: Some((id, node)),
                })) if id != self.id => {
                    target = Target::Remote(node);
                    continue;
                }
                Ok(Err(RemoteFailure::NotLeader { .. })) => {
                    target = Target::Here;
                    last_problem = "no leader is known".into();
                    // Wait for the election to produce a leader, bounded by the deadline.
                    let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), metrics.changed()).await;
                }
                Ok(Err(RemoteFailure::Failed {
                    message,
                    retryable: false,
                })) => {
                    return Err(ApiError::Conflict(message));
                }
                Ok(Err(RemoteFailure::Failed { message, .. })) => {
                    last_problem = message;
                    target = Target::Here;
                    tokio::time::sleep(Duration::from_millis(20).min(left)).await;
                }
                Err(peer_error) => {
                    last_problem = peer_error.to_string();
                    target = Target::Here;
                    tokio::time::sleep(Duration::from_millis(20).min(left)).await;
                }
            }
        }
    }

    fn patience(&self) -> Duration {
        Duration::from_millis(self.config.leader_wait_ms)
    }

    /// Commit `proposal` through the leader and return what apply answered.
    pub async fn write(&self, proposal: Proposal) -> Result<Response, ApiError> {
        self.on_leader(
            "commit the change",
            self.patience(),
            || self.local_writes.submit(proposal.clone()),
            |addr, _left| {
                let (queue, proposal) = (self.forwarder(&addr), proposal.clone());
                async move { Ok(queue.submit(proposal).await) }
            },
        )
        .await
    }

    /// Wait until this node has applied everything committed before the call, then read.
    pub async fn read<T>(&self, f: impl FnOnce(&keel_raft_store::AdminState) -> T) -> Result<T, ApiError> {
        let peers = self.peers.clone();
        let index = self
            .on_leader(
                "confirm a linearizable read",
                self.patience(),
                || on_leader::read_index(&self.raft),
                |addr, left| {
                    let peers = peers.clone();
                    async move {
                        let request = keel_proto::raft::ReadIndexRequest {};
                        peers
                            .send(&addr, request, left, |mut c, r| async move { c.read_index(r).await })
                            .await
                    }
                },
            )
            .await?;
        self.wait_applied(index).await?;
        Ok(self.state.read(|a| f(&a.state)))
    }

    async fn wait_applied(&self, index: u64) -> Result<(), ApiError> {
        let mut applied = self.state.subscribe();
        let within = Duration::from_millis(self.config.leader_wait_ms);
        let caught_up = matches!(
            tokio::time::timeout(within, applied.wait_for(|&i| i >= index)).await,
            Ok(Ok(_))
        );
        if caught_up {
            Ok(())
        } else {
            Err(ApiError::Unavailable(format!(
                "this node has not caught up to index {index} in time; retry or ask another node"
            )))
        }
    }

    /// Run a membership change on the leader.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ApiError> {
        let peers = self.peers.clone();
        self.on_leader(
            "change the membership",
            MEMBERSHIP_PATIENCE,
            || on_leader::change_membership(&self.raft, change.clone()),
            |addr, left| {
                let (peers, change) = (peers.clone(), change.clone());
                async move {
                    peers
                        .call(
                            &addr,
                            &change,
                            left,
                            |mut c, r| async move { c.change_membership(r).await },
                        )
                        .await
                }
            },
        )
        .await
    }
}
