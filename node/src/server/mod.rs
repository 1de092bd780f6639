//! `keel server`: one control node — Raft, the public API and the leader services.

pub mod batcher;
pub mod config;
pub mod dns_feed;
#[cfg(test)]
mod echo_server;
pub mod forward_stream;
pub mod on_leader;
pub mod peer;
pub mod raft_network;
pub mod raft_service;
pub mod replication_stream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use keel_proto::raft::raft_server::RaftServer;
use keel_raft_store::state_machine::StateHandle;
use keel_raft_store::{codec, Identity, KeelNode, NodeId, Raft};
use openraft::ServerState;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::batcher::Batcher;
use self::config::ServerConfig;
use self::peer::{NodeStatus, Peers, RemoteFailure, MAX_MESSAGE_BYTES};
use crate::tls::link;

/// Batches a node keeps in flight per destination; more arrivals wait and join the next batch.
const WRITES_IN_FLIGHT: usize = 2;

/// What every part of a running control node shares.
pub struct NodeCtx {
    /// This node's id.
    pub id: NodeId,
    /// The Raft handle.
    pub raft: Raft,
    /// Read handle on the applied state.
    pub state: StateHandle,
    /// Channels to the other control nodes.
    pub peers: Peers,
    /// The configuration it runs with.
    pub config: ServerConfig,
    /// Term whose leader services run on this node now (0: none).
    pub services_term: AtomicU64,
    /// Batches writes proposed on this node while it leads.
    pub local_writes: Batcher,
    /// The DNS zone this node serves.
    pub zone: keel_dns::server::ZoneServer,
    /// Batches writes forwarded to a leader, one queue per leader address.
    pub forwarded_writes: std::sync::Mutex<std::collections::HashMap<String, Batcher>>,
    /// This node's internal TLS material (reloaded when its files change).
    pub tls: Arc<crate::tls::credentials::Credentials>,
    /// How the leader services connect to host managers (mutual TLS, host role only).
    pub host_tls: Arc<rustls::ClientConfig>,
}

impl NodeCtx {
    /// The write queue towards the leader at `addr` (its Raft address).
    pub fn forwarder(&self, addr: &str) -> Batcher {
        let mut queues = self.forwarded_writes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = queues.get(addr) {
            return b.clone();
        }
        let stream = forward_stream::ForwardStream::spawn(self.peers.clone(), addr.to_string());
        let patience = Duration::from_millis(self.config.leader_wait_ms);
        let batcher = Batcher::spawn(WRITES_IN_FLIGHT, move |proposals: Vec<keel_raft_store::Proposal>| {
            let stream = stream.clone();
            async move {
                let answer = stream.call(codec::encode(&proposals), patience).await;
                answer
                    .and_then(|data| peer::decode_reply(stream.addr(), &data))
                    .unwrap_or_else(|e| {
                        Err(RemoteFailure::Failed {
                            message: e.to_string(),
                            retryable: true,
                        })
                    })
            }
        });
        queues.insert(addr.to_string(), batcher.clone());
        batcher
    }

    /// This node's own view of its Raft state (no quorum needed).
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower => "follower",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        NodeStatus {
            id: self.id,
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            purged_index: m.purged.map_or(0, |l| l.index),
            snapshots_installed: self.state.snapshots_installed(),
            replication: m
                .replication
                .as_ref()
                .map(|r| r.iter().map(|(id, l)| (*id, l.map_or(0, |l| l.index))).collect())
                .unwrap_or_default(),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            leader_services_term: Some(self.services_term.load(Ordering::SeqCst)).filter(|t| *t > 0),
        }
    }

    /// Whether `id` is in the current membership config (voter or learner).
    pub fn is_member(&self, id: NodeId) -> bool {
        self.raft
            .server_metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&id)
            .is_some()
    }

    /// Members in the current membership config: id → (node, is voter).
    pub fn members(&self) -> BTreeMap<NodeId, (KeelNode, bool)> {
        let m = self.raft.server_metrics().borrow().membership_config.clone();
        let voters: Vec<NodeId> = m.membership().voter_ids().collect();
        m.membership()
            .nodes()
            .map(|(id, node)| (*id, (node.clone(), voters.contains(id))))
            .collect()
    }
}

/// Run one control node until `shutdown` is cancelled.
pub async fn run(config: ServerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let identity = Identity {
        cluster: config.cluster_name.clone(),
        node_id: config.id,
    };
    let store = keel_raft_store::open(&config.data_dir, &identity)
        .with_context(|| format!("node {} refuses to start", config.id))?;

    // Bind first, so a port clash fails the start instead of a later call.
    let raft_listener = TcpListener::bind(&config.raft_addr)
        .await
        .with_context(|| format!("cannot listen on raft address {}", config.raft_addr))?;
    let api_listener = TcpListener::bind(&config.api_addr)
        .await
        .with_context(|| format!("cannot listen on API address {}", config.api_addr))?;
    let dns_addr: std::net::SocketAddr = config.dns_addr.parse().context("--dns-addr")?;
    let dns_sockets = keel_dns::server::ZoneServer::bind(dns_addr)
        .await
        .with_context(|| format!("cannot serve DNS on {dns_addr}; pick another --dns-addr"))?;

    let tls = config.tls_credentials()?;
    tokio::spawn(
        tls.clone()
            .watch(Duration::from_millis(config.tls_reload_ms), shutdown.clone()),
    );
    let peers = Peers::new(&config.cluster_name, link::client_config(&tls, link::Peer::ControlNode));
    let raft = Raft::new(
        config.id,
        Arc::new(config.raft_config()?),
        raft_network::Network::new(peers.clone(), Duration::from_millis(config.heartbeat_ms)),
        store.log_store,
        store.state_machine,
    )
    .await
    .map_err(|e| anyhow!("Raft failed to start: {e}"))?;

    let ctx = Arc::new(NodeCtx {
        id: config.id,
        raft: raft.clone(),
        state: store.state,
        peers,
        config: config.clone(),
        services_term: AtomicU64::new(0),
        local_writes: {
            let raft = raft.clone();
            Batcher::spawn(WRITES_IN_FLIGHT, move |proposals| {
                let raft = raft.clone();
                async move { on_leader::write(&raft, proposals).await }
            })
        },
        forwarded_writes: Default::default(),
        zone: keel_dns::server::ZoneServer::new(config.dns_allow_transfer.clone()),
        host_tls: link::client_config(&tls, link::Peer::HostManager),
        tls: tls.clone(),
    });

    let raft_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            RaftServer::new(raft_service::RaftService::new(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(
            link::incoming(raft_listener, link::server_config(&tls, link::Peer::ControlNode)),
            shutdown.clone().cancelled_owned(),
        );
    let raft_task = tokio::spawn(raft_server);

    bootstrap(&raft, &config).await?;

    let api_tls = match &config.api_tls_dir {
        Some(dir) => {
            let creds = crate::tls::credentials::Credentials::load(crate::tls::credentials::TlsFiles::in_dir(dir))
                .with_context(|| {
                    format!(
                        "no usable API certificate in {}; issue one with `keel ca issue --ca-dir CA --api NAME --out {}`",
                        dir.display(),
                        dir.display()
                    )
                })?;
            tokio::spawn(
                creds
                    .clone()
                    .watch(Duration::from_millis(config.tls_reload_ms), shutdown.clone()),
            );
            Some(crate::tls::api::server_config(&creds))
        }
        None => None,
    };
    let api_task = tokio::spawn(crate::api::serve(
        api_listener,
        ctx.clone(),
        api_tls.clone(),
        shutdown.clone(),
    ));
    let leader_task = tokio::spawn(crate::leader::run(ctx.clone(), shutdown.clone()));
    let dns_task = {
        let (zone, stop) = (ctx.zone.clone(), shutdown.clone());
        tokio::spawn(async move { zone.serve(dns_sockets, stop.cancelled_owned()).await })
    };
    tokio::spawn(dns_feed::run(ctx.clone(), ctx.zone.clone(), shutdown.clone()));
    tracing::info!(
        node = config.id,
        raft = %config.raft_addr,
        api = %config.api_addr,
        dns = %config.dns_addr,
        data = %config.data_dir.display(),
        "Control node is serving."
    );
    if config.insecure_no_auth {
        tracing::warn!(api = %config.api_addr, "Every API call is taken as the admin's, without a token (--insecure-no-auth: benchmarks only).");
    }
    if config.insecure_api && api_tls.is_none() {
        tracing::warn!(api = %config.api_addr, "The public API is plain text (--insecure-api): tokens and passwords cross the network in clear.");
    }

    shutdown.cancelled().await;
    tracing::info!(node = config.id, "Shutting down.");
    let _ = leader_task.await;
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), dns_task).await {
        tracing::error!(error = %e, "The DNS server failed.");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    raft.shutdown()
        .await
        .map_err(|e| anyhow!("Raft did not stop cleanly: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(5), raft_task).await;
    Ok(())
}

/// Initialise a new cluster when this node is one of its initial members and has no log yet.
async fn bootstrap(raft: &Raft, config: &ServerConfig) -> anyhow::Result<()> {
    if config.initial_members.is_empty() || raft.is_initialized().await? {
        return Ok(());
    }
    let members: BTreeMap<NodeId, KeelNode> = config
        .initial_members
        .iter()
        .map(|p| {
            (
                p.id,
                KeelNode {
                    raft_addr: p.raft_addr.clone(),
                    api_addr: p.api_addr.clone(),
                },
            )
        })
        .collect();
    // Every initial member writes the same first entry, so any of them may do it.
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("Initialised a new cluster of {} members.", config.initial_members.len()),
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
        Err(e) => return Err(anyhow!("cannot initialise the cluster: {e}")),
    }
    Ok(())
}
