//! Create → available → connect → modify → delete, against real host managers and PostgreSQL;
//! and every bad input refused with nothing left behind.

use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use serde_json::{json, Value};

use super::dns::dig;
use super::{cluster, create_body, wait_op, PASSWORD};

pub async fn connect(addr: &str, port: u64) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_as(addr, port, PASSWORD).await
}

/// The master user `app` with `password`.
async fn connect_as(addr: &str, port: u64, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={addr} port={port} user=app password='{password}' dbname=postgres connect_timeout=5"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// `<db>`'s address (A) and port (SRV) from `node`'s DNS, once both are published.
async fn resolve(c: &Cluster, node: u64, db: &str) -> (String, u64) {
    let name = format!("{db}.admin.db.keel.internal");
    c.wait_for(Duration::from_secs(10), "the database's A and SRV records", || async {
        let a = dig(c, node, &["+short", &name]);
        let srv = dig(c, node, &["+short", &format!("_postgresql._tcp.{name}"), "SRV"]);
        // SRV data: priority weight port target.
        let port = srv.split_whitespace().nth(2).and_then(|p| p.parse().ok());
        Ok(a.lines().next().filter(|l| !l.is_empty()).map(String::from).zip(port))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_connect_modify_delete() {
    let mut c = cluster(&[]).await;
    c.start_hosts(3).await.unwrap();

    let mut body = create_body("orders");
    body["request_id"] = json!("rq-orders");
    let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{created}");
    assert_eq!(created["database"]["status"], "creating");
    // A retried create answers the original operation; the id reused for another kind of
    // request, or another database, is refused.
    let (code, retried) = c.post(2, "/v1/databases", &body).await.unwrap();
    assert_eq!(
        (code, &retried["operation_id"]),
        (200, &created["operation_id"]),
        "{retried}"
    );
    let (code, reused) = c.delete(3, "/v1/databases/orders?request_id=rq-orders").await.unwrap();
    assert_eq!(code, 409, "{reused}");
    assert!(
        reused["detail"]
            .as_str()
            .unwrap()
            .contains("already used for create-database orders"),
        "{reused}"
    );
    let mut other = create_body("orders2");
    other["request_id"] = json!("rq-orders");
    let (code, reused) = c.post(3, "/v1/databases", &other).await.unwrap();
    assert_eq!(code, 409, "{reused}");
    assert!(
        created.get("master_password").is_none(),
        "a given password is never echoed"
    );
    let op_id = created["operation_id"].as_str().unwrap().to_string();

    // A delete in the middle of the create is refused with a clear message.
    let (code, busy) = c.delete(3, "/v1/databases/orders").await.unwrap();
    assert_eq!(code, 409, "{busy}");
    assert!(busy["detail"].as_str().unwrap().contains("busy"), "{busy}");

    let op = wait_op(&c, &op_id).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let tasks = super::task_actions(&op);
    assert_eq!(tasks, ["provision", "start", "check"]);

    let (_, db) = c.get(3, "/v1/databases/orders").await.unwrap();
    assert_eq!(db["status"], "available", "{db}");
    let addr = db["endpoint"]["addr"].as_str().unwrap().to_string();
    let port = db["endpoint"]["port"].as_u64().unwrap();
    assert!(addr.starts_with("127.0.1."), "{db}");
    assert!(!db.to_string().contains("SCRAM"), "no verifier in API answers");

    let pg = connect(&addr, port).await.expect("connect as the master user");
    pg.batch_execute("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'kept')")
        .await
        .unwrap();
    let sb: String = pg.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "128MB");
    drop(pg);

    // By name, as the README shows: dig on another node for the address and the SRV port,
    // then psql (the real client) to what they name.
    let by_name = resolve(&c, 2, "orders").await;
    assert_eq!(
        by_name,
        (addr.clone(), port),
        "DNS names where the API says the database runs"
    );
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host={} port={} user=app dbname=postgres connect_timeout=5",
            by_name.0, by_name.1
        ))
        .args(["-tAc", "SELECT v FROM t WHERE id = 1"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("psql runs (the postgresql package installs it)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kept",
        "psql by name: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (code, modified) = patch(&c, 2, "orders", json!({"class": "medium", "apply_immediately": true})).await;
    assert_eq!(code, 200, "{modified}");
    let op = wait_op(&c, modified["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let pg = connect(&addr, port).await.unwrap();
    let sb: String = pg.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "512MB");
    let v: String = pg.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");
    drop(pg);
    let (_, db) = c.get(1, "/v1/databases/orders").await.unwrap();
    assert_eq!(db["spec"]["class"], "medium");

    let instance = db["instances"][0]["id"].as_str().unwrap().to_string();
    let host_name = db["instances"][0]["host"].as_str().unwrap().to_string();
    let (code, deleted) = c.delete(1, "/v1/databases/orders").await.unwrap();
    assert_eq!(code, 200, "{deleted}");
    let op = wait_op(&c, deleted["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert!(connect(&addr, port).await.is_err(), "port closed");
    let host = c.hosts.iter().find(|h| h.name == host_name).unwrap();
    assert!(!host.root.join("volumes").join(&instance).exists(), "volume gone");
    let (code, _) = c.get(1, "/v1/databases/orders").await.unwrap();
    assert_eq!(code, 404);

    // The name is reusable; a generated password is shown once, by the call that set it.
    let mut body = create_body("orders");
    body.as_object_mut().unwrap().remove("master_password");
    body["request_id"] = json!("rq-generated");
    let (code, again) = c.post(2, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{again}");
    let generated = again["master_password"]
        .as_str()
        .expect("a generated password")
        .to_string();
    let (code, retried) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(
        (code, &retried["operation_id"]),
        (200, &again["operation_id"]),
        "{retried}"
    );
    assert!(
        retried.get("master_password").is_none(),
        "a retry never shows a password that was not set: {retried}"
    );
    let op = wait_op(&c, again["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, db) = c.get(1, "/v1/databases/orders").await.unwrap();
    let (addr, port) = (
        db["endpoint"]["addr"].as_str().unwrap(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let (pg, conn) = tokio_postgres::connect(
        &format!("host={addr} port={port} user=app password='{generated}' dbname=postgres connect_timeout=5"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("the password the first call showed is the one set");
    tokio::spawn(conn);
    pg.simple_query("SELECT 1").await.unwrap();

    // The password never reached a log or the Raft store in clear.
    let mut stack = vec![c.dir().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                let found = bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes());
                assert!(!found, "password found in clear in {}", p.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_database_requests_create_nothing() {
    let mut c = cluster(&[]).await;
    // No hosts yet: no capacity anywhere.
    let (code, p) = c.post(1, "/v1/databases", &create_body("early")).await.unwrap();
    assert_eq!(code, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("no capacity"), "{p}");
    c.start_hosts(1).await.unwrap();

    let mut cases = vec![];
    let mut with = |k: &str, v: Value, want: u16, phrase: &str| {
        let mut b = create_body("good");
        b[k] = v;
        cases.push((b, want, phrase.to_string()));
    };
    with("name", json!("Bad_Name"), 400, "not valid");
    with("engine", json!("oracle"), 400, "unknown engine");
    with("class", json!("huge"), 400, "unknown instance class");
    with("storage_gib", json!(0), 400, "out of range");
    with("storage_gib", json!(100000), 400, "out of range");
    with("zone", json!("z"), 409, "zone \"z\" has no hosts");
    with("master_user", json!("pg_x"), 400, "master user");
    with("master_password", json!("short"), 400, "8-128");
    with("colour", json!("red"), 400, "colour");
    for (body, want, phrase) in cases {
        let (code, problem) = c.post(2, "/v1/databases", &body).await.unwrap();
        assert_eq!(code, want, "{body} -> {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(&phrase),
            "{body}: {problem}"
        );
    }
    let (_, dbs) = c.get(3, "/v1/databases").await.unwrap();
    assert_eq!(dbs, json!([]), "nothing was created");
    let (_, ops) = c.get(3, "/v1/ops").await.unwrap();
    assert_eq!(ops, json!([]), "no operation was queued");
    assert!(
        !c.hosts[0].root.join("volumes").exists()
            || std::fs::read_dir(c.hosts[0].root.join("volumes"))
                .unwrap()
                .next()
                .is_none()
    );

    // A draining host takes no new database; undrained, it does again.
    let (code, host) = c.post(2, "/v1/hosts/h1/drain", &json!(null)).await.unwrap();
    assert_eq!((code, &host["draining"]), (200, &json!(true)), "{host}");
    let (code, p) = c.post(1, "/v1/databases", &create_body("dup")).await.unwrap();
    assert_eq!(code, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("no capacity"), "{p}");
    let (code, host) = c.delete(3, "/v1/hosts/h1/drain").await.unwrap();
    assert_eq!((code, &host["draining"]), (200, &json!(false)), "{host}");

    let (code, _) = c.post(1, "/v1/databases", &create_body("dup")).await.unwrap();
    assert_eq!(code, 200);
    let (code, p) = c.post(1, "/v1/databases", &create_body("dup")).await.unwrap();
    assert_eq!(code, 409, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("already exists"), "{p}");
}

/// A weekly window `ddd:HH:MM-ddd:HH:MM` (UTC) from `from_ms` lasting `minutes`.
fn weekly_window(from_ms: u64, minutes: u64) -> String {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    let at = |ms: u64| {
        let minute = ms / 60_000 + 3 * 24 * 60; // 1970-01-01 was a Thursday
        let (day, in_day) = ((minute / (24 * 60)) % 7, minute % (24 * 60));
        format!("{}:{:02}:{:02}", DAYS[day as usize], in_day / 60, in_day % 60)
    };
    format!("{}-{}", at(from_ms), at(from_ms + minutes * 60_000))
}

pub(crate) async fn patch(c: &Cluster, node: u64, name: &str, body: Value) -> (u16, Value) {
    let resp = c
        .http()
        .patch(format!("{}/v1/databases/{name}", c.url(node)))
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modification_waits_for_the_maintenance_window() {
    let mut c = cluster(&["--scheduler-interval-ms", "200"]).await;
    c.start_hosts(1).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut body = create_body("mw");
    body["maintenance_window"] = json!(weekly_window(now + 3 * 86_400_000, 60));
    let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");

    // Without --apply-immediately a class change is recorded, not applied.
    let (code, deferred) = patch(&c, 2, "mw", json!({"class": "medium"})).await;
    assert_eq!(code, 200, "{deferred}");
    assert!(deferred.get("operation_id").is_none(), "{deferred}");
    assert_eq!(deferred["database"]["pending"]["class"], "medium", "{deferred}");
    assert_eq!(deferred["database"]["status"], "available");
    let (_, db) = c.get(3, "/v1/databases/mw").await.unwrap();
    let endpoint = (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let pg = connect(&endpoint.0, endpoint.1).await.unwrap();
    let sb: String = pg.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "128MB", "nothing applied outside the window");
    drop(pg);

    // Moving the window over now (a window change applies at once) lets the scheduler apply it.
    let (code, moved) = patch(
        &c,
        1,
        "mw",
        json!({"maintenance_window": weekly_window(now - 300_000, 60)}),
    )
    .await;
    assert_eq!(code, 200, "{moved}");
    wait_op(&c, moved["operation_id"].as_str().unwrap()).await;
    let db = c
        .wait_for(
            Duration::from_secs(120),
            "the pending class change to be applied",
            || async {
                let (_, db) = c.get(2, "/v1/databases/mw").await?;
                Ok((db["spec"]["class"] == "medium" && db["status"] == "available").then_some(db))
            },
        )
        .await
        .unwrap();
    assert!(db["pending"].is_null(), "{db}");
    let pg = connect(&endpoint.0, endpoint.1).await.unwrap();
    let sb: String = pg.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "512MB", "applied in the window");
    let (_, events) = c.get(1, "/v1/events?db=mw").await.unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"modification-pending"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "database-modified").count(),
        2,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modify_postgres_cannot_start_with_is_rolled_back() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    let (code, created) = c.post(1, "/v1/databases", &create_body("rb")).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, db) = c.get(1, "/v1/databases/rb").await.unwrap();
    let (addr, port) = (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let pg = connect(&addr, port).await.unwrap();
    pg.batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')")
        .await
        .unwrap();
    drop(pg);

    // Cap the address space of what the host manager starts from now on: PostgreSQL can
    // no longer map the 2 GiB of shared buffers the large class asks for (the small class's
    // 128 MiB still fit), so it refuses to start with the new settings.
    let pid = c.host_pid(0).unwrap();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--as=1800000000"])
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (code, modified) = patch(&c, 2, "rb", json!({"class": "large", "apply_immediately": true})).await;
    assert_eq!(code, 200, "{modified}");
    let op = wait_op(&c, modified["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "failed", "{op}");
    let undo: Vec<(&str, &str)> = op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["undo"] == true)
        .map(|t| (t["action"].as_str().unwrap(), t["state"].as_str().unwrap()))
        .collect();
    assert_eq!(undo, [("restart", "succeeded"), ("check", "succeeded")], "{op}");

    let (_, db) = c.get(3, "/v1/databases/rb").await.unwrap();
    assert_eq!(db["status"], "available", "rolled back: {db}");
    assert_eq!(db["spec"]["class"], "small", "{db}");
    let (_, events) = c.get(1, "/v1/events?db=rb").await.unwrap();
    let rolled: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "database-modify-rolled-back")
        .collect();
    assert_eq!(rolled.len(), 1, "{events}");
    assert!(
        rolled[0]["message"].as_str().unwrap().contains("restart failed"),
        "{rolled:?}"
    );
    let pg = connect(&addr, port)
        .await
        .expect("the rolled-back database answers SQL");
    let sb: String = pg.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "128MB", "the old settings");
    let v: String = pg.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle) {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// A new master password, set and then rotated: the old one stops working, the new one
/// works, and the clear password is in no file Keel or PostgreSQL wrote (Raft log,
/// snapshots, host journals and volumes, logs) and in no answer but the one showing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_password_is_reset_and_rotated_and_never_kept_in_clear() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    let (_, created) = c.post(1, "/v1/databases", &create_body("vault")).await.unwrap();
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (addr, port) = resolve(&c, 1, "vault").await;
    assert!(connect_as(&addr, port, PASSWORD).await.is_ok());

    let canary = format!("canary-{:016x}", rand::random::<u64>());
    let (code, reset) = patch(&c, 2, "vault", json!({"master_password": canary})).await;
    assert_eq!(code, 200, "{reset}");
    assert!(
        reset["master_password"].is_null(),
        "a given password is not echoed: {reset}"
    );
    let op = wait_op(&c, reset["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let tasks = super::task_actions(&op);
    assert_eq!(tasks, ["start", "set-password"], "{op}");
    assert_eq!(op["modification"]["master_password"], true, "{op}");
    assert!(connect_as(&addr, port, &canary).await.is_ok(), "the new password works");
    assert!(connect_as(&addr, port, PASSWORD).await.is_err(), "the old one does not");

    let (code, rotated) = patch(&c, 3, "vault", json!({"rotate_master_password": true})).await;
    assert_eq!(code, 200, "{rotated}");
    let generated = rotated["master_password"].as_str().expect("shown once").to_string();
    let op = wait_op(&c, rotated["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    assert!(
        connect_as(&addr, port, &generated).await.is_ok(),
        "the generated password works"
    );
    assert!(connect_as(&addr, port, &canary).await.is_err());

    // No later answer carries either password.
    for path in [
        "/v1/databases/vault",
        "/v1/databases",
        "/v1/ops?limit=1000",
        "/v1/events?limit=10000",
        "/v1/audit?limit=1000",
    ] {
        let (_, v) = c.get(1, path).await.unwrap();
        let text = v.to_string();
        assert!(
            !text.contains(&canary) && !text.contains(&generated),
            "{path} shows a password: {text}"
        );
    }
    // Nor does any file: everything the control nodes and the host wrote, PostgreSQL's
    // data directory included (it holds the verifier, never the password). The search
    // itself finds what is there:
    let probe = tempfile::tempdir().unwrap();
    std::fs::create_dir(probe.path().join("deep")).unwrap();
    std::fs::write(probe.path().join("deep").join("f"), format!("x{canary}y")).unwrap();
    assert_eq!(files_containing(probe.path(), canary.as_bytes()).len(), 1);
    for secret in [&canary, &generated] {
        let found = files_containing(c.dir(), secret.as_bytes());
        assert!(found.is_empty(), "the clear password is stored in {found:?}");
    }
}
