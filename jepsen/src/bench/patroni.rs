//! The failover peer: a 3-node Patroni 3 cluster (Debian's `patroni`) over a 3-member
//! etcd, in synchronous mode, on loopback. A trial kills (-9) the leader's Patroni and
//! every process of its PostgreSQL while a client inserts through a multi-host
//! connection string (`target_session_attrs=read-write`), then restarts the killed
//! node, which rejoins as a replica (pg_rewind), before the next.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use super::etcd::Etcd;
use crate::ports::free_port;

/// Patroni's timers: `ttl`, `loop_wait`, `retry_timeout` (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// Leader key lifetime.
    pub ttl: u64,
    /// Seconds between HA loops.
    pub loop_wait: u64,
    /// DCS and PostgreSQL operation retry timeout.
    pub retry_timeout: u64,
}

struct Node {
    config: PathBuf,
    data: PathBuf,
    rest: u16,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running Patroni cluster, killed on drop.
pub struct Patroni {
    _etcd: Etcd,
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    http: reqwest::Client,
}

/// The probe's and Patroni's superuser password.
pub const PASSWORD: &str = "bench-password-1";

impl Patroni {
    /// Start etcd and three Patroni nodes with `timers`; returns once a leader and a
    /// synchronous standby run.
    pub async fn start(timers: Timers) -> anyhow::Result<Self> {
        if Command::new("patroni").arg("--version").output().is_err() {
            bail!("patroni is not installed; run scripts/setup.sh --bench");
        }
        let etcd = Etcd::start(100, 1000, None).await?;
        let hosts: Vec<String> = etcd
            .endpoints()
            .iter()
            .map(|u| u.trim_start_matches("http://").to_string())
            .collect();
        let dir = tempfile::Builder::new().prefix("patroni-bench-").tempdir()?;
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let mut nodes = Vec::new();
        for i in 1..=3 {
            let home = dir.path().join(format!("p{i}"));
            std::fs::create_dir_all(&home)?;
            let (rest, port) = (free_port(), free_port());
            let config = home.join("patroni.yml");
            let data = home.join("data");
            std::fs::write(&config, config_yaml(i, &home, rest, port, &hosts, timers))?;
            chown_postgres(&home)?;
            nodes.push(Node {
                config,
                data,
                rest,
                port,
                child: None,
                log: home.join("patroni.log"),
            });
        }
        let mut p = Patroni {
            _etcd: etcd,
            _dir: dir,
            nodes,
            http: reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?,
        };
        for i in 0..3 {
            p.launch(i)?;
        }
        p.wait_healthy(Duration::from_secs(180)).await?;
        Ok(p)
    }

    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&n.log)?;
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", "patroni"])
            .arg(&n.config)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting patroni")?;
        n.child = Some(child);
        Ok(())
    }

    /// The PostgreSQL ports, for a multi-host connection string.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    async fn cluster(&self) -> anyhow::Result<serde_json::Value> {
        for n in &self.nodes {
            let url = format!("http://127.0.0.1:{}/cluster", n.rest);
            if let Ok(r) = self.http.get(&url).send().await {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    return Ok(v);
                }
            }
        }
        bail!("no Patroni node answers")
    }

    /// Wait until there is a running leader and a streaming synchronous standby.
    pub async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Ok(v) = self.cluster().await {
                let members = v["members"].as_array().cloned().unwrap_or_default();
                let leader = members.iter().any(|m| m["role"] == "leader" && m["state"] == "running");
                let sync = members
                    .iter()
                    .any(|m| m["role"] == "sync_standby" && (m["state"] == "streaming" || m["state"] == "running"));
                if leader && sync {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > until {
                bail!(
                    "Patroni has no leader and synchronous standby after {within:?}: {}",
                    self.cluster().await.map(|v| v.to_string()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The index of the leader.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let v = self.cluster().await?;
        let name = v["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["role"] == "leader"))
            .and_then(|m| m["name"].as_str())
            .context("no leader")?
            .to_string();
        name.trim_start_matches('p')
            .parse::<usize>()
            .map(|n| n - 1)
            .context("unknown leader name")
    }

    /// kill -9 node `i`'s Patroni and every process of its PostgreSQL.
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let (config, data) = (n.config.to_string_lossy(), n.data.to_string_lossy());
        for pid in crate::host::pids_with(&[&config, &data]) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start node `i` again (it rejoins as a replica).
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.nodes[i].data.join("postmaster.pid"));
        self.launch(i)
    }
}

impl Drop for Patroni {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

fn config_yaml(i: usize, home: &Path, rest: u16, port: u16, etcd: &[String], t: Timers) -> String {
    let home = home.display();
    format!(
        "scope: bench
name: p{i}
restapi:
  listen: 127.0.0.1:{rest}
  connect_address: 127.0.0.1:{rest}
etcd3:
  hosts: {hosts}
bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry}
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_log_hints: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
    - encoding: UTF8
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 md5
    - host all all 127.0.0.1/32 md5
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {home}/data
  bin_dir: /usr/lib/postgresql/15/bin
  pgpass: {home}/pgpass
  remove_data_directory_on_rewind_failure: true
  remove_data_directory_on_diverged_timelines: true
  authentication:
    superuser:
      username: postgres
      password: {PASSWORD}
    replication:
      username: replicator
      password: {PASSWORD}
    rewind:
      username: postgres
      password: {PASSWORD}
  parameters:
    unix_socket_directories: '{home}'
",
        hosts = etcd.join(","),
        ttl = t.ttl,
        loop_wait = t.loop_wait,
        retry = t.retry_timeout,
    )
}

fn chown_postgres(dir: &Path) -> anyhow::Result<()> {
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()?
        .success();
    anyhow::ensure!(ok, "chown {} failed", dir.display());
    Ok(())
}
