//! Automatic and manual recovery, end to end: a host lost to kill -9 (host manager and
//! postmasters) has its database brought back on another host under the same name from
//! the backups, with the transactions lost counted against a writer's acknowledgements;
//! a dead instance on a host that answers is fenced, its last WAL moved to the archive,
//! and (manual mode) recovered only when asked, losing nothing; the lost host, back,
//! never starts the fenced instance.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_jepsen::cluster::Cluster;
use serde_json::{json, Value};

use super::monitor::processes_in;
use super::{cluster, create_body, wait_op, PASSWORD};

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub(crate) async fn connect(addr: &str, port: u64) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    keel_jepsen::history::connect(addr, port as u16, "app", PASSWORD).await
}

pub(crate) async fn database(c: &Cluster, name: &str) -> Value {
    let (code, db) = c.get(1, &format!("/v1/databases/{name}")).await.unwrap();
    assert_eq!(code, 200, "{db}");
    db
}

fn endpoint(db: &Value) -> (String, u64) {
    (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    )
}

/// Insert ids 1, 2, … one per transaction until a write fails (the instance died);
/// returns the acknowledged ids with their acknowledgement times.
fn writer(client: tokio_postgres::Client) -> tokio::task::JoinHandle<Vec<(i64, u64)>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        for id in 1i64.. {
            if client.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await.is_err() {
                break;
            }
            acked.push((id, now_ms()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked
    })
}

/// The ids the database at `endpoint` holds.
pub(crate) async fn ids(endpoint: (String, u64)) -> std::collections::BTreeSet<i64> {
    connect(&endpoint.0, endpoint.1)
        .await
        .expect("the recovered database serves")
        .query("SELECT id FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub(crate) async fn events(c: &Cluster, db: &str, kind: &str) -> Vec<Value> {
    let (_, events) = c.get(1, "/v1/events?limit=10000").await.unwrap();
    let key = format!("{db}.admin");
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == key.as_str() && e["kind"] == kind)
        .cloned()
        .collect()
}

/// A cluster whose monitor notices a failure within a second and whose scheduler
/// takes the first snapshot at once.
/// Every file under `dir` with its size, one per line (for failure reports).
fn listing(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.push_str(&listing(&path));
        } else {
            let size = e.metadata().map_or(0, |m| m.len());
            out.push_str(&format!("{} {size}\n", path.display()));
        }
    }
    out
}

async fn fast_cluster(hosts: usize) -> Cluster {
    let mut c = cluster(&[
        "--monitor-interval-ms",
        "200",
        "--unreachable-after",
        "3",
        "--scheduler-interval-ms",
        "500",
    ])
    .await;
    c.start_hosts(hosts).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_host_and_a_dead_instance_are_recovered_under_their_names_and_the_fenced_one_never_returns() {
    let mut c = fast_cluster(3).await;
    // orders (automatic recovery) lands on h1, ledger (manual) on h2: least loaded first.
    let mut made = Vec::new();
    for (name, mode) in [("orders", "automatic"), ("ledger", "manual")] {
        let mut body = create_body(name);
        body["backup_retention_days"] = json!(7);
        body["recovery"] = json!(mode);
        let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
        assert_eq!(code, 200, "{created}");
        made.push(created["operation_id"].as_str().unwrap().to_string());
    }
    for op in &made {
        assert_eq!(wait_op(&c, op).await["state"], "succeeded");
    }
    let (orders, ledger) = (database(&c, "orders").await, database(&c, "ledger").await);
    assert_eq!(orders["endpoint"]["host"], "h1", "{orders}");
    assert_eq!(ledger["endpoint"]["host"], "h2", "{ledger}");
    assert_eq!(ledger["spec"]["recovery"], "manual");
    let old_orders = orders["instances"][0]["id"].as_str().unwrap().to_string();
    let old_ledger = ledger["instances"][0]["id"].as_str().unwrap().to_string();
    let mut writers = Vec::new();
    for db in [&orders, &ledger] {
        let (addr, port) = endpoint(db);
        let client = connect(&addr, port).await.unwrap();
        client
            .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
            .await
            .unwrap();
        writers.push(writer(client));
    }
    // Both need a snapshot to recover from; writes go on meanwhile.
    for name in ["orders", "ledger"] {
        c.wait_for(
            Duration::from_secs(120),
            &format!("{name}'s first snapshot"),
            || async {
                let db = database(&c, name).await;
                Ok(db["restorable"]["latest_ms"]
                    .as_u64()
                    .is_some_and(|l| l > db["restorable"]["earliest_ms"].as_u64().unwrap_or(u64::MAX) + 2_000)
                    .then_some(()))
            },
        )
        .await
        .unwrap();
    }

    // Host loss for orders (h1: host manager and postmasters, kill -9); a dead postmaster
    // on a host that answers for ledger (h2).
    let h2_data = c.hosts[1].root.join("volumes").join(&old_ledger).join("data");
    let pid: i32 = std::fs::read_to_string(h2_data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let killed_at = now_ms();
    assert!(
        c.kill_host_and_instances(0) >= 2,
        "h1's host manager, postmaster and WAL receiver"
    );
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let orders_acked = writers.remove(0).await.unwrap();
    let ledger_acked = writers.remove(0).await.unwrap();
    assert!(orders_acked.len() > 50 && ledger_acked.len() > 50, "both writers wrote");

    // orders comes back by itself on another host, under the same name and port.
    let recovered = c
        .wait_for(Duration::from_secs(180), "orders to be recovered", || async {
            let db = database(&c, "orders").await;
            Ok((db["status"] == "available" && db["endpoint"]["host"] != "h1").then_some(db))
        })
        .await
        .unwrap();
    eprintln!("orders recovered {} ms after the kill", now_ms() - killed_at);
    assert_eq!(
        recovered["endpoint"]["port"], orders["endpoint"]["port"],
        "same port: {recovered}"
    );
    let new_orders = recovered["instances"][0]["id"].as_str().unwrap().to_string();
    assert_ne!(new_orders, old_orders);
    let new_addr = recovered["endpoint"]["addr"].as_str().unwrap();
    c.wait_for(Duration::from_secs(10), "the name to point at the new host", || async {
        let answer = super::dns::dig(&c, 2, &["orders.admin.db.keel.internal.", "A", "+short"]);
        Ok((answer.trim() == new_addr).then_some(()))
    })
    .await
    .unwrap();
    let held = ids(endpoint(&recovered)).await;
    let lost: Vec<i64> = orders_acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !held.contains(id))
        .collect();
    // The archive trails by at most a second: nothing acknowledged before that is lost.
    let early_lost: Vec<&(i64, u64)> = orders_acked
        .iter()
        .filter(|(id, at)| *at + 1_000 < killed_at && lost.contains(id))
        .collect();
    assert!(
        early_lost.is_empty(),
        "acknowledged over a second before the kill, yet lost: {early_lost:?}"
    );
    eprintln!(
        "orders: {} acknowledged, {} lost (all within the last second before the kill)",
        orders_acked.len(),
        lost.len()
    );
    let event = events(&c, "orders", "database-recovered").await;
    assert_eq!(event.len(), 1, "one recovery for one incident");
    assert!(
        event[0]["message"]
            .as_str()
            .unwrap()
            .contains("holds every transaction committed up to"),
        "{event:?}"
    );
    assert_eq!(events(&c, "orders", "database-recovering").await.len(), 1);
    // The recovered database has a lineage of its own from the recovery on: once its
    // first snapshot is taken, a restore to the latest time holds a row written after
    // the recovery as well as everything recovered.
    connect(&endpoint(&recovered).0, endpoint(&recovered).1)
        .await
        .unwrap()
        .execute("INSERT INTO t (id) VALUES (1000000)", &[])
        .await
        .unwrap();
    let written = now_ms();
    c.wait_for(
        Duration::from_secs(30),
        "the archive to pass the row written after the recovery",
        || async {
            let db = database(&c, "orders").await;
            // The window is the new lineage's: it opens at the first snapshot after the kill.
            let since = db["restorable"]["earliest_ms"].as_u64().unwrap_or(0);
            let latest = db["restorable"]["latest_ms"].as_u64().unwrap_or(0);
            Ok((since > killed_at && latest > written).then_some(()))
        },
    )
    .await
    .unwrap();
    let (code, restore) = c
        .post(
            1,
            "/v1/databases/orders/restore",
            &json!({"to": "orders-after", "latest": true}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{restore}");
    let op = wait_op(&c, restore["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let after = ids(endpoint(&database(&c, "orders-after").await)).await;
    if !(after.contains(&1_000_000) && held.is_subset(&after)) {
        let (_, snaps) = c.get(1, "/v1/snapshots").await.unwrap();
        panic!(
            "a restore after the recovery: the row written after it {}, recovered rows missing: {:?}; restore: {op}\n\
             orders: {}\nsnapshots: {snaps}\nwritten at {written}, killed at {killed_at}\nstores:\n{}",
            if after.contains(&1_000_000) {
                "is there"
            } else {
                "is missing"
            },
            held.difference(&after).collect::<Vec<_>>(),
            database(&c, "orders").await,
            listing(&c.backup_dir()),
        );
    }
    assert!(
        recovered["last_recovery"]["restored_to_ms"].as_u64().unwrap() > 0,
        "{recovered}"
    );
    let (_, op) = c
        .get(
            1,
            &format!(
                "/v1/ops/{}",
                recovered["last_recovery"]["operation_id"].as_str().unwrap()
            ),
        )
        .await
        .unwrap();
    let actions: Vec<&str> = op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["restore", "check"],
        "an unreachable host is fenced by the record alone: {op}"
    );

    // ledger (manual) only raised an event; recovering it when asked fences the old
    // instance, moves its last WAL to the archive, and loses nothing.
    c.wait_for(Duration::from_secs(30), "ledger's recovery-needed event", || async {
        Ok((!events(&c, "ledger", "recovery-needed").await.is_empty()).then_some(()))
    })
    .await
    .unwrap();
    let db = database(&c, "ledger").await;
    assert!(db["operation"].is_null(), "manual: nothing started by itself: {db}");
    assert!(
        db["status_reason"].as_str().unwrap().contains("keel db recover ledger"),
        "{db}"
    );
    let (code, asked) = c.post(1, "/v1/databases/ledger/recover", &json!({})).await.unwrap();
    assert_eq!(code, 200, "{asked}");
    let op = wait_op(&c, asked["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let actions: Vec<&str> = op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["fence", "restore", "check"], "{op}");
    assert!(
        op["tasks"][0]["result"].as_str().unwrap().contains("is in the archive"),
        "the fenced volume's last WAL was archived: {op}"
    );
    let ledger_now = database(&c, "ledger").await;
    // h3 (the only other healthy host) already serves orders on the old port: another one.
    assert_eq!(ledger_now["endpoint"]["host"], "h3", "{ledger_now}");
    let held = ids(endpoint(&ledger_now)).await;
    let lost: Vec<i64> = ledger_acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !held.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "ledger: its volume's WAL was archived, nothing is lost: {lost:?}"
    );
    eprintln!("ledger: {} acknowledged, 0 lost", ledger_acked.len());
    // The fenced instance refuses to start: its host says so.
    assert!(processes_in(&h2_data) == 0, "the fenced ledger instance is stopped");

    // h1 comes back: it starts nothing a recovery replaced.
    let log_before = std::fs::read_to_string(&c.hosts[0].log).unwrap_or_default().len();
    c.launch_host(0).unwrap();
    let marker = c.hosts[0].root.join("volumes").join(&old_orders).join(".fenced");
    c.wait_for(
        Duration::from_secs(30),
        "h1 to learn its instance was fenced",
        || async { Ok(marker.exists().then_some(())) },
    )
    .await
    .unwrap();
    c.wait_for(Duration::from_secs(30), "h1 to be healthy again", || async {
        let (_, hosts) = c.get(1, "/v1/hosts").await?;
        Ok(hosts
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "h1" && h["health"] == "healthy")
            .then_some(()))
    })
    .await
    .unwrap();
    c.wait_for(
        Duration::from_secs(30),
        "h1 to have started what should run",
        || async {
            let log = std::fs::read_to_string(&c.hosts[0].log).unwrap_or_default();
            Ok(log[log_before..]
                .contains("started the instances that should run")
                .then_some(()))
        },
    )
    .await
    .unwrap();
    let old_data = c.hosts[0].root.join("volumes").join(&old_orders).join("data");
    assert_eq!(processes_in(&old_data), 0, "the fenced instance did not start");
    let (addr, port) = endpoint(&orders);
    assert!(
        connect(&addr, port).await.is_err(),
        "nothing answers at the old address"
    );
    assert_eq!(database(&c, "orders").await["endpoint"], recovered["endpoint"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_backup_rpo_zero_a_lost_host_loses_no_acknowledged_commit() {
    let mut c = fast_cluster(2).await;
    let mut body = create_body("vault");
    body["backup_retention_days"] = json!(7);
    body["backup_rpo"] = json!("zero");
    let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{created}");
    assert_eq!(
        wait_op(&c, created["operation_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    let db = database(&c, "vault").await;
    assert_eq!(
        (db["spec"]["backup_rpo"].as_str(), db["endpoint"]["host"].as_str()),
        (Some("zero"), Some("h1"))
    );
    let (addr, port) = endpoint(&db);
    let client = connect(&addr, port).await.unwrap();
    let standby: String = client
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(standby, "keel_archive", "commits wait for the archive");
    client
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let started = now_ms();
    let writes = writer(client);
    c.wait_for(
        Duration::from_secs(120),
        "vault's first snapshot and some archive",
        || async {
            let db = database(&c, "vault").await;
            Ok(db["restorable"]["latest_ms"]
                .as_u64()
                .is_some_and(|l| l > db["restorable"]["earliest_ms"].as_u64().unwrap_or(u64::MAX) + 2_000)
                .then_some(()))
        },
    )
    .await
    .unwrap();
    // Enough acknowledged commits to count (each waits for the store here).
    let probe = connect(&addr, port).await.unwrap();
    c.wait_for(Duration::from_secs(60), "50 acknowledged commits", || async {
        let n: i64 = probe.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
        Ok((n >= 50).then_some(()))
    })
    .await
    .unwrap();
    let killed_at = now_ms();
    c.kill_host_and_instances(0);
    let acked = writes.await.unwrap();
    let rate = acked.len() as f64 * 1000.0 / (killed_at - started) as f64;
    assert!(acked.len() > 20, "the writer wrote: {}", acked.len());

    let recovered = c
        .wait_for(Duration::from_secs(180), "vault to be recovered", || async {
            let db = database(&c, "vault").await;
            Ok((db["status"] == "available" && db["endpoint"]["host"] == "h2").then_some(db))
        })
        .await
        .unwrap();
    let held = ids(endpoint(&recovered)).await;
    let lost: Vec<i64> = acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !held.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost with backup RPO zero: {lost:?}");
    eprintln!(
        "vault (backup RPO zero): {} acknowledged at {rate:.0}/s with a 10 ms pause, 0 lost",
        acked.len()
    );
}
