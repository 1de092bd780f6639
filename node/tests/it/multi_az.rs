//! Multi-AZ databases, end to end: a standby in another zone is built from the latest
//! snapshot and the archive (not copied from the primary), streams over mutual TLS, is
//! not readable, and every commit waits for it: a paused standby holds commits back until
//! the monitor's committed release of it reaches the primary, and a new standby is built
//! without a person; leaving Multi-AZ removes it and the primary stops waiting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use serde_json::{json, Value};

use super::monitor::pids_in;
use super::recovery::{connect, database, events, now_ms};
use super::{cluster, create_body, wait_op};

/// The engine's superuser on an instance's private socket (the tests run as root, which
/// the instance's pg_ident maps, as it maps the host manager).
pub(crate) async fn superuser(volume: &Path, port: u16) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host_path(volume)
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("superuser on {}: {e}", volume.display()));
    tokio::spawn(conn);
    client
}

/// Signal every process working in `dir` (the postmaster and its children).
pub(crate) fn signal_in(dir: &Path, signal: i32) -> usize {
    // SAFETY: kill has no memory-safety preconditions.
    pids_in(dir)
        .into_iter()
        .filter(|pid| unsafe { libc::kill(*pid, signal) } == 0)
        .count()
}

pub(crate) struct Member {
    pub id: String,
    pub host: String,
    pub port: u16,
    pub volume: PathBuf,
}

/// Create `name` with backups and Multi-AZ, wait until it is available (its standby
/// comes later, from its first snapshot); the database then.
pub(crate) async fn create_multi_az(c: &Cluster, name: &str) -> Value {
    let mut body = create_body(name);
    body["backup_retention_days"] = json!(7);
    body["multi_az"] = json!(true);
    let (code, created) = c.post(1, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = wait_op(c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    database(c, name).await
}

/// Wait until `name` is available with a synchronous standby (not `not`) that its
/// primary reports streaming and in sync; the database then.
pub(crate) async fn wait_in_sync(c: &Cluster, name: &str, not: Option<&str>) -> Value {
    c.wait_for(Duration::from_secs(240), "a synchronous standby", || async {
        let db = database(c, name).await;
        let fresh = db["sync_standby"].as_str().is_some_and(|s| Some(s) != not);
        let streaming = db["instances"].as_array().unwrap().iter().any(|i| {
            i["role"] == "standby" && i["replication"]["state"] == "streaming" && i["replication"]["sync"] == true
        });
        Ok((fresh && streaming && db["status"] == "available").then_some(db))
    })
    .await
    .unwrap()
}

/// The database's member in `role`, with where its volume is.
pub(crate) fn member(c: &Cluster, db: &Value, role: &str) -> Member {
    let i = db["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["role"] == role)
        .unwrap_or_else(|| panic!("no {role} in {db}"));
    let host = i["host"].as_str().unwrap().to_string();
    let h = c.hosts.iter().find(|h| h.name == host).unwrap();
    let id = i["id"].as_str().unwrap().to_string();
    Member {
        volume: h.root.join("volumes").join(&id),
        port: i["port"].as_u64().unwrap() as u16,
        host,
        id,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_az_standby_is_built_from_the_backups_streams_over_tls_and_holds_every_commit() {
    let mut c = cluster(&["--monitor-interval-ms", "200", "--scheduler-interval-ms", "500"]).await;
    c.start_hosts(2).await.unwrap();
    let db = create_multi_az(&c, "orders").await;
    let primary = member(&c, &db, "primary");
    let endpoint = db["endpoint"]["addr"].as_str().unwrap().to_string();
    let client = connect(&endpoint, u64::from(primary.port)).await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();

    // The scheduler builds the standby once the first snapshot exists: the database says
    // which standby every commit waits for, and the primary's report says it streams.
    let db = wait_in_sync(&c, "orders", None).await;
    let standby = member(&c, &db, "standby");
    assert_eq!(db["sync_standby"], standby.id.as_str());
    assert_ne!(standby.host, primary.host, "another host");
    let zone = |h: &str| c.hosts.iter().find(|x| x.name == h).unwrap().zone.clone();
    assert_ne!(zone(&standby.host), zone(&primary.host), "another zone");
    assert_eq!(standby.port, primary.port, "the primary's port, so a failover keeps it");
    let (_, ops) = c.get(1, "/v1/ops?limit=1000").await.unwrap();
    let add = ops
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "add-standby")
        .expect("an add-standby operation");
    let actions: Vec<&str> = add["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["prepare-standby", "build-standby", "sync-standby"], "{add}");
    let built = add["tasks"][1]["result"].as_str().unwrap();
    assert!(
        built.contains("built from zone-store"),
        "from the snapshot and archive: {built}"
    );

    // Rows written before and after it was built are on it, replayed.
    client
        .batch_execute("INSERT INTO t SELECT generate_series(101, 200)")
        .await
        .unwrap();
    let on_standby = superuser(&standby.volume, standby.port).await;
    let recovering: bool = on_standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(recovering, "it is a standby");
    c.wait_for(Duration::from_secs(30), "the standby to replay every row", || async {
        let n: i64 = on_standby.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
        Ok((n == 200).then_some(()))
    })
    .await
    .unwrap();

    // Snapshots come from the standby while it serves (the primary's clients do not pay
    // for the copy), stored in the primary's zone beside its archive; a restore of one is
    // the database as it was.
    let op = c
        .wait_for(Duration::from_secs(60), "a user snapshot to be accepted", || async {
            let (code, op) = c
                .post(
                    1,
                    "/v1/databases/orders/snapshots",
                    &json!({"snapshot": "from-standby"}),
                )
                .await?;
            // 409 while an automatic one runs.
            Ok((code == 200).then_some(op))
        })
        .await
        .unwrap();
    let done = wait_op(&c, op["operation_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let steps: Vec<_> = done["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["action"].as_str().unwrap(), t["instance"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [("checkpoint", primary.id.as_str()), ("snapshot", standby.id.as_str())],
        "{done}"
    );
    let (_, snap) = c.get(1, "/v1/snapshots/from-standby").await.unwrap();
    // The standby's copy starts at the primary's fresh checkpoint (or a later one), not
    // at an older restartpoint: the WAL it carries is only what came after.
    let lsn = |text: &str| keel_node::backup::wal::parse_lsn(text.trim()).unwrap();
    let result = done["tasks"][0]["result"].as_str().unwrap();
    let redo = lsn(result.rsplit("redo at ").next().unwrap());
    assert!(
        lsn(snap["start_lsn"].as_str().unwrap()) >= redo,
        "{snap} starts before the checkpoint: {result}"
    );
    assert_eq!(snap["zone"], zone(&primary.host).as_str(), "{snap}");
    let (code, r) = c
        .post(
            1,
            "/v1/databases/orders/restore",
            &json!({"to": "orders-copy", "snapshot": "from-standby"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{r}");
    let restored = wait_op(&c, r["operation_id"].as_str().unwrap()).await;
    assert_eq!(restored["state"], "succeeded", "{restored}");
    let copy = database(&c, "orders-copy").await;
    let rows: i64 = connect(
        copy["endpoint"]["addr"].as_str().unwrap(),
        copy["endpoint"]["port"].as_u64().unwrap(),
    )
    .await
    .unwrap()
    .query_one("SELECT count(*) FROM t", &[])
    .await
    .unwrap()
    .get(0);
    assert_eq!(rows, 200, "the snapshot taken on the standby, restored");
    let deleted = c
        .wait_for(
            Duration::from_secs(60),
            "the copy's deletion to be accepted",
            || async {
                let (code, op) = c.delete(1, "/v1/databases/orders-copy").await?;
                // 409 while its own first snapshot runs.
                Ok((code == 200).then_some(op))
            },
        )
        .await
        .unwrap();
    wait_op(&c, deleted["operation_id"].as_str().unwrap()).await;

    // The link is TLS, authenticated by the standby host's certificate.
    let on_primary = superuser(&primary.volume, primary.port).await;
    let row = on_primary
        .query_one(
            "SELECT s.ssl, s.client_dn, r.usename::text FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) WHERE r.application_name LIKE 'keel\\_%'",
            &[],
        )
        .await
        .unwrap();
    let (ssl, dn, user): (bool, Option<String>, String) = (row.get(0), row.get(1), row.get(2));
    assert!(ssl, "replication runs over TLS");
    assert!(
        dn.as_deref()
            .is_some_and(|d| d.contains(&format!("/host/{}", standby.host))),
        "the standby's host certificate: {dn:?}"
    );
    assert_eq!(user, "keel_replication");

    // Not readable: clients cannot connect to the standby.
    let refused = connect(&standby_addr(&c, &standby.host), u64::from(standby.port))
        .await
        .expect_err("a client reached the standby");
    let refused = refused
        .as_db_error()
        .map_or(refused.to_string(), |e| e.message().to_string());
    assert!(
        refused.contains("pg_hba.conf"),
        "refused by the standby itself: {refused}"
    );

    // Synchronous: with the standby paused, a commit waits. It is acknowledged only after
    // the monitor's committed decision to release the lost standby (its generation bumped,
    // the standby fenced) reached the primary, with the standby still paused.
    let data = standby.volume.join("data");
    assert!(signal_in(&data, libc::SIGSTOP) > 0);
    let pending = tokio::spawn(async move {
        client.execute("INSERT INTO t VALUES (201)", &[]).await.unwrap();
        (client, now_ms())
    });
    let (client, acked_at) = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .expect("the lost standby is released without a person")
        .unwrap();
    signal_in(&data, libc::SIGCONT);
    let lost = events(&c, "orders", "standby-lost").await;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(
        lost[0]["at_ms"].as_u64().unwrap() <= acked_at,
        "the commit waited for the committed release: {lost:?} vs {acked_at}"
    );
    assert!(lost[0]["message"].as_str().unwrap().contains(&standby.id));

    // A new standby is built from the backups, in the other zone again, and in sync.
    let db = wait_in_sync(&c, "orders", Some(&standby.id)).await;
    let standby = member(&c, &db, "standby");
    assert_ne!(zone(&standby.host), zone(&primary.host));
    let on_standby = superuser(&standby.volume, standby.port).await;
    c.wait_for(Duration::from_secs(30), "the new standby to hold every row", || async {
        let n: i64 = on_standby.query_one("SELECT count(*) FROM t", &[]).await?.get(0);
        Ok((n == 201).then_some(()))
    })
    .await
    .unwrap();

    // Leaving Multi-AZ: the standby goes, its slot with it, and commits no longer wait.
    let (code, r) = super::databases::patch(&c, 1, "orders", json!({"multi_az": false})).await;
    assert_eq!(code, 200, "{r}");
    let op = wait_op(&c, r["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let db = database(&c, "orders").await;
    assert!(db["sync_standby"].is_null(), "{db}");
    assert_eq!(db["instances"].as_array().unwrap().len(), 1, "{db}");
    assert!(!standby.volume.exists(), "the standby's volume was destroyed");
    // The standby's slot went; the archive's own stayed (the archive streams on).
    let slots: Vec<String> = on_primary
        .query("SELECT slot_name::text FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(slots, ["keel_archive"]);
    let names: String = on_primary
        .query_one("SHOW synchronous_standby_names", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(names, "");
    client.execute("INSERT INTO t VALUES (202)", &[]).await.unwrap();

    // A dry run of adding it back: the plan, read from what runs, and nothing changed.
    let (code, plan) = c.get(1, "/v1/databases/orders/standby-plan").await.unwrap();
    assert_eq!(code, 200, "{plan}");
    let steps: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["observe", "provision", "install", "sync", "replicate", "record"],
        "{plan}"
    );
    let observed = plan["steps"][0]["detail"].as_str().unwrap();
    assert!(
        observed.contains(&format!("primary {}", primary.id)) && observed.contains("reports PostgreSQL 15"),
        "the engine version as the host reports it: {observed}"
    );
    assert!(
        plan["steps"][3]["detail"].as_str().unwrap().contains("unpack snapshot"),
        "{plan}"
    );
    let db = database(&c, "orders").await;
    assert_eq!(db["instances"].as_array().unwrap().len(), 1, "nothing was added: {db}");
}

fn standby_addr(c: &Cluster, host: &str) -> String {
    let h = c.hosts.iter().find(|h| h.name == host).unwrap();
    h.addr.rsplit_once(':').map_or(h.addr.clone(), |(a, _)| a.to_string())
}
