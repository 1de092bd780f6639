//! The `keel.raft.v1` server: openraft's RPCs plus calls forwarded from followers.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

use keel_proto::raft::raft_server::Raft as RaftRpc;
use keel_proto::raft::{Payload, ReadIndexRequest, StatusRequest};
use keel_raft_store::{codec, Proposal, TypeConfig};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::{de::DeserializeOwned, Serialize};
use tonic::{Request, Response, Status, Streaming};

use super::on_leader;
use super::peer::{MembershipChange, CLUSTER_HEADER};
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

/// Answers to a [`RaftRpc::replicate`] stream, in request order.
type Answers = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

#[tonic::async_trait]
impl RaftRpc for RaftService {
    type ReplicateStream = Answers;

    async fn replicate(&self, req: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        self.check_cluster(req.metadata())?;
        let node = self.node.clone();
        // Each request is handled when the answer stream is polled, one at a time, so
        // answers keep request order without ids, a task or a channel.
        let answers = futures::stream::unfold(Some(req.into_inner()), move |requests| {
            let node = node.clone();
            async move {
                let mut requests = requests?;
                let payload = match requests.message().await {
                    Ok(Some(payload)) => payload,
                    Ok(None) | Err(_) => return None,
                };
                match codec::decode::<AppendEntriesRequest<TypeConfig>>(&payload.data) {
                    Ok(rpc) => {
                        let answer = codec::encode(&node.raft.append_entries(rpc).await);
                        Some((Ok(Payload { data: answer }), Some(requests)))
                    }
                    // Answer the error, then end the stream.
                    Err(e) => Some((
                        Err(Status::invalid_argument(format!("unreadable internal message: {e}"))),
                        None,
                    )),
                }
            }
        });
        Ok(Response::new(Box::pin(answers)))
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

    async fn forward(&self, req: Request<Payload>) -> Result<Response<Payload>, Status> {
        let proposals: Vec<Proposal> = self.open(req)?;
        reply(&on_leader::write(&self.node.raft, proposals).await)
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
