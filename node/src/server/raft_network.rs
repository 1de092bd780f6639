//! openraft's network over `keel.raft.v1`.

use keel_proto::raft::raft_client::RaftClient;
use keel_raft_store::{KeelNode, NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::peer::{PeerError, Peers};

/// Makes one [`Connection`] per target node.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    /// A network over these peer channels.
    pub fn new(peers: Peers) -> Self {
        Self { peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &KeelNode) -> Self::Network {
        Connection {
            peers: self.peers.clone(),
            target,
            addr: node.raft_addr.clone(),
        }
    }
}

/// The Raft transport to one target.
pub struct Connection {
    peers: Peers,
    target: NodeId,
    addr: String,
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
        let reply: Result<Resp, RaftError<NodeId, E>> = self
            .peers
            .call(&self.addr, req, option.hard_ttl(), f)
            .await
            .map_err(|e| match e {
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
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.send(&rpc, &option, |mut c, r| async move { c.append_entries(r).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.send(&rpc, &option, |mut c, r| async move { c.install_snapshot(r).await })
            .await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.send(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }
}
