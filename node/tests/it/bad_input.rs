//! Malformed or unknown requests get clear errors and change nothing; bad data directories are refused.

use std::time::Duration;

use keel_proto::keel::AddHostRequest;
use serde_json::json;

use super::{bin, cluster, host_names};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let c = cluster(&[]).await;
    let (code, _) = c
        .post(
            1,
            "/v1/hosts",
            &json!({"name": "h1", "addr": "10.0.0.1:7300", "zone": "a"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200);

    let cases = [
        (
            json!({"name": "Bad_Name", "addr": "10.0.0.2:7300", "zone": "a"}),
            400,
            "not valid",
        ),
        (json!({"name": "h2", "addr": "no-port", "zone": "a"}), 400, "HOST:PORT"),
        (json!({"name": "h2", "addr": "10.0.0.2:7300", "zone": ""}), 400, "zone"),
        (json!({"name": "h2", "addr": "10.0.0.2:7300"}), 400, "zone"),
        (
            json!({"name": "h2", "addr": "10.0.0.2:7300", "zone": "a", "colour": "red"}),
            400,
            "colour",
        ),
        (
            json!({"name": "h1", "addr": "10.0.0.9:7300", "zone": "a"}),
            409,
            "already exists",
        ),
        (
            json!({"name": "h3", "addr": "10.0.0.1:7300", "zone": "a"}),
            409,
            "already registered",
        ),
    ];
    for (body, want, phrase) in cases {
        let (code, problem) = c.post(2, "/v1/hosts", &body).await.unwrap();
        assert_eq!(code, want, "{body} -> {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(phrase),
            "{body}: detail {detail:?} should mention {phrase:?}"
        );
        assert_eq!(problem["status"], want);
    }
    let (code, problem) = c.post_raw(3, "/v1/hosts", "{not json").await.unwrap();
    assert_eq!(code, 400, "{problem}");
    let (code, _) = c.get(3, "/v1/no-such-thing").await.unwrap();
    assert_eq!(code, 404);
    let (code, problem) = c.get(3, "/v1/ops/nope").await.unwrap();
    assert_eq!(code, 404, "{problem}");
    let (code, problem) = c.delete(3, "/v1/hosts/ghost").await.unwrap();
    assert_eq!(code, 404, "{problem}");
    let (code, problem) = c
        .post(
            3,
            "/v1/cluster/nodes",
            &json!({"id": 0, "raft_addr": "x:1", "api_addr": "y:2"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 400, "{problem}");

    // gRPC says INVALID_ARGUMENT with the same sentence.
    let mut grpc = c.grpc(2).await.unwrap();
    let err = grpc
        .add_host(AddHostRequest {
            name: "UPPER".into(),
            addr: "10.0.0.5:7300".into(),
            zone: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not valid"), "{}", err.message());
    let ok = grpc
        .add_host(AddHostRequest {
            name: "h9".into(),
            addr: "10.0.0.9:7300".into(),
            zone: "b".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.created);

    for id in c.ids() {
        let names = host_names(&c, id).await.unwrap();
        assert_eq!(
            names,
            ["h1", "h9"].map(String::from).into(),
            "node {id} holds only the valid hosts"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_round_trips_through_any_node() {
    let c = cluster(&[]).await;
    let keel = |id: u64, args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("KEEL_ADDR", c.url(id))
            .env("KEEL_TOKEN", c.token())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = keel(
        2,
        &[
            "hosts",
            "add",
            "--name",
            "h1",
            "--addr",
            "127.0.1.1:7300",
            "--zone",
            "a",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("registered"), "{out}");
    let (ok, out, _) = keel(3, &["hosts", "list", "--output", "json"]);
    assert!(ok);
    let hosts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hosts[0]["addr"], "127.0.1.1:7300");
    let (ok, out, _) = keel(1, &["hosts", "list"]);
    assert!(ok && out.starts_with("NAME") && out.contains("h1"), "{out}");
    let (ok, _, err) = keel(
        1,
        &["hosts", "add", "--name", "x_y", "--addr", "1.2.3.4:1", "--zone", "a"],
    );
    assert!(!ok && err.contains("not valid"), "{err}");
    let (ok, out, _) = keel(1, &["cluster", "status"]);
    assert!(ok && out.contains("leader services: node"), "{out}");
    let (ok, out, _) = keel(2, &["ops", "noop", "--output", "json"]);
    assert!(ok, "{out}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.wait_for(Duration::from_secs(10), "the noop to succeed", || async {
        let (ok, out, _) = keel(3, &["ops", "describe", &id, "--output", "json"]);
        Ok((ok && serde_json::from_str::<serde_json::Value>(&out)?["state"] == "succeeded").then_some(()))
    })
    .await
    .unwrap();
    let (ok, out, _) = keel(3, &["ops", "list"]);
    assert!(ok && out.contains(&id) && out.contains("succeeded"), "{out}");
    let (ok, _, err) = std::process::Command::new(bin())
        .args(["hosts", "list"])
        .env("KEEL_ADDR", "http://127.0.0.1:1")
        .output()
        .map(|o| (o.status.success(), (), String::from_utf8_lossy(&o.stderr).to_string()))
        .unwrap();
    assert!(!ok && err.contains("cannot reach Keel"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_or_corrupt_data_directory_is_refused() {
    let mut c = cluster(&[]).await;
    let ids = c.ids();
    let victim = ids[2];
    // The cluster is up once a majority is; the victim must have made its data directory
    // (it answers its API only after) before it is killed, or there is nothing to refuse.
    c.wait_for(Duration::from_secs(30), "the victim to serve", || async {
        Ok(matches!(c.get(victim, "/v1/cluster/status").await, Ok((200, _))).then_some(()))
    })
    .await
    .unwrap();
    c.kill(victim);

    // Same directory, another cluster's name.
    let mut args = c.args_of(victim);
    let pos = args.iter().position(|a| a == "--cluster-name").unwrap();
    args[pos + 1] = "someone-else".into();
    let (ok, out) = c.run_to_exit(&args).unwrap();
    assert!(!ok, "must refuse: {out}");
    assert!(out.contains("belongs to cluster \"lab\""), "{out}");

    // Same cluster, another node id (started to join, so no --peer list).
    let mut args: Vec<String> = Vec::new();
    let mut it = c.args_of(victim).into_iter();
    while let Some(a) = it.next() {
        if a == "--peer" {
            it.next();
        } else {
            args.push(a);
        }
    }
    let pos = args.iter().position(|a| a == "--id").unwrap();
    args[pos + 1] = "9".into();
    let (ok, out) = c.run_to_exit(&args).unwrap();
    assert!(
        !ok && out.contains("node 3"),
        "must refuse another node's directory: {out}"
    );

    // Corrupt RocksDB's manifest.
    let dir = c.node(victim).data_dir.clone();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("MANIFEST") {
            std::fs::write(&path, b"this is not a manifest").unwrap();
        }
    }
    let (ok, out) = c.run_to_exit(&c.args_of(victim)).unwrap();
    assert!(!ok, "must refuse a corrupt directory: {out}");
    assert!(out.contains("cannot be opened"), "{out}");
}
