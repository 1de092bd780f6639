//! `keel-lab bench backups`: snapshot and restore throughput of a pgbench database
//! through Keel, beside `cp -a` of its data directory and pgBackRest's full backup and
//! restore of the same data with the same parallelism and compression, in one run; the
//! latest restorable time's lag under `pgbench -c 4`; pgbench TPS while a snapshot is
//! taken against without, in pairs, beside the same for pgBackRest's full backup.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::quantile;
use crate::cluster::{Cluster, Spec};
use crate::ports::free_port;

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BackupsBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// pgbench scale factor (200 is about 3 GB).
    #[arg(long, default_value_t = 200)]
    pub scale: u32,
    /// PostgreSQL's bin directory.
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
    /// Seconds of `pgbench -c 4` for the lag phase.
    #[arg(long, default_value_t = 30)]
    pub lag_seconds: u32,
    /// Only the Multi-AZ standby's snapshots (TPS without and during): a quicker run
    /// while working on that one figure.
    #[arg(long)]
    pub multi_az_only: bool,
    /// Windows with a backup in each TPS series, each between two without.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
}

const PASSWORD: &str = "bench pass word 1";

use crate::host::now_ms;

async fn op_done(c: &Cluster, id: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let (code, op) = c.get(1, &format!("/v1/ops/{id}")).await?;
        if code == 200 && op["state"] == "succeeded" {
            return Ok(op);
        }
        if op["state"] == "failed" {
            bail!("operation {id} failed: {op}");
        }
        if Instant::now() > deadline {
            bail!("operation {id} did not finish within an hour: {op}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run `cmd`, failing with its output if it fails; returns its stdout.
fn sh(what: &str, cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A command run as the `postgres` OS user (PostgreSQL and pgBackRest refuse root).
fn as_postgres(program: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(program);
    cmd
}

fn dir_bytes(path: &Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(path).output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Give every thread of every process working under `root` (a host manager, its
/// postmasters, and all their children: backends, walsenders, the startup process keep
/// no path in their titles) the CPUs `cpus` (`taskset` syntax); processes they start
/// later inherit it.
fn pin(root: &Path, cpus: &str) -> anyhow::Result<()> {
    let parent_of: Vec<(i32, i32)> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) state ppid …": the name may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut all = crate::host::pids_with(&[&root.to_string_lossy()]);
    let mut i = 0;
    while i < all.len() {
        let children: Vec<i32> = parent_of
            .iter()
            .filter(|(pid, ppid)| *ppid == all[i] && !all.contains(pid))
            .map(|(pid, _)| *pid)
            .collect();
        all.extend(children);
        i += 1;
    }
    for pid in all {
        // A process may end meanwhile: no matter.
        let _ = taskset(pid, cpus);
    }
    Ok(())
}

/// Give every thread of process `pid` the CPUs `cpus`.
fn taskset(pid: i32, cpus: &str) -> anyhow::Result<()> {
    sh(
        "taskset",
        Command::new("taskset").args(["-a", "-p", "-c", cpus, &pid.to_string()]),
    )
    .map(drop)
}

/// [`pin`] for this process (and so the pgbench it starts from now on).
fn pin_self(cpus: &str) -> anyhow::Result<()> {
    taskset(std::process::id() as i32, cpus)
}

/// The bench's load: `pgbench -c 4 -j 2 -n -T seconds` with `options` against `conninfo`.
fn pgbench_load(pg_bin: &Path, conninfo: &str, seconds: u32, options: &[&str]) -> Command {
    let mut cmd = Command::new(pg_bin.join("pgbench"));
    cmd.args(["-c", "4", "-j", "2", "-n", "-T", &seconds.to_string()])
        .args(options)
        .arg(conninfo)
        .env("PGPASSWORD", PASSWORD);
    cmd
}

/// TPS pgbench reports for [`pgbench_load`] of `seconds`.
fn pgbench_tps(pg_bin: &Path, conninfo: &str, seconds: u32) -> anyhow::Result<f64> {
    let out = sh("pgbench", &mut pgbench_load(pg_bin, conninfo, seconds, &[]))?;
    out.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no tps in pgbench's output: {out}"))
}

/// Write back everything dirty before a timed step, so that no step pays for an earlier
/// one's writes (the pgbench loads leave gigabytes for the kernel to write back, which
/// slowed whichever step came first).
fn settle() -> anyhow::Result<()> {
    sh("sync", &mut Command::new("sync")).map(drop)
}

/// The TPS of one of pgbench's `-P 1` progress reports
/// (`progress: 5.0 s, 1065.9 tps, lat 3.739 ms stddev 1.574, 0 failed`).
fn progress_tps(line: &str) -> Option<f64> {
    line.strip_prefix("progress: ")?
        .split(", ")
        .nth(1)?
        .strip_suffix(" tps")?
        .parse()
        .ok()
}

/// The next progress report: when it came (Unix ms) and its TPS.
async fn next_tps(reports: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, f64)>) -> anyhow::Result<(u64, f64)> {
    reports.recv().await.context("pgbench stopped before the work was done")
}

/// A stretch of a piece of work, by wall clock (Unix ms), to say which seconds of a
/// load it fell in.
#[derive(Debug, Clone, PartialEq)]
struct Phase {
    name: String,
    start_ms: u64,
    end_ms: u64,
}

/// The phases of a finished operation `op`, from its tasks: each task's run, and a
/// snapshot task's split by what its result says of its copy, verification and upload
/// (`… copy 8.1 s, verification 3.0 s, upload 2.4 s`), counted back from its end; the
/// time before its copy is its wait for the standby's replay.
fn op_phases(op: &Value) -> Vec<Phase> {
    let mut phases = Vec::new();
    for t in op["tasks"].as_array().into_iter().flatten() {
        let (Some(start_ms), Some(end_ms)) = (t["started_at_ms"].as_u64(), t["finished_at_ms"].as_u64()) else {
            continue;
        };
        let action = t["action"].as_str().unwrap_or("task");
        let result = t["result"].as_str().unwrap_or_default();
        let seconds = |label: &str| {
            let at = result.find(&format!("{label} "))? + label.len() + 1;
            let s: f64 = result[at..].split(' ').next()?.parse().ok()?;
            Some((s * 1000.0) as u64)
        };
        match (seconds("copy"), seconds("verification"), seconds("upload")) {
            (Some(copy), Some(verify), Some(upload)) if action == "snapshot" => {
                let mut at = end_ms;
                let mut split = Vec::new();
                for (name, ms) in [("upload", upload), ("verify", verify), ("copy", copy)] {
                    let from = at.saturating_sub(ms).max(start_ms);
                    split.push(Phase {
                        name: name.into(),
                        start_ms: from,
                        end_ms: at,
                    });
                    at = from;
                }
                split.push(Phase {
                    name: "wait".into(),
                    start_ms,
                    end_ms: at,
                });
                phases.extend(split.into_iter().rev().filter(|p| p.end_ms > p.start_ms));
            }
            _ => phases.push(Phase {
                name: action.into(),
                start_ms,
                end_ms,
            }),
        }
    }
    phases
}

/// Per-second TPS `seconds` (each a report's arrival, Unix ms, ending the second it
/// covers) grouped under the phase each second's middle fell in (`-` for none):
/// `checkpoint: 850 | copy: 1100 1150 | upload: 430`.
fn by_phase(seconds: &[(u64, f64)], phases: &[Phase]) -> String {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for (at, tps) in seconds {
        let middle = at.saturating_sub(500);
        let name = phases
            .iter()
            .find(|p| p.start_ms <= middle && middle < p.end_ms)
            .map_or("-", |p| p.name.as_str());
        match groups.last_mut() {
            Some((last, each)) if *last == name => each.push(format!("{tps:.0}")),
            _ => groups.push((name, vec![format!("{tps:.0}")])),
        }
    }
    groups
        .iter()
        .map(|(name, each)| format!("{name}: {}", each.join(" ")))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// pgbench -c 4 TPS against `conninfo`: over `seconds` without `work`, then over the
/// whole time `work` runs (started at once after, under the same pgbench), from its
/// per-second progress reports. The second window lasts as long as the work does under
/// load: a fixed one missed a snapshot's end, where its upload's writes landed.
async fn tps_without_and_during(
    pg_bin: &Path,
    conninfo: &str,
    seconds: u32,
    work: impl std::future::Future<Output = anyhow::Result<Vec<Phase>>>,
) -> anyhow::Result<(f64, f64)> {
    // Long enough for any work: killed when the work is done.
    let mut child = pgbench_load(pg_bin, conninfo, seconds + 3600, &["-P", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start pgbench")?;
    let stderr = child.stderr.take().context("pgbench's stderr")?;
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(tps) = progress_tps(&line) {
                if tx.send((now_ms(), tps)).is_err() {
                    break;
                }
            }
        }
    });
    let measured = async {
        // The first second includes connecting.
        next_tps(&mut reports).await?;
        let mut quiet = 0.0;
        for _ in 0..seconds {
            quiet += next_tps(&mut reports).await?.1;
        }
        let phases = work.await?;
        // Every second the work touched, the one it ended in too.
        let mut during = Vec::new();
        while let Ok(report) = reports.try_recv() {
            during.push(report);
        }
        during.push(next_tps(&mut reports).await?);
        // Where in the work the cost falls (its start, its copy, its upload) is worth seeing.
        eprintln!("    TPS each second during: {}", by_phase(&during, &phases));
        anyhow::Ok((
            quiet / f64::from(seconds),
            during.iter().map(|(_, tps)| tps).sum::<f64>() / during.len() as f64,
        ))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    measured
}

/// (without before, during, without after) TPS from a series of (without, during) pairs
/// and one window without at the end: each window with work between two without, the one
/// after it also the next one's before. The machine's own rate drifts by a tenth and more
/// from one half-minute to the next; against the mean of both sides, a window with work is
/// not charged for the drift over it.
fn bracketed(pairs: &[(f64, f64)], last_quiet: f64) -> Vec<(f64, f64, f64)> {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (before, during))| {
            let after = pairs.get(i + 1).map_or(last_quiet, |p| p.0);
            (*before, *during, after)
        })
        .collect()
}

/// A window's TPS with work as a share of the mean of the windows either side.
fn share(&(before, during, after): &(f64, f64, f64)) -> f64 {
    during / ((before + after) / 2.0)
}

/// What the full run measures besides the Multi-AZ pairs (seconds, and bracketed TPS).
struct SingleAz {
    keel_restore: f64,
    cp: f64,
    dd: f64,
    br_backup: f64,
    br_restore: f64,
    keel_tps: Vec<(f64, f64, f64)>,
    peer_tps: Vec<(f64, f64, f64)>,
}

/// Print [`bracketed`] TPS `tps` of load beside `who`, each and the median share.
fn print_pairs(who: &str, tps: &[(f64, f64, f64)]) {
    let ratios: Vec<f64> = tps.iter().map(share).collect();
    let each: Vec<String> = tps
        .iter()
        .map(|t| format!("{:.0}→{:.0}←{:.0} ({:.0}%)", t.0, t.1, t.2, 100.0 * share(t)))
        .collect();
    println!(
        "pgbench -c 4 TPS without → during ← without {who}: {}; median {:.0}%",
        each.join(", "),
        100.0 * quantile(&ratios, 0.5)
    );
}

/// pgbench -c 4 TPS against `conninfo` over `seconds`, as [`tps_without_and_during`]
/// measures its window without.
async fn quiet_tps(pg_bin: &Path, conninfo: &str, seconds: u32) -> anyhow::Result<f64> {
    Ok(
        tps_without_and_during(pg_bin, conninfo, seconds, async { Ok(Vec::new()) })
            .await?
            .0,
    )
}

/// The peer: a stand-alone PostgreSQL with pgBackRest archiving, the same pgbench data,
/// a full backup and a restore that is started and promoted, timed.
struct PgBackRest {
    root: PathBuf,
    port: u16,
}

impl PgBackRest {
    fn conf(&self) -> PathBuf {
        self.root.join("pgbackrest.conf")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = as_postgres(Path::new("/usr/bin/pgbackrest"));
        c.arg(format!("--config={}", self.conf().display()))
            .arg("--stanza=bench")
            .args(args);
        c
    }

    fn setup(pg_bin: &Path, scale: u32) -> anyhow::Result<Self> {
        let root = PathBuf::from(format!("/var/tmp/keel-bench-pgbackrest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        sh("chown", Command::new("chown").arg("postgres:postgres").arg(&root))?;
        let port = free_port();
        let me = Self { root, port };
        let data = me.root.join("data");
        sh(
            "initdb",
            as_postgres(&pg_bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres"]),
        )?;
        let conf = format!(
            "[global]\nrepo1-path={}\nprocess-max=1\ncompress-type=lz4\nstart-fast=y\nlog-level-console=warn\nlog-path={}\n\n[bench]\npg1-path={}\npg1-port={port}\npg1-socket-path={}\n",
            me.root.join("repo").display(),
            me.root.display(),
            data.display(),
            me.root.display()
        );
        std::fs::write(me.conf(), conf)?;
        sh("chown", Command::new("chown").arg("postgres:postgres").arg(me.conf()))?;
        let settings = format!(
            "port = {port}\nunix_socket_directories = '{}'\nlisten_addresses = ''\narchive_mode = on\narchive_command = '/usr/bin/pgbackrest --config={} --stanza=bench archive-push %p'\nshared_buffers = 512MB\n",
            me.root.display(),
            me.conf().display()
        );
        let mut pgconf = std::fs::read_to_string(data.join("postgresql.conf"))?;
        pgconf.push_str(&settings);
        std::fs::write(data.join("postgresql.conf"), pgconf)?;
        me.start(&data)?;
        sh(
            "pgbench -i (pgBackRest's instance)",
            as_postgres(&pg_bin.join("pgbench"))
                .args(["-i", "-q", "-s", &scale.to_string(), "-h"])
                .arg(&me.root)
                .args(["-p", &port.to_string(), "postgres"]),
        )?;
        sh("pgbackrest stanza-create", &mut me.cmd(&["stanza-create"]))?;
        Ok(me)
    }

    fn start(&self, data: &Path) -> anyhow::Result<()> {
        let pg_ctl = Path::new("/usr/lib/postgresql/15/bin/pg_ctl");
        sh(
            "pg_ctl start",
            as_postgres(pg_ctl)
                .arg("-D")
                .arg(data)
                .arg("-l")
                .arg(data.with_extension("log"))
                .args(["-w", "start"]),
        )
        .map(drop)
    }

    fn stop(&self, data: &Path) {
        let pg_ctl = Path::new("/usr/lib/postgresql/15/bin/pg_ctl");
        let _ = as_postgres(pg_ctl)
            .arg("-D")
            .arg(data)
            .args(["-m", "fast", "stop"])
            .output();
    }

    /// Where pgbench reaches its instance.
    fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.root.display(),
            self.port
        )
    }

    /// Seconds for a full backup.
    fn backup(&self) -> anyhow::Result<f64> {
        let t = Instant::now();
        sh("pgbackrest backup", &mut self.cmd(&["backup", "--type=full"]))?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Seconds for a restore into a new directory, started and promoted (as Keel's
    /// restore counts them).
    fn restore(&self, pg_bin: &Path) -> anyhow::Result<f64> {
        let target = self.root.join("restored");
        std::fs::create_dir_all(&target)?;
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        sh("chown", Command::new("chown").arg("postgres:postgres").arg(&target))?;
        let t = Instant::now();
        sh(
            "pgbackrest restore",
            &mut self.cmd(&[
                "restore",
                &format!("--pg1-path={}", target.display()),
                "--type=immediate",
                "--target-action=promote",
            ]),
        )?;
        // Its own port, so the source keeps running.
        let port = free_port();
        let mut auto = std::fs::read_to_string(target.join("postgresql.auto.conf")).unwrap_or_default();
        // The same start-up sync as Keel's restores use.
        auto.push_str(&format!(
            "port = {port}\narchive_mode = off\nrecovery_init_sync_method = 'syncfs'\n"
        ));
        std::fs::write(target.join("postgresql.auto.conf"), auto)?;
        self.start(&target)?;
        loop {
            let out = as_postgres(&pg_bin.join("psql"))
                .arg("-h")
                .arg(&self.root)
                .args([
                    "-p",
                    &port.to_string(),
                    "-tAc",
                    "SELECT pg_is_in_recovery()",
                    "postgres",
                ])
                .output()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "f" {
                break;
            }
            if t.elapsed() > Duration::from_secs(3600) {
                bail!("pgBackRest's restore did not promote within an hour");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = t.elapsed().as_secs_f64();
        self.stop(&target);
        Ok(secs)
    }
}

impl Drop for PgBackRest {
    fn drop(&mut self) {
        self.stop(&self.root.join("data"));
        self.stop(&self.root.join("restored"));
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Run the benchmark and print its table.
pub async fn run(b: BackupsBench) -> anyhow::Result<()> {
    let bin = super::keel_binary(b.keel_bin.as_deref())?;
    anyhow::ensure!(
        Path::new("/usr/bin/pgbackrest").exists(),
        "pgBackRest is not installed: run scripts/setup.sh --bench"
    );
    let mut c =
        Cluster::start(Spec::new(&bin, 1).args(&["--monitor-interval-ms", "200", "--scheduler-interval-ms", "1000"]))
            .await?;
    // A second host, in zone b, takes the Multi-AZ phase's standby.
    c.start_hosts(2).await?;
    let body = json!({"name": "bench", "engine": "postgres", "class": "medium", "storage_gib": 50,
                      "master_user": "app", "master_password": PASSWORD,
                      "backup_retention_days": 7, "snapshot_interval_min": 1440});
    let (code, created) = c.post(1, "/v1/databases", &body).await?;
    if code != 200 {
        bail!("create refused ({code}): {created}");
    }
    op_done(&c, created["operation_id"].as_str().unwrap_or_default()).await?;
    // The first automatic snapshot comes at once; let it pass before measuring.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, db) = c.get(1, "/v1/databases/bench").await?;
        if db["restorable"].is_object() && db["status"] == "available" {
            break;
        }
        if Instant::now() > deadline {
            bail!("no first snapshot within 300 s: {db}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, db) = c.get(1, "/v1/databases/bench").await?;
    let conninfo = format!(
        "host={} port={} user=app dbname=postgres",
        db["endpoint"]["addr"].as_str().unwrap_or_default(),
        db["endpoint"]["port"]
    );
    let instance = db["instances"][0]["id"].as_str().unwrap_or_default().to_string();
    let primary_host = db["instances"][0]["host"].as_str().unwrap_or_default().to_string();
    let root_of = |name: &str| {
        c.hosts
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.root.clone())
            .with_context(|| format!("no host {name}"))
    };
    eprintln!(
        "loading pgbench scale {} into Keel and into pgBackRest's instance…",
        b.scale
    );
    sh(
        "pgbench -i",
        Command::new(b.pg_bin.join("pgbench"))
            .args(["-i", "-q", "-s", &b.scale.to_string()])
            .arg(&conninfo)
            .env("PGPASSWORD", PASSWORD),
    )?;
    let peer = if b.multi_az_only {
        None
    } else {
        Some(PgBackRest::setup(&b.pg_bin, b.scale)?)
    };
    let data = root_of(&primary_host)?.join("volumes").join(&instance).join("data");
    let bytes = dir_bytes(&data);

    // Snapshot and restore through Keel.
    let snapshot = |name: &str| {
        let (c, name) = (&c, name.to_string());
        async move {
            let t = Instant::now();
            let (code, r) = c
                .post(1, "/v1/databases/bench/snapshots", &json!({"snapshot": name}))
                .await?;
            if code != 200 {
                bail!("snapshot refused ({code}): {r}");
            }
            let op = op_done(c, r["operation_id"].as_str().unwrap_or_default()).await?;
            // Its last task takes it (a standby's is preceded by the primary's checkpoint).
            let tasks = op["tasks"].as_array().cloned().unwrap_or_default();
            let task = tasks.last().cloned().unwrap_or_default();
            for t in &tasks[..tasks.len().saturating_sub(1)] {
                eprintln!("    Keel's {} task: {}", t["action"], t["result"]);
            }
            eprintln!("    Keel's snapshot task: {}", task["result"]);
            // How long it took, the host that took it, and its phases.
            let host = task["host"].as_str().unwrap_or_default().to_string();
            Ok::<_, anyhow::Error>((t.elapsed().as_secs_f64(), host, op_phases(&op)))
        }
    };
    eprintln!("Keel snapshot…");
    settle()?;
    let (keel_snapshot, _, _) = snapshot("bench-1").await?;
    let (_, snap) = c.get(1, "/v1/snapshots/bench-1").await?;
    let stored = snap["size_bytes"].as_u64().unwrap_or(0);
    // TPS without a backup (as long as an unloaded one takes) and during one (to its
    // end), alternating, ending without (see `bracketed`): Keel's snapshots, then
    // pgBackRest's full backups of its own instance, the peer.
    let pairs = b.pairs;
    let seconds = (keel_snapshot.ceil() as u32).max(10);
    // Bracketed TPS for `pairs` of Keel's snapshots, named `prefix`1, 2…, and the hosts
    // that took them.
    let snapshot_pairs = |prefix: &'static str, of: &'static str| {
        let (snapshot, pg_bin, conninfo) = (&snapshot, &b.pg_bin, &conninfo);
        async move {
            eprintln!(
                "{pairs} pairs of pgbench -c 4 for {seconds} s without, then during the whole of, a Keel snapshot{of}, then {seconds} s without…"
            );
            let (mut tps, mut hosts) = (Vec::new(), Vec::new());
            for i in 1..=pairs {
                let name = format!("{prefix}{i}");
                let pair = tps_without_and_during(pg_bin, conninfo, seconds, async {
                    let (_, host, phases) = snapshot(&name).await?;
                    hosts.push(host);
                    Ok(phases)
                })
                .await?;
                // Said as it comes: a later phase's failure must not lose it.
                eprintln!("  {name}: {:.0} TPS without, {:.0} during", pair.0, pair.1);
                tps.push(pair);
            }
            let last = quiet_tps(pg_bin, conninfo, seconds).await?;
            eprintln!("  {last:.0} TPS without, last");
            let tps = bracketed(&tps, last);
            anyhow::Ok((tps, hosts))
        }
    };
    // Restore, the copies beside it, and the single-AZ TPS pairs beside pgBackRest's.
    let single_az = if let Some(peer) = &peer {
        eprintln!("Keel restore…");
        settle()?;
        let t = Instant::now();
        let (code, r) = c
            .post(
                1,
                "/v1/databases/bench/restore",
                &json!({"to": "bench-r", "snapshot": "bench-1"}),
            )
            .await?;
        if code != 200 {
            bail!("restore refused ({code}): {r}");
        }
        let restored = op_done(&c, r["operation_id"].as_str().unwrap_or_default()).await?;
        let keel_restore = t.elapsed().as_secs_f64();
        eprintln!("Keel's restore task: {}", restored["tasks"][0]["result"]);

        eprintln!("cp -a…");
        let copy = PathBuf::from(format!("/var/tmp/keel-bench-cp-{}", std::process::id()));
        settle()?;
        let t = Instant::now();
        sh("cp -a", Command::new("cp").arg("-a").arg(&data).arg(&copy))?;
        let cp = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&copy);
        // The disk's own sequential write rate, past the page cache: as many bytes, direct.
        eprintln!("dd oflag=direct…");
        let dd_file = copy.with_extension("dd");
        settle()?;
        let t = Instant::now();
        sh(
            "dd",
            Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", dd_file.display()))
                .args(["bs=1M", &format!("count={}", bytes >> 20), "oflag=direct", "conv=fsync"]),
        )?;
        let dd = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&dd_file);

        eprintln!("pgBackRest backup and restore…");
        settle()?;
        let br_backup = peer.backup()?;
        settle()?;
        let br_restore = peer.restore(&b.pg_bin)?;

        let (keel_tps, _) = snapshot_pairs("bench-p", "").await?;
        let peer_seconds = (br_backup.ceil() as u32).max(10);
        eprintln!(
        "{pairs} pairs of pgbench -c 4 for {peer_seconds} s without, then during the whole of, a pgBackRest backup…"
    );
        let mut peer_tps = Vec::new();
        for _ in 0..pairs {
            let pair = tps_without_and_during(&b.pg_bin, &peer.conninfo(), peer_seconds, async {
                tokio::task::block_in_place(|| peer.backup()).map(|_| Vec::new())
            })
            .await?;
            eprintln!("  pgBackRest: {:.0} TPS without, {:.0} during", pair.0, pair.1);
            peer_tps.push(pair);
        }
        let peer_tps = bracketed(&peer_tps, quiet_tps(&b.pg_bin, &peer.conninfo(), peer_seconds).await?);
        Some(SingleAz {
            keel_restore,
            cp,
            dd,
            br_backup,
            br_restore,
            keel_tps,
            peer_tps,
        })
    } else {
        None
    };
    drop(peer);

    // Multi-AZ: snapshots are taken from the standby. Each host stands for a machine of
    // its own: the primary's host and pgbench get CPU 0, the standby's host CPU 1 (on
    // one 2-core machine a copy anywhere shares the cores pgbench fills), for both
    // windows of each pair.
    eprintln!("Multi-AZ: building the standby…");
    let (code, r) = c.patch(1, "/v1/databases/bench", &json!({"multi_az": true})).await?;
    if code != 200 {
        bail!("modify --multi-az refused ({code}): {r}");
    }
    op_done(&c, r["operation_id"].as_str().unwrap_or_default()).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let standby_host = loop {
        let (_, db) = c.get(1, "/v1/databases/bench").await?;
        let standby = db["instances"]
            .as_array()
            .and_then(|l| l.iter().find(|i| i["role"] == "standby"))
            .and_then(|i| i["host"].as_str())
            .map(str::to_string);
        if let (Some(host), true) = (standby, db["sync_standby"].is_string() && db["operation"].is_null()) {
            break host;
        }
        if Instant::now() > deadline {
            bail!("no standby in sync within 600 s: {db}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (primary_root, standby_root) = (root_of(&primary_host)?, root_of(&standby_host)?);
    pin(&primary_root, "0")?;
    pin(&standby_root, "1")?;
    pin_self("0")?;
    let (standby_tps, hosts) = snapshot_pairs("bench-s", " of the standby").await?;
    anyhow::ensure!(
        hosts.iter().all(|h| *h == standby_host),
        "the Multi-AZ snapshots were taken on {hosts:?}, not all on the standby's host {standby_host}"
    );
    pin(&primary_root, "0,1")?;
    pin(&standby_root, "0,1")?;
    pin_self("0,1")?;
    const MULTI_AZ: &str = "a Keel snapshot of the Multi-AZ standby (hosts on CPUs 0 and 1, pgbench on 0)";
    let Some(SingleAz {
        keel_restore,
        cp,
        dd,
        br_backup,
        br_restore,
        keel_tps,
        peer_tps,
    }) = single_az
    else {
        print_pairs(MULTI_AZ, &standby_tps);
        return Ok(());
    };

    // The latest restorable time's lag, as `describe` shows it, under pgbench -c 4.
    eprintln!("lag under pgbench -c 4 for {} s…", b.lag_seconds);
    let load = {
        let (pg_bin, conninfo, secs) = (b.pg_bin.clone(), conninfo.clone(), b.lag_seconds);
        tokio::task::spawn_blocking(move || pgbench_tps(&pg_bin, &conninfo, secs))
    };
    let mut lags = Vec::new();
    let until = Instant::now() + Duration::from_secs(u64::from(b.lag_seconds));
    while Instant::now() < until {
        let (_, db) = c.get(1, "/v1/databases/bench").await?;
        if let Some(latest) = db["restorable"]["latest_ms"].as_u64() {
            lags.push(now_ms().saturating_sub(latest) as f64 / 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lag_tps = load.await??;

    // What backup RPO zero costs: pgbench -c 4 against a small database of each kind.
    eprintln!("pgbench -c 4 with backup RPO lag, then zero…");
    let mut rpo_tps = Vec::new();
    for rpo in ["lag", "zero"] {
        let name = format!("rpo-{rpo}");
        let body = json!({"name": name, "engine": "postgres", "class": "medium", "storage_gib": 5,
                          "master_user": "app", "master_password": PASSWORD,
                          "backup_retention_days": 7, "snapshot_interval_min": 1440, "backup_rpo": rpo});
        let (code, created) = c.post(1, "/v1/databases", &body).await?;
        if code != 200 {
            bail!("create refused ({code}): {created}");
        }
        op_done(&c, created["operation_id"].as_str().unwrap_or_default()).await?;
        let (_, db) = c.get(1, &format!("/v1/databases/{name}")).await?;
        let conninfo = format!(
            "host={} port={} user=app dbname=postgres",
            db["endpoint"]["addr"].as_str().unwrap_or_default(),
            db["endpoint"]["port"]
        );
        sh(
            "pgbench -i",
            Command::new(b.pg_bin.join("pgbench"))
                .args(["-i", "-q", "-s", "10"])
                .arg(&conninfo)
                .env("PGPASSWORD", PASSWORD),
        )?;
        let (pg_bin, secs) = (b.pg_bin.clone(), b.lag_seconds);
        rpo_tps.push(tokio::task::spawn_blocking(move || pgbench_tps(&pg_bin, &conninfo, secs)).await??);
    }

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let rate = |secs: f64| mib(bytes) / secs;
    println!(
        "data directory {:.0} MiB (pgbench scale {}); Keel's snapshot stored {:.0} MiB",
        mib(bytes),
        b.scale,
        mib(stored)
    );
    println!(
        "| step | Keel s | Keel MiB/s | pgBackRest s | pgBackRest MiB/s | cp -a s | cp -a MiB/s | Keel vs pgBackRest |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| backup | {keel_snapshot:.1} | {:.0} | {br_backup:.1} | {:.0} | {cp:.1} | {:.0} | {:.2}× |",
        rate(keel_snapshot),
        rate(br_backup),
        rate(cp),
        br_backup / keel_snapshot
    );
    println!(
        "| restore (started, promoted) | {keel_restore:.1} | {:.0} | {br_restore:.1} | {:.0} | {cp:.1} | {:.0} | {:.2}× |",
        rate(keel_restore),
        rate(br_restore),
        rate(cp),
        br_restore / keel_restore
    );
    println!(
        "restore throughput vs cp -a (which copies from the page cache): {:.0}%",
        100.0 * cp / keel_restore
    );
    println!(
        "restore throughput vs the disk's sequential write (dd oflag=direct, {:.0} MiB/s): {:.0}%",
        rate(dd),
        100.0 * dd / keel_restore
    );
    for (who, tps) in [
        ("a Keel snapshot", &keel_tps),
        ("a pgBackRest backup", &peer_tps),
        (MULTI_AZ, &standby_tps),
    ] {
        print_pairs(who, tps);
    }
    println!(
        "latest restorable lag under pgbench -c 4 ({lag_tps:.0} TPS, {} samples): p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        lags.len(),
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        quantile(&lags, 1.0)
    );
    println!(
        "pgbench -c 4 TPS (scale 10): backup RPO lag {:.0}, zero {:.0} ({:.0}%)",
        rpo_tps[0],
        rpo_tps[1],
        100.0 * rpo_tps[1] / rpo_tps[0]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{bracketed, by_phase, op_phases, progress_tps, share, Phase};
    use serde_json::json;

    #[test]
    fn a_snapshot_task_splits_into_its_phases_counted_back_from_its_end() {
        let op = json!({"tasks": [
            {"action": "checkpoint", "result": "checkpoint at 0/5000028", "started_at_ms": 1_000, "finished_at_ms": 2_500},
            {"action": "snapshot", "started_at_ms": 2_600, "finished_at_ms": 20_000,
             "result": "snapshot verified and stored in zone-a (5 bytes, WAL 0/1 to 0/2): copy 10.0 s, verification 3.5 s, upload 2.0 s"},
            {"action": "snapshot", "started_at_ms": 30_000, "finished_at_ms": null, "result": "running"}
        ]});
        let phase = |name: &str, start_ms, end_ms| Phase {
            name: name.into(),
            start_ms,
            end_ms,
        };
        assert_eq!(
            op_phases(&op),
            vec![
                phase("checkpoint", 1_000, 2_500),
                phase("wait", 2_600, 4_500),
                phase("copy", 4_500, 14_500),
                phase("verify", 14_500, 18_000),
                phase("upload", 18_000, 20_000),
            ]
        );
        // Durations longer than the task's run are cut at its start, and nothing is empty.
        let op = json!({"tasks": [{"action": "snapshot", "started_at_ms": 10_000, "finished_at_ms": 12_000,
             "result": "… copy 5.0 s, verification 0.5 s, upload 1.0 s"}]});
        assert_eq!(
            op_phases(&op),
            vec![
                phase("copy", 10_000, 10_500),
                phase("verify", 10_500, 11_000),
                phase("upload", 11_000, 12_000)
            ]
        );
    }

    #[test]
    fn each_window_with_work_is_set_between_the_windows_without_either_side() {
        let pairs = [(100.0, 80.0), (120.0, 110.0)];
        let series = bracketed(&pairs, 140.0);
        assert_eq!(series, vec![(100.0, 80.0, 120.0), (120.0, 110.0, 140.0)]);
        assert_eq!(share(&series[0]), 80.0 / 110.0);
        assert_eq!(share(&series[1]), 110.0 / 130.0);
        assert_eq!(bracketed(&[], 5.0), vec![]);
    }

    #[test]
    fn each_second_goes_under_the_phase_its_middle_fell_in() {
        let phases = [
            Phase {
                name: "checkpoint".into(),
                start_ms: 1_000,
                end_ms: 2_200,
            },
            Phase {
                name: "copy".into(),
                start_ms: 2_200,
                end_ms: 4_000,
            },
        ];
        let seconds = [
            (1_600, 800.0),
            (2_600, 900.4),
            (3_600, 1_100.0),
            (4_600, 1_000.0),
            (5_600, 990.0),
        ];
        assert_eq!(
            by_phase(&seconds, &phases),
            "checkpoint: 800 900 | copy: 1100 | -: 1000 990"
        );
    }

    #[test]
    fn a_progress_report_gives_its_tps_and_other_lines_nothing() {
        let cases = [
            (
                "progress: 5.0 s, 1065.9 tps, lat 3.739 ms stddev 1.574, 0 failed",
                Some(1065.9),
            ),
            (
                "progress: 12.0 s, 0.0 tps, lat 0.000 ms stddev 0.000, 0 failed",
                Some(0.0),
            ),
            ("pgbench (15.10 (Debian 15.10-0+deb12u1))", None),
            ("tps = 431.2 (without initial connection time)", None),
        ];
        for (line, tps) in cases {
            assert_eq!(progress_tps(line), tps, "{line}");
        }
    }
}
