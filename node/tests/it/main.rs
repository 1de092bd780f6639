//! Integration tests: real `keel server` processes on loopback.

mod access;
mod api_surface;
mod backup_store;
mod backups;
mod bad_input;
mod cluster_faults;
mod databases;
mod dns;
mod failover;
mod fuzz;
mod host_manager;
mod membership;
mod monitor;
mod mtls;
mod multi_az;
mod recovery;
mod replicas;
mod security_groups;
mod sweeper;
mod workflow_faults;

use std::time::Duration;

use keel_jepsen::cluster::{Cluster, Spec};
use serde_json::{json, Value};

/// The `keel` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_keel")
}

/// A 3-node cluster with default settings plus `args`.
pub async fn cluster(args: &[&str]) -> Cluster {
    Cluster::start(Spec::new(bin(), 3).args(args))
        .await
        .expect("cluster starts")
}

/// The master password the database tests use.
pub const PASSWORD: &str = "s3cret pass word";

/// A create-database body for a small 1 GiB PostgreSQL database without backups: a
/// snapshot holds the database's operation slot, and these tests time their own
/// operations (backups.rs turns them on).
pub fn create_body(name: &str) -> Value {
    json!({"name": name, "engine": "postgres", "class": "small", "storage_gib": 1,
           "master_user": "app", "master_password": PASSWORD, "backup_retention_days": 0})
}

/// Wait for operation `id` to finish, asking whichever nodes are running.
pub async fn wait_op(c: &Cluster, id: &str) -> Value {
    c.wait_for(
        Duration::from_secs(120),
        &format!("operation {id} to finish"),
        || async {
            for node in c.running() {
                if let Ok((200, op)) = c.get(node, &format!("/v1/ops/{id}")).await {
                    let done = op["state"] == "succeeded" || op["state"] == "failed";
                    return Ok(done.then_some(op));
                }
            }
            Ok(None)
        },
    )
    .await
    .unwrap()
}

/// A host registration body.
pub fn host(i: usize) -> Value {
    json!({"name": format!("h{i}"), "addr": format!("10.1.{}.{}:7300", i / 250, i % 250), "zone": "a"})
}

/// Host names node `id` has applied, read through its own API.
pub async fn host_names(c: &Cluster, id: u64) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let (code, v) = c.get(id, "/v1/hosts").await?;
    anyhow::ensure!(code == 200, "node {id} answered {code}: {v}");
    Ok(v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect())
}

/// Wait until node `id` has every host in `want`.
pub async fn wait_has_hosts(c: &Cluster, id: u64, want: &std::collections::BTreeSet<String>) {
    c.wait_for(
        Duration::from_secs(60),
        &format!("node {id} to hold every acknowledged host"),
        || async {
            let have = host_names(c, id).await?;
            Ok(want.is_subset(&have).then_some(()))
        },
    )
    .await
    .unwrap();
}

/// A log line without its ANSI colouring.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// A channel to an internal port (Raft or a host manager) presenting a certificate the CA in
/// `ca_dir` issues to `who`, and accepting only an `expect` callee.
pub fn internal_channel(
    ca_dir: &std::path::Path,
    who: keel_node::tls::identity::Identity,
    addr: &str,
    expect: keel_node::tls::link::Peer,
) -> tonic::transport::Channel {
    use keel_node::tls::{ca, credentials, link};
    let dir = tempfile::tempdir().unwrap();
    ca::CaDir::at(ca_dir)
        .issue(&ca::Subject::Member(who), 1, dir.path())
        .unwrap();
    let creds = credentials::Credentials::load(credentials::TlsFiles::in_dir(dir.path())).unwrap();
    link::channel(addr, link::client_config(&creds, expect), Duration::from_secs(5)).unwrap()
}

/// A control node's channel to a host manager of cluster `lab` (the fixture's cluster).
pub fn host_channel(ca_dir: &std::path::Path, addr: &str) -> tonic::transport::Channel {
    internal_channel(
        ca_dir,
        keel_node::tls::identity::Identity::node("lab", 1),
        addr,
        keel_node::tls::link::Peer::HostManager,
    )
}

/// The actions of an operation's tasks, in order.
pub fn task_actions(op: &Value) -> Vec<&str> {
    op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect()
}
