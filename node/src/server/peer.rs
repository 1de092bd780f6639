//! Calls from one control node to another over `keel.raft.v1`.
//!
//! One lazily connected channel per address, shared by the Raft transport and
//! by request forwarding, over mutual TLS (`crate::tls::link`): only a control
//! node of the same cluster is called or answered. Every call also carries the
//! cluster name, and the receiving side refuses other clusters' calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_proto::raft::raft_client::RaftClient;
use keel_proto::raft::Payload;
use keel_raft_store::codec;
use keel_raft_store::{KeelNode, NodeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tonic::transport::Channel;

/// Metadata key carrying the cluster name on every internal call.
pub const CLUSTER_HEADER: &str = "x-keel-cluster";

/// Largest internal message (snapshot chunks are JSON and bigger than their bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Why a forwarded call did not succeed on the remote node.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteFailure {
    /// The remote is not the leader; it names the leader it knows, if any.
    #[error("node is not the leader")]
    NotLeader {
        /// The leader the remote knows of.
        leader: Option<(NodeId, KeelNode)>,
    },
    /// The remote tried and failed.
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
    },
}

/// A membership change run on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add as learner, wait until caught up, then promote to voter.
    AddNode {
        /// New node id.
        id: NodeId,
        /// Its addresses.
        node: KeelNode,
    },
    /// Remove from the voters and learners.
    RemoveNode {
        /// Node id.
        id: NodeId,
    },
}

/// One node's own view of itself, as returned by the `Status` call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeStatus {
    /// Node id.
    pub id: NodeId,
    /// leader, follower, candidate or learner.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Leader it knows of.
    pub leader: Option<NodeId>,
    /// Last log index.
    pub last_log_index: u64,
    /// Last applied index.
    pub applied_index: u64,
    /// Last snapshot's index.
    pub snapshot_index: u64,
    /// Last purged index.
    pub purged_index: u64,
    /// Snapshots installed from a leader since start.
    pub snapshots_installed: u64,
    /// On the leader: matched index per member.
    pub replication: Vec<(NodeId, u64)>,
    /// On the leader: ms since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// The term of the leader services running on this node, if any.
    pub leader_services_term: Option<u64>,
}

/// A failed internal call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// The remote could not be reached or did not answer in time.
    #[error("node at {addr} is unreachable: {reason}")]
    Unreachable {
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The remote answered with something we cannot read.
    #[error("node at {addr} sent an unreadable reply: {reason}")]
    Garbled {
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
}

impl PeerError {
    /// `addr` could not be reached, for `reason`.
    pub fn unreachable(addr: &str, reason: impl Into<String>) -> Self {
        Self::Unreachable {
            addr: addr.into(),
            reason: reason.into(),
        }
    }

    /// `addr`'s call or stream ended with `status`.
    pub fn from_status(addr: &str, status: &tonic::Status) -> Self {
        Self::unreachable(addr, format!("{}: {}", status.code(), status.message()))
    }
}

/// Decode a reply `addr` sent.
pub fn decode_reply<T: DeserializeOwned>(addr: &str, data: &[u8]) -> Result<T, PeerError> {
    codec::decode(data).map_err(|e| PeerError::Garbled {
        addr: addr.into(),
        reason: e.to_string(),
    })
}

/// Channels to other control nodes, by address.
#[derive(Clone)]
pub struct Peers {
    cluster: Arc<str>,
    tls: Arc<rustls::ClientConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    /// A channel cache for calls within `cluster`, over mutual TLS configured by `tls`.
    pub fn new(cluster: &str, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            cluster: cluster.into(),
            tls,
            channels: Arc::default(),
        }
    }

    /// The cluster name calls carry.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// A client for the node at `addr`.
    pub fn client(&self, addr: &str) -> Result<RaftClient<Channel>, PeerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = crate::tls::link::channel(addr, self.tls.clone(), Duration::from_millis(500))
                    .map_err(|e| PeerError::unreachable(addr, e))?;
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A request carrying `body` and the cluster name.
    pub fn request<T>(&self, body: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = self.stream_request(body);
        req.set_timeout(timeout);
        req
    }

    /// A request carrying `body` and the cluster name, without a deadline (for a stream
    /// that lives as long as its connection; each message has its own timeout).
    pub fn stream_request<T>(&self, body: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(body);
        if let Ok(v) = self.cluster.parse() {
            req.metadata_mut().insert(CLUSTER_HEADER, v);
        }
        req
    }

    /// Call `addr` with an encoded payload and decode the reply.
    pub async fn call<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        body: &Req,
        timeout: Duration,
        f: F,
    ) -> Result<Resp, PeerError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<Payload>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let body = Payload {
            data: codec::encode(body),
        };
        self.send(addr, body, timeout, f).await
    }

    /// Call `addr` with `body` as it is (`f` picks the RPC) and decode the reply's payload.
    pub async fn send<B, Resp, F, Fut>(&self, addr: &str, body: B, timeout: Duration, f: F) -> Result<Resp, PeerError>
    where
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<B>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<Payload>, tonic::Status>>,
    {
        let client = self.client(addr)?;
        let req = self.request(body, timeout);
        let reply = tokio::time::timeout(timeout, f(client, req))
            .await
            .map_err(|_| PeerError::unreachable(addr, format!("no answer within {timeout:?}")))?
            .map_err(|s| PeerError::from_status(addr, &s))?;
        decode_reply(addr, &reply.into_inner().data)
    }
}
