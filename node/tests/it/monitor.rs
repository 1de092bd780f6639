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

async fn events_about(c: &Cluster, name: &str, kind: &str) -> usize {
    let (code, events) = c.get(1, "/v1/events").await.unwrap();
    assert_eq!(code, 200, "{events}");
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == name && e["kind"] == kind)
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
