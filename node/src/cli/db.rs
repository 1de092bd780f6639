//! `keel db …`, `keel events` and operation progress (`--wait`).

use keel_raft_store::wire_name;
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;

use super::client::{typed, Client};
use super::output::{table, time, Format};
use super::print;
use crate::api::backups::{CloneRequest, RestoreRequest, SnapshotRequest};
use crate::api::databases::{
    backup_rpo as rpo, recovery_mode, CreateDatabaseRequest, ModifyDatabaseRequest, SwitchoverRequest,
};
use crate::api::views::{
    DatabaseOperation, DatabaseView, EventView, FailoverView, OperationView, Progress, StandbyPlanView,
};

/// `keel db` subcommands.
#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Create a database; prints the operation id at once (or waits with --wait).
    Create {
        /// Database name (a DNS label).
        name: String,
        /// Engine.
        #[arg(long, default_value = "postgres")]
        engine: String,
        /// Engine version.
        #[arg(long)]
        engine_version: Option<String>,
        /// Instance class: micro, small, medium, large.
        #[arg(long, default_value = "small")]
        class: String,
        /// Allocated storage in GiB.
        #[arg(long, default_value_t = 10)]
        storage_gib: u32,
        /// Zone to place it in.
        #[arg(long)]
        zone: Option<String>,
        /// Master user.
        #[arg(long, default_value = "keel")]
        master_user: String,
        /// Master password (generated and printed once if omitted).
        #[arg(long, env = "KEEL_MASTER_PASSWORD", hide_env_values = true)]
        master_password: Option<String>,
        /// Days of backups kept (0-35; 0: no automatic backups).
        #[arg(long)]
        backup_retention_days: Option<u32>,
        /// Minutes between automatic snapshots (default 15).
        #[arg(long = "snapshot-interval")]
        snapshot_interval_min: Option<u32>,
        /// Daily backup window HH:MM-HH:MM (UTC).
        #[arg(long)]
        backup_window: Option<String>,
        /// Weekly maintenance window ddd:HH:MM-ddd:HH:MM (UTC).
        #[arg(long)]
        maintenance_window: Option<String>,
        /// Tag KEY=VALUE (repeatable).
        #[arg(long = "tag", value_parser = super::parse_label)]
        tags: Vec<(String, String)>,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
        /// Account to create it in (admins only; default: the token's account).
        #[arg(long)]
        account: Option<String>,
        /// Security groups allowed to connect (default: the account's `default`).
        #[arg(long, value_delimiter = ',')]
        security_groups: Vec<String>,
        /// When its instance or host fails: automatic (replace it from the backups at
        /// once) or manual (an event; `keel db recover` starts it).
        #[arg(long, value_parser = ["automatic", "manual"])]
        recovery: Option<String>,
        /// lag (the archive trails commits by about a second) or zero (no commit is
        /// acknowledged before its WAL is in the zone's backup store).
        #[arg(long, value_parser = ["lag", "zero"])]
        backup_rpo: Option<String>,
        /// Keep a synchronous standby in another zone (built from the backups once the
        /// database is available; every commit then waits for it).
        #[arg(long)]
        multi_az: bool,
    },
    /// List databases.
    List,
    /// Show one database.
    Describe {
        /// Database name.
        name: String,
    },
    /// Change class, storage or windows.
    Modify {
        /// Database name.
        name: String,
        /// New class.
        #[arg(long)]
        class: Option<String>,
        /// New storage in GiB (grow only).
        #[arg(long)]
        storage_gib: Option<u32>,
        /// New backup window.
        #[arg(long)]
        backup_window: Option<String>,
        /// New maintenance window.
        #[arg(long)]
        maintenance_window: Option<String>,
        /// Apply now instead of in the maintenance window.
        #[arg(long)]
        apply_immediately: bool,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
        /// Set a new master password (applied at once).
        #[arg(long, conflicts_with = "rotate_master_password")]
        master_password: Option<String>,
        /// Generate a new master password, set it and show it once.
        #[arg(long)]
        rotate_master_password: bool,
        /// Replace the security groups (comma-separated; applied at once).
        #[arg(long, value_delimiter = ',')]
        security_groups: Option<Vec<String>>,
        /// When its instance or host fails: automatic or manual (applied at once).
        #[arg(long, value_parser = ["automatic", "manual"])]
        recovery: Option<String>,
        /// Keep (true) or stop keeping (false) a synchronous standby in another zone
        /// (applied at once).
        #[arg(long)]
        multi_az: Option<bool>,
        /// With `--multi-az true`: print the plan for adding the standby, read from what
        /// runs (members, health, the engine version each host reports), and change nothing.
        #[arg(long, requires = "multi_az")]
        dry_run: bool,
    },
    /// Recover a database whose instance or host failed: a new instance on another host,
    /// restored from its backups to the latest restorable time, under the same name.
    Recover {
        /// Database name.
        name: String,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Switch a Multi-AZ database's primary over to its standby (planned: nothing is
    /// lost, writes pause for the promotion), now or in its maintenance window.
    Failover {
        /// Database name.
        name: String,
        /// The zone the primary is to move to (its standby's).
        #[arg(long)]
        to_zone: Option<String>,
        /// Wait for the maintenance window.
        #[arg(long, conflicts_with = "cancel")]
        in_maintenance_window: bool,
        /// Cancel a switchover waiting for the maintenance window.
        #[arg(long)]
        cancel: bool,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// A Multi-AZ database's failovers: each step and when it happened.
    Failovers {
        /// Database name.
        name: String,
    },
    /// Read replicas: add, remove, list.
    Replica {
        /// What to do.
        #[command(subcommand)]
        cmd: super::replicas::ReplicaCmd,
    },
    /// Make a read replica a stand-alone database of its own (its own name, endpoint and
    /// backups); the source keeps running without it.
    PromoteReplica {
        /// Source database name.
        name: String,
        /// Replica id (`keel db replica list NAME`).
        replica: String,
        /// The new database's name.
        #[arg(long)]
        to: String,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Take a snapshot, kept until deleted (even after the database).
    Snapshot {
        /// Database name.
        name: String,
        /// Snapshot name (unique in the account).
        snapshot: String,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Make a new database from this one's backups (to a time, the latest, or a snapshot).
    Restore {
        /// Source database name.
        source: String,
        /// The new database's name.
        #[arg(long)]
        to: String,
        /// Every transaction committed at or before this time (RFC 3339, e.g. 2026-11-30T16:00:05Z).
        #[arg(long, required_unless_present_any = ["latest", "snapshot"], conflicts_with_all = ["latest", "snapshot"])]
        time: Option<String>,
        /// As far as the archive reaches.
        #[arg(long, conflicts_with = "snapshot")]
        latest: bool,
        /// This snapshot, as it was taken.
        #[arg(long)]
        snapshot: Option<String>,
        /// Where and how the new database runs.
        #[command(flatten)]
        new: FromBackups,
    },
    /// Clone a database: a new one from its backups (at --time, or the latest), with its
    /// settings unless changed; the source is not stopped, locked or slowed.
    Clone {
        /// Source database name.
        source: String,
        /// The clone's name.
        #[arg(long)]
        to: String,
        /// The source as it was at this time (RFC 3339; default: the latest restorable time).
        #[arg(long)]
        time: Option<String>,
        /// Where and how the new database runs.
        #[command(flatten)]
        new: FromBackups,
    },
    /// Delete a database and its data.
    Delete {
        /// Database name.
        name: String,
        /// Take a final snapshot of this name first (kept until deleted).
        #[arg(long)]
        final_snapshot: Option<String>,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
}

/// What a restore or clone makes: the new database's settings (the source's unless
/// given) and how the call behaves.
#[derive(Debug, clap::Args)]
pub struct FromBackups {
    /// Instance class (default: the source's).
    #[arg(long)]
    class: Option<String>,
    /// Storage in GiB (default: the source's).
    #[arg(long)]
    storage_gib: Option<u32>,
    /// Zone (default: any).
    #[arg(long)]
    zone: Option<String>,
    /// Copies updated within this many minutes of the newest count as equally fresh;
    /// the nearest serves (default 15).
    #[arg(long = "prefer-near-within")]
    prefer_near_within_min: Option<u32>,
    /// Wait for the operation, showing progress.
    #[arg(long)]
    wait: bool,
    /// Request id: a retry with the same id answers the original operation.
    #[arg(long)]
    request_id: Option<String>,
}

/// A plan, one numbered step per line.
fn plan(p: &StandbyPlanView) -> String {
    let mut out = String::from("Plan (nothing changed):\n");
    for (n, s) in p.steps.iter().enumerate() {
        out.push_str(&format!("  {}. {:<10} {}\n", n + 1, s.step, s.detail));
    }
    out
}

/// Each failover as its timeline: the steps in order, each at its offset from the
/// first (the old primary's last answer, or the detection).
fn failovers(name: &str, list: &[FailoverView]) -> String {
    if list.is_empty() {
        return format!("{name} has not failed over.\n");
    }
    let mut out = String::new();
    for f in list {
        let state = match (&f.error, f.finished_ms) {
            (Some(e), _) => format!("failed: {e}"),
            (None, Some(_)) => "done".to_string(),
            (None, None) => "in progress".to_string(),
        };
        let what = if f.planned { "switchover" } else { "failover" };
        out.push_str(&format!(
            "{what} {} ({state})\n  from {} on {} (zone {}) to {} on {} (zone {}), generation {}\n  why: {}\n",
            f.id,
            f.from_instance,
            f.from_host,
            f.from_zone,
            f.to_instance,
            f.to_host,
            f.to_zone,
            f.generation,
            f.reason
        ));
        let start = f.last_seen_ms.unwrap_or(f.detected_ms);
        let steps = [
            ("primary last answered", f.last_seen_ms),
            (
                if f.planned {
                    "switchover asked for"
                } else {
                    "failure detected"
                },
                Some(f.detected_ms),
            ),
            ("fenced, generation bumped, name moved (committed)", Some(f.fenced_ms)),
            ("standby promoted", f.promoted_ms),
            ("promotion committed", f.promotion_committed_ms),
            ("first write seen stored", f.first_write_ms),
            ("finished", f.finished_ms),
        ];
        for (what, at) in steps {
            if let Some(at) = at {
                let offset = at as i64 - start as i64;
                out.push_str(&format!("  {:>+7} ms  {}  {what}\n", offset, time(Some(at))));
            }
        }
    }
    out
}

fn endpoint(d: &DatabaseView) -> String {
    d.endpoint
        .as_ref()
        .map_or("-".into(), |e| format!("{}:{}", e.addr, e.port))
}

/// Run a `keel db` command.
pub async fn run(client: &Client, out: Format, cmd: DbCmd) -> anyhow::Result<()> {
    let (v, wait) = match cmd {
        DbCmd::List => {
            let v = client.get("/v1/databases").await?;
            return print(out, &v, || {
                let dbs: Vec<DatabaseView> = typed(v.clone())?;
                let rows: Vec<Vec<String>> = dbs
                    .iter()
                    .map(|d| {
                        vec![
                            d.name.clone(),
                            d.account.clone(),
                            wire_name(&d.status),
                            d.spec.class.clone(),
                            format!("{} GiB", d.spec.storage_gib),
                            d.spec.zone.clone().unwrap_or_else(|| "-".into()),
                            endpoint(d),
                            time(Some(d.created_at_ms)),
                        ]
                    })
                    .collect();
                Ok(table(
                    &[
                        "NAME", "ACCOUNT", "STATUS", "CLASS", "STORAGE", "ZONE", "ENDPOINT", "CREATED",
                    ],
                    &rows,
                ))
            });
        }
        DbCmd::Describe { name } => {
            let v = client.get(&format!("/v1/databases/{name}")).await?;
            return print(out, &v, || Ok(describe(&typed(v.clone())?)));
        }
        DbCmd::Failovers { name } => {
            let v = client.get(&format!("/v1/databases/{name}/failovers")).await?;
            return print(out, &v, || {
                Ok(failovers(&name, &typed::<Vec<FailoverView>>(v.clone())?))
            });
        }
        DbCmd::Create {
            name,
            engine,
            engine_version,
            class,
            storage_gib,
            zone,
            master_user,
            master_password,
            backup_retention_days,
            snapshot_interval_min,
            backup_window,
            maintenance_window,
            tags,
            wait,
            request_id,
            account,
            security_groups,
            recovery,
            backup_rpo,
            multi_az,
        } => {
            let req = CreateDatabaseRequest {
                multi_az,
                backup_rpo: backup_rpo.as_deref().map(rpo).transpose()?.flatten(),
                recovery: recovery.as_deref().map(recovery_mode).transpose()?.flatten(),
                security_groups,
                name,
                engine,
                engine_version,
                class,
                storage_gib,
                zone,
                master_user,
                master_password,
                backup_retention_days,
                backup_window,
                maintenance_window,
                tags: tags.into_iter().collect::<BTreeMap<_, _>>(),
                request_id,
                account,
                snapshot_interval_min,
            };
            (client.post("/v1/databases", &req).await?, wait)
        }
        DbCmd::Modify {
            name,
            class,
            storage_gib,
            backup_window,
            maintenance_window,
            apply_immediately,
            wait,
            request_id,
            master_password,
            rotate_master_password,
            security_groups,
            recovery,
            multi_az,
            dry_run,
        } => {
            if dry_run {
                if multi_az != Some(true) {
                    bail!("--dry-run plans adding a standby: use it with --multi-az true");
                }
                let v = client.get(&format!("/v1/databases/{name}/standby-plan")).await?;
                return print(out, &v, || Ok(plan(&typed::<StandbyPlanView>(v.clone())?)));
            }
            let req = ModifyDatabaseRequest {
                multi_az,
                recovery: recovery.as_deref().map(recovery_mode).transpose()?.flatten(),
                security_groups,
                class,
                storage_gib,
                backup_window,
                maintenance_window,
                apply_immediately,
                request_id,
                master_password,
                rotate_master_password,
            };
            (client.patch(&format!("/v1/databases/{name}"), &req).await?, wait)
        }
        DbCmd::Failover {
            name,
            to_zone,
            in_maintenance_window,
            cancel,
            wait,
            request_id,
        } => {
            let path = format!("/v1/databases/{name}/failover");
            if cancel {
                (client.delete(&path).await?, false)
            } else {
                let req = SwitchoverRequest {
                    to_zone,
                    in_maintenance_window,
                    request_id,
                };
                (client.post(&path, &req).await?, wait)
            }
        }
        DbCmd::Replica { cmd } => match super::replicas::run(client, out, cmd).await? {
            Some(operation) => operation,
            None => return Ok(()),
        },
        DbCmd::PromoteReplica {
            name,
            replica,
            to,
            wait,
            request_id,
        } => (
            super::replicas::promote(client, &name, &replica, to, request_id).await?,
            wait,
        ),
        DbCmd::Recover { name, wait, request_id } => {
            let path = match request_id_param(request_id)? {
                Some(param) => format!("/v1/databases/{name}/recover?{param}"),
                None => format!("/v1/databases/{name}/recover"),
            };
            (client.post(&path, &serde_json::json!({})).await?, wait)
        }
        DbCmd::Snapshot {
            name,
            snapshot,
            wait,
            request_id,
        } => {
            let req = SnapshotRequest { snapshot, request_id };
            (
                client.post(&format!("/v1/databases/{name}/snapshots"), &req).await?,
                wait,
            )
        }
        DbCmd::Restore {
            source,
            to,
            time,
            latest,
            snapshot,
            new,
        } => {
            let req = RestoreRequest {
                to,
                time,
                latest,
                snapshot,
                class: new.class,
                storage_gib: new.storage_gib,
                zone: new.zone,
                prefer_near_within_min: new.prefer_near_within_min,
                request_id: new.request_id,
            };
            let path = format!("/v1/databases/{source}/restore");
            (client.post(&path, &req).await?, new.wait)
        }
        DbCmd::Clone { source, to, time, new } => {
            let req = CloneRequest {
                to,
                time,
                class: new.class,
                storage_gib: new.storage_gib,
                zone: new.zone,
                prefer_near_within_min: new.prefer_near_within_min,
                request_id: new.request_id,
            };
            let path = format!("/v1/databases/{source}/clone");
            (client.post(&path, &req).await?, new.wait)
        }
        DbCmd::Delete {
            name,
            final_snapshot,
            wait,
            request_id,
        } => {
            let mut params: Vec<String> = request_id_param(request_id)?.into_iter().collect();
            match final_snapshot {
                Some(s)
                    if s.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    params.push(format!("final_snapshot={s}"))
                }
                Some(s) => bail!("snapshot name {s:?} may use only lowercase letters, digits and -"),
                None => {}
            }
            let query = if params.is_empty() {
                String::new()
            } else {
                format!("?{}", params.join("&"))
            };
            (client.delete(&format!("/v1/databases/{name}{query}")).await?, wait)
        }
    };
    let op: DatabaseOperation = typed(v.clone())?;
    match out {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Format::Table => {
            match &op.operation_id {
                Some(id) => println!(
                    "Database {}: {} (operation {id}).",
                    op.database.name,
                    wire_name(&op.database.status)
                ),
                None => println!(
                    "Database {}: modification pending; it will be applied in the maintenance window ({} UTC). Pass --apply-immediately to apply it now.",
                    op.database.name, op.database.spec.maintenance_window
                ),
            }
            if let Some(p) = &op.master_password {
                println!("Generated master password (shown once): {p}");
            }
        }
    }
    if let (true, Some(operation_id)) = (wait, &op.operation_id) {
        let done = wait_for(client, operation_id, out == Format::Table).await?;
        if done.state == Progress::Failed {
            bail!(
                "operation {operation_id} failed: {}",
                done.error.unwrap_or_else(|| "no reason given".into())
            );
        }
        if out == Format::Table {
            let reference = format!("{}.{}", op.database.name, op.database.account);
            if let Ok(v) = client.get(&format!("/v1/databases/{reference}")).await {
                let d: DatabaseView = typed(v)?;
                println!(
                    "Database {} is {}; endpoint {}.",
                    d.name,
                    wire_name(&d.status),
                    endpoint(&d)
                );
            } else {
                println!("Database {} is gone.", op.database.name);
            }
        }
    }
    Ok(())
}

fn describe(d: &DatabaseView) -> String {
    let mut s = format!(
        "Database {} (account {})\n  status:      {}{}\n  engine:      {} {}\n  class:       {}\n  storage:     {} GiB\n  zone:        {}\n  endpoint:    {}\n  master user: {}\n  backups:     {} days, window {}\n  maintenance: {}\n  created:     {}\n  operation:   {}\n",
        d.name,
        d.account,
        wire_name(&d.status),
        d.status_reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        d.spec.engine,
        d.spec.engine_version,
        d.spec.class,
        d.spec.storage_gib,
        d.spec.zone.as_deref().unwrap_or("-"),
        endpoint(d),
        d.spec.master_user,
        d.spec.backup_retention_days,
        d.spec.backup_window,
        d.spec.maintenance_window,
        time(Some(d.created_at_ms)),
        d.operation.as_deref().unwrap_or("-"),
    );
    match &d.restorable {
        Some(r) => s.push_str(&format!(
            "  restorable:  {} to {}\n",
            time(Some(r.earliest_ms)),
            time(Some(r.latest_ms))
        )),
        None => s.push_str("  restorable:  - (no snapshot yet)\n"),
    }
    if let Some(from) = &d.restored_from {
        s.push_str(&format!("  restored:    from {from}\n"));
    }
    s.push_str(&format!(
        "  recovery:    {}, backup RPO {}\n",
        wire_name(&d.spec.recovery),
        wire_name(&d.spec.backup_rpo)
    ));
    if d.spec.multi_az {
        let standby = match &d.sync_standby {
            Some(id) => format!("synchronous standby {id}"),
            None => "no synchronous standby yet (it is built from the latest snapshot)".into(),
        };
        s.push_str(&format!("  multi-az:    {standby}\n"));
    }
    if let Some(zone) = &d.pending_switchover_to {
        s.push_str(&format!(
            "  switchover:  to zone {zone} in the maintenance window (`keel db failover {} --cancel` cancels it)\n",
            d.name
        ));
    }
    if let Some(r) = &d.last_recovery {
        let kept = match r.restored_to_ms {
            Some(to) => format!(
                "every commit up to {} kept (failure declared {:.1} s later)",
                time(Some(to)),
                r.failed_at_ms.saturating_sub(to) as f64 / 1000.0
            ),
            None => "loss not measured".into(),
        };
        s.push_str(&format!(
            "  recovered:   {} (operation {}): {kept}\n",
            r.recovered_at_ms.map_or("in progress".to_string(), |t| time(Some(t))),
            r.operation_id
        ));
    }
    if let Some(p) = &d.pending {
        s.push_str(&format!(
            "  pending:     {}\n",
            serde_json::to_string(p).unwrap_or_default()
        ));
    }
    s.push_str("  instances:\n");
    for i in &d.instances {
        let replication = i
            .replication
            .as_ref()
            .map(|r| {
                format!(
                    "; {}{}, {} bytes behind{}",
                    r.state,
                    if r.sync { " (synchronous)" } else { "" },
                    r.lag_bytes,
                    r.replay_lag_ms
                        .map(|ms| format!(", replay {ms} ms behind"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        s.push_str(&format!(
            "    {} {} on {} port {}: {}{replication}\n",
            i.id,
            wire_name(&i.role),
            i.host,
            i.port,
            i.health
        ));
    }
    s.trim_end().to_string()
}

/// Lines describing each task of an operation.
pub fn task_lines(op: &OperationView) -> Vec<String> {
    if op.tasks.is_empty() {
        return vec!["  (not planned yet)".into()];
    }
    let n = op.tasks.len();
    op.tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let took = match (t.started_at_ms, t.finished_at_ms) {
                (Some(a), Some(b)) => format!(" in {:.2}s", b.saturating_sub(a) as f64 / 1000.0),
                _ => String::new(),
            };
            format!(
                "  [{}/{n}] {}{} on {}: {} (attempt {}){took}{}",
                i + 1,
                t.action,
                if t.undo { " (undo)" } else { "" },
                t.host,
                wire_name(&t.state),
                t.attempt,
                t.result
                    .as_ref()
                    .filter(|_| t.state == Progress::Failed)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

/// Poll an operation until it ends, printing task progress as it changes.
pub async fn wait_for(client: &Client, id: &str, show: bool) -> anyhow::Result<OperationView> {
    let mut shown: Vec<String> = Vec::new();
    loop {
        let op: OperationView = typed(client.get(&format!("/v1/ops/{id}")).await?)?;
        if show {
            let lines = task_lines(&op);
            for (i, line) in lines.iter().enumerate() {
                if shown.get(i) != Some(line) {
                    println!("{line}");
                }
            }
            shown = lines;
        }
        if op.state.is_terminal() {
            return Ok(op);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Which events `keel events` prints.
#[derive(Debug, Clone, Default)]
pub struct EventsFilter {
    /// Only this database's.
    pub db: Option<String>,
    /// Only after this sequence number.
    pub after: u64,
    /// At most this many (all, page by page, when not given).
    pub limit: Option<usize>,
    /// Keep printing new ones.
    pub follow: bool,
}

/// `keel events`: print events, and keep printing new ones with `follow`.
pub async fn events(client: &Client, out: Format, filter: EventsFilter) -> anyhow::Result<()> {
    let EventsFilter {
        db,
        mut after,
        limit,
        follow,
    } = filter;
    let mut left = limit.unwrap_or(usize::MAX);
    loop {
        if left == 0 {
            return Ok(());
        }
        let page = left.min(1_000);
        let mut path = format!("/v1/events?after={after}&limit={page}");
        if let Some(d) = &db {
            path.push_str(&format!("&db={d}"));
        }
        let v = client.get(&path).await?;
        let events: Vec<EventView> = typed(v.clone())?;
        for e in &events {
            match out {
                Format::Json => println!("{}", serde_json::to_string(e)?),
                Format::Table => println!(
                    "{}  {:<24} {:<34} {}",
                    time(Some(e.at_ms)),
                    e.kind,
                    e.subject,
                    e.message
                ),
            }
            after = after.max(e.seq);
        }
        left -= events.len();
        if left == 0 || (events.len() < page && !follow) {
            return Ok(());
        }
        if events.len() < page {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// A request id as a query parameter (`request_id=…`), refused if it needs escaping.
fn request_id_param(request_id: Option<String>) -> anyhow::Result<Option<String>> {
    match request_id {
        Some(r) if r.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)) => {
            Ok(Some(format!("request_id={r}")))
        }
        Some(r) => bail!("request id {r:?} may use only letters, digits and - _ . ~"),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failover_reads_as_its_steps_in_order_from_the_last_answer() {
        let f = FailoverView {
            id: "f1".into(),
            reason: "host h1 stopped answering".into(),
            planned: false,
            from_instance: "p".into(),
            from_host: "h1".into(),
            from_zone: "a".into(),
            to_instance: "s".into(),
            to_host: "h2".into(),
            to_zone: "b".into(),
            generation: 2,
            last_seen_ms: Some(1_000),
            detected_ms: 1_600,
            fenced_ms: 1_605,
            dns_moved_ms: 1_605,
            promoted_ms: Some(1_730),
            promotion_committed_ms: Some(1_745),
            first_write_ms: None,
            finished_ms: Some(1_800),
            error: None,
        };
        let text = failovers("orders", std::slice::from_ref(&f));
        assert!(text.starts_with("failover f1 (done)\n  from p on h1 (zone a) to s on h2 (zone b), generation 2"));
        let offsets: Vec<&str> = text
            .lines()
            .skip(3)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(offsets, ["+0", "+600", "+605", "+730", "+745", "+800"], "{text}");
        assert!(!text.contains("first write"), "a step not reached is not shown");
        let planned = FailoverView {
            planned: true,
            last_seen_ms: None,
            finished_ms: None,
            ..f
        };
        let text = failovers("orders", &[planned]);
        assert!(text.starts_with("switchover f1 (in progress)"), "{text}");
        assert!(
            text.contains("+0 ms") && text.contains("switchover asked for"),
            "{text}"
        );
        assert_eq!(failovers("orders", &[]), "orders has not failed over.\n");
    }
}
