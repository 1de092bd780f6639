//! `keel-lab bench raft`: committed writes/s and latency at 1, 16 and 64 clients,
//! and leader failover time, for Keel and etcd in one run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_proto::keel::AddHostRequest;
use rand::Rng;

use super::cpu;
use super::etcd::Etcd;
use super::load::{closed_loop, median_min_max, LoadResult};
use crate::cluster::{Cluster, GrpcClient, Spec};

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RaftBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Failover trials per system.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Keel and etcd heartbeat interval, ms.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Keel's election timeout range, ms (min; max is twice min, as etcd randomises).
    /// openraft also waits its leader lease (the max) first: 100 gives 300-400 ms of
    /// silence before an election, against etcd's 300-600 ms at 300.
    #[arg(long, default_value_t = 100)]
    pub keel_election_ms: u64,
    /// etcd's --election-timeout, ms.
    #[arg(long, default_value_t = 300)]
    pub etcd_election_ms: u64,
    /// Send every Keel write to the leader (no forwarding hop), to separate its cost.
    #[arg(long)]
    pub leader_only: bool,
    /// Skip etcd (for quick Keel-only profiling; prints no ratios).
    #[arg(long)]
    pub keel_only: bool,
}

const VALUE_BYTES: usize = 256;

/// The core both systems' members are pinned to (the load runs on CPU 0).
pub(super) const MEMBER_CPU: usize = 1;

/// One load level and what it cost the members' core: busy µs per successful write.
pub(super) async fn measured(load: impl std::future::Future<Output = LoadResult>) -> anyhow::Result<(LoadResult, f64)> {
    let before = cpu::busy(MEMBER_CPU)?;
    let r = load.await;
    let spent = cpu::busy(MEMBER_CPU)?.saturating_sub(before);
    Ok((r, spent.as_secs_f64() * 1e6 / r.writes.max(1) as f64))
}

fn value() -> String {
    "v".repeat(VALUE_BYTES)
}

/// `n` gRPC clients spread over the running nodes (or all on the leader).
pub(super) async fn keel_clients(c: &Cluster, n: usize, leader_only: bool) -> anyhow::Result<Vec<GrpcClient>> {
    let ids = if leader_only {
        vec![c.wait_leader(Duration::from_secs(30)).await?]
    } else {
        c.running()
    };
    let mut out = Vec::new();
    for i in 0..n {
        out.push(c.grpc(ids[i % ids.len()]).await?);
    }
    Ok(out)
}

/// Three members pinned to the members' core, set up for the write path: `keel_write`s
/// register tens of thousands of made-up hosts, which the monitor is told not to probe.
pub(super) fn write_path_spec(keel_bin: &std::path::Path, heartbeat_ms: u64, election_ms: u64) -> Spec {
    let member_cpu = MEMBER_CPU.to_string();
    Spec::new(keel_bin, 3).wrapped(&["taskset", "-c", &member_cpu]).args(&[
        "--heartbeat-ms",
        &heartbeat_ms.to_string(),
        "--election-timeout-min-ms",
        &election_ms.to_string(),
        "--election-timeout-max-ms",
        &(election_ms * 2).to_string(),
        "--snapshot-logs",
        "100000",
        "--monitor-interval-ms",
        "3600000",
    ])
}

/// One Keel write: a `hosts add` of a made-up host with a 256-byte label.
pub(super) async fn keel_write(mut client: GrpcClient, client_no: usize, seq: u64, timeout: Duration) -> bool {
    let r: [u8; 4] = rand::thread_rng().gen();
    let mut req = tonic::Request::new(AddHostRequest {
        name: format!("b{client_no}-{seq}-{}", rand::thread_rng().gen::<u32>()),
        addr: format!(
            "10.{}.{}.{}:{}",
            r[0],
            r[1],
            r[2],
            1024 + u16::from(r[3]) * 200 + (seq % 200) as u16
        ),
        zone: "a".into(),
        labels: [("v".to_string(), value())].into(),
        client_token: String::new(),
    });
    req.set_timeout(timeout);
    client.add_host(req).await.is_ok()
}

/// Run the whole comparison and print it.
pub async fn run(b: RaftBench) -> anyhow::Result<()> {
    let keel_bin = super::keel_binary(b.keel_bin.as_deref())?;
    super::pin_self(0);
    let keel_election = (b.keel_election_ms, b.keel_election_ms * 2);
    println!("# Raft write path: Keel vs etcd, 3 members on loopback, members pinned to CPU 1, load on CPU 0");
    println!(
        "# value {VALUE_BYTES} B, fsync on; Keel heartbeat/election {}/{}-{} ms; etcd heartbeat/election {}/{} ms (etcd randomises up to 2x)",
        b.heartbeat_ms, keel_election.0, keel_election.1, b.heartbeat_ms, b.etcd_election_ms
    );

    let mut keel = Cluster::start(write_path_spec(&keel_bin, b.heartbeat_ms, b.keel_election_ms)).await?;
    let mut keel_load = Vec::new();
    for &n in &b.clients {
        let clients = Arc::new(keel_clients(&keel, n, b.leader_only).await?);
        let r = measured(closed_loop(n, Duration::from_secs(b.seconds), move |i, seq| {
            let c = clients[i].clone();
            async move { keel_write(c, i, seq, Duration::from_secs(5)).await }
        }))
        .await?;
        keel_load.push(r);
    }
    let keel_failover = keel_failovers(&mut keel, b.trials).await?;

    drop(keel);
    if b.keel_only {
        println!("\n| clients | Keel writes/s | Keel p50 / p99 ms | Keel member CPU µs/write |\n|---|---|---|---|");
        for (n, (k, kc)) in b.clients.iter().zip(&keel_load) {
            println!(
                "| {n} | {:.0} | {:.2} / {:.2} | {kc:.0} | errors {}",
                k.per_sec, k.p50_ms, k.p99_ms, k.errors
            );
        }
        let (km, kmin, kmax) = median_min_max(&keel_failover);
        println!("\nKeel failover: median {km:.3} s [{kmin:.3}–{kmax:.3}]");
        return Ok(());
    }

    let mut etcd = Etcd::start(b.heartbeat_ms, b.etcd_election_ms, Some(MEMBER_CPU)).await?;
    let mut etcd_load = Vec::new();
    for &n in &b.clients {
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(etcd_client::Client::connect(etcd.endpoints(), None).await?);
        }
        let clients = Arc::new(clients);
        let r = measured(closed_loop(n, Duration::from_secs(b.seconds), move |i, seq| {
            let mut c = clients[i].kv_client();
            async move { c.put(format!("b{i:03}{seq:04}"), value(), None).await.is_ok() }
        }))
        .await?;
        etcd_load.push(r);
    }
    let etcd_failover = etcd_failovers(&mut etcd, b.trials).await?;
    drop(etcd);

    println!();
    println!(
        "| clients | Keel writes/s | Keel p50 / p99 ms | etcd writes/s | etcd p50 / p99 ms | Keel/etcd throughput | member CPU µs/write Keel / etcd |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, n) in b.clients.iter().enumerate() {
        let ((k, kc), (e, ec)): ((LoadResult, f64), (LoadResult, f64)) = (keel_load[i], etcd_load[i]);
        println!(
            "| {n} | {:.0} | {:.2} / {:.2} | {:.0} | {:.2} / {:.2} | {:.2}x | {kc:.0} / {ec:.0} |{}",
            k.per_sec,
            k.p50_ms,
            k.p99_ms,
            e.per_sec,
            e.p50_ms,
            e.p99_ms,
            k.per_sec / e.per_sec,
            if k.errors + e.errors > 0 {
                format!(" (errors: keel {}, etcd {})", k.errors, e.errors)
            } else {
                String::new()
            }
        );
    }
    let (km, kmin, kmax) = median_min_max(&keel_failover);
    let (em, emin, emax) = median_min_max(&etcd_failover);
    println!();
    println!("| leader failover ({} trials) | median s | min s | max s |", b.trials);
    println!("|---|---|---|---|");
    println!("| Keel | {km:.3} | {kmin:.3} | {kmax:.3} |");
    println!("| etcd | {em:.3} | {emin:.3} | {emax:.3} |");
    println!("| Keel/etcd | {:.2}x | | |", km / em);
    Ok(())
}

/// Time from kill -9 of the leader to the first successful write through another node.
async fn keel_failovers(c: &mut Cluster, trials: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..trials {
        let leader = c.wait_leader(Duration::from_secs(30)).await?;
        let other = *c.running().iter().find(|&&id| id != leader).expect("a follower");
        let client = c.grpc(other).await?;
        // Kill at a random phase of the heartbeat cycle.
        let phase = rand::thread_rng().gen_range(0..100);
        tokio::time::sleep(Duration::from_millis(phase)).await;
        c.kill(leader);
        let t = Instant::now();

        // Beside the probe, note when a survivor first names a new leader (election vs. the rest).
        let survivors: Vec<String> = c.running().iter().map(|&id| c.url(id)).collect();
        let http = c.http().clone();
        let elected = tokio::spawn(async move {
            loop {
                for url in &survivors {
                    if let Ok(r) = http.get(format!("{url}/v1/node")).send().await {
                        if let Ok(v) = r.json::<serde_json::Value>().await {
                            if v["role"] == "leader" {
                                return t.elapsed().as_secs_f64();
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut seq = 0;
        while !keel_write(client.clone(), 999, seq, Duration::from_millis(20)).await {
            seq += 1;
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "no write succeeded 30 s after the kill"
            );
        }
        out.push(t.elapsed().as_secs_f64());
        let elected = tokio::time::timeout(Duration::from_secs(5), elected).await;
        eprintln!(
            "  failover trial: new leader after {:.3} s, first write after {:.3} s ({} probes)",
            elected.ok().and_then(|r| r.ok()).unwrap_or(f64::NAN),
            t.elapsed().as_secs_f64(),
            seq + 1
        );
        c.launch(leader)?;
        // Steady state before the next trial: the restarted node has the whole log. (A node
        // still behind can stand first, lose on its log and split the next election; that is
        // a different measurement.)
        c.wait_for(Duration::from_secs(30), "the restarted node to catch up", || async {
            let s = c.node_status(leader).await?;
            let Some(current) = s["leader"].as_u64().filter(|&l| l != leader) else {
                return Ok(None);
            };
            let l = c.node_status(current).await?;
            let caught_up = s["last_log_index"].as_u64() >= l["last_log_index"].as_u64()
                && s["applied_index"].as_u64() >= l["applied_index"].as_u64();
            Ok(caught_up.then_some(()))
        })
        .await?;
    }
    Ok(out)
}

async fn etcd_failovers(e: &mut Etcd, trials: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for _ in 0..trials {
        let leader = e.leader().await?;
        let other = (leader + 1) % e.members.len();
        let mut client = etcd_client::Client::connect([e.members[other].client_url.as_str()], None).await?;
        let phase = rand::thread_rng().gen_range(0..100);
        tokio::time::sleep(Duration::from_millis(phase)).await;
        e.kill(leader);
        let t = Instant::now();
        loop {
            let put = client.put("failover", "x", None);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(20), put).await {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(30),
                "no etcd put succeeded 30 s after the kill"
            );
        }
        out.push(t.elapsed().as_secs_f64());
        e.restart(leader).await?;
    }
    Ok(out)
}
