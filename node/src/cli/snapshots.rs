//! `keel snapshots`: the backup catalog's snapshots.

use keel_raft_store::wire_name;

use super::client::{typed, Client};
use super::output::{table, time, Format};
use super::print;
use crate::api::views::{OperationView, Progress, SnapshotView};

/// `keel snapshots` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotsCmd {
    /// List snapshots, oldest first.
    List {
        /// Only this database's.
        #[arg(long)]
        db: Option<String>,
    },
    /// Show one snapshot, with its stored objects and their checksums.
    Describe {
        /// Snapshot name.
        name: String,
    },
    /// Delete a snapshot: its objects leave the store.
    Delete {
        /// Snapshot name.
        name: String,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
    },
}

/// Run a `keel snapshots` command.
pub async fn run(client: &Client, out: Format, cmd: SnapshotsCmd) -> anyhow::Result<()> {
    match cmd {
        SnapshotsCmd::List { db } => {
            let path = match db {
                Some(d) => format!("/v1/snapshots?db={d}"),
                None => "/v1/snapshots".into(),
            };
            let v = client.get(&path).await?;
            let all: Vec<SnapshotView> = typed(v.clone())?;
            print(out, &v, || {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            s.database.clone(),
                            wire_name(&s.kind),
                            s.state.clone(),
                            time(Some(s.taken_at_ms)),
                            format!("{:.1} MiB", s.size_bytes as f64 / (1 << 20) as f64),
                            format!("{} ({})", s.zone, s.tier),
                        ]
                    })
                    .collect();
                Ok(table(
                    &["NAME", "DATABASE", "KIND", "STATE", "TAKEN", "SIZE", "STORE"],
                    &rows,
                ))
            })
        }
        SnapshotsCmd::Delete { name, wait } => {
            let v = client.delete(&format!("/v1/snapshots/{name}")).await?;
            let op: OperationView = typed(v.clone())?;
            print(out, &v, || {
                Ok(format!("Snapshot {name} is being deleted (operation {}).", op.id))
            })?;
            if wait {
                let done = super::db::wait_for(client, &op.id, out == Format::Table).await?;
                if done.state == Progress::Failed {
                    anyhow::bail!("operation {} failed: {}", op.id, done.error.unwrap_or_default());
                }
            }
            Ok(())
        }
        SnapshotsCmd::Describe { name } => {
            let v = client.get(&format!("/v1/snapshots/{name}")).await?;
            let s: SnapshotView = typed(v.clone())?;
            print(out, &v, || {
                let mut text = format!(
                    "Snapshot {} of {} (account {})\n  kind:     {}\n  state:    {}\n  taken:    {}\n  timeline: {}\n  WAL:      {} to {}\n  size:     {} bytes\n  store:    zone {} ({})\n  objects:\n",
                    s.name,
                    s.database,
                    s.account,
                    wire_name(&s.kind),
                    s.state,
                    time(Some(s.taken_at_ms)),
                    s.timeline,
                    s.start_lsn,
                    s.end_lsn,
                    s.size_bytes,
                    s.zone,
                    s.tier
                );
                for o in &s.objects {
                    text.push_str(&format!("    {} {} bytes sha256 {}\n", o.key, o.size, o.sha256));
                }
                Ok(text.trim_end().to_string())
            })
        }
    }
}
