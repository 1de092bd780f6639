//! openraft's network over `keel.raft.v1`.

use keel_proto::raft::raft_client::RaftClient;
use keel_raft_store::{codec, KeelNode, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use std::time::Duration;

use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::peer::{decode_reply, PeerError, Peers};
use super::replication_stream::{self, ReplicationStream};

/// Makes one [`Connection`] per target node.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
    retry: Duration,
}

impl Network {
    /// A network over these peer channels that retries an unreachable peer every `retry`.
    pub fn new(peers: Peers, retry: Duration) -> Self {
        Self { peers, retry }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &KeelNode) -> Self::Network {
        Connection {
            peers: self.peers.clone(),
            target,
            addr: node.raft_addr.clone(),
            retry: self.retry,
            stream: None,
        }
    }
}

/// The Raft transport to one target.
pub struct Connection {
    peers: Peers,
    target: NodeId,
    addr: String,
    retry: Duration,
    /// AppendEntries travel here; votes and snapshots are unary calls.
    stream: Option<ReplicationStream>,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, KeelNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn send<Req, Resp, E, F, Fut>(&self, req: &Req, option: &RPCOption, f: F) -> RpcResult<Resp, E>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: serde::de::DeserializeOwned + std::error::Error,
        F: FnOnce(RaftClient<tonic::transport::Channel>, tonic::Request<keel_proto::raft::Payload>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<keel_proto::raft::Payload>, tonic::Status>>,
    {
        let reply = self.peers.call(&self.addr, req, option.hard_ttl(), f).await;
        self.answer(reply)
    }

    /// openraft's view of a remote answer: transport failures, then the remote's own error.
    #[allow(clippy::result_large_err)] // openraft's error type, which the trait returns anyway
    fn answer<Resp, E: std::error::Error>(
        &self,
        reply: Result<Result<Resp, RaftError<NodeId, E>>, PeerError>,
    ) -> RpcResult<Resp, E> {
        let reply = reply.map_err(|e| match e {
            PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
            PeerError::Garbled { .. } => RPCError::Network(NetworkError::new(&e)),
        })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        // openraft bounds the call with its own timeout (see `replication_stream::exchange`).
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let answer = replication_stream::exchange(&mut self.stream, &self.peers, &self.addr, codec::encode(&rpc))
            .await
            .and_then(|data| decode_reply(&self.addr, &data));
        self.answer(answer)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.send(&rpc, &option, |mut c, r| async move { c.install_snapshot(r).await })
            .await
    }

    /// openraft's default waits 500 ms between tries. A restarted follower that has not
    /// heard from the leader by its election timeout stands with a stale log; its higher
    /// term then deposes the leader, and the loser's "seen a greater log" flag delays its
    /// next election by twice the timeout, which slowed the next real failover. Retrying
    /// every heartbeat reaches a restarted node before its timer fires. (Refused connects
    /// on a down peer are cheap.)
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.retry))
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.send(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }
}
