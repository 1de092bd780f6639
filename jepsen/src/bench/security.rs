//! `keel-lab bench security`: what security costs on the write path. The same build, in
//! one run, as a plain-HTTP API taking every call as the admin's (`--insecure-no-auth`)
//! and as a TLS API checking a bearer token on every call; both with mutual TLS inside
//! (always on). Write rate and p99 at 1 and 64 clients, rounds alternating the order.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::load::{closed_loop, median_min_max};
use super::raft::{keel_clients, keel_write, measured, write_path_spec};
use crate::cluster::Cluster;

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Seconds per concurrency level.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Rounds (each runs both setups, alternating which goes first).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub clients: Vec<usize>,
}

/// (writes/s, p99 ms) per concurrency level, for one setup in one round.
type Figures = Vec<(f64, f64)>;

async fn one_setup(b: &SecurityBench, bin: &std::path::Path, secure: bool) -> anyhow::Result<Figures> {
    let spec = write_path_spec(bin, 50, 100);
    let spec = if secure {
        spec.with_api_tls()
    } else {
        spec.args(&["--insecure-no-auth"])
    };
    let cluster = Cluster::start(spec).await?;
    let mut out = Vec::new();
    for &n in &b.clients {
        let clients = Arc::new(keel_clients(&cluster, n, false).await?);
        let (r, _) = measured(closed_loop(n, Duration::from_secs(b.seconds), move |i, seq| {
            let c = clients[i].clone();
            async move { keel_write(c, i, seq, Duration::from_secs(5)).await }
        }))
        .await?;
        anyhow::ensure!(r.errors == 0, "{} writes failed", r.errors);
        out.push((r.per_sec, r.p99_ms));
    }
    Ok(out)
}

/// Run the comparison and print it.
pub async fn run(b: SecurityBench) -> anyhow::Result<()> {
    let bin = super::keel_binary(b.keel_bin.as_deref())?;
    super::pin_self(0);
    println!("# Security cost on the write path: TLS API + token vs plain API without auth (same build; internal mTLS in both)");
    println!(
        "# 3 members pinned to CPU 1, load on CPU 0, {} s per level, {} rounds",
        b.seconds, b.rounds
    );
    let (mut plain, mut secure): (Vec<Figures>, Vec<Figures>) = (Vec::new(), Vec::new());
    for round in 0..b.rounds {
        let secure_first = round % 2 == 1;
        for s in [secure_first, !secure_first] {
            let f = one_setup(&b, &bin, s).await?;
            eprintln!("  round {} {}: {f:?}", round + 1, if s { "tls+token" } else { "plain" });
            if s {
                secure.push(f)
            } else {
                plain.push(f)
            }
        }
    }
    println!("\n| clients | plain writes/s | plain p99 ms | TLS+token writes/s | TLS+token p99 ms | throughput ratio | p99 ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (i, n) in b.clients.iter().enumerate() {
        let med = |v: &[Figures], k: usize| {
            let xs: Vec<f64> = v.iter().map(|f| if k == 0 { f[i].0 } else { f[i].1 }).collect();
            median_min_max(&xs).0
        };
        let (pw, pp, sw, sp) = (med(&plain, 0), med(&plain, 1), med(&secure, 0), med(&secure, 1));
        println!(
            "| {n} | {pw:.0} | {pp:.2} | {sw:.0} | {sp:.2} | {:.3}x | {:.3}x |",
            sw / pw,
            sp / pp
        );
    }
    Ok(())
}
