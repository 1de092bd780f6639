//! `keel server` configuration: a TOML file, overridden by flags and `KEEL_*` variables.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// A member of the initial cluster, as `ID=RAFT_ADDR,API_ADDR` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSpec {
    /// Node id.
    pub id: u64,
    /// Internal Raft address.
    pub raft_addr: String,
    /// Public API address.
    pub api_addr: String,
}

impl std::str::FromStr for PeerSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err =
            || format!("peer {s:?} is not of the form ID=RAFT_ADDR,API_ADDR (e.g. 2=127.0.0.1:7091,127.0.0.1:7081)");
        let (id, addrs) = s.split_once('=').ok_or_else(err)?;
        let (raft, api) = addrs.split_once(',').ok_or_else(err)?;
        Ok(PeerSpec {
            id: id.trim().parse().map_err(|_| err())?,
            raft_addr: raft.trim().to_string(),
            api_addr: api.trim().to_string(),
        })
    }
}

/// Everything one control node needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's id, unique in the cluster and never reused.
    pub id: u64,
    /// Cluster name; a data directory of another cluster is refused.
    pub cluster_name: String,
    /// Where RocksDB keeps the log, vote and snapshots.
    pub data_dir: PathBuf,
    /// Internal address for `keel.raft.v1`.
    pub raft_addr: String,
    /// Public API address (gRPC and HTTP/JSON on one port).
    pub api_addr: String,
    /// Members of a new cluster; empty when this node will be added to a running one.
    pub initial_members: Vec<PeerSpec>,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_logs: u64,
    /// Log entries kept behind the latest snapshot (so slightly lagging followers need no snapshot).
    pub keep_logs: u64,
    /// How long a call waits for a leader before failing as retryable.
    pub leader_wait_ms: u64,
    /// Jobs the sweeper runs at once.
    pub max_running_jobs: usize,
    /// How long a client's request id stays bound to its request: a retry within it
    /// answers the original operation, a different request under it gets 409.
    pub request_retention_hours: u64,
    /// Finished operations and events older than this are forgotten...
    pub history_retention_days: u64,
    /// ...except the newest this many per database (and for the cluster).
    pub history_keep_per_database: u32,
    /// How often the monitor health-checks every host manager.
    pub monitor_interval_ms: u64,
    /// Consecutive failed health checks before a host is marked unreachable (or an
    /// instance unhealthy); never fewer than cover one second.
    pub unreachable_after: u32,
    /// How often the scheduler looks for maintenance windows that have opened.
    pub scheduler_interval_ms: u64,
    /// How far zones are from each other (`a:b=1,a:c=5`), for choosing which copy of a
    /// backup a restore reads: give every node the same.
    pub zone_distances: String,
    /// UDP and TCP address of the authoritative DNS zone.
    pub dns_addr: String,
    /// The zone Keel answers for.
    pub dns_zone: String,
    /// TTL of every record, seconds (also the negative-caching time).
    pub dns_ttl: u32,
    /// Secondaries (host:port) told by NOTIFY when the zone changes.
    pub dns_notify: Vec<String>,
    /// Addresses allowed to transfer the zone (AXFR over TCP).
    pub dns_allow_transfer: Vec<std::net::IpAddr>,
    /// API calls per second each account may make on this node (admins are not throttled).
    pub api_requests_per_second: u32,
    /// API calls an account may make in a burst above that rate.
    pub api_burst: u32,
    /// Heavy workflows (creates) an account may run at once; more wait their turn.
    pub heavy_workflows_per_account: u32,
    /// How often this node records its tokens' last use in the replicated state.
    pub token_use_flush_ms: u64,
    /// Serve the public API in plain text on an address other than loopback (tokens and
    /// passwords then cross the network in clear).
    pub insecure_api: bool,
    /// File holding the first admin token (`keel tokens generate`), read by whichever
    /// initial member first leads, to initialise the cluster with it.
    pub bootstrap_token_file: Option<PathBuf>,
    /// This node's mutual-TLS files for Raft, forwarding and host calls (`ca.pem`,
    /// `cert.pem`, `key.pem`, as `keel ca issue --node ID --out DIR` writes them)
    /// [default: DATA_DIR/tls].
    pub tls_dir: Option<PathBuf>,
    /// The public API's certificate (`cert.pem`, `key.pem`: `keel ca issue --api NAME`);
    /// with it the API serves HTTPS and gRPC over TLS only.
    pub api_tls_dir: Option<PathBuf>,
    /// How often the TLS files are checked for changes (rotation without a restart).
    pub tls_reload_ms: u64,
    /// Benchmarks only: take every API call as the admin's, without a token (the
    /// baseline the security benchmark compares against). Refused off loopback.
    pub insecure_no_auth: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            id: 1,
            cluster_name: "keel".into(),
            data_dir: PathBuf::from("keel-data"),
            raft_addr: "127.0.0.1:7090".into(),
            api_addr: "127.0.0.1:7080".into(),
            initial_members: Vec::new(),
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_logs: 10_000,
            keep_logs: 1_000,
            leader_wait_ms: 5_000,
            max_running_jobs: 64,
            request_retention_hours: 24,
            history_retention_days: 7,
            history_keep_per_database: 100,
            // A probe is a round trip on an open connection per instance, so a few a second
            // cost little; with the one-second floor on declaring a failure this detects a
            // dead primary in about 1.2 s and never mistakes a shorter stall for one.
            monitor_interval_ms: 300,
            unreachable_after: 3,
            scheduler_interval_ms: 10_000,
            zone_distances: String::new(),
            dns_addr: "127.0.0.1:8600".into(),
            dns_zone: "db.keel.internal.".into(),
            dns_ttl: 5,
            dns_notify: Vec::new(),
            dns_allow_transfer: Vec::new(),
            bootstrap_token_file: None,
            api_requests_per_second: 50,
            api_burst: 100,
            heavy_workflows_per_account: 4,
            token_use_flush_ms: 60_000,
            insecure_api: false,
            tls_dir: None,
            api_tls_dir: None,
            tls_reload_ms: 1_000,
            insecure_no_auth: false,
        }
    }
}

/// `keel server` flags; each overrides the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerArgs {
    /// TOML configuration file.
    #[arg(long, env = "KEEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node id.
    #[arg(long, env = "KEEL_ID")]
    pub id: Option<u64>,
    /// Cluster name.
    #[arg(long, env = "KEEL_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Data directory.
    #[arg(long, env = "KEEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Internal Raft address (host:port).
    #[arg(long, env = "KEEL_RAFT_ADDR")]
    pub raft_addr: Option<String>,
    /// Public API address (host:port).
    #[arg(long, env = "KEEL_API_ADDR")]
    pub api_addr: Option<String>,
    /// Initial member ID=RAFT_ADDR,API_ADDR; repeat for each (this node included) to bootstrap.
    #[arg(long = "peer", value_name = "ID=RAFT,API")]
    pub peers: Vec<PeerSpec>,
    /// Heartbeat interval in ms.
    #[arg(long, env = "KEEL_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Minimum election timeout in ms.
    #[arg(long, env = "KEEL_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    /// Maximum election timeout in ms.
    #[arg(long, env = "KEEL_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    /// Log entries between snapshots.
    #[arg(long, env = "KEEL_SNAPSHOT_LOGS")]
    pub snapshot_logs: Option<u64>,
    /// Log entries kept behind a snapshot.
    #[arg(long, env = "KEEL_KEEP_LOGS")]
    pub keep_logs: Option<u64>,
    /// How long calls wait for a leader, in ms.
    #[arg(long, env = "KEEL_LEADER_WAIT_MS")]
    pub leader_wait_ms: Option<u64>,
    /// Host health-check interval in ms.
    #[arg(long, env = "KEEL_MONITOR_INTERVAL_MS")]
    pub monitor_interval_ms: Option<u64>,
    /// Failed health checks in a row before a host counts as unreachable.
    #[arg(long, env = "KEEL_UNREACHABLE_AFTER")]
    pub unreachable_after: Option<u32>,
    /// Maintenance-window check interval in ms.
    #[arg(long, env = "KEEL_SCHEDULER_INTERVAL_MS")]
    pub scheduler_interval_ms: Option<u64>,
    /// How far zones are from each other, `a:b=1,a:c=5` (a restore reads the nearest of
    /// equally fresh backup copies; pairs not given come last). Give every node the same.
    #[arg(long, env = "KEEL_ZONE_DISTANCES")]
    pub zone_distances: Option<String>,
    /// DNS address (UDP and TCP), host:port.
    #[arg(long, env = "KEEL_DNS_ADDR")]
    pub dns_addr: Option<String>,
    /// DNS zone, e.g. db.keel.internal.
    #[arg(long, env = "KEEL_DNS_ZONE")]
    pub dns_zone: Option<String>,
    /// DNS record TTL in seconds.
    #[arg(long, env = "KEEL_DNS_TTL")]
    pub dns_ttl: Option<u32>,
    /// A secondary to NOTIFY on changes (host:port); repeat for each.
    #[arg(long = "dns-notify", value_name = "HOST:PORT")]
    pub dns_notify: Vec<String>,
    /// An address allowed to transfer the zone (AXFR); repeat for each.
    #[arg(long = "dns-allow-transfer", value_name = "IP")]
    pub dns_allow_transfer: Vec<std::net::IpAddr>,
    /// API calls per second per account on this node (default 50; admins are not throttled).
    #[arg(long, env = "KEEL_API_REQUESTS_PER_SECOND")]
    pub api_requests_per_second: Option<u32>,
    /// API calls per account in a burst above that rate (default 100).
    #[arg(long, env = "KEEL_API_BURST")]
    pub api_burst: Option<u32>,
    /// Heavy workflows (creates) per account at once (default 4); more wait their turn.
    #[arg(long, env = "KEEL_HEAVY_WORKFLOWS_PER_ACCOUNT")]
    pub heavy_workflows_per_account: Option<u32>,
    /// How often tokens' last use is recorded, in ms (default 60000).
    #[arg(long, env = "KEEL_TOKEN_USE_FLUSH_MS")]
    pub token_use_flush_ms: Option<u64>,
    /// Serve the public API in plain text on a non-loopback address (not until TLS is
    /// configured: tokens and passwords would cross the network in clear).
    #[arg(long, env = "KEEL_INSECURE_API")]
    pub insecure_api: bool,
    /// File holding the first admin token (make one with `keel tokens generate`); every
    /// initial member of a new cluster needs it.
    #[arg(long, env = "KEEL_BOOTSTRAP_TOKEN_FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
    /// Directory with this node's internal mutual-TLS files: ca.pem, cert.pem, key.pem
    /// (`keel ca issue --node ID --out DIR`) [default: DATA_DIR/tls].
    #[arg(long, env = "KEEL_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Directory with the public API's cert.pem and key.pem (`keel ca issue --api NAME`):
    /// the API then serves HTTPS and gRPC over TLS.
    #[arg(long, env = "KEEL_API_TLS_DIR")]
    pub api_tls_dir: Option<PathBuf>,
    /// How often TLS files are checked for changes, in ms (default 1000).
    #[arg(long, env = "KEEL_TLS_RELOAD_MS")]
    pub tls_reload_ms: Option<u64>,
    /// Benchmarks only: every API call is taken as the admin's, without a token (the
    /// security benchmark's baseline). Refused unless the API is on loopback.
    #[arg(long)]
    pub insecure_no_auth: bool,
}

impl ServerArgs {
    /// Merge the file (if any) with the flags and check the result.
    pub fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let mut c = match &self.config {
            Some(path) => load(path)?,
            None => ServerConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = &self.$field { c.$field = v.clone(); } )* };
        }
        set!(
            id,
            cluster_name,
            data_dir,
            raft_addr,
            api_addr,
            heartbeat_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
            snapshot_logs,
            keep_logs,
            leader_wait_ms,
            monitor_interval_ms,
            unreachable_after,
            scheduler_interval_ms,
            zone_distances,
            dns_addr,
            dns_zone,
            dns_ttl,
            api_requests_per_second,
            api_burst,
            heavy_workflows_per_account,
            token_use_flush_ms,
            tls_reload_ms
        );
        if let Some(d) = &self.tls_dir {
            c.tls_dir = Some(d.clone());
        }
        if let Some(d) = &self.api_tls_dir {
            c.api_tls_dir = Some(d.clone());
        }
        c.insecure_api |= self.insecure_api;
        c.insecure_no_auth |= self.insecure_no_auth;
        if let Some(f) = &self.bootstrap_token_file {
            c.bootstrap_token_file = Some(f.clone());
        }
        if !self.dns_notify.is_empty() {
            c.dns_notify = self.dns_notify.clone();
        }
        if !self.dns_allow_transfer.is_empty() {
            c.dns_allow_transfer = self.dns_allow_transfer.clone();
        }
        if !self.peers.is_empty() {
            c.initial_members = self.peers.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

fn load(path: &Path) -> anyhow::Result<ServerConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
}

impl ServerConfig {
    /// Refuse configurations that cannot work, saying how to fix them.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.id == 0 {
            bail!("node id 0 is reserved; use 1 or more");
        }
        if self.election_timeout_min_ms < self.heartbeat_ms * 2
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            bail!(
                "timeouts must satisfy heartbeat*2 <= election min < election max (got {}/{}/{} ms)",
                self.heartbeat_ms,
                self.election_timeout_min_ms,
                self.election_timeout_max_ms
            );
        }
        if self.api_requests_per_second == 0
            || self.api_burst == 0
            || self.heavy_workflows_per_account == 0
            || self.token_use_flush_ms == 0
        {
            bail!("--api-requests-per-second, --api-burst, --heavy-workflows-per-account and --token-use-flush-ms must be at least 1");
        }
        if self.tls_reload_ms == 0 {
            bail!("--tls-reload-ms must be at least 1");
        }
        if self.monitor_interval_ms == 0 || self.unreachable_after == 0 || self.scheduler_interval_ms == 0 {
            bail!("--monitor-interval-ms, --unreachable-after and --scheduler-interval-ms must be at least 1");
        }
        if let Err(e) = self
            .zone_distances
            .parse::<crate::leader::clone_source::ZoneDistances>()
        {
            bail!("--zone-distances: {e}");
        }
        if self.dns_addr.parse::<std::net::SocketAddr>().is_err() {
            bail!("--dns-addr {:?} is not an ip:port address", self.dns_addr);
        }
        if let Some(bad) = self
            .dns_notify
            .iter()
            .find(|a| a.parse::<std::net::SocketAddr>().is_err())
        {
            bail!("--dns-notify {bad:?} is not an ip:port address");
        }
        keel_dns::zone::origin(&self.dns_zone).map_err(|e| anyhow::anyhow!("--dns-zone: {e}"))?;
        if !self.initial_members.is_empty() && !self.initial_members.iter().any(|p| p.id == self.id) {
            bail!(
                "--peer lists the initial members but not this node (id {}); list every member, this one included",
                self.id
            );
        }
        let api_ip = self.api_addr.parse::<std::net::SocketAddr>().map(|a| a.ip());
        if self.insecure_no_auth && !api_ip.as_ref().is_ok_and(|ip| ip.is_loopback()) {
            bail!("--insecure-no-auth (a benchmark baseline) is refused unless --api-addr is a loopback address");
        }
        if !api_ip.is_ok_and(|ip| ip.is_loopback()) && !self.insecure_api && self.api_tls_dir.is_none() {
            bail!(
                "--api-addr {} is not a loopback address and the public API has no certificate: tokens and passwords would cross the network in clear; give it one with --api-tls-dir (`keel ca issue --api NAME --out DIR`), or accept the risk with --insecure-api",
                self.api_addr
            );
        }
        if !self.initial_members.is_empty() {
            let Some(file) = &self.bootstrap_token_file else {
                bail!("a new cluster's members need --bootstrap-token-file: the first admin token, made with `keel tokens generate > FILE` (the same file on every initial member)");
            };
            self.bootstrap_token()
                .with_context(|| format!("--bootstrap-token-file {}", file.display()))?;
        }
        if let Some(p) = self.initial_members.iter().find(|p| p.id == self.id) {
            if p.raft_addr != self.raft_addr || p.api_addr != self.api_addr {
                bail!(
                    "--peer {}={},{} disagrees with this node's --raft-addr {} / --api-addr {}",
                    p.id,
                    p.raft_addr,
                    p.api_addr,
                    self.raft_addr,
                    self.api_addr
                );
            }
        }
        Ok(())
    }

    /// The bootstrap token, if a file is configured: hashed here, so only its hash
    /// reaches the replicated state.
    pub fn bootstrap_token(&self) -> anyhow::Result<Option<crate::api::auth::NewToken>> {
        let Some(path) = &self.bootstrap_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        match crate::api::auth::from_string(&text) {
            Some(token) => Ok(Some(token)),
            None => bail!(
                "{} does not hold a Keel token (keel_<id>_<secret>); make one with `keel tokens generate`",
                path.display()
            ),
        }
    }

    /// Where this node's internal mutual-TLS files are.
    pub fn tls_files(&self) -> crate::tls::credentials::TlsFiles {
        let dir = self.tls_dir.clone().unwrap_or_else(|| self.data_dir.join("tls"));
        crate::tls::credentials::TlsFiles::in_dir(&dir)
    }

    /// Load this node's internal TLS material and check it names this node of this cluster.
    pub fn tls_credentials(&self) -> anyhow::Result<std::sync::Arc<crate::tls::credentials::Credentials>> {
        let files = self.tls_files();
        let creds = crate::tls::credentials::Credentials::load(files.clone()).with_context(|| {
            format!(
                "node {} has no usable internal TLS certificate in {}; issue one with `keel ca issue --ca-dir CA --node {} --out {}` (or pass --tls-dir)",
                self.id,
                files.cert.parent().unwrap_or(Path::new(".")).display(),
                self.id,
                files.cert.parent().unwrap_or(Path::new(".")).display()
            )
        })?;
        let own = creds.current().identity.clone();
        let want = crate::tls::identity::Identity::node(&self.cluster_name, self.id);
        if own.as_ref() != Some(&want) {
            bail!(
                "the certificate {} is for {}, but this is {want}; issue this node its own certificate",
                files.cert.display(),
                own.map_or("no keel:// identity".to_string(), |i| i.to_string())
            );
        }
        Ok(creds)
    }

    /// openraft's configuration for these settings.
    pub fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: self.keep_logs,
            // JSON-encoded chunks must fit the transport's message limit.
            snapshot_max_chunk_size: 1024 * 1024,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_specs_parse_and_explain_mistakes() {
        let p: PeerSpec = "2=127.0.0.1:7091,127.0.0.1:7081".parse().unwrap();
        assert_eq!(p.id, 2);
        assert_eq!(p.api_addr, "127.0.0.1:7081");
        assert!("2=127.0.0.1:7091"
            .parse::<PeerSpec>()
            .unwrap_err()
            .contains("ID=RAFT_ADDR,API_ADDR"));
    }

    #[test]
    fn flags_override_the_file_and_bad_timeouts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "id = 3\ncluster_name = \"x\"\nheartbeat_ms = 60\n").unwrap();
        let args = ServerArgs {
            config: Some(path.clone()),
            cluster_name: Some("y".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!((c.id, c.cluster_name.as_str(), c.heartbeat_ms), (3, "y", 60));
        std::fs::write(&path, "heartbeat_ms = 200\n").unwrap();
        assert!(args.resolve().is_err());
        std::fs::write(&path, "bogus = 1\n").unwrap();
        assert!(args.resolve().is_err());
    }

    #[test]
    fn a_plain_text_api_off_loopback_needs_insecure_api() {
        let open = ServerConfig {
            api_addr: "10.0.0.5:7080".into(),
            ..ServerConfig::default()
        };
        let refused = open.validate().unwrap_err().to_string();
        assert!(refused.contains("--insecure-api"), "{refused}");
        let accepted = ServerConfig {
            insecure_api: true,
            ..open
        };
        assert!(accepted.validate().is_ok());
        assert!(ServerConfig::default().validate().is_ok(), "127.0.0.1 is fine");
    }
}
