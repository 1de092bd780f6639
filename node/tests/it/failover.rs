//! Failover of a Multi-AZ database, end to end, with a client that reaches it only by
//! name through Keel's DNS (re-resolving on every reconnect) and records every
//! acknowledged insert: the primary's host manager and postmaster are killed (-9), the
//! standby is promoted, the name moves, and no acknowledged insert is lost; then the
//! database is Multi-AZ again without a person.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use serde_json::{json, Value};

use super::multi_az::{member, wait_in_sync};
use super::recovery::{connect, database, events, now_ms};
use super::{cluster, create_body, wait_op};

/// The database's name in Keel's zone.
fn dns_name(db: &str) -> String {
    format!("{db}.admin.db.keel.internal.")
}

/// The address Keel's DNS on node `node` answers for `name` now, if any.
fn resolve(dns: &str, name: &str) -> Option<String> {
    let (ip, port) = dns.rsplit_once(':')?;
    let out = Command::new("dig")
        .args([
            &format!("@{ip}"),
            "-p",
            port,
            "+time=1",
            "+tries=1",
            "+short",
            name,
            "A",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}

/// What the client saw: every acknowledged id with when, and every connection it made
/// (when, and to which address).
#[derive(Default)]
struct History {
    acked: Vec<(i64, u64)>,
    connected: Vec<(u64, String)>,
}

/// Insert ids 1, 2, … one per transaction through the name, until `stop`: on any error
/// (or a statement hanging over 2 s) it drops the connection, resolves the name again
/// and reconnects. An id whose insert failed is never reused (its outcome is unknown).
fn client_by_name(dns: String, name: String, port: u64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<History> {
    tokio::spawn(async move {
        let mut h = History::default();
        let mut id = 0i64;
        while !stop.load(Ordering::Relaxed) {
            let found = {
                let (dns, name) = (dns.clone(), name.clone());
                tokio::task::spawn_blocking(move || resolve(&dns, &name)).await.unwrap()
            };
            let Some(addr) = found else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let Ok(client) = connect(&addr, port).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            h.connected.push((now_ms(), addr));
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let insert = client.execute("INSERT INTO t (id) VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(2), insert).await {
                    Ok(Ok(_)) => h.acked.push((id, now_ms())),
                    _ => break,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        h
    })
}

/// The longest stretch without an acknowledged insert, and when it began.
fn longest_gap(acked: &[(i64, u64)]) -> (u64, u64) {
    acked
        .windows(2)
        .map(|w| (w[1].1 - w[0].1, w[0].1))
        .max()
        .unwrap_or_default()
}

async fn failovers(c: &Cluster, db: &str) -> Vec<Value> {
    let (code, list) = c.get(1, &format!("/v1/databases/{db}/failovers")).await.unwrap();
    assert_eq!(code, 200, "{list}");
    list.as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_by_name_without_losing_an_acknowledged_insert() {
    let mut c = cluster(&[
        "--monitor-interval-ms",
        "200",
        "--unreachable-after",
        "3",
        "--scheduler-interval-ms",
        "500",
    ])
    .await;
    c.start_hosts(3).await.unwrap();
    let mut body = create_body("orders");
    body["backup_retention_days"] = json!(7);
    body["multi_az"] = json!(true);
    let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let db = database(&c, "orders").await;
    let port = db["endpoint"]["port"].as_u64().unwrap();
    connect(db["endpoint"]["addr"].as_str().unwrap(), port)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let db = wait_in_sync(&c, "orders", None).await;
    let (primary, standby) = (member(&c, &db, "primary"), member(&c, &db, "standby"));

    let dns = c.node(1).dns_addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let client = client_by_name(dns.clone(), dns_name("orders"), port, stop.clone());
    // A client under way, with the standby streaming every commit.
    c.wait_for(Duration::from_secs(60), "100 acknowledged inserts", || async {
        let n: i64 = connect(db["endpoint"]["addr"].as_str().unwrap(), port)
            .await?
            .query_one("SELECT count(*) FROM t", &[])
            .await?
            .get(0);
        Ok((n >= 100).then_some(()))
    })
    .await
    .unwrap();

    let index = c.hosts.iter().position(|h| h.name == primary.host).unwrap();
    let killed_at = now_ms();
    assert!(
        c.kill_host_and_instances(index) >= 2,
        "the host manager and the postmaster"
    );

    let record = c
        .wait_for(Duration::from_secs(60), "the failover to finish", || async {
            let list = failovers(&c, "orders").await;
            Ok(list.first().filter(|f| f["finished_ms"].is_u64()).cloned())
        })
        .await
        .unwrap();
    assert!(record["error"].is_null(), "{record}");
    assert_eq!(
        (record["from_instance"].as_str(), record["to_instance"].as_str()),
        (Some(primary.id.as_str()), Some(standby.id.as_str())),
        "{record}"
    );
    let step = |name: &str| record[name].as_u64().unwrap_or_else(|| panic!("{name} in {record}"));
    assert!(step("detected_ms") <= step("fenced_ms"), "{record}");
    assert!(step("fenced_ms") <= step("promotion_committed_ms"), "{record}");
    assert_eq!(step("dns_moved_ms"), step("fenced_ms"), "the name moves with the fence");

    // The name answers the new primary, and the client writes through it again.
    let db = database(&c, "orders").await;
    assert_eq!(db["endpoint"]["host"], standby.host.as_str(), "{db}");
    assert_eq!(db["endpoint"]["port"].as_u64(), Some(port), "the same port");
    let new_addr = db["endpoint"]["addr"].as_str().unwrap().to_string();
    assert_eq!(resolve(&dns, &dns_name("orders")).as_deref(), Some(new_addr.as_str()));
    let resumed_from = now_ms();
    c.wait_for(Duration::from_secs(30), "inserts through the name again", || async {
        let n: i64 = connect(&new_addr, port)
            .await?
            .query_one("SELECT count(*) FROM t WHERE id > 0", &[])
            .await?
            .get(0);
        Ok((n > 0).then_some(()))
    })
    .await
    .unwrap();
    c.wait_for(Duration::from_secs(30), "the first write seen stored", || async {
        let list = failovers(&c, "orders").await;
        Ok(list[0]["first_write_ms"].as_u64())
    })
    .await
    .unwrap();
    // Keep writing a little past the failover, then stop the client.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let history = client.await.unwrap();
    let after = history.acked.iter().filter(|(_, at)| *at > killed_at).count();
    assert!(
        after > 0,
        "no insert acknowledged after the failover (resumed check at {resumed_from})"
    );
    assert!(
        history.connected.iter().any(|(_, a)| *a == new_addr),
        "the client reconnected by name: {:?}",
        history.connected
    );

    // Every acknowledged insert is on the new primary.
    let held: std::collections::BTreeSet<i64> = connect(&new_addr, port)
        .await
        .unwrap()
        .query("SELECT id FROM t", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost: Vec<i64> = history
        .acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !held.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    let (gap, from) = longest_gap(&history.acked);
    eprintln!(
        "orders: {} acknowledged, 0 lost; write gap {gap} ms (from {}, kill at {killed_at}); timeline {record}",
        history.acked.len(),
        from
    );

    // Events tell the story; and it is Multi-AZ again, with a new standby in another zone.
    assert_eq!(events(&c, "orders", "failover-started").await.len(), 1);
    assert_eq!(events(&c, "orders", "failover-finished").await.len(), 1);
    let db = wait_in_sync(&c, "orders", Some(&standby.id)).await;
    let again = member(&c, &db, "standby");
    assert_ne!(again.host, standby.host);
    assert_ne!(again.host, primary.host, "not on the lost host");
}
