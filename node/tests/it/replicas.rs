//! Read replicas, end to end through the real CLI, real PostgreSQL and Keel's DNS: a
//! replica is built from the backups in the zone asked for, is readable (and refuses
//! writes), catches up asynchronously, answers `<db>.ro…` names, is removed from them at
//! once, and can be promoted to a database of its own while its source runs on.

use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use serde_json::{json, Value};

use super::dns::dig;
use super::recovery::{connect, database};
use super::{bin, cluster, create_body, wait_op};

const ZONE: &str = "db.keel.internal";

/// `keel …` against node 1 as the admin, JSON out; its parsed answer.
fn keel(c: &Cluster, args: &[&str]) -> Value {
    let out = std::process::Command::new(bin())
        .args(["--output", "json"])
        .args(args)
        .env("KEEL_ADDR", c.url(1))
        .env("KEEL_TOKEN", c.token())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keel {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // `--wait` prints progress before the answer; the JSON is the first `{` or `[` line on.
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let start = text.find(['{', '[']).unwrap_or(0);
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("keel {args:?} answered no JSON: {text}"))
}

/// The addresses `name` answers (A), sorted, from node 1's zone.
fn addresses(c: &Cluster, name: &str) -> Vec<String> {
    let out = dig(c, 1, &["+short", &format!("{name}.{ZONE}."), "A"]);
    let mut addrs: Vec<String> = out
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    addrs.sort();
    addrs
}

/// Wait until `name` answers exactly `want`.
async fn wait_addresses(c: &Cluster, name: &str, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    c.wait_for(
        Duration::from_secs(30),
        &format!("{name} to answer {want:?}"),
        || async { Ok((addresses(c, name) == want).then_some(())) },
    )
    .await
    .unwrap();
}

/// The address of host `name`.
fn host_ip(c: &Cluster, name: &str) -> String {
    let h = c.hosts.iter().find(|h| h.name == name).unwrap();
    h.addr.rsplit_once(':').unwrap().0.to_string()
}

async fn count(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0)
}

/// Wait until the instance at `ip:port` holds `n` rows.
async fn wait_rows(c: &Cluster, ip: &str, port: u64, n: i64) {
    c.wait_for(Duration::from_secs(30), &format!("{n} rows at {ip}:{port}"), || async {
        let Ok(client) = connect(ip, port).await else {
            return Ok(None);
        };
        let rows: i64 = client.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
        Ok((rows == n).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_replica_serves_readers_by_name_and_can_be_removed_or_promoted() {
    let mut c = cluster(&["--monitor-interval-ms", "200", "--scheduler-interval-ms", "500"]).await;
    c.start_hosts(3).await.unwrap();
    let mut body = create_body("orders");
    body["backup_retention_days"] = json!(7);
    let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let db = database(&c, "orders").await;
    let (primary_ip, port) = (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let primary = connect(&primary_ip, port).await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();

    // A replica is built from the backups: wait for the first (automatic) snapshot.
    c.wait_for(Duration::from_secs(60), "the first snapshot", || async {
        let (_, snaps) = c.get(1, "/v1/snapshots?db=orders").await?;
        let db = database(&c, "orders").await;
        let taken = snaps
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["state"] == "available"));
        Ok((taken && db["status"] == "available").then_some(()))
    })
    .await
    .unwrap();

    // Added through the CLI in zone b: built from the backups, then serving.
    let added = keel(&c, &["db", "replica", "add", "orders", "--zone", "b", "--wait"]);
    assert!(added["operation_id"].is_string(), "{added}");
    let list = keel(&c, &["db", "replica", "list", "orders"]);
    let r = &list[0];
    assert_eq!(
        (r["state"].as_str(), r["zone"].as_str()),
        (Some("serving"), Some("b")),
        "{list}"
    );
    let (replica, replica_host) = (
        r["id"].as_str().unwrap().to_string(),
        r["host"].as_str().unwrap().to_string(),
    );
    let replica_port = r["port"].as_u64().unwrap();
    let replica_ip = host_ip(&c, &replica_host);
    assert_ne!(replica_ip, primary_ip);
    let (_, add_op) = c
        .get(1, &format!("/v1/ops/{}", added["operation_id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(add_op["kind"], "add-replica", "{add_op}");
    let actions: Vec<&str> = add_op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["prepare-standby", "build-standby"], "{add_op}");
    let built = add_op["tasks"][1]["result"].as_str().unwrap();
    assert!(
        built.contains("built from zone-store"),
        "from the snapshot and archive: {built}"
    );

    // Readable, with the primary's rows; asynchronous: later writes arrive; writes refused.
    wait_rows(&c, &replica_ip, replica_port, 100).await;
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(101, 150)")
        .await
        .unwrap();
    wait_rows(&c, &replica_ip, replica_port, 150).await;
    let reader = connect(&replica_ip, replica_port).await.unwrap();
    let write = reader.batch_execute("INSERT INTO t VALUES (1000)").await.unwrap_err();
    assert_eq!(
        write.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{write:?}"
    );
    // Its lag, as the primary reports it, is listed.
    c.wait_for(
        Duration::from_secs(10),
        "the replica's replication reported",
        || async {
            let list = keel(&c, &["db", "replica", "list", "orders"]);
            Ok((list[0]["replication"]["state"] == "streaming").then_some(()))
        },
    )
    .await
    .unwrap();

    // DNS: the reader names answer the replica (in its zone, and everywhere else where the
    // database has an instance); the writer name stays the primary.
    wait_addresses(&c, "orders.ro.admin", &[&replica_ip]).await;
    wait_addresses(&c, "orders.ro.b.admin", &[&replica_ip]).await;
    wait_addresses(&c, "orders.ro.a.admin", &[&replica_ip]).await;
    assert_eq!(addresses(&c, "orders.admin"), std::slice::from_ref(&primary_ip));
    let srv = dig(
        &c,
        1,
        &["+short", &format!("_postgresql._tcp.orders.ro.admin.{ZONE}."), "SRV"],
    );
    assert_eq!(srv.trim(), format!("0 0 {replica_port} {replica_host}.hosts.{ZONE}."));

    // Bad input: an unknown replica, a name taken; nothing changes.
    let (code, e) = c.delete(1, "/v1/databases/orders/replicas/nosuch").await.unwrap();
    assert_eq!(code, 404, "{e}");
    let (code, e) = c
        .post(
            1,
            &format!("/v1/databases/orders/replicas/{replica}/promote"),
            &json!({"to": "orders"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 409, "{e}");

    // Promoted to a database of its own: writable, with the source's rows; the source's
    // reader names fall back to its primary, and the source goes on taking writes alone.
    let promoted = keel(
        &c,
        &["db", "promote-replica", "orders", &replica, "--to", "copy", "--wait"],
    );
    assert_eq!(promoted["database"]["name"], "copy", "{promoted}");
    let copy = database(&c, "copy").await;
    // Serving (its first snapshot of its own may already be under way).
    assert!(
        matches!(copy["status"].as_str(), Some("available" | "backing-up")),
        "{copy}"
    );
    assert_eq!(copy["endpoint"]["addr"].as_str(), Some(replica_ip.as_str()));
    let writer = connect(&replica_ip, replica_port).await.unwrap();
    writer.batch_execute("INSERT INTO t VALUES (1000)").await.unwrap();
    assert_eq!(count(&writer).await, 151);
    wait_addresses(&c, "orders.ro.admin", &[&primary_ip]).await;
    wait_addresses(&c, "copy.admin", &[&replica_ip]).await;
    primary.batch_execute("INSERT INTO t VALUES (2000)").await.unwrap();
    assert_eq!(count(&primary).await, 151, "the source never saw the copy's write");
    assert_eq!(count(&writer).await, 151, "the copy no longer follows the source");
    assert!(keel(&c, &["db", "replica", "list", "orders"])
        .as_array()
        .unwrap()
        .is_empty());

    // Another replica, anywhere (never beside the primary), then removed: out of DNS, gone.
    keel(&c, &["db", "replica", "add", "orders", "--wait"]);
    let list = keel(&c, &["db", "replica", "list", "orders"]);
    let second = list[0]["id"].as_str().unwrap().to_string();
    let second_ip = host_ip(&c, list[0]["host"].as_str().unwrap());
    assert_ne!(second_ip, primary_ip, "never beside the primary");
    wait_addresses(&c, "orders.ro.admin", &[&second_ip]).await;
    keel(&c, &["db", "replica", "remove", "orders", &second, "--wait"]);
    wait_addresses(&c, "orders.ro.admin", &[&primary_ip]).await;
    let db = database(&c, "orders").await;
    assert!(
        db["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["id"] != second.as_str()),
        "{db}"
    );
    let volume = c
        .hosts
        .iter()
        .find(|h| host_ip(&c, &h.name) == second_ip)
        .unwrap()
        .root
        .join("volumes")
        .join(&second);
    assert!(!volume.exists(), "the removed replica's volume is destroyed");
    assert_eq!(count(&primary).await, 151, "nothing lost on the source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_rebuilt_from_the_new_primary_after_a_switchover() {
    use super::multi_az::{create_multi_az, wait_in_sync};
    let mut c = cluster(&["--monitor-interval-ms", "200", "--scheduler-interval-ms", "500"]).await;
    c.start_hosts(3).await.unwrap();
    let db = create_multi_az(&c, "orders").await;
    let (ip, port) = (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let primary = connect(&ip, port).await.unwrap();
    primary
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    wait_in_sync(&c, "orders", None).await;
    let added = keel(&c, &["db", "replica", "add", "orders", "--wait"]);
    assert!(added["operation_id"].is_string(), "{added}");
    let old = keel(&c, &["db", "replica", "list", "orders"])[0].clone();
    assert_eq!(old["state"], "serving", "{old}");
    let old_id = old["id"].as_str().unwrap().to_string();

    // The switchover starts a new lineage: the replica followed the old primary, so it
    // stops serving readers at once and is rebuilt from the new primary's backups.
    let (code, op) = c.post(1, "/v1/databases/orders/failover", &json!({})).await.unwrap();
    assert_eq!(code, 200, "{op}");
    assert_eq!(
        wait_op(&c, op["operation_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    let db = database(&c, "orders").await;
    let (ip, port) = (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let primary = connect(&ip, port).await.unwrap();
    primary
        .batch_execute("INSERT INTO t SELECT generate_series(101, 120)")
        .await
        .unwrap();
    let fresh = c
        .wait_for(
            Duration::from_secs(240),
            "the replica rebuilt from the new primary",
            || async {
                let list = keel(&c, &["db", "replica", "list", "orders"]);
                let r = &list[0];
                Ok(
                    (list.as_array().unwrap().len() == 1 && r["id"] != old_id.as_str() && r["state"] == "serving")
                        .then(|| r.clone()),
                )
            },
        )
        .await
        .unwrap();
    let fresh_ip = host_ip(&c, fresh["host"].as_str().unwrap());
    wait_rows(&c, &fresh_ip, fresh["port"].as_u64().unwrap(), 120).await;
    wait_addresses(&c, "orders.ro.admin", &[&fresh_ip]).await;
    let (_, events) = c.get(1, "/v1/events?db=orders&limit=1000").await.unwrap();
    let rebuilt = events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "replica-building" && e["message"].as_str().unwrap_or_default().contains(&old_id));
    assert!(rebuilt, "an event names the replica replaced: {events}");
}
