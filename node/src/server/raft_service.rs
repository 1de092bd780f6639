//! The `keel.raft.v1` server: openraft's RPCs plus calls forwarded from followers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};

use keel_proto::raft::raft_server::Raft as RaftRpc;
use keel_proto::raft::{Payload, ReadIndexRequest, StatusRequest};
use keel_raft_store::command::Origin;
use keel_raft_store::{codec, Proposal, TypeConfig};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status, Streaming};

use super::on_leader;
use super::peer::{MembershipChange, RemoteFailure, CLUSTER_HEADER};
use super::NodeCtx;

/// Serves this node's half of the control-node transport.
pub struct RaftService {
    node: Arc<NodeCtx>,
}

impl RaftService {
    /// Serve `node`.
    pub fn new(node: Arc<NodeCtx>) -> Self {
        Self { node }
    }

    fn open<T: DeserializeOwned>(&self, req: Request<Payload>) -> Result<T, Status> {
        self.check_cluster(req.metadata())?;
        codec::decode(&req.into_inner().data)
            .map_err(|e| Status::invalid_argument(format!("unreadable internal message: {e}")))
    }

    fn check_cluster(&self, meta: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let theirs = meta.get(CLUSTER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if theirs != self.node.peers.cluster() {
            return Err(Status::failed_precondition(format!(
                "this node belongs to cluster {:?}, not {theirs:?}",
                self.node.peers.cluster()
            )));
        }
        Ok(())
    }
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    Ok(Response::new(Payload {
        data: codec::encode(value),
    }))
}

/// Forwarded batches one follower may have committing at once (its batcher sends fewer).
const FORWARDED_IN_FLIGHT: usize = 8;

/// Answers to a stream of requests, in request order.
pub type Answers = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

/// Answer each request on a stream with `handle`, up to `in_flight` at once, in the order
/// the requests came (which is how the sender matches answers to calls). An `Err` answer
/// ends the stream with that status.
pub fn answer_in_order<F, Fut>(requests: Streaming<Payload>, in_flight: usize, handle: F) -> Answers
where
    F: Fn(Vec<u8>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
{
    let requests = tokio_stream::StreamExt::map_while(requests, Result::ok);
    let answers = requests
        .map(move |payload| {
            let answer = handle(payload.data);
            async move { answer.await.map(|data| Payload { data }) }
        })
        .buffered(in_flight);
    Box::pin(answers)
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    type ReplicateStream = Answers;

    async fn replicate(&self, req: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        self.check_cluster(req.metadata())?;
        let node = self.node.clone();
        // One at a time: the leader sends the next AppendEntries only after this answer.
        let answers = answer_in_order(req.into_inner(), 1, move |data| {
            let node = node.clone();
            async move {
                let rpc: AppendEntriesRequest<TypeConfig> = codec::decode(&data)
                    .map_err(|e| Status::invalid_argument(format!("unreadable internal message: {e}")))?;
                Ok(codec::encode(&node.raft.append_entries(rpc).await))
            }
        });
        Ok(Response::new(answers))
    }

    async fn append_entries(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = self.open(req)?;
        reply(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<u64> = self.open(req)?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = self.open(req)?;
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    type ForwardStream = Answers;

    async fn forward(&self, req: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        self.check_cluster(req.metadata())?;
        let node = self.node.clone();
        let answers = answer_in_order(req.into_inner(), FORWARDED_IN_FLIGHT, move |data| {
            let node = node.clone();
            async move {
                let answer = match codec::decode::<Vec<Proposal>>(&data) {
                    Ok(proposals) => match proposals.iter().find(|p| p.command.origin() != Origin::Api) {
                        // Followers forward only API writes; the leader's services never forward.
                        Some(p) => Err(RemoteFailure::Failed {
                            message: format!(
                                "{} is proposed only by the leader's own services and is never forwarded; the batch was refused",
                                p.command.name()
                            ),
                            retryable: false,
                        }),
                        None => on_leader::write(&node.raft, proposals).await,
                    },
                    Err(e) => Err(RemoteFailure::Failed {
                        message: format!("unreadable forwarded write: {e}"),
                        retryable: false,
                    }),
                };
                Ok(codec::encode(&answer))
            }
        });
        Ok(Response::new(answers))
    }

    async fn change_membership(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let change: MembershipChange = self.open(req)?;
        reply(&on_leader::change_membership(&self.node.raft, change).await)
    }

    async fn read_index(&self, req: Request<ReadIndexRequest>) -> Result<Response<Payload>, Status> {
        self.check_cluster(req.metadata())?;
        reply(&on_leader::read_index(&self.node.raft).await)
    }

    async fn status(&self, req: Request<StatusRequest>) -> Result<Response<Payload>, Status> {
        self.check_cluster(req.metadata())?;
        reply(&self.node.status())
    }
}
