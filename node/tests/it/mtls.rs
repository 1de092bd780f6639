//! Mutual TLS on internal links: only a control node of the cluster gets through to a host
//! manager or a Raft port; strangers, other clusters' members and host managers are refused
//! at the TLS handshake, for every method.

use std::time::Duration;

use keel_node::tls::identity::Identity;
use keel_node::tls::link::Peer;
use keel_proto::host::host_manager_client::HostManagerClient;
use keel_proto::host::{HealthRequest, TaskRequest, TaskStatusRequest};
use keel_proto::raft::raft_client::RaftClient;
use keel_proto::raft::{Payload, ReadIndexRequest, StatusRequest};
use tonic::transport::Channel;

use super::{cluster, internal_channel};

/// `Ok` when the call reached the service, whatever it then answered (it refuses
/// garbage requests itself); `Err` when it failed before any service saw it.
fn through(r: Result<(), tonic::Status>) -> Result<(), tonic::Status> {
    match r {
        Err(s) if transport_failure(&s) => Err(s),
        _ => Ok(()),
    }
}

/// Every host-manager method's outcome over `channel` (see [`through`]).
async fn host_calls(channel: Channel) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut c = HostManagerClient::new(channel);
    vec![
        ("Health", through(c.health(HealthRequest {}).await.map(drop))),
        ("RunTask", through(c.run_task(TaskRequest::default()).await.map(drop))),
        (
            "TaskStatus",
            through(c.task_status(TaskStatusRequest::default()).await.map(drop)),
        ),
    ]
}

/// Every Raft-port method's outcome over `channel` (see [`through`]).
async fn raft_calls(channel: Channel) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let mut c = RaftClient::new(channel);
    let p = || Payload { data: vec![1] };
    vec![
        ("AppendEntries", through(c.append_entries(p()).await.map(drop))),
        (
            "Replicate",
            through(c.replicate(tokio_stream::iter(vec![p()])).await.map(drop)),
        ),
        ("Vote", through(c.vote(p()).await.map(drop))),
        ("InstallSnapshot", through(c.install_snapshot(p()).await.map(drop))),
        (
            "Forward",
            through(c.forward(tokio_stream::iter(vec![p()])).await.map(drop)),
        ),
        ("ChangeMembership", through(c.change_membership(p()).await.map(drop))),
        (
            "ReadIndex",
            through(c.read_index(ReadIndexRequest::default()).await.map(drop)),
        ),
        ("Status", through(c.status(StatusRequest::default()).await.map(drop))),
    ]
}

/// Whether a call failed before any service answered it.
fn transport_failure(s: &tonic::Status) -> bool {
    use std::error::Error;
    s.source().is_some() || matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Cancelled)
}

fn plain(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

fn assert_all_refused(who: &str, calls: Vec<(&'static str, Result<(), tonic::Status>)>) {
    for (method, outcome) in calls {
        assert!(outcome.is_err(), "{who} got through to {method}: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_clusters_control_nodes_get_through_internal_ports() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let (raft, host) = (c.raft_addr(leader), c.hosts[0].addr.clone());

    // The same calls with a member's certificate get through: the probes can tell.
    let member = |expect| {
        internal_channel(
            &c.ca_dir(),
            Identity::node("lab", 7),
            if expect == Peer::HostManager { &host } else { &raft },
            expect,
        )
    };
    for (method, outcome) in host_calls(member(Peer::HostManager)).await {
        outcome.unwrap_or_else(|e| panic!("a control node's {method} did not get through: {e}"));
    }
    for (method, outcome) in raft_calls(member(Peer::ControlNode)).await {
        outcome.unwrap_or_else(|e| panic!("a control node's {method} did not get through: {e}"));
    }

    // A stranger without a certificate.
    assert_all_refused("a plain-text caller", host_calls(plain(&host)).await);
    assert_all_refused("a plain-text caller", raft_calls(plain(&raft)).await);

    // A member of another cluster, with its own CA (same cluster name, even).
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("ca");
    keel_node::tls::ca::CaDir::at(&other_ca).init("lab").unwrap();
    let foreign = |addr: &str, expect| internal_channel(&other_ca, Identity::node("lab", 1), addr, expect);
    assert_all_refused(
        "another cluster's node",
        host_calls(foreign(&host, Peer::HostManager)).await,
    );
    assert_all_refused(
        "another cluster's node",
        raft_calls(foreign(&raft, Peer::ControlNode)).await,
    );

    // A host manager's certificate of this very cluster has no control-plane role.
    let as_host = |addr: &str, expect| internal_channel(&c.ca_dir(), Identity::host("lab", "h9"), addr, expect);
    assert_all_refused("a host manager", host_calls(as_host(&host, Peer::HostManager)).await);
    assert_all_refused("a host manager", raft_calls(as_host(&raft, Peer::ControlNode)).await);

    // Refused at the handshake, and said so in the logs.
    let host_log = std::fs::read_to_string(&c.hosts[0].log).unwrap();
    assert!(
        host_log.contains("Refused an internal connection at the TLS handshake"),
        "{host_log}"
    );
    let node_log = std::fs::read_to_string(&c.node(leader).log).unwrap();
    assert!(node_log.contains("may not take part in this link"), "{node_log}");

    // The cluster itself still works across its own links.
    let (code, op) = c.post(leader, "/v1/ops/noop", &serde_json::json!({})).await.unwrap();
    assert_eq!(code, 200, "{op}");
    let done = super::wait_op(&c, op["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
}
