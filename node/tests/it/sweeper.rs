//! Jobs claimed by a deposed leader are taken over by the next one, never lost, never run twice at once.

use std::time::Duration;

use serde_json::{json, Value};

use super::cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_claims_survive_a_leader_kill() {
    let mut c = cluster(&[]).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let other = *c.ids().iter().find(|&&id| id != leader).unwrap();
    let mut ids = Vec::new();
    for i in 0..30 {
        let body = json!({"work_ms": 4000, "request_id": format!("req-{i}")});
        let (code, job) = c.post(other, "/v1/ops/noop", &body).await.unwrap();
        assert_eq!(code, 200, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    // A retried submit returns the original job.
    let (_, again) = c
        .post(other, "/v1/ops/noop", &json!({"work_ms": 4000, "request_id": "req-0"}))
        .await
        .unwrap();
    assert_eq!(again["id"], ids[0].as_str());

    c.wait_for(Duration::from_secs(20), "every job to be claimed", || async {
        let (_, jobs) = c.get(other, "/v1/ops").await?;
        Ok(jobs
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["state"] == "running")
            .then_some(()))
    })
    .await
    .unwrap();
    // The leader may have changed since (a slow machine can miss a heartbeat): kill the one
    // holding the claims now, and remember which jobs it held.
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let other = *c.ids().iter().find(|&&id| id != leader).unwrap();
    let (_, before) = c.get(other, "/v1/ops").await.unwrap();
    let held: Vec<String> = before
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["state"] == "running"
                && j["claims"]
                    .as_array()
                    .and_then(|c| c.last())
                    .is_some_and(|c| c["node_id"] == leader)
        })
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!held.is_empty(), "the leader held running jobs at the kill: {before}");
    c.kill(leader);

    let jobs: Vec<Value> = c
        .wait_for(Duration::from_secs(60), "every job to finish", || async {
            let (code, jobs) = c.get(other, "/v1/ops").await?;
            if code != 200 {
                return Ok(None);
            }
            let jobs = jobs.as_array().unwrap().clone();
            Ok(jobs.iter().all(|j| j["state"] == "succeeded").then_some(jobs))
        })
        .await
        .unwrap();

    assert_eq!(jobs.len(), ids.len(), "no job lost or duplicated");
    let mut taken_over = 0;
    for j in &jobs {
        let fences: Vec<u64> = j["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["fence"].as_u64().unwrap())
            .collect();
        assert!(
            fences.windows(2).all(|w| w[0] < w[1]),
            "claim fences strictly increase: {j}"
        );
        assert_eq!(
            j["completed_fence"].as_u64(),
            fences.last().copied(),
            "completed by the claim in force: {j}"
        );
        let nodes: Vec<u64> = j["claims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["node_id"].as_u64().unwrap())
            .collect();
        if held.iter().any(|h| j["id"] == h.as_str()) {
            taken_over += 1;
            assert!(nodes.contains(&leader), "the killed leader had claimed it: {j}");
            assert_ne!(*nodes.last().unwrap(), leader, "completed by another node: {j}");
        }
    }
    assert_eq!(
        taken_over,
        held.len(),
        "every job the killed leader held was taken over"
    );
    eprintln!(
        "{taken_over} of {} jobs were mid-run at the kill and taken over",
        jobs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_stops_its_leader_services() {
    let c = cluster(&[]).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    let status = c.node_status(leader).await.unwrap();
    let term = status["leader_services_term"]
        .as_u64()
        .expect("the leader runs its services");
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    for &f in &followers {
        c.pause(f);
    }
    // The leader still believes it leads (nobody told it otherwise), but its lease runs out.
    c.wait_for(
        Duration::from_secs(5),
        "the isolated leader to stop its services",
        || async {
            let s = c.node_status(leader).await?;
            Ok(s["leader_services_term"].is_null().then_some(s))
        },
    )
    .await
    .unwrap();
    for &f in &followers {
        c.resume(f);
    }
    // The cluster recovers and some leader runs the services again, in a term at least as new.
    c.wait_for(
        Duration::from_secs(20),
        "a leader running its services again",
        || async {
            let leader = c.wait_leader(Duration::from_secs(20)).await?;
            let s = c.node_status(leader).await?;
            Ok(s["leader_services_term"].as_u64().filter(|t| *t >= term))
        },
    )
    .await
    .unwrap();
}
