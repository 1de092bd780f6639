//! `keel dev`: a whole local cluster on this machine, as separate processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::server::config::{PeerSpec, ServerConfig};
use crate::tls::ca::{CaDir, Subject, DEFAULT_VALID_DAYS};
use crate::tls::identity::Identity;

/// The dev cluster's name (in its certificates' identities too).
const CLUSTER: &str = "keel-dev";

/// `keel dev` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where the cluster keeps data, configs and logs [default: ~/.local/share/keel/dev].
    #[arg(long, env = "KEEL_DEV_DIR")]
    pub dir: Option<PathBuf>,
    /// Start from empty data instead of reusing the last run's.
    #[arg(long)]
    pub fresh: bool,
    /// Host managers to run (zones a, b, c…; addresses 127.0.1.1, 127.0.1.2…).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=9))]
    pub hosts: u64,
    /// Control nodes to run (3 or 5).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=5))]
    pub nodes: u64,
    /// Serve the public API over TLS too (HTTPS and gRPC over TLS, a certificate for
    /// 127.0.0.1 and localhost from the dev CA); internal links always use mutual TLS.
    #[arg(long)]
    pub tls: bool,
}

/// Fixed ports: node N serves its API on 7079+N, Raft on 7089+N and DNS on 8599+N.
fn node_config(dir: &Path, id: u64, nodes: u64, token_file: &Path, api_tls: Option<&Path>) -> ServerConfig {
    let peer = |i: u64| PeerSpec {
        id: i,
        raft_addr: format!("127.0.0.1:{}", 7089 + i),
        api_addr: format!("127.0.0.1:{}", 7079 + i),
    };
    let me = peer(id);
    ServerConfig {
        id,
        cluster_name: CLUSTER.into(),
        data_dir: dir.join(format!("node-{id}")),
        raft_addr: me.raft_addr,
        api_addr: me.api_addr,
        initial_members: (1..=nodes).map(peer).collect(),
        dns_addr: format!("127.0.0.1:{}", 8599 + id),
        // Short, so a changed endpoint is seen at once while trying things out.
        dns_ttl: 1,
        // So a local BIND, NSD or Knot can be tried as a secondary.
        dns_allow_transfer: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        bootstrap_token_file: Some(token_file.to_path_buf()),
        api_tls_dir: api_tls.map(Path::to_path_buf),
        ..ServerConfig::default()
    }
}

fn default_dir() -> PathBuf {
    // As root, PostgreSQL runs as the postgres user, which cannot enter /root: keep data where it can.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/keel/dev");
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("keel/dev")
}

/// Start the cluster, wait until it serves, and run until Ctrl-C.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = args.dir.unwrap_or_else(default_dir);
    if args.fresh && dir.exists() {
        if !dir.join("node-1.toml").exists() && dir.read_dir()?.next().is_some() {
            bail!(
                "--fresh would delete {}, which does not look like a keel dev directory; remove it yourself",
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the keel binary")?;
    let token_file = dir.join("bootstrap-token");
    let token = admin_token(&token_file)?;
    let ca = certificates(&dir, args.nodes, args.hosts)?;
    let api_tls = dir.join("api-tls");
    if args.tls && !api_tls.join(crate::tls::ca::CERT_FILE).exists() {
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        ca.issue(&Subject::Api(names), DEFAULT_VALID_DAYS, &api_tls)
            .context("cannot issue the API certificate")?;
    }
    let ca_file = args.tls.then(|| api_tls.join(crate::tls::ca::CA_FILE));

    let mut children: Vec<(u64, Child)> = Vec::new();
    for id in 1..=args.nodes {
        let config = node_config(&dir, id, args.nodes, &token_file, args.tls.then_some(api_tls.as_path()));
        let path = dir.join(format!("node-{id}.toml"));
        std::fs::write(&path, toml::to_string(&config)?).with_context(|| format!("cannot write {}", path.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("node-{id}.log")))?;
        let child = Command::new(&exe)
            .arg("server")
            .arg("--config")
            .arg(&path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start control node {id}"))?;
        children.push((id, child));
    }

    let api = if args.tls {
        "https://127.0.0.1:7080"
    } else {
        "http://127.0.0.1:7080"
    };
    let client = crate::cli::api_client(api, Some(&token), ca_file.as_deref())?;
    if let Err(e) = wait_ready(&client, &mut children).await {
        stop(&mut children).await;
        return Err(e.context(format!(
            "the dev cluster did not start; see the logs in {}",
            dir.display()
        )));
    }
    let mut hosts = Vec::new();
    for i in 1..=args.hosts {
        match start_host(&exe, &dir, i, &client).await {
            Ok(child) => hosts.push((100 + i, child)),
            Err(e) => {
                children.extend(hosts);
                stop(&mut children).await;
                return Err(e.context(format!("host manager h{i} did not start; see {}", dir.display())));
            }
        }
    }
    children.extend(hosts);

    println!(
        "Keel dev cluster is running: {} control nodes (cluster keel-dev).",
        args.nodes
    );
    println!("Data, configs and logs: {}", dir.display());
    println!(
        "Internal links (Raft, forwarding, host managers) use mutual TLS; CA in {}",
        dir.join("ca").display()
    );
    for id in 1..=args.nodes {
        println!(
            "  node {id}: API {}://127.0.0.1:{}  raft 127.0.0.1:{} (mutual TLS)  DNS 127.0.0.1:{} (UDP and TCP)",
            if args.tls { "https" } else { "http" },
            7079 + id,
            7089 + id,
            8599 + id
        );
    }
    for i in 1..=args.hosts {
        println!("  host h{i}: zone {}, databases listen on 127.0.1.{i}", zone(i));
    }
    let profile = crate::cli::profile::default_path();
    if let Some(path) = &profile {
        let p = crate::cli::profile::Profile {
            addr: api.to_string(),
            token: token.clone(),
            ca: ca_file.clone(),
        };
        crate::cli::profile::save(path, &p)?;
    }
    println!();
    match &profile {
        Some(path) => println!(
            "The CLI uses it through {} (address and admin token); or, in another shell:",
            path.display()
        ),
        None => println!("Point the CLI at it:"),
    }
    println!();
    match &ca_file {
        Some(ca) => println!(
            "    export KEEL_ADDR={api} KEEL_TOKEN={token} KEEL_CA_FILE={}",
            ca.display()
        ),
        None => println!("    export KEEL_ADDR={api} KEEL_TOKEN={token}"),
    }
    println!();
    println!("Then try:");
    println!();
    println!("    keel db create demo --master-user app --master-password 'change me please' --wait");
    println!("    keel db describe demo        # endpoint: address and port for psql");
    println!("    dig @127.0.0.1 -p 8600 demo.admin.db.keel.internal          # the address, by name");
    println!("    dig @127.0.0.1 -p 8600 _postgresql._tcp.demo.admin.db.keel.internal SRV   # host and port");
    println!("    psql \"host=$(dig +short @127.0.0.1 -p 8600 demo.admin.db.keel.internal) port=$(dig +short @127.0.0.1 -p 8600 _postgresql._tcp.demo.admin.db.keel.internal SRV | cut -d' ' -f3) user=app dbname=postgres\"");
    println!();
    println!("Press Ctrl-C to stop; run `keel dev` again to reuse the data (--fresh to start empty).");

    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::cli::stop_on_signal(shutdown.clone()));
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = watch.tick() => {
                for (id, child) in &mut children {
                    if let Ok(Some(status)) = child.try_wait() {
                        let what = if *id > 100 { format!("host manager h{}", *id - 100) } else { format!("control node {id}") };
                        eprintln!("warning: {what} exited ({status}); see the logs in {}", dir.display());
                    }
                }
                children.retain_mut(|(_, c)| matches!(c.try_wait(), Ok(None)));
            }
        }
    }
    println!("Stopping the dev cluster…");
    stop(&mut children).await;
    println!("Stopped. Data kept in {}.", dir.display());
    Ok(())
}

/// The dev cluster's CA (made once, in `<dir>/ca`) and a certificate for every control node
/// (`node-N/tls`) and host manager (`host-N/tls`) that has none yet.
fn certificates(dir: &Path, nodes: u64, hosts: u64) -> anyhow::Result<CaDir> {
    let ca = CaDir::at(&dir.join("ca"));
    if !ca.exists() {
        ca.init(CLUSTER).context("cannot make the dev cluster's CA")?;
    }
    let members = (1..=nodes)
        .map(|id| (Identity::node(CLUSTER, id), dir.join(format!("node-{id}/tls"))))
        .chain((1..=hosts).map(|i| {
            (
                Identity::host(CLUSTER, &format!("h{i}")),
                dir.join(format!("host-{i}/tls")),
            )
        }));
    for (who, out) in members {
        if !out.join(crate::tls::ca::CERT_FILE).exists() {
            ca.issue(&Subject::Member(who.clone()), DEFAULT_VALID_DAYS, &out)
                .with_context(|| format!("cannot issue {who} its certificate"))?;
        }
    }
    Ok(ca)
}

/// The admin token of this dev directory: made once, kept (owner-only) beside the data.
fn admin_token(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(text.trim().to_string());
    }
    let token = crate::api::auth::new_token().token;
    crate::cli::profile::write_private(path, &format!("{token}\n"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

fn zone(i: u64) -> char {
    (b'a' + ((i - 1) % 26) as u8) as char
}

/// Start host manager `i` on 127.0.1.i:7300 and register it (registration is idempotent).
async fn start_host(exe: &Path, dir: &Path, i: u64, client: &crate::cli::client::Client) -> anyhow::Result<Child> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    let addr = format!("127.0.1.{i}:7300");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("host-{i}.log")))?;
    let mut child = Command::new(exe)
        .args([
            "host",
            "--name",
            &format!("h{i}"),
            "--zone",
            &zone(i).to_string(),
            "--addr",
            &addr,
            "--stop-instances-on-exit",
            "--root",
        ])
        .arg(dir.join(format!("host-{i}")))
        // Backups on by default: every zone's store and the control store under the dev directory.
        .arg("--backup-dir")
        .arg(dir.join("backups"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let body = serde_json::json!({"name": format!("h{i}"), "addr": addr, "zone": zone(i).to_string()});
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("host manager h{i} exited during start-up ({status})");
        }
        // Registered once the host manager answers; before that, keep trying.
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            client.post("/v1/hosts", &body).await?;
            return Ok(child);
        }
        if Instant::now() > deadline {
            bail!("host manager h{i} did not listen on {addr} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_ready(client: &crate::cli::client::Client, children: &mut [(u64, Child)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_error = String::new();
    loop {
        for (id, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("control node {id} exited during start-up ({status})");
            }
        }
        // Answered once there is a leader and it has initialised the cluster with the token.
        match client.get("/v1/cluster/status").await {
            Ok(v) => {
                let ready = v.get("leader").is_some_and(|l| !l.is_null())
                    && v.get("leader_services").is_some_and(|l| !l.is_null());
                if ready {
                    return Ok(());
                }
            }
            Err(e) => last_error = e.to_string(),
        }
        if Instant::now() > deadline {
            if last_error.contains("HTTP 401") {
                bail!("the cluster does not accept this directory's admin token; data from a build before tokens cannot be used: run `keel dev --fresh`");
            }
            bail!("no leader was elected within 60 s (last answer: {last_error})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM every node, then SIGKILL those still running after 10 s.
async fn stop(children: &mut [(u64, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) on a pid we spawned and have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
    }
    for (id, child) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            eprintln!("control node {id} did not stop in 10 s; killing it");
            let _ = child.kill().await;
        }
    }
}
