//! Grow 3 → 5 and shrink 5 → 3 while writes continue.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::{cluster, host, wait_has_hosts};

fn voters(status: &serde_json::Value) -> BTreeSet<u64> {
    status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grow_to_five_and_shrink_to_three_under_writes() {
    let mut c = cluster(&[]).await;
    c.launch_joiner(4).unwrap();
    c.launch_joiner(5).unwrap();
    let c = Arc::new(c);

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let targets: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![1, 2, 3]));
    let writer = {
        let (c, stop, acked, next, targets) = (c.clone(), stop.clone(), acked.clone(), next.clone(), targets.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let target = {
                    let t = targets.lock().unwrap();
                    t[i % t.len()]
                };
                if let Ok((200, _)) = c.post(target, "/v1/hosts", &host(i)).await {
                    acked.lock().unwrap().insert(format!("h{i}"));
                }
            }
        })
    };

    for id in [4u64, 5] {
        let n = c.node(id);
        let body = json!({"id": id, "raft_addr": n.raft_addr, "api_addr": n.api_addr});
        let (code, status) = c.post(2, "/v1/cluster/nodes", &body).await.unwrap();
        assert_eq!(code, 200, "add node {id}: {status}");
    }
    let (_, status) = c.get(3, "/v1/cluster/status").await.unwrap();
    assert_eq!(voters(&status), BTreeSet::from([1, 2, 3, 4, 5]), "{status}");
    // The new members answer reads through their own API.
    let (code, _) = c.get(5, "/v1/hosts").await.unwrap();
    assert_eq!(code, 200);

    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    // Shrink away two members, the current leader among them.
    let remove: Vec<u64> = vec![leader, if leader == 4 { 5 } else { 4 }];
    let survivor = *[1u64, 2, 3, 5].iter().find(|id| !remove.contains(id)).unwrap();
    for id in &remove {
        let (code, status) = c.delete(survivor, &format!("/v1/cluster/nodes/{id}")).await.unwrap();
        assert_eq!(code, 200, "remove node {id}: {status}");
    }
    let kept: BTreeSet<u64> = [1u64, 2, 3, 4, 5]
        .into_iter()
        .filter(|id| !remove.contains(id))
        .collect();
    c.wait_for(
        Duration::from_secs(20),
        "three voters with a leader among them",
        || async {
            let (code, status) = c.get(survivor, "/v1/cluster/status").await?;
            let ok =
                code == 200 && voters(&status) == kept && status["leader"].as_u64().is_some_and(|l| kept.contains(&l));
            Ok(ok.then_some(()))
        },
    )
    .await
    .unwrap();
    // Membership changes are audited before they are made.
    let (_, audit) = c.get(survivor, "/v1/audit?limit=1000").await.unwrap();
    let calls: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "add-node" || r["action"] == "remove-node")
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(calls.len(), 4, "{audit}");
    assert!(calls[0].0 == "add-node" && calls[0].1.starts_with("4="), "{calls:?}");
    assert!(calls[1].0 == "add-node" && calls[1].1.starts_with("5="), "{calls:?}");
    assert_eq!(calls[2], ("remove-node".to_string(), remove[0].to_string()));
    assert_eq!(calls[3], ("remove-node".to_string(), remove[1].to_string()));
    // A removed node says so at once instead of waiting for a leader it will never have.
    let (code, body) = c.post(remove[0], "/v1/hosts", &host(1_000_000)).await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("not a member"), "{body}");

    // Writes continue on the shrunk cluster.
    let before = acked.lock().unwrap().len();
    c.wait_for(Duration::from_secs(20), "writes after the shrink", || async {
        Ok((acked.lock().unwrap().len() > before + 20).then_some(()))
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    for id in kept {
        wait_has_hosts(&c, id, &acked).await;
    }
}
