//! `keel db replica …` and `keel db promote-replica`: read replicas.

use clap::Subcommand;

use super::client::{typed, Client};
use super::output::{table, Format};
use super::print;
use crate::api::replicas::{AddReplicaRequest, PromoteReplicaRequest, ReplicaView};

/// `keel db replica` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReplicaCmd {
    /// Add a read replica (asynchronous, readable; readers reach it by `<db>.ro.<account>`
    /// or `<db>.ro.<zone>.<account>` under the DNS zone).
    Add {
        /// Database name.
        name: String,
        /// The zone to place it in (any zone if not named).
        #[arg(long)]
        zone: Option<String>,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Remove a read replica: readers no longer reach it at once; then it is destroyed.
    Remove {
        /// Database name.
        name: String,
        /// Replica id (`keel db replica list NAME`).
        replica: String,
        /// Wait for the operation, showing progress.
        #[arg(long)]
        wait: bool,
        /// Request id: a retry with the same id answers the original operation.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// A database's read replicas: where, state, lag.
    List {
        /// Database name.
        name: String,
    },
}

/// The replicas as a table.
fn replicas(list: &[ReplicaView]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let (streaming, lag) = r.replication.as_ref().map_or(("-".into(), "-".into()), |x| {
                let ms = x.replay_lag_ms.map_or("-".into(), |ms| format!("{ms} ms"));
                (x.state.clone(), format!("{} B / {ms}", x.lag_bytes))
            });
            vec![
                r.id.clone(),
                r.state.clone(),
                r.zone.clone(),
                format!("{}:{}", r.host, r.port),
                streaming,
                lag,
            ]
        })
        .collect();
    table(&["REPLICA", "STATE", "ZONE", "HOST:PORT", "STREAM", "LAG"], &rows)
}

/// Run a `keel db replica` command: a listing is printed here (`None`); an operation's
/// answer, and whether to wait for it, go back to the caller.
pub async fn run(client: &Client, out: Format, cmd: ReplicaCmd) -> anyhow::Result<Option<(serde_json::Value, bool)>> {
    match cmd {
        ReplicaCmd::List { name } => {
            let v = client.get(&format!("/v1/databases/{name}/replicas")).await?;
            print(out, &v, || Ok(replicas(&typed::<Vec<ReplicaView>>(v.clone())?)))?;
            Ok(None)
        }
        ReplicaCmd::Add {
            name,
            zone,
            wait,
            request_id,
        } => {
            let req = AddReplicaRequest { zone, request_id };
            let v = client.post(&format!("/v1/databases/{name}/replicas"), &req).await?;
            Ok(Some((v, wait)))
        }
        ReplicaCmd::Remove {
            name,
            replica,
            wait,
            request_id,
        } => {
            let query = request_id.map(|r| format!("?request_id={r}")).unwrap_or_default();
            let v = client
                .delete(&format!("/v1/databases/{name}/replicas/{replica}{query}"))
                .await?;
            Ok(Some((v, wait)))
        }
    }
}

/// `keel db promote-replica`: make a replica a database of its own.
pub async fn promote(
    client: &Client,
    name: &str,
    replica: &str,
    to: String,
    request_id: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let req = PromoteReplicaRequest { to, request_id };
    client
        .post(&format!("/v1/databases/{name}/replicas/{replica}/promote"), &req)
        .await
}
