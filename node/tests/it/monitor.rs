//! The monitor: a host manager that stops answering becomes unreachable (one
//! event), gets no new databases, and recovers (one event) when it is back.

use std::time::Duration;

use keel_jepsen::cluster::Cluster;
use serde_json::{json, Value};

use super::cluster;

async fn host(c: &Cluster, name: &str) -> anyhow::Result<Value> {
    let (code, hosts) = c.get(3, "/v1/hosts").await?;
    anyhow::ensure!(code == 200, "{hosts}");
    hosts
        .as_array()
        .and_then(|a| a.iter().find(|h| h["name"] == name).cloned())
        .ok_or_else(|| anyhow::anyhow!("host {name} is not listed: {hosts}"))
}

async fn wait_health(c: &Cluster, name: &str, health: &str) -> Value {
    c.wait_for(
        Duration::from_secs(30),
        &format!("host {name} to be {health}"),
        || async {
            let h = host(c, name).await?;
            Ok((h["health"] == health).then_some(h))
        },
    )
    .await
    .unwrap()
}

/// How many events of `kind` are about host `name`, or the admin account's database `name`
/// (events name a database by its key, `<name>.<account>`).
async fn events_about(c: &Cluster, name: &str, kind: &str) -> usize {
    let key = format!("{name}.admin");
    let (code, events) = c.get(1, "/v1/events").await.unwrap();
    assert_eq!(code, 200, "{events}");
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| (e["subject"] == name || e["subject"] == key.as_str()) && e["kind"] == kind)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_is_marked_avoided_and_recovers() {
    let mut c = cluster(&["--monitor-interval-ms", "200", "--unreachable-after", "3"]).await;
    c.start_hosts(2).await.unwrap();

    let h1 = wait_health(&c, "h1", "healthy").await;
    assert!(
        h1["capacity"]["instance_slots"].as_u64().unwrap() > 0,
        "the capacity report is recorded: {h1}"
    );
    wait_health(&c, "h2", "healthy").await;

    c.kill_host(0);
    let started = std::time::Instant::now();
    wait_health(&c, "h1", "unreachable").await;
    eprintln!("h1 marked unreachable {:?} after the kill", started.elapsed());
    assert_eq!(host(&c, "h2").await.unwrap()["health"], "healthy", "only h1 is down");

    // Nothing is placed on an unreachable host: h1 is zone a's only host.
    let body = json!({"name": "nowhere", "engine": "postgres", "class": "small", "storage_gib": 1,
                      "zone": "a", "master_user": "app", "master_password": "pass word 1"});
    let (code, refused) = c.post(2, "/v1/databases", &body).await.unwrap();
    assert_eq!(code, 409, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("unreachable"), "{refused}");
    let (code, _) = c.get(1, "/v1/databases/nowhere").await.unwrap();
    assert_eq!(code, 404, "a refused create leaves no record");

    // Many more failed probes pass; still exactly one event.
    c.wait_for(Duration::from_secs(10), "several more probe rounds", || async {
        Ok((started.elapsed() > Duration::from_secs(2)).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(
        events_about(&c, "h1", "host-unreachable").await,
        1,
        "only the transition is an event"
    );

    c.launch_host(0).unwrap();
    wait_health(&c, "h1", "healthy").await;
    assert_eq!(events_about(&c, "h1", "host-recovered").await, 1);
    assert_eq!(events_about(&c, "h2", "host-unreachable").await, 0);
}

/// Processes working in `dir` (PostgreSQL's backends chdir to the data directory); none
/// when it does not exist.
pub(crate) fn processes_in(dir: &std::path::Path) -> usize {
    pids_in(dir).len()
}

/// The ids of the processes working in `dir`.
pub(crate) fn pids_in(dir: &std::path::Path) -> Vec<i32> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| std::fs::read_link(p.path().join("cwd")).is_ok_and(|cwd| cwd == dir))
        .filter_map(|p| p.file_name().to_string_lossy().parse::<i32>().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_instance_on_a_healthy_host_is_noticed_once_and_so_is_its_recovery() {
    let mut c = cluster(&["--monitor-interval-ms", "200", "--unreachable-after", "3"]).await;
    c.start_hosts(1).await.unwrap();
    let (code, created) = c.post(1, "/v1/databases", &super::create_body("pm")).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = super::wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, db) = c.get(1, "/v1/databases/pm").await.unwrap();
    let instance = db["instances"][0]["id"].as_str().unwrap().to_string();
    let data = c.hosts[0].root.join("volumes").join(&instance).join("data");

    // kill -9 the postmaster; the host manager stays healthy.
    let pid: i32 = std::fs::read_to_string(data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let started = std::time::Instant::now();
    let db = c
        .wait_for(
            Duration::from_secs(30),
            "the instance to be marked unhealthy",
            || async {
                let (_, db) = c.get(3, "/v1/databases/pm").await?;
                Ok(db["instances"][0]["health"]
                    .as_str()
                    .is_some_and(|h| h.starts_with("unhealthy"))
                    .then_some(db))
            },
        )
        .await
        .unwrap();
    eprintln!("marked unhealthy {:?} after the kill", started.elapsed());
    assert_eq!(
        db["status"], "available",
        "DNS keeps answering; the reason says why: {db}"
    );
    assert!(
        db["status_reason"].as_str().unwrap_or("").contains("is unhealthy"),
        "{db}"
    );
    assert_eq!(host(&c, "h1").await.unwrap()["health"], "healthy", "the host is fine");
    c.wait_for(Duration::from_secs(10), "several more probe rounds", || async {
        Ok((started.elapsed() > Duration::from_secs(3)).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(
        events_about(&c, "pm", "instance-unhealthy").await,
        1,
        "only the transition is an event"
    );

    // The host manager restarts it (as after any host-manager restart) once its old
    // processes have gone.
    c.wait_for(
        Duration::from_secs(30),
        "the killed postmaster's children to exit",
        || async { Ok((processes_in(&data) == 0).then_some(())) },
    )
    .await
    .unwrap();
    c.kill_host(0);
    c.launch_host(0).unwrap();
    let db = c
        .wait_for(Duration::from_secs(60), "the instance to recover", || async {
            let (_, db) = c.get(3, "/v1/databases/pm").await?;
            Ok((db["instances"][0]["health"] == "healthy").then_some(db))
        })
        .await
        .unwrap();
    assert!(db["status_reason"].is_null(), "{db}");
    assert_eq!(events_about(&c, "pm", "instance-recovered").await, 1);
    assert_eq!(events_about(&c, "pm", "instance-unhealthy").await, 1);
}
