//! The API's published surfaces: the OpenAPI document matches the routes
//! served, and the gRPC database operations work end to end.

use keel_proto::keel::keel_client::KeelClient;
use keel_proto::keel::{
    CreateDatabaseRequest, DeleteDatabaseRequest, DescribeDatabaseRequest, ListDatabasesRequest, ListEventsRequest,
};
use serde_json::json;

use super::{cluster, wait_op};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_path_is_served() {
    let c = cluster(&[]).await;
    let (code, doc) = c.get(2, "/v1/openapi.json").await.unwrap();
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    for required in [
        "/v1/databases",
        "/v1/databases/{name}",
        "/v1/events",
        "/v1/ops/{id}",
        "/v1/hosts",
    ] {
        assert!(paths.contains_key(required), "{required} is documented");
    }
    let http = reqwest::Client::new();
    for (path, methods) in paths {
        // Unknown names and ids: the route must exist even though the thing does not.
        let concrete = path.replace("{name}", "no-such-thing").replace("{id}", "9999");
        for method in methods.as_object().unwrap().keys() {
            let url = format!("{}{concrete}", c.url(1));
            let req = match method.as_str() {
                "get" => http.get(&url),
                "post" => http.post(&url).json(&json!({})),
                "patch" => http.patch(&url).json(&json!({})),
                "delete" => http.delete(&url),
                other => panic!("unexpected method {other} for {path}"),
            };
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} is documented but not routed");
            assert!(
                !text.contains("no such API path"),
                "{method} {path} is documented but not routed: {text}"
            );
        }
    }
    // And an undocumented path is refused with the routing message.
    let (code, v) = c.get(1, "/v1/nope").await.unwrap();
    assert_eq!(code, 404, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_over_grpc() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    let mut client = KeelClient::connect(c.url(3)).await.unwrap();
    let created = client
        .create_database(CreateDatabaseRequest {
            name: "viagrpc".into(),
            engine: "postgres".into(),
            class: "micro".into(),
            storage_gib: 1,
            master_user: "app".into(),
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
    let over_http: Vec<(String, String, u32)> = op["workflow"]["tasks"]
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
