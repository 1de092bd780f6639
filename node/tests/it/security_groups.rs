//! Security groups end to end: a database's pg_hba admits only its groups' networks;
//! authorize and revoke reach the running instance through a modify workflow, without a
//! restart; the default group allows loopback only.

use std::time::Duration;

use serde_json::{json, Value};

use super::{cluster, create_body, wait_op, PASSWORD};

/// Connect as the master user from source address `src`.
async fn connect_from(src: &str, addr: &str, port: u64) -> Result<tokio_postgres::Client, String> {
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(format!("{src}:0").parse().unwrap())
        .map_err(|e| e.to_string())?;
    let stream = sock
        .connect(format!("{addr}:{port}").parse().unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let mut config = tokio_postgres::Config::new();
    config.user("app").password(PASSWORD).dbname("postgres");
    let (client, conn) = config
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        // The server's message (e.g. "no pg_hba.conf entry") is in the source, not Display.
        .map_err(|e| format!("{e:?}"))?;
    tokio::spawn(conn);
    Ok(client)
}

fn postmaster_pid(root: &std::path::Path, instance: &str) -> String {
    let pid = std::fs::read_to_string(root.join("volumes").join(instance).join("data/postmaster.pid")).unwrap();
    pid.lines().next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_decide_who_connects_and_changes_need_no_restart() {
    let mut c = cluster(&["--scheduler-interval-ms", "200"]).await;
    c.start_hosts(1).await.unwrap();

    let (code, g) = c
        .post(
            1,
            "/v1/security-groups",
            &json!({"name": "office", "cidrs": ["127.0.0.1"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{g}");
    assert_eq!(g["cidrs"], json!(["127.0.0.1/32"]));
    let (code, bad) = c
        .post(
            1,
            "/v1/security-groups/office/authorize",
            &json!({"cidrs": ["0.0.0.0/0 trust"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 400, "{bad}");

    let mut body = create_body("sg");
    body["security_groups"] = json!(["office"]);
    let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, db) = c.get(1, "/v1/databases/sg").await.unwrap();
    assert_eq!(db["access"], json!(["127.0.0.1/32"]), "{db}");
    let (addr, port) = (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let instance = db["instances"][0]["id"].as_str().unwrap().to_string();
    let pid = postmaster_pid(&c.hosts[0].root, &instance);

    connect_from("127.0.0.1", &addr, port)
        .await
        .expect("an allowed address connects");
    let refused = connect_from("127.0.0.5", &addr, port).await.unwrap_err();
    assert!(refused.contains("pg_hba.conf"), "{refused}");

    // Authorize: the running instance follows, through a workflow of its own.
    let (code, g) = c
        .post(
            1,
            "/v1/security-groups/office/authorize",
            &json!({"cidrs": ["127.0.0.5/32"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{g}");
    c.wait_for(Duration::from_secs(60), "127.0.0.5 to be let in", || async {
        Ok(connect_from("127.0.0.5", &addr, port).await.ok().map(drop))
    })
    .await
    .unwrap();

    // Revoke: refused again.
    let (code, g) = c
        .post(
            1,
            "/v1/security-groups/office/revoke",
            &json!({"cidrs": ["127.0.0.5/32"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{g}");
    c.wait_for(Duration::from_secs(60), "127.0.0.5 to be refused again", || async {
        Ok(connect_from("127.0.0.5", &addr, port)
            .await
            .err()
            .filter(|e| e.contains("pg_hba.conf"))
            .map(drop))
    })
    .await
    .unwrap();
    connect_from("127.0.0.1", &addr, port).await.expect("still allowed");
    assert_eq!(
        postmaster_pid(&c.hosts[0].root, &instance),
        pid,
        "the instance was restarted"
    );

    // The changes show as events and as modify operations with set-access tasks.
    let (_, events) = c.get(1, "/v1/events?limit=1000").await.unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .or_else(|| events["events"].as_array())
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"security-group-changed"), "{kinds:?}");
    assert!(
        kinds.iter().filter(|k| **k == "database-modified").count() >= 2,
        "{kinds:?}"
    );
    let (_, ops) = c.get(1, "/v1/ops?db=sg").await.unwrap();
    let list = ops.as_array().or_else(|| ops["operations"].as_array()).unwrap();
    let access_ops = list
        .iter()
        .filter(|o: &&Value| o["tasks"].to_string().contains("set-access"))
        .count();
    assert!(access_ops >= 2, "{ops}");

    // In use: not deletable. The default group allows loopback only.
    let (code, refused) = c.delete(1, "/v1/security-groups/office").await.unwrap();
    assert_eq!(code, 409, "{refused}");
    let (_, groups) = c.get(1, "/v1/security-groups").await.unwrap();
    let default = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "default")
        .unwrap_or_else(|| panic!("{groups}"));
    assert_eq!(default["cidrs"], json!(["127.0.0.0/8", "::1/128"]));
}
