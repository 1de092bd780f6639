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
        ("Health", through(c.health(HealthRequest::default()).await.map(drop))),
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

/// The public API over TLS: HTTPS and gRPC over TLS on one port with the CA's certificate;
/// plain text on that port gets nothing; the CLI works with the CA file and says what is
/// missing without it; the audit log keeps the caller's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_serves_https_and_grpc_over_tls() {
    use keel_jepsen::cluster::{Cluster, Spec};
    let c = Cluster::start(Spec::new(super::bin(), 3).with_api_tls())
        .await
        .expect("cluster starts");
    assert!(c.url(1).starts_with("https://"));
    let (code, who) = c.get(2, "/v1/whoami").await.unwrap();
    assert_eq!(code, 200, "{who}");
    let (code, op) = c.post(3, "/v1/ops/noop", &serde_json::json!({})).await.unwrap();
    assert_eq!(code, 200, "{op}");

    let mut grpc = c.grpc(1).await.unwrap();
    let me = grpc
        .who_am_i(keel_proto::keel::WhoAmIRequest {})
        .await
        .expect("gRPC over TLS")
        .into_inner();
    assert_eq!(me.role, "admin", "{me:?}");

    // Plain HTTP to the TLS port is not answered.
    let plain = reqwest::Client::new()
        .get(c.url(1).replacen("https", "http", 1) + "/v1/health")
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    // The CLI: with the CA file it works; without it, it says what to pass.
    let cli = |ca: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(super::bin());
        cmd.args(["whoami"])
            .env("KEEL_ADDR", c.url(1))
            .env("KEEL_TOKEN", c.token())
            .env("KEEL_PROFILE", "/nonexistent/keel-profile.toml")
            .env_remove("KEEL_CA_FILE");
        if let Some(ca) = ca {
            cmd.env("KEEL_CA_FILE", ca);
        }
        cmd.output().unwrap()
    };
    let ok = cli(Some(&c.api_ca()));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("admin"));
    let refused = cli(None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("KEEL_CA_FILE"));

    let (code, audit) = c.get(1, "/v1/audit?limit=1000").await.unwrap();
    assert_eq!(code, 200, "{audit}");
    let noop = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "submit-job")
        .unwrap_or_else(|| panic!("no noop in {audit}"));
    assert!(
        noop["source"].as_str().is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{noop}"
    );
}

/// `keel <args>` with the binary under test.
fn keel(args: &[&str]) {
    let out = std::process::Command::new(super::bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "keel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rotating the CA and every certificate while writes go on: each step is taken up by every
/// process without a restart (checked by handshakes only the new material allows or
/// refuses), and no write fails for longer than a leader election.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_and_every_certificate_rotate_while_writes_continue() {
    use keel_node::tls::{ca, credentials, link};
    let mut c = cluster(&["--tls-reload-ms", "100"]).await;
    c.start_hosts(1).await.unwrap();
    let ca_dir = c.ca_dir();
    let ca_arg = ca_dir.display().to_string();
    let mut dirs: Vec<(String, std::path::PathBuf, Peer)> = c
        .ids()
        .into_iter()
        .map(|id| {
            (
                format!("--node={id}"),
                c.node(id).data_dir.join("tls"),
                Peer::ControlNode,
            )
        })
        .collect();
    dirs.push(("--host=h1".into(), c.hosts[0].root.join("tls"), Peer::HostManager));
    let addrs: Vec<String> = c
        .ids()
        .into_iter()
        .map(|id| c.raft_addr(id))
        .chain([c.hosts[0].addr.clone()])
        .collect();

    // A control node's credentials from the CA as it is now, trusting `trust` (PEM file).
    let creds_now = |trust: Option<&std::path::Path>| {
        let dir = tempfile::tempdir().unwrap();
        ca::CaDir::at(&ca_dir)
            .issue(&ca::Subject::Member(Identity::node("lab", 9)), 1, dir.path())
            .unwrap();
        if let Some(t) = trust {
            std::fs::copy(t, dir.path().join(ca::CA_FILE)).unwrap();
        }
        credentials::Credentials::load(credentials::TlsFiles::in_dir(dir.path())).unwrap()
    };
    // Whether a fresh connection with `creds` gets a Health or Status answer from every process.
    let all_answer = |creds: std::sync::Arc<credentials::Credentials>| {
        let (dirs, addrs) = (dirs.clone(), addrs.clone());
        async move {
            for ((_, _, peer), addr) in dirs.iter().zip(&addrs) {
                let ch = link::channel(addr, link::client_config(&creds, *peer), Duration::from_secs(2)).unwrap();
                let ok = match peer {
                    Peer::HostManager => through(
                        HostManagerClient::new(ch)
                            .health(HealthRequest::default())
                            .await
                            .map(drop),
                    ),
                    Peer::ControlNode => through(RaftClient::new(ch).status(StatusRequest::default()).await.map(drop)),
                };
                if ok.is_err() {
                    return false;
                }
            }
            true
        }
    };
    let old = creds_now(None);
    assert!(all_answer(old.clone()).await, "the probes work before the rotation");

    // Writes through a follower (forwarded) and the leader, all the while.
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (http, stop) = (c.http().clone(), stop.clone());
        let urls: Vec<String> = c.ids().into_iter().map(|id| c.url(id)).collect();
        tokio::spawn(async move {
            let (mut ok, mut longest, mut failing_since) = (0u64, Duration::ZERO, None::<std::time::Instant>);
            let mut i = 0usize;
            while !stop.is_cancelled() {
                i += 1;
                let started = std::time::Instant::now();
                let url = format!("{}/v1/ops/noop", urls[i % urls.len()]);
                let res = http.post(url).json(&serde_json::json!({})).send().await;
                if res.is_ok_and(|r| r.status().is_success()) {
                    ok += 1;
                    if let Some(since) = failing_since.take() {
                        longest = longest.max(since.elapsed());
                    }
                } else {
                    failing_since.get_or_insert(started);
                }
            }
            (ok, longest, failing_since.map(|s| s.elapsed()))
        })
    };

    let wait = |what: &'static str, probe: std::sync::Arc<credentials::Credentials>, want: bool| {
        let c = &c;
        let all_answer = &all_answer;
        async move {
            c.wait_for(Duration::from_secs(30), what, || {
                let probe = probe.clone();
                async move { Ok((all_answer(probe).await == want).then_some(())) }
            })
            .await
            .unwrap()
        }
    };

    // 1. A new CA key, trusted beside the old one, spread to every process.
    keel(&["ca", "rotate", "--ca-dir", &ca_arg, "start"]);
    for (_, dir, _) in &dirs {
        keel(&["ca", "spread", "--ca-dir", &ca_arg, "--out", &dir.display().to_string()]);
    }
    wait("every process to trust the new CA", creds_now(None), true).await;

    // 2. Every certificate re-issued by the new key.
    for (who, dir, _) in &dirs {
        keel(&[
            "ca",
            "issue",
            "--ca-dir",
            &ca_arg,
            who,
            "--out",
            &dir.display().to_string(),
        ]);
    }
    let new_only = ca_dir.join("ca.crt");
    wait(
        "every process to serve its new certificate",
        creds_now(Some(&new_only)),
        true,
    )
    .await;

    // 3. The old CA dropped.
    keel(&["ca", "rotate", "--ca-dir", &ca_arg, "finish"]);
    for (_, dir, _) in &dirs {
        keel(&["ca", "spread", "--ca-dir", &ca_arg, "--out", &dir.display().to_string()]);
    }
    wait("every process to refuse the old CA's certificates", old, false).await;

    // A restarted member connects with nothing but the new material and catches up.
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    c.kill(follower);
    c.launch(follower).unwrap();
    let (code, op) = c.post(leader, "/v1/ops/noop", &serde_json::json!({})).await.unwrap();
    assert_eq!(code, 200, "{op}");
    let path = format!("/v1/ops/{}", op["id"].as_str().unwrap());
    c.wait_for(
        Duration::from_secs(30),
        "the restarted member to serve a new write",
        || async { Ok(matches!(c.get(follower, &path).await, Ok((200, _))).then_some(())) },
    )
    .await
    .unwrap();

    stop.cancel();
    let (ok, longest, still_failing) = writer.await.unwrap();
    eprintln!("writes during the rotation: {ok} succeeded; longest failing stretch {longest:?}");
    assert!(ok > 0, "no write succeeded during the rotation");
    assert_eq!(still_failing, None, "writes were failing at the end");
    // One election with these timeouts is well under a second; a rotation needs none.
    assert!(longest < Duration::from_secs(2), "writes failed for {longest:?}");
}
