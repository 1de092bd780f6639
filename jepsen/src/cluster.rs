//! A real cluster of `keel server` processes on loopback, with fault controls.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use tokio::time::Instant;

use crate::ports::free_port;

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `keel` binary.
    pub bin: PathBuf,
    /// Initial members.
    pub nodes: u64,
    /// Extra `keel server` flags for every node.
    pub extra_args: Vec<String>,
    /// A command the server runs under, e.g. `taskset -c 1`.
    pub wrapper: Vec<String>,
    /// Serve the public API over TLS (a certificate for 127.0.0.1 from the cluster's CA).
    pub api_tls: bool,
}

impl Spec {
    /// `nodes` members started from `bin`, with default settings.
    pub fn new(bin: impl Into<PathBuf>, nodes: u64) -> Self {
        Self {
            bin: bin.into(),
            nodes,
            extra_args: Vec::new(),
            wrapper: Vec::new(),
            api_tls: false,
        }
    }

    /// Serve the public API over TLS; the fixture's clients then use https and trust the CA.
    pub fn with_api_tls(mut self) -> Self {
        self.api_tls = true;
        self
    }

    /// Run every server under `wrapper` (e.g. `taskset -c 1`).
    pub fn wrapped(mut self, wrapper: &[&str]) -> Self {
        self.wrapper = wrapper.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Add `keel server` flags.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.extra_args.extend(args.iter().map(|s| s.to_string()));
        self
    }
}

/// One member process.
pub struct Node {
    /// Node id.
    pub id: u64,
    /// host:port of its public API.
    pub api_addr: String,
    /// host:port of its Raft transport.
    pub raft_addr: String,
    /// ip:port of its DNS zone (UDP and TCP).
    pub dns_addr: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    bootstrap: bool,
    child: Option<Child>,
}

/// A host manager process.
pub struct HostProc {
    /// Host name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// host:port it serves keel.host.v1 on.
    pub addr: String,
    /// Its root directory (volumes, templates, journal).
    pub root: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// The network namespace it runs in (hosts started by [`Cluster::start_hosts_isolated`]).
    pub netns: Option<String>,
    child: Option<Child>,
}

/// A running cluster; every process is killed when it is dropped.
pub struct Cluster {
    /// Host managers started with [`Cluster::start_hosts`].
    pub hosts: Vec<HostProc>,
    spec: Spec,
    /// Cluster name the nodes run with.
    pub name: String,
    dir: tempfile::TempDir,
    nodes: BTreeMap<u64, Node>,
    http: reqwest::Client,
    token: String,
    /// The hosts' network namespaces, when isolated (dropped after every process).
    net: Option<crate::netns::Net>,
}

impl Cluster {
    /// Start `spec.nodes` members as a new cluster and wait for a leader.
    pub async fn start(spec: Spec) -> anyhow::Result<Self> {
        let mut dir = tempfile::Builder::new().prefix("keel-cluster-").tempdir()?;
        // For post-mortems of benchmarks and tests: keep the nodes' data and logs.
        if std::env::var_os("KEEL_LAB_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("keeping cluster data and logs in {}", dir.path().display());
        }
        // The cluster's first admin token, made by the binary under test (`keel tokens
        // generate`), given to every member as the bootstrap token and sent with every call.
        let made = std::process::Command::new(&spec.bin)
            .args(["tokens", "generate"])
            .output()?;
        anyhow::ensure!(made.status.success(), "keel tokens generate failed: {made:?}");
        let token = String::from_utf8(made.stdout)?.trim().to_string();
        std::fs::write(dir.path().join("bootstrap-token"), format!("{token}\n"))?;
        // The cluster's CA, made by the binary under test (`keel ca init`); every process
        // gets its certificate from it (`keel ca issue`) before its first start.
        run_keel(
            &spec.bin,
            &["ca", "init", "--cluster", "lab", "--ca-dir"],
            &dir.path().join("ca"),
        )?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .default_headers(headers);
        if spec.api_tls {
            let ca = dir.path().join("ca").display().to_string();
            run_keel(
                &spec.bin,
                &["ca", "issue", "--ca-dir", &ca, "--api", "127.0.0.1,localhost", "--out"],
                &dir.path().join("api-tls"),
            )?;
            let pem = std::fs::read(dir.path().join("api-tls/ca.pem"))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
                http = http.add_root_certificate(cert);
            }
        }
        let mut cluster = Cluster {
            spec: spec.clone(),
            name: "lab".into(),
            dir,
            nodes: BTreeMap::new(),
            hosts: Vec::new(),
            http: http.build()?,
            token,
            net: None,
        };
        for id in 1..=spec.nodes {
            cluster.define(id, true);
        }
        for id in 1..=spec.nodes {
            cluster.launch(id)?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn define(&mut self, id: u64, bootstrap: bool) {
        let node = Node {
            id,
            api_addr: format!("127.0.0.1:{}", free_port()),
            raft_addr: format!("127.0.0.1:{}", free_port()),
            dns_addr: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("node-{id}")),
            log: self.dir.path().join(format!("node-{id}.log")),
            bootstrap,
            child: None,
        };
        self.nodes.insert(id, node);
    }

    fn server_args(&self, id: u64) -> Vec<String> {
        let node = &self.nodes[&id];
        let mut args = vec![
            "server".to_string(),
            "--id".into(),
            id.to_string(),
            "--cluster-name".into(),
            self.name.clone(),
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--raft-addr".into(),
            node.raft_addr.clone(),
            "--api-addr".into(),
            node.api_addr.clone(),
            "--dns-addr".into(),
            node.dns_addr.clone(),
            "--bootstrap-token-file".into(),
            self.dir.path().join("bootstrap-token").display().to_string(),
        ];
        if self.spec.api_tls {
            args.push("--api-tls-dir".into());
            args.push(self.dir.path().join("api-tls").display().to_string());
        }
        if node.bootstrap {
            for peer in self.nodes.values().filter(|n| n.bootstrap) {
                args.push("--peer".into());
                args.push(format!("{}={},{}", peer.id, peer.raft_addr, peer.api_addr));
            }
        }
        args.extend(self.spec.extra_args.iter().cloned());
        args
    }

    /// The cluster's CA directory (`keel ca` layout).
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// `keel ca issue --ca-dir … <what> --out <out>` with the binary under test.
    pub fn issue(&self, what: &[&str], out: &Path) -> anyhow::Result<()> {
        let ca = self.ca_dir();
        let mut args = vec!["ca", "issue"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["--ca-dir", ca.to_str().context("CA path")?, "--out"]);
        run_keel(&self.spec.bin, &args, out)
    }

    /// Start (or restart) node `id`'s process.
    pub fn launch(&mut self, id: u64) -> anyhow::Result<()> {
        let tls = self.nodes[&id].data_dir.join("tls");
        if !tls.join("cert.pem").exists() {
            self.issue(&["--node", &id.to_string()], &tls)?;
        }
        let args = self.server_args(id);
        let node = self.nodes.get_mut(&id).ok_or_else(|| anyhow!("no node {id}"))?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log)?;
        let mut cmd = match self.spec.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.spec.bin);
                c
            }
            None => Command::new(&self.spec.bin),
        };
        let child = cmd
            .args(&args)
            .env(
                "KEEL_LOG",
                std::env::var("KEEL_LAB_LOG").unwrap_or_else(|_| "info,openraft=warn,hickory_server=warn".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", self.spec.bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Run `keel server` for node `id` in the foreground with `args` replacing its flags' tail,
    /// and return its exit status and output (for start-up refusals).
    pub fn run_to_exit(&self, args: &[String]) -> anyhow::Result<(bool, String)> {
        let out = Command::new(&self.spec.bin)
            .args(args)
            .env("KEEL_TOKEN", &self.token)
            .output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// The flags node `id` runs with.
    pub fn args_of(&self, id: u64) -> Vec<String> {
        self.server_args(id)
    }

    /// Start `n` host managers on 127.0.1.1.. in zones a, b, c… and register them through node 1.
    pub async fn start_hosts(&mut self, n: usize) -> anyhow::Result<()> {
        self.add_hosts(n, |i| (format!("127.0.1.{}", i + 1), None)).await
    }

    /// As [`Cluster::start_hosts`], each host in a network namespace of its own on one
    /// bridge ([`crate::netns::Net`]), so a test can cut exactly one of its paths
    /// ([`Cluster::net`]). The test's clients reach the hosts from the bridge's address,
    /// which the admin account's default security group is made to allow. Needs root.
    pub async fn start_hosts_isolated(&mut self, n: usize) -> anyhow::Result<()> {
        let net = crate::netns::Net::create(n)?;
        let at: Vec<(String, Option<String>)> = (0..n)
            .map(|i| (net.ip(i), Some(net.namespace(i).to_string())))
            .collect();
        let clients = serde_json::json!({"cidrs": [format!("{}/32", net.gateway())]});
        self.net = Some(net);
        let (code, reply) = self.post(1, "/v1/security-groups/default/authorize", &clients).await?;
        if code != 200 {
            bail!("allowing the test's clients failed ({code}): {reply}");
        }
        self.add_hosts(n, |i| at[i].clone()).await
    }

    /// The hosts' network namespaces, if they were started isolated.
    pub fn net(&self) -> Option<&crate::netns::Net> {
        self.net.as_ref()
    }

    /// Start `n` host managers, host `i` at the address (and in the namespace) `at(i)`
    /// gives, in zones a, b, c…, and register them through node 1.
    async fn add_hosts(&mut self, n: usize, at: impl Fn(usize) -> (String, Option<String>)) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // PostgreSQL runs as the postgres OS user and must reach the volumes.
        std::fs::set_permissions(self.dir.path(), std::fs::Permissions::from_mode(0o711))?;
        for i in 0..n {
            let name = format!("h{}", i + 1);
            let zone = ((b'a' + (i % 26) as u8) as char).to_string();
            let (ip, netns) = at(i);
            let addr = format!("{ip}:{}", free_port());
            let root = self.dir.path().join(format!("host-{}", i + 1));
            let log = self.dir.path().join(format!("host-{}.log", i + 1));
            self.hosts.push(HostProc {
                name: name.clone(),
                zone: zone.clone(),
                addr: addr.clone(),
                root,
                log,
                netns,
                child: None,
            });
            self.launch_host(self.hosts.len() - 1)?;
            let body = serde_json::json!({"name": name, "addr": addr, "zone": zone});
            let (code, reply) = self.post(1, "/v1/hosts", &body).await?;
            if code != 200 {
                bail!("registering host {name} failed ({code}): {reply}");
            }
        }
        // Placement prefers hosts the monitor has seen healthy over those not probed
        // yet, so a test that creates databases before every host has been probed
        // would see them land by probe timing rather than by load.
        self.wait_for(Duration::from_secs(60), "every host to be probed healthy", || async {
            let (_, hosts) = self.get(1, "/v1/hosts").await?;
            let hosts = hosts.as_array().cloned().unwrap_or_default();
            let added = &self.hosts[self.hosts.len() - n..];
            let healthy = added.iter().all(|a| {
                hosts
                    .iter()
                    .any(|h| h["name"] == a.name.as_str() && h["health"] == "healthy")
            });
            Ok(healthy.then_some(()))
        })
        .await
    }

    /// Start host manager `i` (0-based) again, on its address and root, appending to its log.
    pub fn launch_host(&mut self, i: usize) -> anyhow::Result<()> {
        let tls = self.hosts[i].root.join("tls");
        if !tls.join("cert.pem").exists() {
            self.issue(&["--host", &self.hosts[i].name.clone()], &tls)?;
        }
        let backups = self.backup_dir();
        let h = &self.hosts[i];
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&h.log)?;
        // In a namespace: `ip netns exec` enters it and execs the host manager (same pid).
        let mut command = match &h.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.spec.bin);
                c
            }
            None => Command::new(&self.spec.bin),
        };
        let child = command
            .args([
                "host", "--name", &h.name, "--zone", &h.zone, "--addr", &h.addr, "--root",
            ])
            .arg(&h.root)
            .arg("--backup-dir")
            .arg(backups)
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()?;
        self.hosts[i].child = Some(child);
        Ok(())
    }

    /// Where the host managers keep backups: `zone-<zone>/` and `control/` stores.
    pub fn backup_dir(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    /// The process id of host manager `i` (0-based), while it runs.
    pub fn host_pid(&self, i: usize) -> Option<u32> {
        self.hosts[i].child.as_ref().map(Child::id)
    }

    /// kill -9 host manager `i` (0-based); its PostgreSQL instances keep running.
    pub fn kill_host(&mut self, i: usize) {
        if let Some(mut c) = self.hosts[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Host loss: kill -9 host manager `i` (0-based) and every process working under its
    /// root (its PostgreSQL postmasters, WAL receivers); returns how many were killed.
    pub fn kill_host_and_instances(&mut self, i: usize) -> usize {
        self.kill_host(i);
        let needle = self.hosts[i].root.to_string_lossy().into_owned();
        let pids = crate::host::pids_with(&[&needle]);
        for pid in &pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        pids.len()
    }

    /// Define and start a new node that will be added to the running cluster.
    pub fn launch_joiner(&mut self, id: u64) -> anyhow::Result<()> {
        self.define(id, false);
        self.launch(id)
    }

    /// kill -9 node `id`.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freeze node `id` (SIGSTOP): to the others it looks partitioned away.
    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// Thaw node `id` (SIGCONT).
    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    fn signal(&self, id: u64, sig: i32) {
        if let Some(child) = self.nodes.get(&id).and_then(|n| n.child.as_ref()) {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, sig) };
        }
    }

    /// Forget node `id` after killing it.
    pub fn discard(&mut self, id: u64) {
        self.kill(id);
        self.nodes.remove(&id);
    }

    /// Member ids this fixture knows.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Member ids whose processes are running.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// Node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id]
    }

    /// Base URL of node `id`'s API.
    pub fn url(&self, id: u64) -> String {
        let scheme = if self.spec.api_tls { "https" } else { "http" };
        format!("{scheme}://{}", self.nodes[&id].api_addr)
    }

    /// The CA bundle that signed the API's certificate (with [`Spec::with_api_tls`]).
    pub fn api_ca(&self) -> PathBuf {
        self.dir.path().join("api-tls/ca.pem")
    }

    /// Where the cluster keeps its files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `id`'s internal Raft address.
    pub fn raft_addr(&self, id: u64) -> String {
        self.nodes[&id].raft_addr.clone()
    }

    /// The cluster's admin token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// An HTTP client that sends the admin token with every call.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A gRPC client of node `id` that sends the admin token with every call.
    pub async fn grpc(&self, id: u64) -> anyhow::Result<GrpcClient> {
        self.grpc_as(id, &self.token).await
    }

    /// A gRPC client of node `id` that sends `token` with every call.
    pub async fn grpc_as(&self, id: u64, token: &str) -> anyhow::Result<GrpcClient> {
        let ca = self.spec.api_tls.then(|| self.api_ca());
        grpc_client(&self.url(id), token, ca.as_deref()).await
    }

    /// GET `path` on node `id`: (HTTP status, JSON body).
    pub async fn get(&self, id: u64, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.get(format!("{}{path}", self.url(id))).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// POST JSON to `path` on node `id`.
    pub async fn post(&self, id: u64, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url(id)))
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// PATCH JSON to `path` on node `id`.
    pub async fn patch(&self, id: u64, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .patch(format!("{}{path}", self.url(id)))
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// POST raw bytes with a JSON content type (for malformed-input tests).
    pub async fn post_raw(&self, id: u64, path: &str, body: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url(id)))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// DELETE `path` on node `id`.
    pub async fn delete(&self, id: u64, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self.http.delete(format!("{}{path}", self.url(id))).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    /// Node `id`'s own view (no quorum needed).
    pub async fn node_status(&self, id: u64) -> anyhow::Result<Value> {
        let (code, v) = self.get(id, "/v1/node").await?;
        if code != 200 {
            bail!("node {id} status answered {code}: {v}");
        }
        Ok(v)
    }

    /// Wait until some running node is leader with its leader services announced; return its id.
    pub async fn wait_leader(&self, within: Duration) -> anyhow::Result<u64> {
        self.wait_for(within, "a leader with running leader services", || async {
            for id in self.running() {
                let Ok((200, s)) = self.get(id, "/v1/cluster/status").await else {
                    continue;
                };
                let leader = s["leader"].as_u64();
                let services = s["leader_services"]["node_id"].as_u64();
                let services_term = s["leader_services"]["term"].as_u64();
                if leader.is_some() && leader == services && services_term == s["term"].as_u64() {
                    return Ok(leader);
                }
            }
            Ok(None)
        })
        .await
    }

    /// Poll `probe` every 50 ms until it yields a value or `within` passes.
    pub async fn wait_for<T, F, Fut>(&self, within: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
    {
        let deadline = Instant::now() + within;
        let mut last_err = None;
        loop {
            match probe().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {within:?} waiting for {what}{}\n{}",
                    last_err.map(|e| format!(" (last error: {e})")).unwrap_or_default(),
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every node's log, for failure reports.
    pub fn log_tails(&self) -> String {
        let tail = |label: String, path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let last = &lines[lines.len().saturating_sub(15)..];
            format!("--- {label} log ({}) ---\n{}\n", path.display(), last.join("\n"))
        };
        let mut out = String::new();
        for n in self.nodes.values() {
            out.push_str(&tail(format!("node {}", n.id), &n.log));
        }
        for h in &self.hosts {
            out.push_str(&tail(format!("host {}", h.name), &h.log));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.kill_host(i);
            // Stop the PostgreSQL instances the host managers started (they outlive their manager).
            if let Ok(entries) = std::fs::read_dir(self.hosts[i].root.join("volumes")) {
                for e in entries.flatten() {
                    if let Ok(pid) = std::fs::read_to_string(e.path().join("data/postmaster.pid")) {
                        if let Some(pid) = pid.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) {
                            // SAFETY: SIGQUIT to a postmaster this test started: immediate shutdown.
                            unsafe { libc::kill(pid, libc::SIGQUIT) };
                        }
                    }
                }
            }
        }
        for id in self.ids() {
            self.resume(id);
            self.kill(id);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
    }
}

/// Run `keel <args> <last>` and fail with its output if it fails.
fn run_keel(bin: &Path, args: &[&str], last: &Path) -> anyhow::Result<()> {
    let out = Command::new(bin).args(args).arg(last).output()?;
    anyhow::ensure!(
        out.status.success(),
        "keel {} {} failed: {}",
        args.join(" "),
        last.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A `keel.v1` gRPC client that sends a bearer token with every call.
pub type GrpcClient = keel_proto::keel::keel_client::KeelClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// Adds `authorization: Bearer <token>` to every gRPC call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A gRPC client of the API at `url` sending `token`; over TLS trusting `ca` when given.
pub async fn grpc_client(url: &str, token: &str, ca: Option<&Path>) -> anyhow::Result<GrpcClient> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())?;
    if let Some(ca) = ca {
        let pem = std::fs::read(ca)?;
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                .domain_name("127.0.0.1"),
        )?;
    }
    let channel = endpoint.connect().await?;
    let bearer = Bearer(format!("Bearer {token}").parse()?);
    Ok(keel_proto::keel::keel_client::KeelClient::with_interceptor(
        channel, bearer,
    ))
}
