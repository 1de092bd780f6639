//! `keel host`: the host manager of one data host.
//!
//! Serves `keel.host.v1` on an internal address and never calls the control
//! plane. It runs the tasks the leader sends (provision, start, stop,
//! configure, restart, destroy), keeps their outcomes in a durable journal so a
//! re-sent task returns its recorded result, runs at most one task per
//! instance at a time, and refuses calls carrying an older fencing token than
//! it has seen for the instance.

pub mod engine;
pub mod journal;
pub mod service;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use keel_proto::host::host_manager_server::HostManagerServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `keel host` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct HostConfig {
    /// Host name, as registered with `keel hosts add`.
    #[arg(long, env = "KEEL_HOST_NAME")]
    pub name: String,
    /// Zone this host is in.
    #[arg(long, env = "KEEL_HOST_ZONE")]
    pub zone: String,
    /// host:port to serve keel.host.v1 on; its host part is where databases listen.
    #[arg(long, env = "KEEL_HOST_ADDR")]
    pub addr: String,
    /// Directory for volumes, templates and the task journal.
    #[arg(long, env = "KEEL_HOST_ROOT")]
    pub root: PathBuf,
    /// Instances this host may run.
    #[arg(long, env = "KEEL_HOST_INSTANCE_SLOTS", default_value_t = 16)]
    pub instance_slots: u32,
    /// Disk this host may allocate to volumes.
    #[arg(long, env = "KEEL_HOST_DISK_GIB", default_value_t = 100)]
    pub disk_gib: u64,
    /// Stop the instances when the host manager exits cleanly (keel dev); by default they keep running.
    #[arg(long)]
    pub stop_instances_on_exit: bool,
    /// Directory with this host's mutual-TLS files: ca.pem, cert.pem, key.pem
    /// (`keel ca issue --host NAME --out DIR`) [default: ROOT/tls]. Only control nodes
    /// of the cluster named in its certificate may call it.
    #[arg(long, env = "KEEL_HOST_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// How often the TLS files are checked for changes, in ms.
    #[arg(long, env = "KEEL_TLS_RELOAD_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_reload_ms: u64,
    /// Keep backups in local directories under DIR (`zone-<zone>/` per zone, `control/`):
    /// for a single machine (keel dev) or a shared file system.
    #[arg(long, env = "KEEL_HOST_BACKUP_DIR", conflicts_with = "backup_stores")]
    pub backup_dir: Option<PathBuf>,
    /// A TOML file naming the backup stores: `[zones.<zone>]` per zone and `[control]`,
    /// each `kind = "local"` with `dir`, or `kind = "s3"` with `endpoint`, `bucket`,
    /// `prefix` and `credentials_file`.
    #[arg(long, env = "KEEL_HOST_BACKUP_STORES")]
    pub backup_stores: Option<PathBuf>,
    /// The most a snapshot copies from its instance, in MiB/s (`pg_basebackup --max-rate`),
    /// so the copy's reads and compression leave the database's clients their throughput;
    /// 0 for no limit. At the default a 100 GiB database's snapshot takes about 13 minutes.
    #[arg(long, env = "KEEL_HOST_SNAPSHOT_MAX_RATE_MIB", default_value_t = 128, value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub snapshot_max_rate_mib: u32,
}

impl HostConfig {
    /// Load this host's TLS material and check it names this host.
    fn tls_credentials(&self) -> anyhow::Result<Arc<crate::tls::credentials::Credentials>> {
        let dir = self.tls_dir.clone().unwrap_or_else(|| self.root.join("tls"));
        let creds = crate::tls::credentials::Credentials::load(crate::tls::credentials::TlsFiles::in_dir(&dir))
            .with_context(|| {
                format!(
                    "host {} has no usable TLS certificate in {}; issue one with `keel ca issue --ca-dir CA --host {} --out {}` (or pass --tls-dir)",
                    self.name,
                    dir.display(),
                    self.name,
                    dir.display()
                )
            })?;
        match creds.current().identity.clone() {
            Some(id) if id.role == crate::tls::identity::Role::Host(self.name.clone()) => Ok(creds),
            other => anyhow::bail!(
                "the certificate in {} is for {}, but this is host {}; issue this host its own certificate",
                dir.display(),
                other.map_or("no keel:// identity".to_string(), |i| i.to_string()),
                self.name
            ),
        }
    }
}

/// Run the host manager until `shutdown`.
pub async fn run(config: HostConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.root)
        .with_context(|| format!("cannot create host root {}", config.root.display()))?;
    // The postgres OS user must be able to reach the volumes under the root.
    std::fs::set_permissions(&config.root, std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .with_context(|| format!("cannot set permissions on {}", config.root.display()))?;
    let tls = config.tls_credentials()?;
    tokio::spawn(
        tls.clone()
            .watch(std::time::Duration::from_millis(config.tls_reload_ms), shutdown.clone()),
    );
    let journal = journal::Journal::open(&config.root).context("cannot open the task journal")?;
    // Multi-AZ standbys stream over mutual TLS with this host's own certificate.
    let cluster = tls.current().identity.clone().map(|i| i.cluster).unwrap_or_default();
    let engine = engine::postgres::Postgres::new(&config.root)
        .context("the PostgreSQL engine is not usable")?
        .with_replication_tls(engine::replication::ReplicationTls {
            files: tls.files().clone(),
            cluster,
        })
        .with_snapshot_max_rate(config.snapshot_max_rate_mib);
    let listener = TcpListener::bind(&config.addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.addr))?;
    tracing::info!(
        name = %config.name,
        zone = %config.zone,
        addr = %config.addr,
        root = %config.root.display(),
        postgres = %engine.version(),
        "Host manager is serving."
    );
    let stores = match (&config.backup_dir, &config.backup_stores) {
        (Some(dir), _) => crate::backup::stores::Stores::Dir(dir.clone()),
        (None, Some(file)) => crate::backup::stores::Stores::from_file(file)?,
        (None, None) => crate::backup::stores::Stores::None,
    };
    let stop_instances = config.stop_instances_on_exit;
    let svc = service::HostService::new(config, Arc::new(journal), Arc::new(engine), stores);
    svc.reconcile().await;
    tokio::spawn(svc.clone().restore_instances_when_confirmed(shutdown.clone()));
    tokio::spawn(svc.clone().watch_usage(shutdown.clone()));
    tokio::spawn(svc.clone().watch_archives(shutdown.clone()));
    tonic::transport::Server::builder()
        .add_service(HostManagerServer::new(svc.clone()))
        .serve_with_incoming_shutdown(
            crate::tls::link::incoming(
                listener,
                crate::tls::link::server_config(&tls, crate::tls::link::Peer::ControlNode),
            ),
            shutdown.cancelled_owned(),
        )
        .await
        .context("host manager server failed")?;
    // Databases normally outlive their host manager; a local dev cluster stops them with it.
    if stop_instances {
        svc.shut_down_instances().await;
    }
    Ok(())
}
