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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};

use super::patroni::{Patroni, Timers};
use super::quantile;
use crate::cluster::{Cluster, Spec};
use crate::host::{dig_a, now_ms};

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct FailoverBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Kills to measure.
    #[arg(long, default_value_t = 10)]
    pub trials: usize,
    /// The monitor's probe interval (ms); Keel's default if not given.
    #[arg(long)]
    pub monitor_interval_ms: Option<u64>,
    /// Failed probes in a row before a host is lost; Keel's default if not given.
    #[arg(long)]
    pub unreachable_after: Option<u32>,
    /// Kills of Patroni's leader per timer setting (default timers, then tuned); 0 skips Patroni.
    #[arg(long, default_value_t = 10)]
    pub patroni_trials: usize,
}

/// Patroni's default timers and tuned ones (shared/BENCHMARKING.md).
const PATRONI_TIMERS: [(&str, Timers); 2] = [
    (
        "default (ttl 30, loop_wait 10, retry_timeout 10)",
        Timers {
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
        },
    ),
    (
        "tuned (ttl 10, loop_wait 1, retry_timeout 3)",
        Timers {
            ttl: 10,
            loop_wait: 1,
            retry_timeout: 3,
        },
    ),
];

/// Kill Patroni's leader `trials` times with `timers`: each trial's write gap and
/// acknowledged inserts lost.
async fn patroni_trials(timers: Timers, trials: usize) -> anyhow::Result<Vec<(u64, usize)>> {
    let mut p = Patroni::start(timers).await?;
    let target = Target::Nodes { ports: p.ports() };
    target
        .connect()
        .await?
        .batch_execute("CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY)")
        .await?;
    let mut out = Vec::new();
    let mut next_id = 0;
    for n in 1..=trials {
        p.wait_healthy(Duration::from_secs(300)).await?;
        let probing = Probing::start(target.clone(), next_id);
        let phase = rand::thread_rng().gen_range(0..timers.loop_wait * 1000);
        tokio::time::sleep(Duration::from_millis(1_000 + phase)).await;
        let leader = p.leader().await?;
        let killed_at = now_ms();
        p.kill(leader);
        let seen = probing.until_resumed(killed_at, Duration::from_secs(180)).await?;
        next_id = seen.acked.last().map_or(next_id, |(id, _)| *id) + 1_000_000;
        let (gap_ms, _) = gap(&seen, killed_at)?;
        let lost = lost(&seen, &target.connect().await?).await?;
        eprintln!("patroni trial {n}: gap {gap_ms} ms, lost {lost}");
        out.push((gap_ms, lost));
        p.restart(leader)?;
    }
    Ok(out)
}

const PASSWORD: &str = "bench-password-1";
const NAME: &str = "bench.admin.db.keel.internal.";

/// One client's view of a trial.
#[derive(Default, Clone)]
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

/// Where the probe connects.
#[derive(Clone)]
enum Target {
    /// Keel: the database's name, resolved with Keel's DNS at this address on every connect.
    Name { dns: String, port: u16 },
    /// Patroni: every node, the first that takes writes (`target_session_attrs=read-write`).
    Nodes { ports: Vec<u16> },
}

impl Target {
    async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        match self {
            Target::Name { dns, port } => {
                let dns = dns.clone();
                let addr = tokio::task::spawn_blocking(move || dig_a(&dns, NAME))
                    .await?
                    .context("the name does not resolve")?;
                connect(&addr, *port).await
            }
            Target::Nodes { ports } => {
                let mut config = tokio_postgres::Config::new();
                for p in ports {
                    config.host("127.0.0.1").port(*p);
                }
                let (client, conn) = config
                    .user("postgres")
                    .password(super::patroni::PASSWORD)
                    .dbname("postgres")
                    .connect_timeout(Duration::from_secs(1))
                    .target_session_attrs(tokio_postgres::config::TargetSessionAttrs::ReadWrite)
                    .connect(tokio_postgres::NoTls)
                    .await?;
                tokio::spawn(conn);
                Ok(client)
            }
        }
    }
}

/// Insert fresh ids from `first_id` on until `stop`, recording into `seen`; a failed or
/// hung (1 s) insert drops the connection and the client connects afresh.
fn probe(target: Target, first_id: i64, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut id = first_id;
        while !stop.load(Ordering::Relaxed) {
            let Ok(client) = target.connect().await else {
                seen.lock().unwrap_or_else(|p| p.into_inner()).failed.push(now_ms());
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                let insert = client.execute("INSERT INTO t (id) VALUES ($1)", &params);
                let ok = matches!(tokio::time::timeout(Duration::from_secs(1), insert).await, Ok(Ok(_)));
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                if ok {
                    s.acked.push((id, now_ms()));
                } else {
                    s.failed.push(now_ms());
                    break;
                }
            }
        }
    })
}

/// A probe under way: start it, let it write, then measure around a fault.
struct Probing {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Probing {
    fn start(target: Target, first_id: i64) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = probe(target, first_id, seen.clone(), stop.clone());
        Probing { seen, stop, task }
    }

    /// Wait (at most `within`) until an insert after `at` is acknowledged, then two
    /// seconds more, and stop.
    async fn until_resumed(self, at: u64, within: Duration) -> anyhow::Result<Seen> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let resumed = {
                let s = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let first_failure = s.failed.iter().find(|t| **t >= at);
                first_failure.is_some_and(|f| s.acked.last().is_some_and(|(_, t)| t > f))
            };
            if resumed {
                break;
            }
            if tokio::time::Instant::now() > until {
                self.stop.store(true, Ordering::Relaxed);
                bail!("writes did not resume within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?;
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|p| p.into_inner()));
        Ok(seen)
    }
}

/// The write gap around a fault at `at`: last acknowledged insert before the first
/// failure after `at` → first acknowledged after that failure.
fn gap(seen: &Seen, at: u64) -> anyhow::Result<(u64, u64)> {
    let first_failure = seen.failed.iter().copied().find(|t| *t >= at).unwrap_or(at);
    let last_before = seen
        .acked
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t <= first_failure)
        .max()
        .unwrap_or(at);
    let first_after = seen
        .acked
        .iter()
        .map(|(_, t)| *t)
        .find(|t| *t > first_failure)
        .context("no insert was acknowledged after the fault")?;
    Ok((first_after - last_before, first_after))
}

/// Acknowledged ids of `seen` that `client`'s table does not hold.
async fn lost(seen: &Seen, client: &tokio_postgres::Client) -> anyhow::Result<usize> {
    let held: std::collections::HashSet<i64> = client
        .query("SELECT id FROM t", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(seen.acked.iter().filter(|(id, _)| !held.contains(id)).count())
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
    let target = Target::Name {
        dns: c.node(1).dns_addr.clone(),
        port,
    };
    let probing = Probing::start(target, *next_id);
    // Writes under way, then a kill at a random phase of the monitor's loop.
    tokio::time::sleep(Duration::from_millis(
        1_000 + rand::thread_rng().gen_range(0..b.monitor_interval_ms.unwrap_or(1_000)),
    ))
    .await;
    let killed_at = now_ms();
    c.kill_host_and_instances(index);
    let seen = probing.until_resumed(killed_at, Duration::from_secs(120)).await?;
    *next_id = seen.acked.last().map_or(*next_id, |(id, _)| *id) + 1_000_000;
    let record = c
        .wait_for(Duration::from_secs(120), "the failover's record", || async {
            let list = get(c, "/v1/databases/bench/failovers").await?;
            Ok(list
                .as_array()
                .and_then(|l| l.get(before))
                .filter(|f| f["promotion_committed_ms"].is_u64())
                .cloned())
        })
        .await?;
    let (gap_ms, first_after) = gap(&seen, killed_at)?;
    let db = get(c, "/v1/databases/bench").await?;
    let addr = db["endpoint"]["addr"].as_str().unwrap_or_default().to_string();
    let lost = lost(&seen, &connect(&addr, port).await?).await?;
    let at = |k: &str| record[k].as_u64().unwrap_or(0);
    let t = Trial {
        gap: gap_ms,
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
    let mut args = vec!["--scheduler-interval-ms".to_string(), "500".to_string()];
    if let Some(ms) = b.monitor_interval_ms {
        args.extend(["--monitor-interval-ms".to_string(), ms.to_string()]);
    }
    if let Some(k) = b.unreachable_after {
        args.extend(["--unreachable-after".to_string(), k.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut c = Cluster::start(Spec::new(&bin, 3).args(&args)).await?;
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
    let monitor = match (b.monitor_interval_ms, b.unreachable_after) {
        (None, None) => "Keel's defaults".to_string(),
        (ms, k) => format!(
            "{} ms × {}",
            ms.map_or("default".into(), |v| v.to_string()),
            k.map_or("default".into(), |v| v.to_string())
        ),
    };
    println!(
        "\nKeel failover, kill -9 of the primary's host, {} trials, monitor {monitor}:",
        trials.len()
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
    drop(c);
    if b.patroni_trials == 0 {
        return Ok(());
    }
    let keel_p50 = quantile(&gaps, 0.5);
    for (what, timers) in PATRONI_TIMERS {
        let got = patroni_trials(timers, b.patroni_trials).await?;
        let gaps: Vec<f64> = got.iter().map(|(g, _)| *g as f64).collect();
        let lost: usize = got.iter().map(|(_, l)| l).sum();
        println!(
            "\nPatroni 3 + etcd, {what}, kill -9 of the leader's Patroni and PostgreSQL, {} trials:",
            got.len()
        );
        println!("| | p50 | p95 | max |\n|---|---|---|---|");
        row("write gap", &gaps);
        println!(
            "acknowledged inserts lost: {lost}; Keel's p50 gap is {:.2}× this",
            keel_p50 / quantile(&gaps, 0.5)
        );
    }
    Ok(())
}
