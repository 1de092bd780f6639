//! The `keel` command line: subcommands, each a thin call to the API or a role to run.

mod access;
mod ca;
pub mod client;
pub(crate) mod db;
mod output;
pub mod profile;
mod replicas;
mod security_groups;
mod snapshots;

use keel_raft_store::wire_name;
use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use self::client::{typed, Client};
use self::output::{table, time, Format};
use crate::api::service::{AddHostRequest, AddNodeRequest, SubmitNoopRequest};
use crate::api::views::{AddHostResponse, ClusterStatusView, HostView, OperationView};
use crate::server::config::ServerArgs;

/// Keel: a self-hosted relational-database control plane.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about)]
struct Cli {
    /// API address of any control node (default: the profile's, else http://127.0.0.1:7080;
    /// `--addr` belongs to the commands that register addresses).
    #[arg(long, global = true, env = "KEEL_ADDR")]
    keel_addr: Option<String>,
    /// API token (default: the profile's).
    #[arg(long, global = true, env = "KEEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA bundle (PEM) that signed the API's certificate, for an https:// address
    /// (default: the profile's).
    #[arg(long, global = true, env = "KEEL_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// CLI profile with an address and a token (`keel dev` writes it).
    #[arg(long, global = true, env = "KEEL_PROFILE")]
    profile: Option<std::path::PathBuf>,
    /// Output format for list, describe and status commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one control node.
    Server(Box<ServerArgs>),
    /// Run the host manager of one data host.
    Host(crate::host::HostConfig),
    /// Run a whole local cluster on this machine.
    Dev(crate::dev::DevArgs),
    /// Databases.
    #[command(subcommand)]
    Db(db::DbCmd),
    /// What happened: created, available, modified, deleted, failed…
    Events {
        /// Only events about this database.
        #[arg(long)]
        db: Option<String>,
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many events.
        #[arg(long)]
        limit: Option<usize>,
        /// Keep printing new events.
        #[arg(long, short)]
        follow: bool,
    },
    /// Data hosts.
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Long-running operations (jobs on the replicated queue).
    #[command(subcommand)]
    Ops(OpsCmd),
    /// The control cluster.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The authoritative DNS zone of database endpoints.
    #[command(subcommand)]
    Dns(DnsCmd),
    /// Accounts (tenants).
    #[command(subcommand)]
    Accounts(access::AccountsCmd),
    /// API tokens.
    #[command(subcommand)]
    Tokens(access::TokensCmd),
    /// Which token, account and role this shell uses.
    Whoami,
    /// Who did what: every authenticated call that reached the store (admins only).
    Audit(access::AuditArgs),
    /// Client networks allowed to connect to an account's databases.
    #[command(subcommand)]
    SecurityGroups(security_groups::SecurityGroupsCmd),
    /// Snapshots in the backup catalog.
    #[command(subcommand)]
    Snapshots(snapshots::SnapshotsCmd),
    /// The certificate authority of internal mutual TLS and the API's certificate.
    #[command(subcommand)]
    Ca(ca::CaCmd),
}

#[derive(Debug, Subcommand)]
enum DnsCmd {
    /// Print the zone the node serves as a standard zone file (for BIND, NSD or Knot).
    Dump,
}

#[derive(Debug, Subcommand)]
enum HostsCmd {
    /// Register a data host's host manager.
    Add {
        /// Unique host name.
        #[arg(long)]
        name: String,
        /// host:port of its host manager.
        #[arg(long)]
        addr: String,
        /// Zone it is in.
        #[arg(long)]
        zone: String,
        /// Operator label KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Retry token: repeating a call with it returns the first result.
        #[arg(long)]
        client_token: Option<String>,
    },
    /// List hosts.
    List,
    /// Place no new instances on a host (running ones stay); --undo to take placements again.
    Drain {
        /// Host name.
        name: String,
        /// Take new instances again.
        #[arg(long)]
        undo: bool,
    },
    /// Deregister a host.
    Remove {
        /// Host name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum OpsCmd {
    /// List operations, oldest first, a page at a time.
    List {
        /// Only this database's operations.
        #[arg(long)]
        db: Option<String>,
        /// Start after this operation id (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (default 100, at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one operation.
    Describe {
        /// Operation id.
        id: String,
    },
    /// Queue a diagnostic job the leader completes after WORK_MS (exercises the queue).
    Noop {
        /// How long the work takes.
        #[arg(long, default_value_t = 0)]
        work_ms: u64,
        /// Retry id: repeating a call with it returns the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Every member: role, term, log, applied index, lag; and who runs the leader services.
    #[command(alias = "members")]
    Status,
    /// Add a control node (started with no --peer) as learner, then voter.
    AddNode {
        /// New node id (never reuse one).
        #[arg(long)]
        id: u64,
        /// Its internal Raft address.
        #[arg(long)]
        raft_addr: String,
        /// Its public API address.
        #[arg(long)]
        api_addr: String,
    },
    /// Remove a control node.
    RemoveNode {
        /// Node id.
        #[arg(long)]
        id: u64,
    },
}

pub(crate) fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {s:?} is not KEY=VALUE"))
}

/// A client for the API at `addr`, sending `token`, trusting `ca` for HTTPS.
pub fn api_client(addr: &str, token: Option<&str>, ca: Option<&std::path::Path>) -> anyhow::Result<Client> {
    Client::new(addr, token, ca)
}

/// The address, token and CA bundle to use: flags and environment first, then the profile.
fn connection(cli: &Cli) -> anyhow::Result<(String, Option<String>, Option<std::path::PathBuf>)> {
    let path = cli.profile.clone().or_else(profile::default_path);
    let saved = match &path {
        Some(p) => profile::load(p)?,
        None => None,
    };
    let addr = cli
        .keel_addr
        .clone()
        .or_else(|| saved.as_ref().map(|p| p.addr.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:7080".into());
    let ca = cli
        .ca_file
        .clone()
        .or_else(|| saved.as_ref().and_then(|p| p.ca.clone()));
    let token = cli.token.clone().or_else(|| saved.map(|p| p.token));
    Ok((addr, token, ca))
}

/// Parse the command line and run it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,hickory_server=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Only API commands need the address, token and CA: a bad profile must not stop a server.
    let connection = connection(&cli);
    let out = cli.output;
    match cli.command {
        Cmd::Server(args) => {
            init_logs();
            let config = args.resolve()?;
            let shutdown = tokio_util::sync::CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            crate::server::run(config, shutdown).await
        }
        Cmd::Host(config) => {
            init_logs();
            let shutdown = tokio_util::sync::CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            crate::host::run(config, shutdown).await
        }
        Cmd::Dev(args) => crate::dev::run(args).await,
        Cmd::Ca(cmd) => ca::run(cmd),
        api => {
            let (addr, token, ca) = connection?;
            let client = Client::new(&addr, token.as_deref(), ca.as_deref())?;
            call_api(&client, out, api).await
        }
    }
}

/// Run a command that calls the API.
async fn call_api(client: &Client, out: Format, command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Db(cmd) => db::run(client, out, cmd).await,
        Cmd::Events {
            db,
            after,
            limit,
            follow,
        } => {
            let filter = db::EventsFilter {
                db,
                after,
                limit,
                follow,
            };
            db::events(client, out, filter).await
        }
        Cmd::Hosts(cmd) => hosts(client, out, cmd).await,
        Cmd::Ops(cmd) => ops(client, out, cmd).await,
        Cmd::Dns(DnsCmd::Dump) => {
            print!("{}", client.get_text("/v1/dns/zone").await?);
            Ok(())
        }
        Cmd::Cluster(cmd) => cluster(client, out, cmd).await,
        Cmd::Accounts(cmd) => access::accounts(client, out, cmd).await,
        Cmd::Tokens(cmd) => access::tokens(client, out, cmd).await,
        Cmd::Whoami => access::whoami(client, out).await,
        Cmd::Audit(args) => access::audit(client, out, args).await,
        Cmd::SecurityGroups(cmd) => security_groups::run(client, out, cmd).await,
        Cmd::Snapshots(cmd) => snapshots::run(client, out, cmd).await,
        Cmd::Server(_) | Cmd::Host(_) | Cmd::Dev(_) | Cmd::Ca(_) => unreachable!("run handles the roles"),
    }
}

/// Cancel `token` on SIGINT or SIGTERM.
pub async fn stop_on_signal(token: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    token.cancel();
}

pub(crate) fn print(
    out: Format,
    value: &serde_json::Value,
    render: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    match out {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Table => println!("{}", render()?),
    }
    Ok(())
}

fn host_rows(hosts: &[HostView]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                h.addr.clone(),
                h.zone.clone(),
                keel_raft_store::wire_name(&h.health),
                if h.draining { "yes".into() } else { "no".into() },
                time(Some(h.added_at_ms)),
            ]
        })
        .collect();
    table(&["NAME", "ADDR", "ZONE", "HEALTH", "DRAINING", "ADDED"], &rows)
}

async fn hosts(client: &Client, out: Format, cmd: HostsCmd) -> anyhow::Result<()> {
    match cmd {
        HostsCmd::Add {
            name,
            addr,
            zone,
            labels,
            client_token,
        } => {
            let req = AddHostRequest {
                name,
                addr,
                zone,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                client_token,
            };
            let v = client.post("/v1/hosts", &req).await?;
            let r: AddHostResponse = typed(v.clone())?;
            print(out, &v, || {
                let verb = if r.created { "registered" } else { "already registered" };
                Ok(format!(
                    "Host {} ({}, zone {}) {verb}.",
                    r.host.name, r.host.addr, r.host.zone
                ))
            })
        }
        HostsCmd::List => {
            let v = client.get("/v1/hosts").await?;
            print(out, &v, || Ok(host_rows(&typed::<Vec<HostView>>(v.clone())?)))
        }
        HostsCmd::Drain { name, undo } => {
            let path = format!("/v1/hosts/{name}/drain");
            let v = if undo {
                client.delete(&path).await?
            } else {
                client.post(&path, &()).await?
            };
            print(out, &v, || {
                Ok(if undo {
                    format!("Host {name} takes new instances again.")
                } else {
                    format!("Host {name} is draining: no new instances are placed on it.")
                })
            })
        }
        HostsCmd::Remove { name } => {
            let v = client.delete(&format!("/v1/hosts/{name}")).await?;
            print(out, &v, || Ok(format!("Host {name} removed.")))
        }
    }
}

async fn ops(client: &Client, out: Format, cmd: OpsCmd) -> anyhow::Result<()> {
    match cmd {
        OpsCmd::List { db, after, limit } => {
            let mut query = Vec::new();
            for (k, v) in [("db", db), ("after", after), ("limit", limit.map(|l| l.to_string()))] {
                if let Some(v) = v {
                    if !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
                        anyhow::bail!("--{k} {v:?} may use only letters, digits and - _ .");
                    }
                    query.push(format!("{k}={v}"));
                }
            }
            let v = client.get(&format!("/v1/ops?{}", query.join("&"))).await?;
            print(out, &v, || {
                let ops: Vec<OperationView> = typed(v.clone())?;
                let rows: Vec<Vec<String>> = ops
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.clone(),
                            wire_name(&j.kind),
                            wire_name(&j.state),
                            time(Some(j.submitted_at_ms)),
                            time(j.finished_at_ms),
                            j.claims.last().map_or("-".into(), |c| {
                                format!("node {} term {} fence {}", c.node_id, c.term, c.fence)
                            }),
                        ]
                    })
                    .collect();
                Ok(table(&["ID", "KIND", "STATE", "SUBMITTED", "FINISHED", "CLAIM"], &rows))
            })
        }
        OpsCmd::Describe { id } => {
            let v = client.get(&format!("/v1/ops/{id}")).await?;
            print(out, &v, || {
                let j: OperationView = typed(v.clone())?;
                let mut s = format!(
                    "Operation {}\n  kind:      {}\n  state:     {}\n  submitted: {}\n  finished:  {}\n",
                    j.id,
                    wire_name(&j.kind),
                    wire_name(&j.state),
                    time(Some(j.submitted_at_ms)),
                    time(j.finished_at_ms)
                );
                if let Some(d) = &j.database {
                    s.push_str(&format!("  database:  {d}\n"));
                }
                if let Some(m) = &j.modification {
                    s.push_str(&format!("  changes:   {}\n", serde_json::to_string(m)?));
                }
                if let Some(e) = &j.error {
                    s.push_str(&format!("  error:     {e}\n"));
                }
                s.push_str("  claims:\n");
                for c in &j.claims {
                    s.push_str(&format!(
                        "    term {} by node {} at {}\n",
                        c.term,
                        c.node_id,
                        time(Some(c.at_ms))
                    ));
                }
                if !j.tasks.is_empty() {
                    s.push_str("  tasks:\n");
                    for line in db::task_lines(&j) {
                        s.push_str(&format!("  {line}\n"));
                    }
                }
                Ok(s.trim_end().to_string())
            })
        }
        OpsCmd::Noop { work_ms, request_id } => {
            let v = client
                .post("/v1/ops/noop", &SubmitNoopRequest { work_ms, request_id })
                .await?;
            print(out, &v, || {
                let j: OperationView = typed(v.clone())?;
                Ok(format!("Operation {} queued ({}).", j.id, wire_name(&j.state)))
            })
        }
    }
}

fn status_table(s: &ClusterStatusView) -> String {
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            let st = m.status.as_ref();
            let role = match (st, m.voter) {
                (None, _) => "unreachable".to_string(),
                (Some(st), true) => st.role.clone(),
                (Some(st), false) => format!("{} (learner)", st.role),
            };
            vec![
                m.id.to_string(),
                role,
                st.map_or("-".into(), |s| s.term.to_string()),
                st.map_or("-".into(), |s| s.last_log_index.to_string()),
                st.map_or("-".into(), |s| s.applied_index.to_string()),
                m.lag.map_or("-".into(), |l| l.to_string()),
                m.raft_addr.clone(),
                m.api_addr.clone(),
            ]
        })
        .collect();
    let mut out = format!(
        "cluster {}  leader {}  term {}\n",
        s.cluster_name,
        s.leader.map_or("none".into(), |l| l.to_string()),
        s.term
    );
    out.push_str(&table(
        &["ID", "ROLE", "TERM", "LAST LOG", "APPLIED", "LAG", "RAFT", "API"],
        &rows,
    ));
    match &s.leader_services {
        Some(ls) => out.push_str(&format!(
            "\nleader services: node {} (term {}, fence {}) since {}",
            ls.node_id,
            ls.term,
            ls.fence,
            time(Some(ls.since_ms))
        )),
        None => out.push_str("\nleader services: not started yet"),
    }
    for m in s.members.iter().filter(|m| m.error.is_some()) {
        out.push_str(&format!("\nnode {}: {}", m.id, m.error.as_deref().unwrap_or_default()));
    }
    out
}

async fn cluster(client: &Client, out: Format, cmd: ClusterCmd) -> anyhow::Result<()> {
    let v = match cmd {
        ClusterCmd::Status => client.get("/v1/cluster/status").await?,
        ClusterCmd::AddNode {
            id,
            raft_addr,
            api_addr,
        } => client
            .post(
                "/v1/cluster/nodes",
                &AddNodeRequest {
                    id,
                    raft_addr,
                    api_addr,
                },
            )
            .await
            .context("adding the node failed")?,
        ClusterCmd::RemoveNode { id } => client
            .delete(&format!("/v1/cluster/nodes/{id}"))
            .await
            .context("removing the node failed")?,
    };
    print(out, &v, || Ok(status_table(&typed(v.clone())?)))
}
