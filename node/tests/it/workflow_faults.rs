//! The workflow engine under faults: a leader killed at task boundaries of a
//! create, and a host manager killed in the middle of a task. Each database
//! ends in one terminal state, exactly once, with nothing half-made on a host.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use keel_proto::host::host_manager_client::HostManagerClient;
use keel_proto::host::TaskRequest;
use serde_json::Value;

use super::{cluster, create_body, wait_op};

/// The state of task `n` of an operation, as `ops describe` shows it.
fn task_state(op: &Value, n: usize) -> &str {
    op["tasks"][n]["state"].as_str().unwrap_or("")
}

/// Ask any running node for operation `id`.
async fn op(c: &Cluster, id: &str) -> anyhow::Result<Value> {
    for node in c.running() {
        if let Ok((200, op)) = c.get(node, &format!("/v1/ops/{id}")).await {
            return Ok(op);
        }
    }
    anyhow::bail!("no running node answered for operation {id}")
}

/// Ask any running node for a GET path.
async fn get_any(c: &Cluster, path: &str) -> Value {
    for node in c.running() {
        if let Ok((200, v)) = c.get(node, path).await {
            return v;
        }
    }
    panic!("no running node answered GET {path}")
}

/// Every instance directory on every host belongs to an instance the admin state places there.
async fn assert_no_orphans(c: &Cluster) {
    let dbs = get_any(c, "/v1/databases").await;
    let mut placed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for db in dbs.as_array().unwrap() {
        for i in db["instances"].as_array().unwrap() {
            placed
                .entry(i["host"].as_str().unwrap().to_string())
                .or_default()
                .insert(i["id"].as_str().unwrap().to_string());
        }
    }
    for h in &c.hosts {
        let on_disk: BTreeSet<String> = std::fs::read_dir(h.root.join("volumes"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            on_disk,
            placed.get(&h.name).cloned().unwrap_or_default(),
            "host {} holds exactly the volumes of the instances placed on it",
            h.name
        );
    }
}

/// No task attempt ran twice: each attempt id starts at most once across the host managers' logs.
fn assert_each_attempt_ran_once(c: &Cluster) {
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for h in &c.hosts {
        let log = std::fs::read_to_string(&h.log).unwrap_or_default();
        for line in log.lines().filter(|l| l.contains("Running task.")) {
            // Strip ANSI colouring, then take the value of task=.
            let plain: String = super::strip_ansi(line);
            if let Some(id) = plain.split_whitespace().find_map(|w| w.strip_prefix("task=")) {
                *starts.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    assert!(!starts.is_empty(), "the host logs show task starts");
    let twice: Vec<_> = starts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "task attempts started more than once: {twice:?}");
}

/// How many events of `kind` name database `db` (the admin account's; events name a
/// database by its key, `<name>.<account>`).
async fn events(c: &Cluster, db: &str, kind: &str) -> usize {
    let key = format!("{db}.admin");
    get_any(c, &format!("/v1/events?db={db}"))
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind && e["subject"] == key.as_str())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_at_task_boundaries_of_a_create() {
    let mut c = cluster(&[]).await;
    c.start_hosts(2).await.unwrap();
    // (what the test waits to see before the kill, as a predicate on the operation)
    type Boundary = (&'static str, fn(&Value) -> bool);
    let boundaries: [Boundary; 4] = [
        ("workflow started, provision not yet done", |op| {
            op["tasks"].as_array().is_some_and(|t| !t.is_empty()) && task_state(op, 0) != "succeeded"
        }),
        ("provision done", |op| task_state(op, 0) == "succeeded"),
        ("start running or done", |op| {
            task_state(op, 1) != "pending" && !task_state(op, 1).is_empty()
        }),
        ("start done", |op| task_state(op, 1) == "succeeded"),
    ];
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let first_fence = get_any(&c, "/v1/cluster/status").await["leader_services"]["fence"]
        .as_u64()
        .unwrap();
    for (n, (label, at)) in boundaries.iter().enumerate() {
        let name = format!("k{n}");
        let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
        let via = *c.running().iter().find(|&&id| id != leader).unwrap();
        let (code, created) = c.post(via, "/v1/databases", &create_body(&name)).await.unwrap();
        assert_eq!(code, 200, "{created}");
        let op_id = created["operation_id"].as_str().unwrap().to_string();
        let seen = c
            .wait_for(Duration::from_secs(60), label, || async {
                let o = op(&c, &op_id).await?;
                Ok((at(&o) || o["state"] == "succeeded").then_some(o))
            })
            .await
            .unwrap();
        c.kill(leader);
        eprintln!(
            "{name}: killed leader {leader} at \"{label}\" (tasks: {:?})",
            (0..3).map(|i| task_state(&seen, i).to_string()).collect::<Vec<_>>()
        );
        let done = wait_op(&c, &op_id).await;
        assert_eq!(done["state"], "succeeded", "{name}: {done}");
        c.launch(leader).unwrap();
        c.wait_for(Duration::from_secs(30), "the restarted node to rejoin", || async {
            let s = c.node_status(leader).await?;
            Ok(s["leader"].as_u64().is_some().then_some(()))
        })
        .await
        .unwrap();

        let db = get_any(&c, &format!("/v1/databases/{name}")).await;
        assert_eq!(db["status"], "available", "{db}");
        assert_eq!(
            events(&c, &name, "database-available").await,
            1,
            "{name} became available exactly once"
        );
        let tasks = done["tasks"].as_array().unwrap();
        assert!(
            tasks.iter().all(|t| t["state"] == "succeeded"),
            "every task succeeded: {tasks:?}"
        );
    }
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    assert_no_orphans(&c).await;
    assert_each_attempt_ran_once(&c);

    // A late call from the first, long-deposed leader's services: their fence is refused by the host manager.
    let db = get_any(&c, "/v1/databases/k3").await;
    let (instance, host) = (
        db["instances"][0]["id"].as_str().unwrap().to_string(),
        db["instances"][0]["host"].as_str().unwrap().to_string(),
    );
    let addr = &c.hosts.iter().find(|h| h.name == host).unwrap().addr;
    let mut hm = HostManagerClient::new(super::host_channel(&c.ca_dir(), addr));
    let late = hm
        .run_task(TaskRequest {
            task_id: "late-destroy-from-a-deposed-leader".into(),
            instance_id: instance.clone(),
            fence: first_fence,
            action: keel_proto::host::TaskAction::Destroy as i32,
            spec_json: String::new(),
            join_only: false,
            work_json: String::new(),
            generation: 0,
        })
        .await;
    let refused = late.expect_err("a stale term must be refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused:?}");
    let endpoint = &db["endpoint"];
    let pg = super::databases::connect(endpoint["addr"].as_str().unwrap(), endpoint["port"].as_u64().unwrap())
        .await
        .expect("the database still serves after the refused late call");
    pg.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_manager_killed_during_provision_is_waited_for_then_retried_and_nothing_half_made_remains() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    let (code, created) = c.post(1, "/v1/databases", &create_body("hm")).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op_id = created["operation_id"].as_str().unwrap().to_string();
    c.wait_for(Duration::from_secs(60), "provision to start", || async {
        let o = op(&c, &op_id).await?;
        Ok((task_state(&o, 0) == "running").then_some(()))
    })
    .await
    .unwrap();
    c.kill_host(0);
    // No answer is not a failure: the engine says it is waiting and starts nothing new.
    let waiting = c
        .wait_for(
            Duration::from_secs(60),
            "the task to say its outcome is unknown",
            || async {
                let o = op(&c, &op_id).await?;
                let result = o["tasks"][0]["result"].as_str().unwrap_or("").to_string();
                Ok(result.contains("outcome unknown").then_some(o))
            },
        )
        .await
        .unwrap();
    assert_eq!(waiting["tasks"][0]["attempt"], 1, "{waiting}");
    assert_eq!(task_state(&waiting, 0), "running", "{waiting}");
    c.launch_host(0).unwrap();

    // The restarted host has no record of attempt 1 (it removed what that attempt made),
    // so attempt 2 runs and the create completes.
    let done = wait_op(&c, &op_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["tasks"][0]["attempt"], 2, "{done}");
    let db = get_any(&c, "/v1/databases/hm").await;
    assert_eq!(db["status"], "available", "{db}");
    let addr = db["endpoint"]["addr"].as_str().unwrap();
    let port = db["endpoint"]["port"].as_u64().unwrap();
    let pg = super::databases::connect(addr, port)
        .await
        .expect("the retried create serves SQL");
    pg.batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .await
        .unwrap();
    let v: i32 = pg.query_one("SELECT v FROM t", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    assert_eq!(events(&c, "hm", "database-available").await, 1);
    assert_no_orphans(&c).await;
    assert_each_attempt_ran_once(&c);
}

/// How many times leader services have started (each under a new fence).
async fn services_started(c: &Cluster) -> usize {
    get_any(c, "/v1/events?limit=10000")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "leader-services-started")
        .count()
}

/// The leader stops (SIGSTOP) in the middle of a create and a delete, for a lease lapse
/// (its services stop and restart in the same term, under a new fence) and for longer
/// than an election (another node takes over), then comes back. Each operation ends
/// once, in the state the host shows, with every attempt run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_mid_workflow_ends_each_operation_once() {
    let mut c = cluster(&[]).await;
    c.start_hosts(1).await.unwrap();
    // The fault's length is the thing under test, not a wait for a condition.
    let pauses = [
        ("lease lapse", Duration::from_millis(350)),
        ("new election", Duration::from_millis(1500)),
    ];
    for (n, (label, pause)) in pauses.into_iter().enumerate() {
        let name = format!("lp{n}");
        let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
        let via = *c.running().iter().find(|&&id| id != leader).unwrap();
        let (code, created) = c.post(via, "/v1/databases", &create_body(&name)).await.unwrap();
        assert_eq!(code, 200, "{created}");
        let op_id = created["operation_id"].as_str().unwrap().to_string();
        c.wait_for(Duration::from_secs(60), "provision to start", || async {
            let o = op(&c, &op_id).await?;
            Ok((task_state(&o, 0) != "pending" && !task_state(&o, 0).is_empty()).then_some(()))
        })
        .await
        .unwrap();
        let starts = services_started(&c).await;
        c.pause(leader);
        tokio::time::sleep(pause).await;
        c.resume(leader);
        let done = wait_op(&c, &op_id).await;
        assert!(
            services_started(&c).await > starts,
            "{label}: the pause stopped the leader services and new ones took over"
        );
        assert_eq!(done["state"], "succeeded", "{label}: {done}");
        let db = get_any(&c, &format!("/v1/databases/{name}")).await;
        assert_eq!(db["status"], "available", "{label}: {db}");
        let endpoint = &db["endpoint"];
        let pg = super::databases::connect(endpoint["addr"].as_str().unwrap(), endpoint["port"].as_u64().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{label}: the available database answers SQL: {e}"));
        pg.simple_query("SELECT 1").await.unwrap();
        drop(pg);
        assert_eq!(events(&c, &name, "database-available").await, 1, "{label}");

        let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
        let (code, deleted) = c.delete(via, &format!("/v1/databases/{name}")).await.unwrap();
        assert_eq!(code, 200, "{deleted}");
        c.pause(leader);
        tokio::time::sleep(pause).await;
        c.resume(leader);
        let done = wait_op(&c, deleted["operation_id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{label}: {done}");
        assert_eq!(events(&c, &name, "database-deleted").await, 1, "{label}");
    }
    c.wait_leader(Duration::from_secs(30)).await.unwrap();
    assert_no_orphans(&c).await;
    assert_each_attempt_ran_once(&c);
}
