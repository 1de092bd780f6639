//! Who may call what: every call needs a token, members reach only their own
//! account's databases, operations and events (another account's are "not found"),
//! admin calls refuse members, and a revoked token stops working.

use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use keel_proto::keel::{AddHostRequest, DescribeDatabaseRequest, ListDatabasesRequest, ListEventsRequest};
use serde_json::{json, Value};

use super::{cluster, create_body, wait_op};

/// Calls with `token` (none: no Authorization header).
struct Caller<'a> {
    c: &'a Cluster,
    token: Option<String>,
    http: reqwest::Client,
}

impl<'a> Caller<'a> {
    fn new(c: &'a Cluster, token: Option<&str>) -> Self {
        Self {
            c,
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.c.url(1));
        let mut req = match method {
            "get" => self.http.get(&url),
            "post" => self.http.post(&url),
            "put" => self.http.put(&url),
            "patch" => self.http.patch(&url),
            _ => self.http.delete(&url),
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }
}

/// Make account `name` and a member token for it, as the admin.
async fn member_of(c: &Cluster, name: &str) -> String {
    let (code, v) = c.post(1, "/v1/accounts", &json!({"name": name})).await.unwrap();
    assert_eq!(code, 200, "{v}");
    let body = json!({"name": format!("{name} ci"), "account": name, "role": "member"});
    let (code, v) = c.post(1, "/v1/tokens", &body).await.unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["details"]["account"], name, "{v}");
    v["token"].as_str().unwrap().to_string()
}

/// Every documented operation but the health check refuses a call without a valid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_but_the_health_check_needs_a_valid_token() {
    let c = cluster(&[]).await;
    let (_, doc) = c.get(1, "/v1/openapi.json").await.unwrap();
    let nobody = Caller::new(&c, None);
    let forged = Caller::new(&c, Some(&format!("keel_{}_{}", "0".repeat(16), "0".repeat(64))));
    let garbage = Caller::new(&c, Some("not-a-token"));
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{name}", "x").replace("{id}", "1");
        for method in item.as_object().unwrap().keys() {
            for caller in [&nobody, &forged, &garbage] {
                let (code, v) = caller.call(method, &concrete, Some(json!({}))).await;
                if path == "/v1/health" {
                    assert_eq!(code, 200, "{method} {path}: {v}");
                } else {
                    assert_eq!(code, 401, "{method} {path} without a valid token: {v}");
                    assert_eq!(v["type"], "urn:keel:problem:unauthenticated", "{v}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 3 * 20, "{checked} calls checked");
    // gRPC: UNAUTHENTICATED, before the method runs.
    let mut anonymous = c.grpc_as(2, "not-a-token").await.unwrap();
    let err = anonymous.list_databases(ListDatabasesRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // Every method the service declares, with no token and with a forged one.
    let methods: Vec<&str> = include_str!("../../../proto/proto/keel.proto")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .collect();
    assert!(methods.len() >= 25, "{methods:?}");
    let channel = tonic::transport::Endpoint::from_shared(c.url(3))
        .unwrap()
        .connect()
        .await
        .unwrap();
    for method in &methods {
        for token in [None, Some("Bearer keel_0000000000000000_00")] {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let mut req = tonic::Request::new(());
            if let Some(t) = token {
                req.metadata_mut().insert("authorization", t.parse().unwrap());
            }
            let path: tonic::codegen::http::uri::PathAndQuery = format!("/keel.v1.Keel/{method}").parse().unwrap();
            let codec = tonic::codec::ProstCodec::<(), ()>::default();
            let err = grpc.unary(req, path, codec).await.unwrap_err();
            assert_eq!(
                err.code(),
                tonic::Code::Unauthenticated,
                "{method} with {token:?}: {err:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_see_only_their_accounts_resources_and_no_admin_calls() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    let (alice, bob) = (member_of(&c, "alice").await, member_of(&c, "bob").await);
    let a = Caller::new(&c, Some(&alice));
    let b = Caller::new(&c, Some(&bob));

    let (code, who) = a.call("get", "/v1/whoami", None).await;
    assert_eq!(code, 200, "{who}");
    assert_eq!(
        (who["account"].as_str(), who["role"].as_str()),
        (Some("alice"), Some("member"))
    );

    // Alice creates a database; it is hers.
    let (code, made) = a.call("post", "/v1/databases", Some(create_body("ledger"))).await;
    assert_eq!(code, 200, "{made}");
    let op_id = made["operation_id"].as_str().unwrap().to_string();
    let op = wait_op(&c, &op_id).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, mine) = a.call("get", "/v1/databases/ledger", None).await;
    assert_eq!(mine["account"], "alice", "{mine}");
    // A member cannot create in another account.
    let mut elsewhere = create_body("sneaky");
    elsewhere["account"] = json!("bob");
    let (code, v) = a.call("post", "/v1/databases", Some(elsewhere)).await;
    assert_eq!(code, 403, "{v}");

    // Bob sees none of it, and Alice's names are "not found" to him, never "forbidden".
    let (_, listed) = b.call("get", "/v1/databases", None).await;
    assert_eq!(listed, json!([]), "bob lists no database");
    for (method, path, body) in [
        ("get", "/v1/databases/ledger".to_string(), None),
        (
            "patch",
            "/v1/databases/ledger".into(),
            Some(json!({"class": "medium", "apply_immediately": true})),
        ),
        ("delete", "/v1/databases/ledger".into(), None),
        ("get", format!("/v1/ops/{op_id}"), None),
    ] {
        let (code, v) = b.call(method, &path, body).await;
        assert_eq!(code, 404, "bob {method} {path}: {v}");
    }
    let (_, ops) = b.call("get", "/v1/ops?limit=1000", None).await;
    assert_eq!(ops, json!([]), "bob sees no operation");
    let (_, ops) = a.call("get", "/v1/ops?limit=1000", None).await;
    let ids: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [op_id.as_str()], "alice sees exactly her operation");
    let (_, events) = b.call("get", "/v1/events?limit=10000", None).await;
    assert_eq!(events, json!([]), "bob sees no event");
    let (_, events) = a.call("get", "/v1/events?db=ledger&limit=10000", None).await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "database-available"),
        "{events}"
    );
    let (_, all) = a.call("get", "/v1/events?limit=10000", None).await;
    for e in all.as_array().unwrap() {
        assert!(
            e["subject"] == "ledger.alice" || e["subject"] == op_id.as_str(),
            "alice sees only her database's and operation's events: {e}"
        );
    }

    // Security groups are per account too: Bob neither sees nor reaches Alice's.
    let (code, g) = a
        .call(
            "post",
            "/v1/security-groups",
            Some(json!({"name": "office", "cidrs": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(code, 200, "{g}");
    let (_, bobs) = b.call("get", "/v1/security-groups", None).await;
    let names: Vec<(&str, &str)> = bobs
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), g["account"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("default", "bob")], "{bobs}");
    for path in ["/v1/security-groups/office", "/v1/security-groups/office.alice"] {
        let rules = Some(json!({"cidrs": ["0.0.0.0/0"]}));
        let (code, v) = b.call("post", &format!("{path}/authorize"), rules.clone()).await;
        assert_eq!(code, 404, "bob authorize {path}: {v}");
        let (code, v) = b.call("post", &format!("{path}/revoke"), rules).await;
        assert_eq!(code, 404, "bob revoke {path}: {v}");
        let (code, v) = b.call("delete", path, None).await;
        assert_eq!(code, 404, "bob delete {path}: {v}");
    }
    let mut in_her_group = create_body("sneaky");
    in_her_group["security_groups"] = json!(["office"]);
    let (code, v) = b.call("post", "/v1/databases", Some(in_her_group)).await;
    assert_eq!(code, 404, "bob cannot put a database in alice's group: {v}");
    let (_, hers) = a.call("get", "/v1/security-groups", None).await;
    assert!(hers.to_string().contains("10.0.0.0/8"), "still as she made it: {hers}");

    // Snapshots are per account: Alice's is hers to list, restore and delete; to Bob her
    // snapshot and her database's backups do not exist.
    let (code, snap) = a
        .call(
            "post",
            "/v1/databases/ledger/snapshots",
            Some(json!({"snapshot": "keep"})),
        )
        .await;
    assert_eq!(code, 200, "{snap}");
    assert_eq!(
        wait_op(&c, snap["operation_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    let (_, mine) = a.call("get", "/v1/snapshots", None).await;
    assert_eq!(mine[0]["name"], "keep", "{mine}");
    let (_, listed) = b.call("get", "/v1/snapshots", None).await;
    assert_eq!(listed, json!([]), "bob lists no snapshot");
    for (method, path, body) in [
        ("get", "/v1/snapshots/keep", None),
        ("get", "/v1/snapshots/keep.alice", None),
        ("delete", "/v1/snapshots/keep.alice", None),
        ("get", "/v1/snapshots?db=ledger.alice", None),
        (
            "post",
            "/v1/databases/ledger.alice/snapshots",
            Some(json!({"snapshot": "mine-now"})),
        ),
        (
            "post",
            "/v1/databases/ledger.alice/restore",
            Some(json!({"to": "stolen", "snapshot": "keep.alice"})),
        ),
        (
            "post",
            "/v1/databases/ledger.alice/clone",
            Some(json!({"to": "stolen"})),
        ),
        ("post", "/v1/databases/ledger.alice/recover", Some(json!({}))),
        ("post", "/v1/databases/ledger/recover", Some(json!({}))),
        // High availability: switchover, its timeline and plan, read replicas.
        ("post", "/v1/databases/ledger.alice/failover", Some(json!({}))),
        ("delete", "/v1/databases/ledger.alice/failover", None),
        ("get", "/v1/databases/ledger.alice/failovers", None),
        ("get", "/v1/databases/ledger.alice/standby-plan", None),
        ("get", "/v1/databases/ledger.alice/replicas", None),
        ("post", "/v1/databases/ledger.alice/replicas", Some(json!({}))),
        ("delete", "/v1/databases/ledger.alice/replicas/r1", None),
        (
            "post",
            "/v1/databases/ledger.alice/replicas/r1/promote",
            Some(json!({"to": "stolen"})),
        ),
    ] {
        let (code, v) = b.call(method, path, body).await;
        assert_eq!(code, 404, "bob {method} {path}: {v}");
    }
    let (code, _) = a.call("get", "/v1/snapshots/keep", None).await;
    assert_eq!(code, 200, "bob's attempts left alice's snapshot alone");

    // Admin calls refuse members with 403.
    for (method, path) in [
        ("get", "/v1/hosts"),
        ("post", "/v1/hosts"),
        ("delete", "/v1/hosts/h1"),
        ("post", "/v1/ops/noop"),
        ("get", "/v1/cluster/status"),
        ("post", "/v1/cluster/nodes"),
        ("get", "/v1/dns/zone"),
        ("get", "/v1/node"),
        ("get", "/v1/accounts"),
        ("post", "/v1/accounts"),
        ("get", "/v1/tokens"),
        ("post", "/v1/tokens"),
        ("get", "/v1/audit"),
    ] {
        let (code, v) = b.call(method, path, Some(json!({}))).await;
        assert_eq!(code, 403, "bob {method} {path}: {v}");
        assert_eq!(v["type"], "urn:keel:problem:permission-denied", "{v}");
    }

    // The same over gRPC.
    let mut bob_grpc = c.grpc_as(3, &bob).await.unwrap();
    let listed = bob_grpc
        .list_databases(ListDatabasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.databases.is_empty());
    let err = bob_grpc
        .describe_database(DescribeDatabaseRequest { name: "ledger".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let name = || "ledger.alice".to_string();
    let errs = [
        bob_grpc
            .list_replicas(keel_proto::keel::ListReplicasRequest { name: name() })
            .await
            .unwrap_err(),
        bob_grpc
            .add_replica(keel_proto::keel::AddReplicaRequest {
                name: name(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        bob_grpc
            .list_failovers(keel_proto::keel::ListFailoversRequest { name: name() })
            .await
            .unwrap_err(),
        bob_grpc
            .switchover(keel_proto::keel::SwitchoverRequest {
                name: name(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    ];
    for err in errs {
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    }
    let events = bob_grpc
        .list_events(ListEventsRequest {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(events.events.is_empty());
    let err = bob_grpc
        .add_host(AddHostRequest {
            name: "h9".into(),
            addr: "10.0.0.9:7300".into(),
            zone: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let groups = bob_grpc
        .list_security_groups(keel_proto::keel::ListSecurityGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups;
    let names: Vec<(&str, &str)> = groups.iter().map(|g| (g.name.as_str(), g.account.as_str())).collect();
    assert_eq!(names, [("default", "bob")]);
    for name in ["office", "office.alice"] {
        let change = keel_proto::keel::ChangeSecurityGroupRequest {
            name: name.into(),
            cidrs: vec!["0.0.0.0/0".into()],
        };
        let err = bob_grpc.authorize_security_group(change.clone()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{name}: {err:?}");
        let err = bob_grpc.revoke_security_group(change).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{name}: {err:?}");
        let delete = keel_proto::keel::DeleteSecurityGroupRequest { name: name.into() };
        let err = bob_grpc.delete_security_group(delete).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{name}: {err:?}");
    }
    use keel_proto::keel as pb;
    let snapshots = bob_grpc
        .list_snapshots(pb::ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .snapshots;
    assert!(snapshots.is_empty(), "{snapshots:?}");
    for name in ["keep", "keep.alice"] {
        let err = bob_grpc
            .describe_snapshot(pb::DescribeSnapshotRequest { name: name.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{name}: {err:?}");
        let err = bob_grpc
            .delete_snapshot(pb::DeleteSnapshotRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{name}: {err:?}");
    }
    let err = bob_grpc
        .snapshot_database(pb::SnapshotDatabaseRequest {
            name: "ledger.alice".into(),
            snapshot: "mine-now".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let steal = pb::RestoreDatabaseRequest {
        source: "ledger.alice".into(),
        to: "stolen".into(),
        latest: true,
        ..Default::default()
    };
    let err = bob_grpc.restore_database(steal.clone()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = bob_grpc.clone_database(steal).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = bob_grpc
        .recover_database(pb::RecoverDatabaseRequest {
            name: "ledger.alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let mut alice_grpc = c.grpc_as(3, &alice).await.unwrap();
    let d = alice_grpc
        .describe_database(DescribeDatabaseRequest { name: "ledger".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.account, "alice");

    // Names are per account: Bob may have a `ledger` too, with its own DNS name.
    let (code, made) = b.call("post", "/v1/databases", Some(create_body("ledger"))).await;
    assert_eq!(code, 200, "{made}");
    let op = wait_op(&c, made["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let zone = c
        .http()
        .get(format!("{}/v1/dns/zone", c.url(1)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "ledger.alice",
        "ledger.bob",
        "_postgresql._tcp.ledger.alice",
        "ledger.ro.bob",
    ] {
        assert!(
            zone.lines().any(|l| l.starts_with(&format!("{name}\t"))),
            "{name} in\n{zone}"
        );
    }
    let (_, theirs) = b.call("get", "/v1/databases/ledger", None).await;
    assert_eq!(theirs["account"], "bob", "{theirs}");

    // The admin sees every account's, and names another account's as <name>.<account>.
    let (_, everyone) = c.get(2, "/v1/databases").await.unwrap();
    assert_eq!(everyone.as_array().unwrap().len(), 2, "{everyone}");
    let (code, hers) = c.get(2, "/v1/databases/ledger.alice").await.unwrap();
    assert_eq!((code, hers["account"].as_str()), (200, Some("alice")), "{hers}");
    let (code, v) = b.call("get", "/v1/databases/ledger.alice", None).await;
    assert_eq!(code, 404, "bob cannot reach alice's by its full name either: {v}");

    // The audit log has Alice's create, group and snapshot (and her refused attempt to create in Bob's
    // account never reached the store); Bob's probes were answered at the edge.
    let (code, audit) = c.get(1, "/v1/audit?account=alice&limit=1000").await.unwrap();
    assert_eq!(code, 200, "{audit}");
    let by_alice: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["account"] == "alice")
        .collect();
    assert_eq!(by_alice.len(), 3, "{audit}");
    assert_eq!(by_alice[1]["action"], "create-security-group", "{audit}");
    assert_eq!(by_alice[2]["action"], "snapshot-database", "{audit}");
    let r = by_alice[0];
    assert_eq!(
        (r["action"].as_str(), r["target"].as_str()),
        (Some("create-database"), Some("ledger")),
        "{r}"
    );
    assert_eq!(
        (r["role"].as_str(), r["outcome"].as_str()),
        (Some("member"), Some("ok")),
        "{r}"
    );
    assert!(r["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{r}");
    let (_, audit) = c.get(1, "/v1/audit?account=bob&limit=1000").await.unwrap();
    let by_bob: Vec<(&str, &str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["account"] == "bob")
        .map(|r| {
            let field = |k: &str| r[k].as_str().unwrap();
            (field("action"), field("target"), field("outcome"))
        })
        .collect();
    // His "ledger" and "office" always meant his own: refused while they did not exist
    // (over HTTP, then gRPC), and so was his database in "office"; then his ledger was
    // created. Nothing of
    // alice's was reached, nor named in his records.
    let outcomes: Vec<(&str, &str, bool)> = by_bob.iter().map(|(a, t, o)| (*a, *t, *o == "ok")).collect();
    assert_eq!(
        outcomes,
        [
            ("modify-database", "ledger.bob", false),
            ("delete-database", "ledger.bob", false),
            ("change-security-group", "office", false),
            ("change-security-group", "office", false),
            ("delete-security-group", "office", false),
            ("create-database", "sneaky", false),
            // His "ledger" recover meant his own, which does not exist yet.
            ("recover-database", "ledger.bob", false),
            ("change-security-group", "office", false),
            ("change-security-group", "office", false),
            ("delete-security-group", "office", false),
            // His gRPC delete of "keep" meant his own snapshot, which does not exist.
            ("delete-snapshot", "keep.bob", false),
            ("create-database", "ledger", true),
        ],
        "{audit}"
    );
    assert!(!audit.to_string().contains("ledger.alice"), "{audit}");

    // Alice deletes hers; a retry of the delete answers the same operation, even now
    // that the database is gone.
    let (code, deleted) = a.call("delete", "/v1/databases/ledger?request_id=del-1", None).await;
    assert_eq!(code, 200, "{deleted}");
    let op = wait_op(&c, deleted["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (code, again) = a.call("delete", "/v1/databases/ledger?request_id=del-1", None).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["operation_id"], deleted["operation_id"], "{again}");
    let (code, v) = a.call("delete", "/v1/databases/ledger", None).await;
    assert_eq!(code, 404, "a new delete of a deleted database: {v}");

    // A revoked token stops working on every node.
    let (_, tokens) = c.get(1, "/v1/tokens?account=alice").await.unwrap();
    let id = tokens[0]["id"].as_str().unwrap().to_string();
    assert_eq!(tokens[0]["name"], "alice ci", "{tokens}");
    assert!(
        tokens[0].get("secret_sha256").is_none(),
        "listings never carry the hash: {tokens}"
    );
    let (code, v) = c.delete(1, &format!("/v1/tokens/{id}")).await.unwrap();
    assert_eq!(code, 200, "{v}");
    for node in c.ids() {
        c.wait_for(
            Duration::from_secs(10),
            "the revocation to reach every node",
            || async {
                let resp = reqwest::Client::new()
                    .get(format!("{}/v1/whoami", c.url(node)))
                    .bearer_auth(&alice)
                    .send()
                    .await?;
                Ok((resp.status().as_u16() == 401).then_some(()))
            },
        )
        .await
        .unwrap();
    }
}

/// The Raft port's `Forward` carries only API writes: a forged leader command (here the
/// one that would depose every leader for ever) is refused, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_port_refuses_leader_commands_forwarded_to_it() {
    use keel_proto::raft::raft_client::RaftClient;
    use keel_proto::raft::Payload;
    use keel_raft_store::{codec, Command, Proposal};

    let c = cluster(&[]).await;
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    // With a member's own certificate: TLS lets it in, the command check must not.
    let mut raft = RaftClient::new(super::internal_channel(
        &c.ca_dir(),
        keel_node::tls::identity::Identity::node("lab", 2),
        &c.raft_addr(leader),
        keel_node::tls::link::Peer::ControlNode,
    ));
    let forged = vec![Proposal::new(
        1,
        Command::StartLeaderServices {
            node_id: 9,
            term: u64::MAX,
        },
    )];
    let payload = Payload {
        data: codec::encode(&forged),
    };
    let mut req = tonic::Request::new(tokio_stream::iter(vec![payload]));
    req.metadata_mut().insert("x-keel-cluster", c.name.parse().unwrap());
    let mut answers = raft.forward(req).await.unwrap().into_inner();
    let first = answers.message().await.unwrap().expect("an answer");
    let answer: Value = codec::decode(&first.data).unwrap();
    assert!(answer.to_string().contains("never forwarded"), "{answer}");
    let (_, status) = c.get(leader, "/v1/cluster/status").await.unwrap();
    assert_ne!(status["leader_services"]["term"], json!(u64::MAX), "{status}");
    assert_ne!(status["leader_services"]["node_id"], json!(9), "{status}");
    // The services in force still run jobs.
    let (code, op) = c.post(leader, "/v1/ops/noop", &json!({})).await.unwrap();
    assert_eq!(code, 200, "{op}");
    let done = wait_op(&c, op["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
}

/// One account's burst is throttled (429 with Retry-After) while another's calls go on;
/// an admin can raise an account's limit; an account's heavy workflows run at most its
/// cap at once, and every one of them runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_throttled_apart_and_their_heavy_workflows_queue() {
    let mut c = cluster(&[
        "--api-requests-per-second",
        "2",
        "--api-burst",
        "5",
        "--heavy-workflows-per-account",
        "1",
    ])
    .await;
    c.start_hosts(1).await.unwrap();
    let (alice, bob) = (member_of(&c, "alice").await, member_of(&c, "bob").await);
    let a = Caller::new(&c, Some(&alice));
    let b = Caller::new(&c, Some(&bob));

    // Three creates fit Alice's burst; with a cap of 1 they run one at a time.
    let mut ops = Vec::new();
    for name in ["q1", "q2", "q3"] {
        let (code, made) = a.call("post", "/v1/databases", Some(create_body(name))).await;
        assert_eq!(code, 200, "{made}");
        ops.push(made["operation_id"].as_str().unwrap().to_string());
    }
    // Now her burst: some calls are refused with a Retry-After, while Bob's all pass.
    let mut refused = 0;
    for _ in 0..20 {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/databases", c.url(1)))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=5).contains(&retry), "Retry-After {retry}");
            let problem: Value = resp.json().await.unwrap();
            assert_eq!(problem["type"], "urn:keel:problem:too-many-requests", "{problem}");
            refused += 1;
        }
    }
    assert!(
        refused >= 10,
        "alice's burst of 20 on 5 + 2/s was refused {refused} times"
    );
    for _ in 0..3 {
        let (code, v) = b.call("get", "/v1/databases", None).await;
        assert_eq!(code, 200, "bob is not held back by alice's burst: {v}");
    }
    let mut bob_grpc = c.grpc_as(1, &bob).await.unwrap();
    assert!(bob_grpc.list_databases(ListDatabasesRequest {}).await.is_ok());

    // As the admin (who is not throttled): all three finish, and each was claimed only
    // after the one before had finished.
    let mut done = Vec::new();
    for id in &ops {
        let op = wait_op(&c, id).await;
        assert_eq!(op["state"], "succeeded", "{op}");
        done.push(op);
    }
    let mut spans: Vec<(u64, u64)> = done
        .iter()
        .map(|o| {
            (
                o["claims"][0]["at_ms"].as_u64().unwrap(),
                o["finished_at_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "with a cap of one, no two creates overlap: {spans:?}"
        );
    }

    // An admin raises Alice's limit: her burst passes.
    let raised = c
        .http()
        .patch(format!("{}/v1/accounts/alice", c.url(1)))
        .json(&json!({"requests_per_second": 1000, "burst": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status(), 200, "{:?}", raised.text().await);
    c.wait_for(Duration::from_secs(10), "the new limit to reach node 1", || async {
        let (code, _) = a.call("get", "/v1/whoami", None).await;
        Ok((code == 200).then_some(()))
    })
    .await
    .unwrap();
    for _ in 0..20 {
        let (code, v) = a.call("get", "/v1/databases", None).await;
        assert_eq!(code, 200, "{v}");
    }
}

/// Accounts, tokens, WhoAmI and the audit log answer over gRPC as over HTTP, with the
/// same roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_tokens_and_audit_over_grpc() {
    use keel_proto::keel::{
        CreateAccountRequest, CreateTokenRequest, ListAccountsRequest, ListAuditRequest, ListTokensRequest,
        RevokeTokenRequest, WhoAmIRequest,
    };
    let c = cluster(&[]).await;
    let mut admin = c.grpc(2).await.unwrap();
    let made = admin
        .create_account(CreateAccountRequest { name: "carol".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.name, "carol");
    let token = admin
        .create_token(CreateTokenRequest {
            name: "ci".into(),
            account: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let details = token.details.unwrap();
    assert_eq!((details.account.as_str(), details.role.as_str()), ("carol", "member"));
    let mut carol = c.grpc_as(3, &token.token).await.unwrap();
    let me = carol.who_am_i(WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.account.as_str(), me.role.as_str()), ("carol", "member"));
    let err = carol.list_accounts(ListAccountsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = carol.list_audit(ListAuditRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = carol
        .set_account_limits(keel_proto::keel::SetAccountLimitsRequest {
            name: "carol".into(),
            limits: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "a member cannot raise its own limits: {err:?}"
    );
    let listed = admin
        .list_tokens(ListTokensRequest {
            account: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.tokens.len(), 1);
    let audit = admin
        .list_audit(ListAuditRequest {
            account: "carol".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<&str> = audit.records.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(actions, ["create-account", "create-token"], "{audit:?}");
    admin
        .revoke_token(RevokeTokenRequest { id: details.id.clone() })
        .await
        .unwrap();
    c.wait_for(Duration::from_secs(10), "the revocation to reach node 3", || async {
        let mut carol = c.grpc_as(3, &token.token).await?;
        let r = carol.who_am_i(WhoAmIRequest {}).await;
        Ok(r.is_err_and(|e| e.code() == tonic::Code::Unauthenticated).then_some(()))
    })
    .await
    .unwrap();
}

/// A token's last use reaches the listing (recorded in batches, here every 200 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokens_last_use_is_recorded() {
    let c = cluster(&["--token-use-flush-ms", "200"]).await;
    let dave = member_of(&c, "dave").await;
    let (_, listed) = c.get(1, "/v1/tokens?account=dave").await.unwrap();
    assert!(listed[0]["last_used_ms"].is_null(), "not used yet: {listed}");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (code, _) = Caller::new(&c, Some(&dave)).call("get", "/v1/whoami", None).await;
    assert_eq!(code, 200);
    let used = c
        .wait_for(
            Duration::from_secs(10),
            "dave's token's last use to be recorded",
            || async {
                let (_, listed) = c.get(2, "/v1/tokens?account=dave").await?;
                Ok(listed[0]["last_used_ms"].as_u64())
            },
        )
        .await
        .unwrap();
    assert!(used >= before, "last used {used} is the call's time (after {before})");
}
