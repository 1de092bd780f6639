//! `keel-lab bench dns`: dnsperf against one Keel node serving a zone with
//! 10,000 databases, and against NSD and Knot serving the zone file `keel dns
//! dump` wrote, in one run; then commit-to-answer time on every node.
//!
//! The databases are created through the real API, sweeper and workflow
//! engine, on stand-in host managers that answer every task at once (a
//! benchmark of the zone must not wait for 10,000 PostgreSQL instances).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_proto::host::host_manager_server::{HostManager, HostManagerServer};
use keel_proto::host::{
    HealthReply, HealthRequest, InstanceHealth, TaskAction, TaskReply, TaskRequest, TaskState, TaskStatusRequest,
};
use rand::Rng;
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, Spec};
use crate::ports::free_port;

/// Benchmark settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsBench {
    /// The keel binary (release build).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Databases in the zone.
    #[arg(long, default_value_t = 10_000)]
    pub databases: usize,
    /// Seconds per dnsperf run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Endpoint changes timed for commit-to-answer.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
}

const ZONE: &str = "db.keel.internal";

/// A host manager that provisions nothing and reports every instance it was asked to start as healthy.
#[derive(Default, Clone)]
struct StandIn {
    name: String,
    running: Arc<Mutex<HashSet<String>>>,
}

fn done(task_id: String) -> TaskReply {
    TaskReply {
        task_id,
        state: TaskState::Succeeded as i32,
        detail: "stand-in host manager".into(),
        retryable: false,
        output_json: String::new(),
    }
}

#[tonic::async_trait]
impl HostManager for StandIn {
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthReply>, Status> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Response::new(HealthReply {
            name: self.name.clone(),
            zone: "a".into(),
            instance_slots: 100_000,
            instances: running.len() as u32,
            disk_gib: 1_000_000,
            engine_version: "15".into(),
            instances_health: running
                .into_iter()
                .map(|id| InstanceHealth {
                    instance_id: id,
                    running: true,
                    accepting: true,
                    used_bytes: 0,
                    allocated_bytes: 1 << 30,
                    problem: String::new(),
                    ..InstanceHealth::default()
                })
                .collect(),
        }))
    }

    async fn run_task(&self, req: Request<TaskRequest>) -> Result<Response<TaskReply>, Status> {
        let r = req.into_inner();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match TaskAction::try_from(r.action) {
            Ok(TaskAction::Destroy | TaskAction::Stop) => {
                running.remove(&r.instance_id);
            }
            _ => {
                running.insert(r.instance_id);
            }
        }
        Ok(Response::new(done(r.task_id)))
    }

    async fn task_status(&self, req: Request<TaskStatusRequest>) -> Result<Response<TaskReply>, Status> {
        Ok(Response::new(done(req.into_inner().task_id)))
    }
}

async fn stand_in(name: String) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let svc = HostManagerServer::new(StandIn {
        name,
        ..StandIn::default()
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok(addr)
}

async fn create(c: &Cluster, name: &str) -> anyhow::Result<String> {
    let body = json!({"name": name, "engine": "postgres", "class": "micro", "storage_gib": 1,
                      "master_user": "app", "master_password": "bench pass word 1"});
    let (code, v) = c.post(1, "/v1/databases", &body).await?;
    if code != 200 {
        bail!("create {name} refused ({code}): {v}");
    }
    Ok(v["operation_id"].as_str().unwrap_or_default().to_string())
}

async fn wait_op(c: &Cluster, id: &str, poll: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, op) = c.get(1, &format!("/v1/ops/{id}")).await?;
        match op["state"].as_str() {
            Some("succeeded") => return Ok(()),
            Some("failed") => bail!("operation {id} failed: {op}"),
            _ if Instant::now() > deadline => bail!("operation {id} did not finish: {op}"),
            _ => tokio::time::sleep(poll).await,
        }
    }
}

/// One dnsperf run's figures.
#[derive(Debug, Default, Clone, Copy)]
struct Perf {
    qps: f64,
    avg_ms: f64,
    p99_ms: f64,
    lost: u64,
    sent: u64,
}

fn field(out: &str, label: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.trim_start().starts_with(label))?;
    line.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
}

/// dnsperf on CPU 0 against `port`; `rate` limits qps (then per-query latencies give p99).
fn dnsperf(queries: &Path, port: u16, seconds: u64, rate: Option<u64>) -> anyhow::Result<Perf> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args(["-l", &seconds.to_string(), "-c", "4", "-q", "256"]);
    if let Some(r) = rate {
        cmd.args(["-Q", &r.to_string(), "-v"]);
    }
    let out = cmd
        .output()
        .context("running dnsperf (scripts/setup.sh --bench installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut p = Perf {
        qps: field(&text, "Queries per second").unwrap_or(f64::NAN),
        avg_ms: field(&text, "Average Latency (s)").map_or(f64::NAN, |s| s * 1000.0),
        p99_ms: f64::NAN,
        lost: field(&text, "Queries lost").unwrap_or(f64::NAN) as u64,
        sent: field(&text, "Queries sent").unwrap_or(0.0) as u64,
    };
    if rate.is_some() {
        // -v prints one line per answer ending in its latency in seconds.
        let mut lat: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with('>'))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .collect();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if !lat.is_empty() {
            p.p99_ms = lat[((lat.len() as f64 * 0.99) as usize).min(lat.len() - 1)] * 1000.0;
        }
    }
    Ok(p)
}

/// A server process pinned to CPU 1, killed on drop.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nsd(dir: &Path, zone_file: &Path, port: u16) -> anyhow::Result<Peer> {
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  \
         pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         logfile: \"{d}/nsd.log\"\n  server-count: 1\n  rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n\
         remote-control:\n  control-enable: no\nzone:\n  name: {ZONE}\n  zonefile: \"{}\"\n",
        zone_file.display()
    );
    std::fs::write(dir.join("nsd.conf"), conf)?;
    let child = Command::new("taskset")
        .args(["-c", "1", "nsd", "-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nsd")?;
    Ok(Peer(child))
}

fn knot(dir: &Path, zone_file: &Path, port: u16) -> anyhow::Result<Peer> {
    let d = dir.display();
    // Knot pins UDP worker i to CPU i itself: one worker runs on CPU 0, so dnsperf would share
    // it. Two workers, the second on CPU 1, with dnsperf on CPU 0, is as close as Knot allows;
    // its figures are marked accordingly.
    let conf = format!(
        "server:\n  listen: 127.0.0.1@{port}\n  rundir: \"{d}\"\n  udp-workers: 1\n  tcp-workers: 1\n  background-workers: 1\n\
         database:\n  storage: \"{d}\"\nlog:\n  - target: \"{d}/knot.log\"\n    any: warning\n\
         zone:\n  - domain: {ZONE}\n    file: \"{}\"\n    journal-content: none\n    zonefile-sync: -1\n",
        zone_file.display()
    );
    std::fs::write(dir.join("knot.conf"), conf)?;
    let child = Command::new("taskset")
        .args(["-c", "1", "knotd", "-c"])
        .arg(dir.join("knot.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting knotd")?;
    Ok(Peer(child))
}

fn dig_ok(port: u16, name: &str) -> bool {
    Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+time=1",
            "+tries=1",
            name,
            "A",
        ])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
}

/// Whether 127.0.0.1:`port` answers an A query for `name` with at least one record: one
/// UDP exchange, the query built by hand (header, one question) so the probe costs µs.
async fn has_address(port: u16, name: &str) -> bool {
    let id: u16 = rand::random();
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return false;
    };
    if socket.send_to(&query, ("127.0.0.1", port)).await.is_err() {
        return false;
    }
    let mut reply = [0u8; 512];
    match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut reply)).await {
        Ok(Ok(n)) if n >= 12 => {
            reply[..2] == id.to_be_bytes() && reply[3] & 0x0f == 0 && u16::from_be_bytes([reply[6], reply[7]]) > 0
        }
        _ => false,
    }
}

async fn wait_answering(port: u16, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dig_ok(port, name) {
        if Instant::now() > deadline {
            bail!("nothing answers {name} on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Run the whole comparison and print it.
pub async fn run(b: DnsBench) -> anyhow::Result<()> {
    let keel_bin = super::keel_binary(b.keel_bin.as_deref())?;
    println!(
        "# DNS: one Keel node vs NSD and Knot on the same zone ({} databases); servers on CPU 1, dnsperf on CPU 0",
        b.databases
    );

    let spec = Spec::new(&keel_bin, 3)
        .wrapped(&["taskset", "-c", "1"])
        .args(&["--monitor-interval-ms", "500"]);
    let c = Cluster::start(spec).await?;
    c.wait_leader(Duration::from_secs(30)).await?;
    for i in 0..10 {
        let addr = stand_in(format!("s{i}")).await?;
        let (code, v) = c
            .post(
                1,
                "/v1/hosts",
                &json!({"name": format!("s{i}"), "addr": addr, "zone": "a"}),
            )
            .await?;
        anyhow::ensure!(code == 200, "registering a stand-in host failed: {v}");
    }
    // The first health reports record the stand-ins' capacity (the default is 16 slots).
    c.wait_for(Duration::from_secs(30), "stand-in hosts to report capacity", || async {
        let (_, hosts) = c.get(1, "/v1/hosts").await?;
        Ok(hosts
            .as_array()
            .is_some_and(|h| h.iter().all(|h| h["capacity"]["instance_slots"] == 100_000))
            .then_some(()))
    })
    .await?;

    let started = Instant::now();
    let c = Arc::new(c);
    let mut pending = Vec::new();
    for i in 0..b.databases {
        pending.push(create(&c, &format!("db{i:05}")).await?);
        if pending.len() >= 64 || i + 1 == b.databases {
            for id in pending.drain(..) {
                wait_op(&c, &id, Duration::from_millis(20)).await?;
            }
        }
    }
    println!(
        "# created {} databases through the API in {:.1} s",
        b.databases,
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::Builder::new().prefix("keel-dns-bench-").tempdir()?;
    let (ok, zone_text) = c.run_to_exit(&["dns".into(), "dump".into(), "--keel-addr".into(), c.url(1)])?;
    anyhow::ensure!(ok, "keel dns dump failed: {zone_text}");
    let zone_file = dir.path().join(format!("{ZONE}.zone"));
    std::fs::write(&zone_file, &zone_text)?;

    // 90% names that exist, 10% that do not (NXDOMAIN). The databases are the admin
    // account's, so their names are `<db>.admin.<zone>`.
    let queries = dir.path().join("queries");
    let mut q = String::new();
    let mut rng = rand::thread_rng();
    for _ in 0..100_000 {
        let i = rng.gen_range(0..b.databases);
        if rng.gen_ratio(1, 10) {
            q.push_str(&format!("missing{i}.{ZONE} A\n"));
        } else {
            q.push_str(&format!("db{i:05}.admin.{ZONE} A\n"));
        }
    }
    std::fs::write(&queries, q)?;
    let probe = format!("db00000.admin.{ZONE}");

    let keel_port: u16 = c.node(1).dns_addr.rsplit(':').next().unwrap_or("0").parse()?;
    wait_answering(keel_port, &probe).await?;
    let keel_max = dnsperf(&queries, keel_port, b.seconds, None)?;
    let half = (keel_max.qps / 2.0) as u64;
    let keel_half = dnsperf(&queries, keel_port, b.seconds, Some(half.max(1)))?;

    let nsd_dir = dir.path().join("nsd");
    std::fs::create_dir_all(&nsd_dir)?;
    let nsd_port = free_port();
    let nsd_max;
    let nsd_half;
    {
        let _nsd = nsd(&nsd_dir, &zone_file, nsd_port)?;
        wait_answering(nsd_port, &probe).await?;
        nsd_max = dnsperf(&queries, nsd_port, b.seconds, None)?;
        nsd_half = dnsperf(&queries, nsd_port, b.seconds, Some(half.max(1)))?;
    }
    let knot_dir = dir.path().join("knot");
    std::fs::create_dir_all(&knot_dir)?;
    let knot_port = free_port();
    let knot_max;
    let knot_half;
    {
        let _knot = knot(&knot_dir, &zone_file, knot_port)?;
        wait_answering(knot_port, &probe).await?;
        knot_max = dnsperf(&queries, knot_port, b.seconds, None)?;
        knot_half = dnsperf(&queries, knot_port, b.seconds, Some(half.max(1)))?;
    }

    // Commit-to-answer: a new database, from its operation reported done to an answer on every node.
    let ports: Vec<u16> = c
        .ids()
        .iter()
        .map(|&id| {
            c.node(id)
                .dns_addr
                .rsplit(':')
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0)
        })
        .collect();
    let mut lags = Vec::new();
    for i in 0..b.changes {
        let name = format!("change{i}");
        let id = create(&c, &name).await?;
        wait_op(&c, &id, Duration::from_millis(2)).await?;
        let t = Instant::now();
        let fqdn = format!("{name}.admin.{ZONE}");
        // All nodes at once, in process: a dig per probe costs ~25 ms to start, which
        // would be measured instead of the server.
        let waits = ports.iter().map(|&port| {
            let fqdn = fqdn.clone();
            async move {
                while !has_address(port, &fqdn).await {
                    anyhow::ensure!(
                        t.elapsed() < Duration::from_secs(10),
                        "{fqdn} never answered on port {port}"
                    );
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(())
            }
        });
        for r in futures::future::join_all(waits).await {
            r?;
        }
        lags.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    println!();
    println!("| server | max qps | avg ms at max | qps at half Keel's max ({half}) | p99 ms there | lost there |");
    println!("|---|---|---|---|---|---|");
    for (name, max, at_half) in [
        ("Keel", keel_max, keel_half),
        ("NSD", nsd_max, nsd_half),
        ("Knot (see note)", knot_max, knot_half),
    ] {
        println!(
            "| {name} | {:.0} | {:.3} | {:.0} | {:.3} | {} of {} |",
            max.qps, max.avg_ms, at_half.qps, at_half.p99_ms, at_half.lost, at_half.sent
        );
    }
    println!();
    println!(
        "Keel/NSD max qps: {:.2}x; Keel/Knot: {:.2}x",
        keel_max.qps / nsd_max.qps,
        keel_max.qps / knot_max.qps
    );
    println!(
        "Commit → answer on all 3 nodes ({} changes; from the operation read as succeeded, nodes probed in parallel): p50 {:.1} ms, p99 {:.1} ms",
        b.changes,
        super::quantile(&lags, 0.5),
        super::quantile(&lags, 0.99)
    );
    println!("Note: Knot pins its UDP worker to CPU 0 itself, where dnsperf runs, so its figures are load-sharing.");
    Ok(())
}
