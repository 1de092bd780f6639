//! The API's published surfaces: the OpenAPI document matches the routes
//! served, and the gRPC database operations work end to end.

use keel_proto::keel::{
    CreateDatabaseRequest, DeleteDatabaseRequest, DescribeDatabaseRequest, ListDatabasesRequest, ListEventsRequest,
};
use serde_json::json;

use super::{cluster, wait_op};

/// Every documented operation is routed, every other method on a documented path is
/// refused with 405 and an `Allow` header, and every refusal is a problem document.
/// (The router registers routes only through the document, so nothing is served undocumented.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_and_nothing_else_does() {
    let c = cluster(&[]).await;
    let (code, doc) = c.get(2, "/v1/openapi.json").await.unwrap();
    assert_eq!(code, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/v1/databases",
        "/v1/databases/{name}",
        "/v1/events",
        "/v1/ops",
        "/v1/ops/{id}",
        "/v1/hosts",
        "/v1/cluster/status",
        "/v1/openapi.json",
    ] {
        assert!(paths.contains_key(required), "{required} is documented");
    }
    let http = c.http();
    let mut answered = 0;
    for (path, item) in paths {
        // Unknown names and ids: the route must exist even though the thing does not.
        let concrete = path.replace("{name}", "no-such-thing").replace("{id}", "9999");
        let url = format!("{}{concrete}", c.url(1));
        let documented: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        for method in ["get", "post", "put", "patch", "delete"] {
            // Membership changes are not made here; that they are routed is shown by their own tests.
            if path.starts_with("/v1/cluster/nodes") && documented.contains(&method) {
                continue;
            }
            let req = match method {
                "get" => http.get(&url),
                "post" => http.post(&url).json(&json!({})),
                "put" => http.put(&url).json(&json!({})),
                "patch" => http.patch(&url).json(&json!({})),
                _ => http.delete(&url),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let allow = resp.headers().get("allow").map(|v| v.to_str().unwrap().to_lowercase());
            let content_type = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string());
            let text = resp.text().await.unwrap();
            if status >= 400 {
                assert_eq!(
                    content_type.as_deref(),
                    Some("application/problem+json"),
                    "{method} {path}: {status} {text}"
                );
            }
            if documented.contains(&method) {
                assert_ne!(status, 405, "{method} {path} is documented but not routed");
                assert!(
                    !text.contains("no such API path"),
                    "{method} {path} is documented but not routed: {text}"
                );
                answered += 1;
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented: {text}");
                let allow = allow.unwrap_or_default();
                for m in &documented {
                    assert!(allow.contains(m), "{path}: Allow {allow:?} names {m}");
                }
            }
        }
    }
    assert!(answered >= 15, "{answered} documented operations answered");
    // And an undocumented path is refused with the routing message, as a problem.
    let (code, v) = c.get(1, "/v1/nope").await.unwrap();
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["type"], "urn:keel:problem:not-found", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_over_grpc() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    let mut client = c.grpc(3).await.unwrap();
    let created = client
        .create_database(CreateDatabaseRequest {
            name: "viagrpc".into(),
            engine: "postgres".into(),
            class: "micro".into(),
            storage_gib: 1,
            master_user: "app".into(),
            backup_retention_days: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let password = created.master_password.clone();
    assert!(password.len() >= 16, "a generated password is returned once");
    let op = wait_op(&c, &created.operation_id).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    // gRPC describes an operation with the same tasks HTTP shows.
    let described = client
        .describe_operation(keel_proto::keel::DescribeOperationRequest {
            id: created.operation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let over_grpc: Vec<(String, String, u32)> = described
        .tasks
        .iter()
        .map(|t| (t.action.clone(), t.state.clone(), t.attempt))
        .collect();
    let over_http: Vec<(String, String, u32)> = op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["action"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
                t["attempt"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    assert_eq!(over_grpc, over_http);
    assert_eq!(over_grpc.len(), 3, "{described:?}");

    let db = client
        .describe_database(DescribeDatabaseRequest { name: "viagrpc".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(db.status, "available");
    assert!(db.operation_id.is_empty());
    let endpoint = db.endpoint.expect("an available database has an endpoint");
    let (pg, conn) = tokio_postgres::connect(
        &format!(
            "host={} port={} user=app password='{password}' dbname=postgres connect_timeout=5",
            endpoint.addr, endpoint.port
        ),
        tokio_postgres::NoTls,
    )
    .await
    .expect("connect with the generated password");
    tokio::spawn(conn);
    pg.simple_query("SELECT 1").await.unwrap();
    drop(pg);

    let listed = client
        .list_databases(ListDatabasesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.databases.len(), 1);
    let events = client
        .list_events(ListEventsRequest {
            db: "viagrpc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        events.events.iter().any(|e| e.kind == "database-available"),
        "{:?}",
        events.events
    );

    // The high-availability calls answer over gRPC as over HTTP: nothing yet, and
    // refusals with what to do.
    let replicas = client
        .list_replicas(keel_proto::keel::ListReplicasRequest { name: "viagrpc".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(replicas.replicas.is_empty());
    let failovers = client
        .list_failovers(keel_proto::keel::ListFailoversRequest { name: "viagrpc".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(failovers.failovers.is_empty());
    let no_backups = client
        .add_replica(keel_proto::keel::AddReplicaRequest {
            name: "viagrpc".into(),
            ..Default::default()
        })
        .await
        .expect_err("a replica is built from backups, and this database keeps none");
    assert!(no_backups.message().contains("retention 0"), "{no_backups:?}");
    let not_multi_az = client
        .switchover(keel_proto::keel::SwitchoverRequest {
            name: "viagrpc".into(),
            ..Default::default()
        })
        .await
        .expect_err("not Multi-AZ");
    assert!(not_multi_az.message().contains("not Multi-AZ"), "{not_multi_az:?}");
    let missing = client
        .list_replicas(keel_proto::keel::ListReplicasRequest { name: "nosuch".into() })
        .await
        .expect_err("an unknown database");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    let bad = client
        .create_database(CreateDatabaseRequest {
            name: "Bad_Name".into(),
            engine: "postgres".into(),
            class: "micro".into(),
            storage_gib: 1,
            master_user: "app".into(),
            ..Default::default()
        })
        .await
        .expect_err("an invalid name is refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    let deleted = client
        .delete_database(DeleteDatabaseRequest {
            name: "viagrpc".into(),
            request_id: String::new(),
            final_snapshot: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let op = wait_op(&c, &deleted.operation_id).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let gone = client
        .describe_database(DescribeDatabaseRequest { name: "viagrpc".into() })
        .await
        .expect_err("a deleted database is gone");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}
