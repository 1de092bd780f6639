//! Failover of a Multi-AZ database, end to end, each data host in a network namespace of
//! its own, with a client that reaches the database only by name through Keel's DNS
//! (re-resolving on every reconnect) and records every operation as a history (JSON lines,
//! `keel_jepsen::history`), while the test kills the primary's host (-9), pauses the
//! primary past the detection time, cuts the primary's host off the control plane only,
//! or cuts the primary off its standby only. After each, the checkers read the history
//! back: no acknowledged insert is missing on the final primary, and no two primaries
//! acknowledged writes at once (probes of the fenced one included); the name points at the
//! one primary, and the database is Multi-AZ again without a person (or, cut off only from
//! the control plane, never failed over at all).

use std::collections::BTreeSet;
use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use keel_jepsen::history::{self, History, Writer};
use keel_jepsen::host::dig_a;
use serde_json::{json, Value};

use super::multi_az::{create_multi_az, member, signal_in, wait_in_sync, Member};
use super::recovery::{connect, database, events, ids, now_ms};
use super::{cluster, wait_op, PASSWORD};

/// The database's name in Keel's zone.
fn dns_name(db: &str) -> String {
    format!("{db}.admin.db.keel.internal.")
}

/// The longest stretch without an acknowledged insert, and when it began.
fn longest_gap(acked: &[(i64, u64)]) -> (u64, u64) {
    acked
        .windows(2)
        .map(|w| (w[1].1 - w[0].1, w[0].1))
        .max()
        .unwrap_or_default()
}

/// The rows of `t` on the instance at `addr`.
async fn count(addr: &str, port: u64) -> anyhow::Result<i64> {
    Ok(connect(addr, port)
        .await?
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0))
}

/// The checkers, on the history written as JSON lines beside the cluster's logs and read
/// back: every acknowledged insert is on the database at `addr`, and no two primaries
/// acknowledged writes at once.
async fn check_history(c: &Cluster, history: &History, addr: &str, port: u64) {
    let path = c.dir().join("history-orders.jsonl");
    history.write_jsonl(&path).unwrap();
    let read = History::read_jsonl(&path).unwrap();
    assert_eq!(read.ops.len(), history.ops.len());
    let held: BTreeSet<i64> = ids((addr.to_string(), port)).await;
    let lost = history::lost(&read, &held);
    assert!(
        lost.is_empty(),
        "acknowledged and lost: {lost:?} (history {})",
        path.display()
    );
    if let Some(overlap) = history::two_writable(&read) {
        panic!(
            "two primaries took writes at once: {overlap} (history {})",
            path.display()
        );
    }
    eprintln!(
        "history {}: {} operations, {} acknowledged, 0 lost, one writable primary at a time",
        path.display(),
        read.ops.len(),
        read.acknowledged().len()
    );
}

/// A probe write (client process 2) to the instance at `addr`, recorded in `h`.
async fn probe(h: &mut History, addr: &str, port: u64, id: i64) -> bool {
    history::probe(h, 2, addr, port as u16, "app", PASSWORD, id).await
}

async fn failovers(c: &Cluster, db: &str) -> Vec<Value> {
    let (code, list) = c.get(1, &format!("/v1/databases/{db}/failovers")).await.unwrap();
    assert_eq!(code, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// A Multi-AZ `orders` in sync, on a cluster whose monitor probes every 200 ms and whose
/// hosts each run in a network namespace of their own, with a client writing through its
/// name.
struct UnderLoad {
    c: Cluster,
    port: u64,
    primary: Member,
    standby: Member,
    dns: String,
    client: Writer,
}

async fn under_load() -> UnderLoad {
    let mut c = cluster(&[
        "--monitor-interval-ms",
        "200",
        "--unreachable-after",
        "3",
        "--scheduler-interval-ms",
        "500",
    ])
    .await;
    c.start_hosts_isolated(3).await.unwrap();
    let db = create_multi_az(&c, "orders").await;
    let port = db["endpoint"]["port"].as_u64().unwrap();
    let addr = db["endpoint"]["addr"].as_str().unwrap().to_string();
    connect(&addr, port)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let db = wait_in_sync(&c, "orders", None).await;
    let (primary, standby) = (member(&c, &db, "primary"), member(&c, &db, "standby"));
    let dns = c.node(1).dns_addr.clone();
    let to = history::Target {
        dns: dns.clone(),
        name: dns_name("orders"),
        port: port as u16,
        user: "app".into(),
        password: PASSWORD.into(),
    };
    let client = Writer::start(to, 1);
    // A client under way, with the standby receiving every commit.
    c.wait_for(Duration::from_secs(60), "100 acknowledged inserts", || async {
        Ok((count(&addr, port).await? >= 100).then_some(()))
    })
    .await
    .unwrap();
    UnderLoad {
        c,
        port,
        primary,
        standby,
        dns,
        client,
    }
}

impl UnderLoad {
    /// The host address of `member`.
    fn addr_of(&self, m: &Member) -> String {
        let h = self.c.hosts.iter().find(|h| h.name == m.host).unwrap();
        h.addr.rsplit_once(':').unwrap().0.to_string()
    }

    /// The index (in the cluster's hosts) of `member`'s host.
    fn index_of(&self, m: &Member) -> usize {
        self.c.hosts.iter().position(|h| h.name == m.host).unwrap()
    }

    /// Wait until the failover is committed and the standby promoted; its record.
    async fn promoted(&self) -> Value {
        self.c
            .wait_for(Duration::from_secs(60), "the standby to be promoted", || async {
                let list = failovers(&self.c, "orders").await;
                Ok(list.first().filter(|f| f["promotion_committed_ms"].is_u64()).cloned())
            })
            .await
            .unwrap()
    }

    /// After a failover: the name answers the promoted standby, the client writes through
    /// it again, the timeline is whole, and no acknowledged insert is missing; stops the
    /// client and returns its longest write gap (ms).
    async fn check_failed_over(self, since: u64, planned: bool, probes: History) -> (Cluster, Member, Member, u64) {
        let UnderLoad {
            c,
            port,
            primary,
            standby,
            dns,
            client,
        } = self;
        let record = c
            .wait_for(Duration::from_secs(120), "the failover to finish", || async {
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

        let db = database(&c, "orders").await;
        assert_eq!(db["endpoint"]["host"], standby.host.as_str(), "{db}");
        assert_eq!(db["endpoint"]["port"].as_u64(), Some(port), "the same port");
        let new_addr = db["endpoint"]["addr"].as_str().unwrap().to_string();
        assert_eq!(dig_a(&dns, &dns_name("orders")).as_deref(), Some(new_addr.as_str()));
        let first_write = c
            .wait_for(Duration::from_secs(30), "the first write seen stored", || async {
                Ok(failovers(&c, "orders").await[0]["first_write_ms"].as_u64())
            })
            .await
            .unwrap();
        let before = count(&new_addr, port).await.unwrap();
        c.wait_for(
            Duration::from_secs(30),
            "the client to write through the name again",
            || async { Ok((count(&new_addr, port).await? > before).then_some(())) },
        )
        .await
        .unwrap();
        let mut history = client.finish().await;
        let connections = history.connections();
        assert!(
            connections
                .iter()
                .any(|(at, target)| target.starts_with(&format!("{new_addr}:")) && *at > since),
            "the client reconnected by name: {connections:?}"
        );
        let acked = history.acknowledged();
        history.merge(probes);
        check_history(&c, &history, &new_addr, port).await;
        let (gap, from) = longest_gap(&acked);
        eprintln!(
            "orders: {} acknowledged, 0 lost; longest write gap {gap} ms from {from} (fault at {since}); first write stored {} ms after the fault; timeline {record}",
            acked.len(),
            first_write.saturating_sub(since),
        );
        let what = if planned { "switchover" } else { "failover" };
        assert_eq!(record["planned"], planned, "{record}");
        assert_eq!(events(&c, "orders", &format!("{what}-started")).await.len(), 1);
        assert_eq!(events(&c, "orders", &format!("{what}-finished")).await.len(), 1);
        (c, primary, standby, gap)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_over_by_name_without_losing_an_acknowledged_insert() {
    let mut run = under_load().await;
    let index = run.c.hosts.iter().position(|h| h.name == run.primary.host).unwrap();
    let killed_at = now_ms();
    assert!(
        run.c.kill_host_and_instances(index) >= 2,
        "the host manager and the postmaster"
    );
    let (mut c, primary, standby, _) = run.check_failed_over(killed_at, false, History::default()).await;
    // Multi-AZ again: a new standby in sync, not on the lost host.
    let db = wait_in_sync(&c, "orders", Some(&standby.id)).await;
    let again = member(&c, &db, "standby");
    assert_ne!(again.host, standby.host);
    assert_ne!(again.host, primary.host, "not on the lost host");
    // The lost host comes back: the fenced primary never starts, and its volume is reclaimed.
    c.launch_host(index).unwrap();
    c.wait_for(
        Duration::from_secs(60),
        "the fenced primary to be reclaimed",
        || async {
            let (_, ops) = c.get(1, "/v1/ops?limit=1000").await?;
            let reclaimed = ops
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["kind"] == "reclaim-fenced" && o["state"] == "succeeded");
            Ok((reclaimed && !primary.volume.exists()).then_some(()))
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_is_fenced_and_never_acknowledges_a_write_again() {
    let run = under_load().await;
    let data = run.primary.volume.join("data");
    let paused_at = now_ms();
    assert!(signal_in(&data, libc::SIGSTOP) > 0);
    run.promoted().await;
    // Resumed after the failover: its sessions' commits wait for a standby that is now a
    // primary of its own, and its host stops it as soon as the monitor's fence reaches it.
    signal_in(&data, libc::SIGCONT);
    let old = run.addr_of(&run.primary);
    let port = run.port;
    // Probes of the fenced primary and of the new one, in the history the checker reads:
    // the fenced one must never acknowledge, the new one must.
    let mut probes = History::default();
    let db = database(&run.c, "orders").await;
    let new_addr = db["endpoint"]["addr"].as_str().unwrap().to_string();
    // The new primary takes one (each try a fresh id: a refused one may have been applied).
    let deadline = now_ms() + 30_000;
    let mut next = -1;
    while !probe(&mut probes, &new_addr, port, next).await {
        assert!(now_ms() < deadline, "the new primary took no probe in 30 s");
        next -= 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !probe(&mut probes, &old, port, -1000).await,
        "the fenced primary acknowledged a write"
    );
    run.c
        .wait_for(Duration::from_secs(60), "the fenced primary to stop", || async {
            Ok(connect(&old, port).await.is_err().then_some(()))
        })
        .await
        .unwrap();
    let (c, primary, ..) = run.check_failed_over(paused_at, false, probes).await;
    let db = database(&c, "orders").await;
    let new_addr = db["endpoint"]["addr"].as_str().unwrap().to_string();
    let probe: i64 = connect(&new_addr, port)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM t WHERE id = -1000", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(probe, 0, "the write to the fenced primary is nowhere");
    c.wait_for(Duration::from_secs(60), "the fenced primary's volume to go", || async {
        Ok((!primary.volume.exists()).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_the_control_plane_only_keeps_serving_and_is_not_failed_over() {
    let run = under_load().await;
    let index = run.index_of(&run.primary);
    // The host manager's port is the control plane's only way to the host: cut in the
    // host's namespace, the monitor loses the host, while clients and the standby still
    // reach the primary.
    let manager_port: u16 = run.c.hosts[index].addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let net = run.c.net().unwrap();
    net.cut_port(index, manager_port).unwrap();
    let host = run.primary.host.clone();
    run.c
        .wait_for(Duration::from_secs(30), "the host to be marked unreachable", || async {
            let (_, hosts) = run.c.get(1, "/v1/hosts").await.unwrap();
            let h = hosts
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["name"] == host.as_str())
                .cloned();
            Ok(h.filter(|h| h["health"] == "unreachable").map(drop))
        })
        .await
        .unwrap();
    let cut_at = now_ms();
    // Several detection times pass: the client keeps writing, and nothing fails over.
    let addr = run.addr_of(&run.primary);
    let rows = || count(&addr, run.port);
    let at_cut = rows().await.unwrap();
    // Three times the detection time the failover tests see, and inserts all along.
    run.c
        .wait_for(
            Duration::from_secs(30),
            "200 more inserts over 3 s while cut off",
            || async { Ok((rows().await? >= at_cut + 200 && now_ms() - cut_at > 3_000).then_some(())) },
        )
        .await
        .unwrap();
    assert!(failovers(&run.c, "orders").await.is_empty(), "it never failed over");
    let db = database(&run.c, "orders").await;
    assert_eq!(db["endpoint"]["host"], run.primary.host.as_str(), "{db}");
    assert_eq!(db["sync_standby"], run.standby.id.as_str(), "{db}");
    net.heal(index).unwrap();
    let history = run.client.finish().await;
    check_history(&run.c, &history, &addr, run.port).await;
    let (gap, _) = longest_gap(&history.acknowledged());
    eprintln!("cut off from the control plane: longest write gap {gap} ms, no failover");
    // Healed: the monitor reaches the host again.
    run.c
        .wait_for(Duration::from_secs(30), "the host to be healthy again", || async {
            let (_, hosts) = run.c.get(1, "/v1/hosts").await?;
            let healthy = hosts
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["name"] == host.as_str() && h["health"] == "healthy");
            Ok(healthy.then_some(()))
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_load_waits_for_the_window_or_runs_now_and_loses_nothing() {
    let run = under_load().await;
    let zone = run
        .c
        .hosts
        .iter()
        .find(|h| h.name == run.standby.host)
        .unwrap()
        .zone
        .clone();
    let path = "/v1/databases/orders/failover";
    // Refused: the standby is not in the zone named.
    let (code, refused) = run.c.post(1, path, &json!({"to_zone": "zz"})).await.unwrap();
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["detail"].as_str().unwrap().contains(&format!("in zone {zone}")),
        "{refused}"
    );
    // For the maintenance window: shown, then cancelled; nothing moved.
    let (code, pending) = run
        .c
        .post(1, path, &json!({"to_zone": zone, "in_maintenance_window": true}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{pending}");
    assert!(pending["operation_id"].is_null(), "{pending}");
    assert_eq!(pending["database"]["pending_switchover_to"], zone.as_str());
    let (code, cancelled) = run.c.delete(1, path).await.unwrap();
    assert_eq!(code, 200, "{cancelled}");
    assert!(database(&run.c, "orders").await["pending_switchover_to"].is_null());
    assert_eq!(events(&run.c, "orders", "switchover-cancelled").await.len(), 1);
    // Now, under load.
    let asked_at = now_ms();
    let (code, started) = run.c.post(1, path, &json!({"to_zone": zone})).await.unwrap();
    assert_eq!(code, 200, "{started}");
    let op = wait_op(&run.c, started["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let actions: Vec<&str> = op["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["stop", "promote", "destroy"],
        "the old primary stops first: {op}"
    );
    let (c, primary, standby, gap) = run.check_failed_over(asked_at, true, History::default()).await;
    eprintln!("switchover: longest write gap {gap} ms");
    assert!(!primary.volume.exists(), "the old primary's volume went");
    // Multi-AZ again, the standby now away from the new primary's zone.
    let db = wait_in_sync(&c, "orders", Some(&standby.id)).await;
    assert_ne!(member(&c, &db, "standby").host, standby.host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_cut_off_from_its_standby_only_releases_it_by_a_committed_decision_and_keeps_serving() {
    let run = under_load().await;
    let primary_addr = run.addr_of(&run.primary);
    let rows = || count(&primary_addr, run.port);
    // Everything between the primary's host and the standby's dropped, in the primary's
    // namespace; clients and the control plane still reach both.
    let (index, standby_addr) = (run.index_of(&run.primary), run.addr_of(&run.standby));
    let net = run.c.net().unwrap();
    net.cut_peer(index, &standby_addr).unwrap();
    let cut_at = now_ms();
    // Commits wait for the unheard standby until the monitor's committed release of it
    // reaches the primary; then they go on, on the primary (and the archive) alone.
    let lost = run
        .c
        .wait_for(Duration::from_secs(60), "the standby to be released", || async {
            let e = events(&run.c, "orders", "standby-lost").await;
            Ok(e.first().cloned())
        })
        .await
        .unwrap();
    assert!(
        lost["message"].as_str().unwrap().contains("heard nothing"),
        "released for its silence: {lost}"
    );
    let released = rows().await.unwrap();
    run.c
        .wait_for(
            Duration::from_secs(60),
            "inserts to go on after the release",
            || async { Ok((rows().await? >= released + 100).then_some(())) },
        )
        .await
        .unwrap();
    assert!(
        failovers(&run.c, "orders").await.is_empty(),
        "the primary never failed over"
    );
    let db = database(&run.c, "orders").await;
    assert_eq!(db["endpoint"]["host"], run.primary.host.as_str(), "{db}");
    net.heal(index).unwrap();
    let history = run.client.finish().await;
    check_history(&run.c, &history, &primary_addr, run.port).await;
    // Synchronous until released: no insert was acknowledged while the standby was unheard
    // and not yet released (a commit whose standby reply crossed before the cut may be
    // acknowledged in its first 200 ms).
    let released_at = lost["at_ms"].as_u64().unwrap();
    let acked = history.acknowledged();
    let while_cut: Vec<&(i64, u64)> = acked
        .iter()
        .filter(|(_, at)| *at > cut_at + 200 && *at < released_at)
        .collect();
    assert!(
        while_cut.is_empty(),
        "acknowledged without the standby before the release was committed: {while_cut:?}"
    );
    let (gap, from) = longest_gap(&acked);
    eprintln!(
        "standby cut off at {cut_at}, released at {released_at} ({} ms later); longest write gap {gap} ms from {from}",
        released_at - cut_at
    );
    // Multi-AZ again: a new standby (the cut-off one is fenced and reclaimed).
    let db = wait_in_sync(&run.c, "orders", Some(&run.standby.id)).await;
    assert_ne!(member(&run.c, &db, "standby").id, run.standby.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_control_cluster_the_primary_serves_on_and_no_second_one_appears() {
    let mut run = under_load().await;
    let primary_addr = run.addr_of(&run.primary);
    let port = run.port;
    let rows = || count(&primary_addr, port);
    // Every control node killed: no API, no DNS, no monitor.
    for id in run.c.ids() {
        run.c.kill(id);
    }
    let at_loss = rows().await.unwrap();
    run.c
        .wait_for(
            Duration::from_secs(30),
            "200 inserts without the control cluster",
            || async { Ok((rows().await? >= at_loss + 200).then_some(())) },
        )
        .await
        .unwrap();
    // Still synchronous, and the standby still a standby.
    let on_primary = super::multi_az::superuser(&run.primary.volume, run.primary.port).await;
    let sync: String = on_primary
        .query_one("SELECT sync_state FROM pg_stat_replication WHERE application_name LIKE 'keel\\_%' AND application_name <> 'keel_archive'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sync, "sync");
    let on_standby = super::multi_az::superuser(&run.standby.volume, run.standby.port).await;
    let recovering: bool = on_standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(recovering, "nothing promoted the standby");
    // The control cluster comes back: nothing failed over, the same primary serves.
    for id in run.c.ids() {
        run.c.launch(id).unwrap();
    }
    let db = run
        .c
        .wait_for(
            Duration::from_secs(60),
            "the control cluster to answer again",
            || async {
                let (code, db) = run.c.get(1, "/v1/databases/orders").await?;
                Ok((code == 200).then_some(db))
            },
        )
        .await
        .unwrap();
    assert_eq!(db["endpoint"]["host"], run.primary.host.as_str(), "{db}");
    assert!(failovers(&run.c, "orders").await.is_empty());
    let history = run.client.finish().await;
    check_history(&run.c, &history, &primary_addr, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_lost_during_a_snapshot_is_failed_over_without_waiting_for_it() {
    let mut run = under_load().await;
    let index = run.c.hosts.iter().position(|h| h.name == run.primary.host).unwrap();
    // The primary's host manager frozen first, so the snapshot's task cannot finish there.
    let pid = run.c.host_pid(index).unwrap() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let (code, snap) = run
        .c
        .post(1, "/v1/databases/orders/snapshots", &json!({"snapshot": "during"}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{snap}");
    let snap_op = snap["operation_id"].as_str().unwrap().to_string();
    run.c
        .wait_for(Duration::from_secs(30), "the snapshot to be under way", || async {
            let (_, op) = run.c.get(1, &format!("/v1/ops/{snap_op}")).await?;
            Ok((op["state"] == "running").then_some(()))
        })
        .await
        .unwrap();
    let killed_at = now_ms();
    run.c.kill_host_and_instances(index);
    let (c, ..) = run.check_failed_over(killed_at, false, History::default()).await;
    let (_, op) = c.get(1, &format!("/v1/ops/{snap_op}")).await.unwrap();
    let failover = failovers(&c, "orders").await[0].clone();
    assert!(
        op["finished_at_ms"]
            .as_u64()
            .is_none_or(|t| t > failover["fenced_ms"].as_u64().unwrap()),
        "the failover did not wait for the snapshot: {op} {failover}"
    );
}
