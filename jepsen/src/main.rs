//! `keel-lab`: the cluster lab's command line.

use clap::{Parser, Subcommand};
use keel_jepsen::bench;

#[derive(Parser)]
#[command(
    name = "keel-lab",
    about = "Keel's cluster lab: whole-cluster benchmarks and fault runs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmarks that compare Keel with a peer in one run.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Raft write path and leader failover, against etcd.
    Raft(bench::raft::RaftBench),
    /// Database create/delete latency, against doing it by hand.
    Db(bench::db::DbBench),
    /// Authoritative DNS throughput against NSD and Knot, and commit-to-answer time.
    Dns(bench::dns::DnsBench),
    /// Write rate and ops list latency, empty vs with a long history of operations.
    History(bench::history::HistoryBench),
    /// What TLS and token checks cost on the write path (vs plain, unauthenticated).
    Security(bench::security::SecurityBench),
    /// Snapshot and restore throughput against pgBackRest and cp -a, archive lag, TPS during a snapshot.
    Backups(bench::backups::BackupsBench),
    /// A Multi-AZ database's write gap when its primary's host is killed, and where the time goes.
    Failover(bench::failover::FailoverBench),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench(BenchCmd::Raft(b)) => bench::raft::run(b).await,
        Cmd::Bench(BenchCmd::Db(b)) => bench::db::run(b).await,
        Cmd::Bench(BenchCmd::Dns(b)) => bench::dns::run(b).await,
        Cmd::Bench(BenchCmd::History(b)) => bench::history::run(b).await,
        Cmd::Bench(BenchCmd::Security(b)) => bench::security::run(b).await,
        Cmd::Bench(BenchCmd::Backups(b)) => bench::backups::run(b).await,
        Cmd::Bench(BenchCmd::Failover(b)) => bench::failover::run(b).await,
    }
}
