//! What a node does when a call must run on the leader and it may be the leader.
//!
//! Each function either does the work here, because this node leads, or
//! answers [`RemoteFailure::NotLeader`] naming the leader it knows; the
//! caller ([`crate::api::routing`]) forwards to that node. The same functions
//! serve local calls and calls forwarded from followers.

use std::collections::BTreeSet;

use keel_raft_store::{KeelNode, NodeId, Proposal, ProposalBatch, Raft, Response};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use super::peer::{MembershipChange, RemoteFailure};

fn not_leader(leader_id: Option<NodeId>, leader_node: Option<KeelNode>) -> RemoteFailure {
    RemoteFailure::NotLeader {
        leader: leader_id.zip(leader_node),
    }
}

fn write_failure(e: RaftError<NodeId, ClientWriteError<NodeId, KeelNode>>) -> RemoteFailure {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f.leader_id, f.leader_node),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => RemoteFailure::Failed {
            message: format!("the membership change was refused: {c}"),
            retryable: false,
        },
        RaftError::Fatal(f) => RemoteFailure::Failed {
            message: format!("this node's Raft has stopped: {f}"),
            retryable: true,
        },
    }
}

/// Propose `proposals` here as one entry; succeed once it is committed and applied.
pub async fn write(raft: &Raft, proposals: Vec<Proposal>) -> Result<Vec<Response>, RemoteFailure> {
    raft.client_write(ProposalBatch(proposals.into()))
        .await
        .map(|r| r.data)
        .map_err(write_failure)
}

/// The index a linearizable read must wait for, confirmed with a quorum.
pub async fn read_index(raft: &Raft) -> Result<u64, RemoteFailure> {
    match raft.ensure_linearizable().await {
        Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(not_leader(f.leader_id, f.leader_node))
        }
        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(q))) => {
            Err(RemoteFailure::Failed {
                message: format!("the leader cannot reach a quorum: {q}"),
                retryable: true,
            })
        }
        Err(RaftError::Fatal(f)) => Err(RemoteFailure::Failed {
            message: format!("this node's Raft has stopped: {f}"),
            retryable: true,
        }),
    }
}

/// Change the voters: add (learner first, then voter) or remove a node.
pub async fn change_membership(raft: &Raft, change: MembershipChange) -> Result<(), RemoteFailure> {
    match change {
        MembershipChange::AddNode { id, node } => {
            let voters = raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .collect::<BTreeSet<_>>();
            if !voters.contains(&id) {
                // Blocking: returns once the learner has caught up (by log or snapshot).
                raft.add_learner(id, node, true).await.map_err(write_failure)?;
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map_err(write_failure)?;
            }
            Ok(())
        }
        MembershipChange::RemoveNode { id } => {
            let membership = raft.metrics().borrow().membership_config.membership().clone();
            let is_voter = membership.voter_ids().any(|v| v == id);
            let is_learner = membership.learner_ids().any(|v| v == id);
            if is_voter {
                let voters: BTreeSet<_> = membership.voter_ids().filter(|v| *v != id).collect();
                if voters.is_empty() {
                    return Err(RemoteFailure::Failed {
                        message: "cannot remove the last voter".into(),
                        retryable: false,
                    });
                }
                raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                    .await
                    .map_err(write_failure)?;
            } else if is_learner {
                raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                    .map_err(write_failure)?;
            }
            // Already absent: a retried removal that took effect is a success.
            Ok(())
        }
    }
}
