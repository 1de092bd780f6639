//! `keel-lab bench failover`: a Multi-AZ database's primary host is killed (-9: host
//! manager and postmaster) while a client inserts through the database's name,
//! resolving it with Keel's DNS on every reconnect. Per trial: the write gap (last
//! acknowledged insert before the first failure → first acknowledged after), the
//! acknowledged inserts lost, and where the seconds went (the failover's own timeline).
//! Each trial waits until the database is Multi-AZ again and kills at a random phase of
//! the monitor's loop.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};

use super::quantile;
use crate::cluster::{Cluster, Spec};

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Kills to measure.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// The monitor's probe interval (ms).
    #[arg(long, default_value_t = 200)]
    pub monitor_interval_ms: u64,
    /// Failed probes in a row before a host is lost.
    #[arg(long, default_value_t = 3)]
    pub unreachable_after: u32,
}

const PASSWORD: &str = "bench-password-1";
const NAME: &str = "bench.admin.db.keel.internal.";

/// One client's view of a trial.
#[derive(Default)]
struct Seen {
    /// Acknowledged ids with when.
    acked: Vec<(i64, u64)>,
    /// When each failed or abandoned write ended.
    failed: Vec<u64>,
}

/// One trial's figures (ms).
struct Trial {
    gap: u64,
    lost: usize,
    /// Kill → the monitor's decision.
    detect: u64,
    /// Decision → the fence, generation and name committed.
    commit: u64,
    /// Commit → the promotion committed.
    promote: u64,
    /// Promotion committed → the client's first acknowledged insert.
    resume: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn resolve(dns: &str) -> Option<String> {
    let (ip, port) = dns.rsplit_once(':')?;
    let out = Command::new("dig")
        .args([
            &format!("@{ip}"),
            "-p",
            port,
            "+time=1",
            "+tries=1",
            "+short",
            NAME,
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

async fn connect(addr: &str, port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(addr)
        .port(port)
        .user("app")
        .password(PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Insert fresh ids through the name until `stop`; a failed or hung (1 s) insert drops
/// the connection, and the name is resolved again.
fn probe(dns: String, port: u16, first_id: i64, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut id = first_id;
        while !stop.load(Ordering::Relaxed) {
            let dns2 = dns.clone();
            let Some(addr) = tokio::task::spawn_blocking(move || resolve(&dns2)).await.ok().flatten() else {
                continue;
            };
            let Ok(client) = connect(&addr, port).await else {
                seen.failed.push(now_ms());
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let insert = client.execute("INSERT INTO t (id) VALUES ($1)", &params);
                match tokio::time::timeout(Duration::from_secs(1), insert).await {
                    Ok(Ok(_)) => seen.acked.push((id, now_ms())),
                    _ => {
                        seen.failed.push(now_ms());
                        break;
                    }
                }
            }
        }
        seen
    })
}

async fn get(c: &Cluster, path: &str) -> anyhow::Result<Value> {
    let (code, v) = c.get(1, path).await?;
    anyhow::ensure!(code == 200, "GET {path}: {code} {v}");
    Ok(v)
}

/// Wait until the database is available with a standby in sync; the database.
async fn in_sync(c: &Cluster) -> anyhow::Result<Value> {
    c.wait_for(Duration::from_secs(600), "a synchronous standby", || async {
        let db = get(c, "/v1/databases/bench").await?;
        let streaming = db["instances"].as_array().into_iter().flatten().any(|i| {
            i["role"] == "standby" && i["replication"]["state"] == "streaming" && i["replication"]["sync"] == true
        });
        Ok((db["sync_standby"].is_string() && db["status"] == "available" && streaming).then_some(db))
    })
    .await
}

async fn trial(c: &mut Cluster, b: &FailoverBench, n: usize, next_id: &mut i64) -> anyhow::Result<Trial> {
    let db = in_sync(c).await?;
    let primary = db["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["role"] == "primary")
        .context("no primary")?;
    let host = primary["host"].as_str().unwrap_or_default().to_string();
    let index = c.hosts.iter().position(|h| h.name == host).context("unknown host")?;
    let port = db["endpoint"]["port"].as_u64().unwrap_or(0) as u16;
    let before = get(c, "/v1/databases/bench/failovers")
        .await?
        .as_array()
        .map_or(0, Vec::len);
    let stop = Arc::new(AtomicBool::new(false));
    let client = probe(c.node(1).dns_addr.clone(), port, *next_id, stop.clone());
    // Writes under way, then a kill at a random phase of the monitor's loop.
    tokio::time::sleep(Duration::from_millis(
        1_000 + rand::thread_rng().gen_range(0..b.monitor_interval_ms),
    ))
    .await;
    let killed_at = now_ms();
    c.kill_host_and_instances(index);
    let record = c
        .wait_for(Duration::from_secs(120), "the failover", || async {
            let list = get(c, "/v1/databases/bench/failovers").await?;
            Ok(list
                .as_array()
                .and_then(|l| l.get(before))
                .filter(|f| f["promotion_committed_ms"].is_u64())
                .cloned())
        })
        .await?;
    // Writes go on for two seconds more (the measurement's length), then the client stops.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = client.await?;
    *next_id = seen.acked.last().map_or(*next_id, |(id, _)| *id) + 1_000_000;
    let first_failure = seen
        .failed
        .iter()
        .copied()
        .find(|t| *t >= killed_at)
        .unwrap_or(killed_at);
    let last_before = seen
        .acked
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t <= first_failure)
        .max()
        .unwrap_or(killed_at);
    let first_after = seen
        .acked
        .iter()
        .map(|(_, t)| *t)
        .find(|t| *t > first_failure)
        .context("no insert was acknowledged after the failover")?;
    let db = get(c, "/v1/databases/bench").await?;
    let addr = db["endpoint"]["addr"].as_str().unwrap_or_default().to_string();
    let held: std::collections::HashSet<i64> = connect(&addr, port)
        .await?
        .query("SELECT id FROM t", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = seen.acked.iter().filter(|(id, _)| !held.contains(id)).count();
    let at = |k: &str| record[k].as_u64().unwrap_or(0);
    let t = Trial {
        gap: first_after - last_before,
        lost,
        detect: at("detected_ms").saturating_sub(killed_at),
        commit: at("fenced_ms").saturating_sub(at("detected_ms")),
        promote: at("promotion_committed_ms").saturating_sub(at("fenced_ms")),
        resume: first_after.saturating_sub(at("promotion_committed_ms")),
    };
    eprintln!(
        "trial {n}: gap {} ms, lost {}; kill→decision {} ms, →fence+name committed {} ms, →promotion committed {} ms, →first insert {} ms",
        t.gap, t.lost, t.detect, t.commit, t.promote, t.resume
    );
    // The lost host comes back (its fenced primary never starts; its volume is reclaimed).
    c.launch_host(index)?;
    Ok(t)
}

/// Run the benchmark and print the table.
pub async fn run(b: FailoverBench) -> anyhow::Result<()> {
    let bin = super::keel_binary(b.keel_bin.as_deref())?;
    if Command::new("dig").arg("-v").output().is_err() {
        bail!("dig is not installed; run scripts/setup.sh --bench");
    }
    let interval = b.monitor_interval_ms.to_string();
    let after = b.unreachable_after.to_string();
    let mut c = Cluster::start(Spec::new(&bin, 3).args(&[
        "--monitor-interval-ms",
        &interval,
        "--unreachable-after",
        &after,
        "--scheduler-interval-ms",
        "500",
    ]))
    .await?;
    c.start_hosts(3).await?;
    let body = json!({"name": "bench", "engine": "postgres", "class": "small", "storage_gib": 10,
                      "master_user": "app", "master_password": PASSWORD,
                      "backup_retention_days": 7, "multi_az": true});
    let (code, created) = c.post(1, "/v1/databases", &body).await?;
    anyhow::ensure!(code == 200, "create: {code} {created}");
    let db = in_sync(&c).await?;
    let addr = db["endpoint"]["addr"].as_str().unwrap_or_default().to_string();
    let port = db["endpoint"]["port"].as_u64().unwrap_or(0) as u16;
    connect(&addr, port)
        .await?
        .batch_execute("CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY)")
        .await?;
    let mut trials = Vec::new();
    let mut next_id = 0;
    for n in 1..=b.trials {
        trials.push(trial(&mut c, &b, n, &mut next_id).await?);
    }
    let ms = |f: fn(&Trial) -> u64| trials.iter().map(|t| f(t) as f64).collect::<Vec<f64>>();
    let gaps = ms(|t| t.gap);
    let lost: usize = trials.iter().map(|t| t.lost).sum();
    println!(
        "\nKeel failover, kill -9 of the primary's host, {} trials, monitor {} ms × {}:",
        trials.len(),
        b.monitor_interval_ms,
        b.unreachable_after
    );
    println!("| | p50 | p95 | max |\n|---|---|---|---|");
    let row = |what: &str, xs: &[f64]| {
        println!(
            "| {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
            quantile(xs, 0.5),
            quantile(xs, 0.95),
            xs.iter().copied().fold(0.0, f64::max)
        )
    };
    row("write gap (last ack → first ack after)", &gaps);
    row("kill → monitor's decision", &ms(|t| t.detect));
    row("decision → fence + name committed", &ms(|t| t.commit));
    row("→ promotion committed", &ms(|t| t.promote));
    row("→ client's first insert", &ms(|t| t.resume));
    println!("acknowledged inserts lost: {lost}");
    Ok(())
}
