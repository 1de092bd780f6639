//! `keel-lab bench history`: does a long history slow Keel down? The single-client
//! write rate and `ops list` latency with one page of history (100 finished
//! operations), then again once it holds `--jobs`, in one run; the ratios are the result.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::load::{closed_loop, LoadResult};
use super::raft::{keel_clients, keel_write};
use crate::cluster::{Cluster, Spec};

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct HistoryBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Finished operations in the history for the second measurement.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Seconds of single-client writes per measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// `ops list` calls per measurement.
    #[arg(long, default_value_t = 300)]
    pub lists: usize,
    /// Measurements of each state; the table shows their medians (the machine's noise
    /// between two measurements minutes apart is larger than the effect measured).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// What one measurement saw.
struct Measured {
    writes: LoadResult,
    list_p50_ms: f64,
    list_p99_ms: f64,
    /// Snapshots the members built meanwhile (each re-encodes the whole state).
    snapshots: usize,
}

/// Each running member's last snapshot index.
async fn snapshot_indexes(c: &Cluster) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for id in c.running() {
        let (_, s) = c.get(id, "/v1/node").await?;
        out.push(s["snapshot_index"].as_u64().unwrap_or(0));
    }
    Ok(out)
}

async fn measure(c: &Cluster, b: &HistoryBench) -> anyhow::Result<Measured> {
    let before = snapshot_indexes(c).await?;
    let clients = Arc::new(keel_clients(c, 1, false).await?);
    let writes = closed_loop(1, Duration::from_secs(b.seconds), move |i, seq| {
        let client = clients[i].clone();
        async move { keel_write(client, i, seq, Duration::from_secs(5)).await }
    })
    .await;
    let node = c.running()[0];
    let mut lat = Vec::with_capacity(b.lists);
    for _ in 0..b.lists {
        let t = Instant::now();
        let (code, page) = c.get(node, "/v1/ops?limit=100").await?;
        anyhow::ensure!(code == 200, "ops list answered {code}: {page}");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let after = snapshot_indexes(c).await?;
    Ok(Measured {
        writes,
        list_p50_ms: super::quantile(&lat, 0.5),
        list_p99_ms: super::quantile(&lat, 0.99),
        snapshots: before.iter().zip(&after).filter(|(b, a)| a > b).count(),
    })
}

/// The medians of several measurements of one state.
struct Medians {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    list_p50_ms: f64,
    list_p99_ms: f64,
    snapshots: usize,
    /// Each round's write rate, to show the spread.
    each: Vec<u64>,
}

async fn rounds(c: &Cluster, b: &HistoryBench) -> anyhow::Result<Medians> {
    let mut all = Vec::new();
    for _ in 0..b.rounds.max(1) {
        all.push(measure(c, b).await?);
    }
    let median = |f: &dyn Fn(&Measured) -> f64| super::quantile(&all.iter().map(f).collect::<Vec<_>>(), 0.5);
    Ok(Medians {
        per_sec: median(&|m| m.writes.per_sec),
        p50_ms: median(&|m| m.writes.p50_ms),
        p99_ms: median(&|m| m.writes.p99_ms),
        list_p50_ms: median(&|m| m.list_p50_ms),
        list_p99_ms: median(&|m| m.list_p99_ms),
        snapshots: all.iter().map(|m| m.snapshots).sum(),
        each: all.iter().map(|m| m.writes.per_sec.round() as u64).collect(),
    })
}

/// Wait until the cluster is steady again after the drain: same leader and term, and
/// every member caught up, for 10 s in a row (a drain ends with followers still
/// installing snapshots and RocksDB compacting; measuring then measures that).
async fn settle(c: &Cluster) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut steady_since: Option<(Instant, u64, u64)> = None;
    while started.elapsed() < Duration::from_secs(600) {
        let status = c.get(c.running()[0], "/v1/cluster/status").await.ok();
        let now = status.and_then(|(code, s)| {
            let members = s["members"].as_array()?;
            let caught_up = members
                .iter()
                .all(|m| m["error"].is_null() && m["lag"].as_u64().is_some_and(|l| l <= 10));
            (code == 200 && caught_up).then(|| (s["leader"].as_u64().unwrap_or(0), s["term"].as_u64().unwrap_or(0)))
        });
        steady_since = match (steady_since, now) {
            (Some((since, l, t)), Some((l2, t2))) if l == l2 && t == t2 => {
                if since.elapsed() >= Duration::from_secs(10) {
                    eprintln!("steady after {:.1} s", started.elapsed().as_secs_f64());
                    return Ok(());
                }
                Some((since, l, t))
            }
            (_, Some((l, t))) => Some((Instant::now(), l, t)),
            (_, None) => None,
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("the cluster did not settle within 600 s of the drain")
}

/// Operations on one `ops list` page, as the benchmark asks for them.
const PAGE: usize = 100;

/// Submit `n` no-op operations (64 at a time) and wait until every one has finished.
async fn fill(c: &Cluster, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let nodes = c.running();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (next, url, http) = (next.clone(), c.url(nodes[w % nodes.len()]), c.http().clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= n {
                    return anyhow::Ok(());
                }
                let body = json!({"work_ms": 0, "request_id": format!("fill-{k}")});
                // Retried with the same id on any failure: a repeat answers the same job.
                loop {
                    let r = http.post(format!("{url}/v1/ops/noop")).json(&body).send().await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!("submitted {n} operations in {:.1} s", started.elapsed().as_secs_f64());
    // Walk the history from the oldest with a cursor until every operation has finished.
    let mut cursor: Option<String> = None;
    let mut finished = 0;
    loop {
        let path = match &cursor {
            Some(a) => format!("/v1/ops?limit=1000&after={a}"),
            None => "/v1/ops?limit=1000".into(),
        };
        let (code, page) = c.get(nodes[0], &path).await?;
        // While the leader works through the backlog a read may time out (503, retryable).
        if code == 503 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        anyhow::ensure!(code == 200, "ops list answered {code}: {page}");
        let page = page.as_array().cloned().unwrap_or_default();
        let done: Vec<&Value> = page
            .iter()
            .take_while(|j| j["state"] == "succeeded" || j["state"] == "failed")
            .collect();
        finished += done.len();
        if let Some(last) = done.last() {
            cursor = last["id"].as_str().map(str::to_string);
        }
        if done.len() < page.len() || page.is_empty() {
            if finished >= n && page.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    eprintln!("all {n} finished after {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Run the comparison and print it.
pub async fn run(b: HistoryBench) -> anyhow::Result<()> {
    let keel_bin = super::keel_binary(b.keel_bin.as_deref())?;
    super::pin_self(0);
    println!(
        "# History size: single-client writes and ops list (100 per page), one page vs {} finished operations",
        b.jobs
    );
    println!(
        "# 3 members pinned to CPU 1, load on CPU 0; {} s of writes, {} lists each",
        b.seconds, b.lists
    );
    let spec = Spec::new(&keel_bin, 3)
        .wrapped(&["taskset", "-c", "1"])
        .args(&["--monitor-interval-ms", "3600000"]);
    let c = Cluster::start(spec).await?;
    // The baseline holds one page of history, so both measurements list a full page of
    // 100: an empty cluster's list is an empty page, cheaper for no reason of size.
    fill(&c, PAGE).await?;
    let short = rounds(&c, &b).await?;
    fill(&c, b.jobs).await?;
    settle(&c).await?;
    let full = rounds(&c, &b).await?;
    println!(
        "# medians of {} rounds; writes/s per round: one page {:?}, full {:?}",
        b.rounds, short.each, full.each
    );
    println!("| history | writes/s | write p50 / p99 ms | ops list p50 / p99 ms | snapshots built meanwhile |");
    println!("|---|---|---|---|---|");
    for (label, m) in [
        (&*format!("{PAGE} finished (one page)"), &short),
        (&*format!("{} finished", b.jobs), &full),
    ] {
        println!(
            "| {label} | {:.0} | {:.2} / {:.2} | {:.2} / {:.2} | {} |",
            m.per_sec, m.p50_ms, m.p99_ms, m.list_p50_ms, m.list_p99_ms, m.snapshots
        );
    }
    println!(
        "| ratio (full / one page) | {:.2}x | {:.2}x / {:.2}x | {:.2}x / {:.2}x | |",
        full.per_sec / short.per_sec,
        full.p50_ms / short.p50_ms,
        full.p99_ms / short.p99_ms,
        full.list_p50_ms / short.list_p50_ms,
        full.list_p99_ms / short.list_p99_ms
    );
    Ok(())
}
