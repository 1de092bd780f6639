//! A 3-member etcd cluster on loopback (Debian's etcd-server), for side-by-side runs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::ports::free_port;

/// One etcd member.
pub struct Member {
    /// Member name.
    pub name: String,
    /// Client URL.
    pub client_url: String,
    peer_url: String,
    child: Option<Child>,
}

/// A running etcd cluster, killed on drop.
pub struct Etcd {
    dir: tempfile::TempDir,
    /// Members in order.
    pub members: Vec<Member>,
    heartbeat_ms: u64,
    election_ms: u64,
    cpu: Option<usize>,
}

impl Etcd {
    /// Start 3 members with these timeouts, pinned to `cpu` if given.
    pub async fn start(heartbeat_ms: u64, election_ms: u64, cpu: Option<usize>) -> anyhow::Result<Self> {
        if Command::new("etcd").arg("--version").output().is_err() {
            bail!("etcd is not installed; run scripts/setup.sh --bench");
        }
        let dir = tempfile::Builder::new().prefix("etcd-bench-").tempdir()?;
        let members = (1..=3)
            .map(|i| Member {
                name: format!("e{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()),
                peer_url: format!("http://127.0.0.1:{}", free_port()),
                child: None,
            })
            .collect();
        let mut etcd = Etcd {
            dir,
            members,
            heartbeat_ms,
            election_ms,
            cpu,
        };
        for i in 0..3 {
            etcd.launch(i, true)?;
        }
        etcd.wait_healthy(Duration::from_secs(30)).await?;
        Ok(etcd)
    }

    fn launch(&mut self, i: usize, new: bool) -> anyhow::Result<()> {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let mut cmd = match self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name)))?;
        cmd.args([
            "--name",
            &m.name,
            "--data-dir",
            &self.dir.path().join(&m.name).display().to_string(),
            "--listen-client-urls",
            &m.client_url,
            "--advertise-client-urls",
            &m.client_url,
            "--listen-peer-urls",
            &m.peer_url,
            "--initial-advertise-peer-urls",
            &m.peer_url,
            "--initial-cluster",
            &initial,
            "--initial-cluster-state",
            if new { "new" } else { "existing" },
            "--heartbeat-interval",
            &self.heartbeat_ms.to_string(),
            "--election-timeout",
            &self.election_ms.to_string(),
            "--log-level",
            "error",
        ])
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
        let child = cmd.spawn().context("cannot start etcd")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// Index of the current leader among `members`.
    pub async fn leader(&self) -> anyhow::Result<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let Ok(mut c) = etcd_client::Client::connect([m.client_url.as_str()], None).await else {
                continue;
            };
            if let Ok(s) = c.status().await {
                if s.leader() != 0 && s.leader() == s.header().map_or(0, |h| h.member_id()) {
                    return Ok(i);
                }
            }
        }
        bail!("no etcd leader")
    }

    /// kill -9 member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restart member `i` on its existing data.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.launch(i, false)?;
        self.wait_healthy(Duration::from_secs(30)).await
    }

    async fn wait_healthy(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut ok = 0;
            for m in &self.members {
                if let Ok(mut c) = etcd_client::Client::connect([m.client_url.as_str()], None).await {
                    if c.status().await.is_ok_and(|s| s.leader() != 0) {
                        ok += 1;
                    }
                }
            }
            if ok == self.members.len() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("etcd did not become healthy within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
