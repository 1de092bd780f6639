//! `keel-lab bench db`: create → available → writable and delete latency through
//! Keel, beside the bare floor of doing it by hand on the same machine
//! (initdb + start, and copying a pre-initialised template + start).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::cluster::{Cluster, Spec};
use crate::ports::free_port;

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DbBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Databases per phase (one after another, then all at once).
    #[arg(long, default_value_t = 20)]
    pub databases: usize,
    /// Repetitions of each by-hand floor measurement.
    #[arg(long, default_value_t = 5)]
    pub floor_runs: usize,
    /// PostgreSQL's bin directory.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
}

const PASSWORD: &str = "bench pass word 1";

/// Seconds from a create call to the database being available, and to a first committed INSERT.
#[derive(Debug, Clone, Copy)]
struct Created {
    available: f64,
    writable: f64,
}

async fn op_done(c: &Cluster, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (code, op) = c.get(1, &format!("/v1/ops/{id}")).await?;
        if code == 200 && op["state"] == "succeeded" {
            return Ok(());
        }
        if op["state"] == "failed" {
            bail!("operation {id} failed: {op}");
        }
        if Instant::now() > deadline {
            bail!("operation {id} did not finish within 300 s: {op}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn insert_once(conninfo: &str) -> anyhow::Result<()> {
    let (client, conn) = tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS bench (v int); INSERT INTO bench VALUES (1)")
        .await?;
    Ok(())
}

async fn create_one(c: &Cluster, name: String) -> anyhow::Result<Created> {
    create_in(c, name, None).await
}

async fn create_in(c: &Cluster, name: String, zone: Option<&str>) -> anyhow::Result<Created> {
    let t = Instant::now();
    let body = json!({"name": name, "engine": "postgres", "class": "micro", "storage_gib": 1, "zone": zone,
                      "master_user": "app", "master_password": PASSWORD});
    let (code, created) = c.post(1, "/v1/databases", &body).await?;
    if code != 200 {
        bail!("create {name} refused ({code}): {created}");
    }
    op_done(c, created["operation_id"].as_str().unwrap_or_default()).await?;
    let available = t.elapsed().as_secs_f64();
    let (_, db): (u16, Value) = c.get(1, &format!("/v1/databases/{name}")).await?;
    let conninfo = format!(
        "host={} port={} user=app password='{PASSWORD}' dbname=postgres",
        db["endpoint"]["addr"].as_str().unwrap_or_default(),
        db["endpoint"]["port"]
    );
    insert_once(&conninfo)
        .await
        .with_context(|| format!("writing to {name}"))?;
    Ok(Created {
        available,
        writable: t.elapsed().as_secs_f64(),
    })
}

async fn delete_one(c: &Cluster, name: String) -> anyhow::Result<f64> {
    let t = Instant::now();
    let (code, deleted) = c.delete(1, &format!("/v1/databases/{name}")).await?;
    if code != 200 {
        bail!("delete {name} refused ({code}): {deleted}");
    }
    op_done(c, deleted["operation_id"].as_str().unwrap_or_default()).await?;
    Ok(t.elapsed().as_secs_f64())
}

/// Run `f` for every name, `concurrent` or one after another.
async fn phase<T, F, Fut>(c: &Arc<Cluster>, names: &[String], concurrent: bool, f: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(Arc<Cluster>, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut out = Vec::new();
    if concurrent {
        let tasks: Vec<_> = names.iter().map(|n| tokio::spawn(f(c.clone(), n.clone()))).collect();
        for t in tasks {
            out.push(t.await??);
        }
    } else {
        for n in names {
            out.push(f(c.clone(), n.clone()).await?);
        }
    }
    Ok(out)
}

/// By hand, as an operator would, running as the postgres user.
struct Floor {
    pg_bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Floor {
    fn new(pg_bin: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("keel-floor-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        Ok(Self {
            pg_bin: pg_bin.to_path_buf(),
            dir,
        })
    }

    fn as_postgres(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.pg_bin.join(program))
            .args(args)
            .current_dir("/")
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn initdb(&self, data: &Path) -> anyhow::Result<()> {
        let d = data.to_str().unwrap_or_default();
        self.as_postgres(
            "initdb",
            &[
                "-D",
                d,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
        )
    }

    /// Start on a fresh port, write once, stop; returns the seconds to the first write.
    async fn start_and_write(&self, data: &Path, since: Instant) -> anyhow::Result<f64> {
        let port = free_port();
        let d = data.to_str().unwrap_or_default();
        let opts = format!("-p {port} -k {d} -c listen_addresses=127.0.0.1");
        self.as_postgres(
            "pg_ctl",
            &["-D", d, "-o", &opts, "-l", &format!("{d}.log"), "-w", "start"],
        )?;
        insert_once(&format!("host=127.0.0.1 port={port} user=postgres dbname=postgres")).await?;
        let took = since.elapsed().as_secs_f64();
        self.as_postgres("pg_ctl", &["-D", d, "-m", "immediate", "-w", "stop"])?;
        Ok(took)
    }

    async fn initdb_start(&self, n: usize) -> anyhow::Result<f64> {
        let data = self.dir.path().join(format!("initdb-{n}"));
        let t = Instant::now();
        self.initdb(&data)?;
        self.start_and_write(&data, t).await
    }

    async fn template_start(&self, template: &Path, n: usize) -> anyhow::Result<f64> {
        let data = self.dir.path().join(format!("copy-{n}"));
        let t = Instant::now();
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", "cp", "-a"])
            .arg(template)
            .arg(&data)
            .output()?;
        if !out.status.success() {
            bail!("copying the template failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        self.start_and_write(&data, t).await
    }
}

/// Run the whole comparison and print it.
pub async fn run(b: DbBench) -> anyhow::Result<()> {
    let keel_bin = super::keel_binary(b.keel_bin.as_deref())?;

    println!("# Database create/delete latency: Keel (3 control nodes, 3 host managers) vs by hand, same machine");
    let floor = Floor::new(&b.pg_bin)?;
    let template = floor.dir.path().join("template");
    floor.initdb(&template)?;
    let mut by_initdb = Vec::new();
    let mut by_copy = Vec::new();
    for n in 0..b.floor_runs {
        by_initdb.push(floor.initdb_start(n).await?);
        by_copy.push(floor.template_start(&template, n).await?);
    }

    let mut cluster = Cluster::start(Spec::new(&keel_bin, 3)).await?;
    cluster.start_hosts(3).await?;
    let c = Arc::new(cluster);
    // One database per host first, so each host's template exists (made once per engine
    // version) as in steady state.
    let mut warm = Vec::new();
    for zone in ["a", "b", "c"] {
        warm.push(create_in(&c, format!("warm-{zone}"), Some(zone)).await?.writable);
    }
    let seq: Vec<String> = (0..b.databases).map(|i| format!("seq{i}")).collect();
    let par: Vec<String> = (0..b.databases).map(|i| format!("par{i}")).collect();
    let created_seq = phase(&c, &seq, false, |c, n| async move { create_one(&c, n).await }).await?;
    let created_par = phase(&c, &par, true, |c, n| async move { create_one(&c, n).await }).await?;
    let deleted_seq = phase(&c, &seq, false, |c, n| async move { delete_one(&c, n).await }).await?;
    let deleted_par = phase(&c, &par, true, |c, n| async move { delete_one(&c, n).await }).await?;

    let floor_copy = super::quantile(&by_copy, 0.5);
    let floor_initdb = super::quantile(&by_initdb, 0.5);
    println!();
    println!(
        "Floor, by hand (median of {}): initdb + start + first INSERT {:.3} s; template copy + start + first INSERT {:.3} s",
        b.floor_runs, floor_initdb, floor_copy
    );
    println!(
        "First create on each fresh host (builds the host's template): writable after {} s",
        warm.iter().map(|w| format!("{w:.3}")).collect::<Vec<_>>().join(", ")
    );
    println!();
    println!(
        "| phase ({} databases) | p50 s | p95 s | p50 / template floor | p50 / initdb floor |",
        b.databases
    );
    println!("|---|---|---|---|---|");
    let row = |label: &str, xs: &[f64]| {
        let p50 = super::quantile(xs, 0.5);
        println!(
            "| {label} | {p50:.3} | {:.3} | {:.2}x | {:.2}x |",
            super::quantile(xs, 0.95),
            p50 / floor_copy,
            p50 / floor_initdb
        );
    };
    let avail = |v: &[Created]| v.iter().map(|c| c.available).collect::<Vec<_>>();
    let writable = |v: &[Created]| v.iter().map(|c| c.writable).collect::<Vec<_>>();
    row("create → available, one after another", &avail(&created_seq));
    row("create → writable, one after another", &writable(&created_seq));
    row("create → available, all at once", &avail(&created_par));
    row("create → writable, all at once", &writable(&created_par));
    row("delete → done, one after another", &deleted_seq);
    row("delete → done, all at once", &deleted_par);
    Ok(())
}
