//! The scheduler: starts pending modifications when a database's maintenance
//! window opens (each start is an ordinary modify job, so the workflow engine,
//! its events and its failure handling are the same as for `--apply-immediately`),
//! brings every database at rest whose instances allow other client networks than
//! its security groups now give to those groups' rules (also a modify job, at once:
//! access is not maintenance), and keeps the history bounded by proposing
//! `PruneHistory` when there is something older than the retention to forget.

use std::time::Duration;

use keel_raft_store::{Command, DatabaseStatus, Modification, RequestKey, Response};

use super::Term;
use crate::clock::now_ms;
use crate::window::Window;

/// How often the history is checked for what to prune.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Run until the term ends.
pub async fn run(t: Term) {
    let interval = Duration::from_millis(t.config.scheduler_interval_ms);
    let mut next_prune = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_prune {
            next_prune += PRUNE_EVERY;
            if let Err(e) = prune(&t).await {
                tracing::warn!(error = %e, "Could not prune the history; will retry.");
                return;
            }
        }
        tokio::select! {
            _ = t.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = now_ms();
        let due: Vec<(String, Modification)> = t.read(|a| {
            let at_rest = a
                .databases
                .values()
                .filter(|d| d.operation.is_none())
                .filter(|d| matches!(d.status, DatabaseStatus::Available | DatabaseStatus::StorageFull));
            let mut due: Vec<(String, Modification)> = Vec::new();
            for d in at_rest {
                let desired = a.desired_access(d);
                if d.access.as_ref() != Some(&desired) {
                    let access = Modification {
                        access: Some(desired),
                        ..Modification::default()
                    };
                    due.push((d.key(), access));
                } else if let Some(pending) = d.pending.clone() {
                    if Window::weekly(&d.spec.maintenance_window).is_ok_and(|w| w.contains(now)) {
                        due.push((d.key(), pending));
                    }
                }
            }
            due
        });
        for (name, modification) in due {
            let job_id = uuid::Uuid::now_v7().simple().to_string();
            let start = Command::ModifyDatabase {
                job_id: job_id.clone(),
                request: Some(RequestKey {
                    id: format!("maintenance/{job_id}"),
                    fingerprint: String::new(),
                    retention_ms: 3_600_000,
                }),
                name: name.clone(),
                modification,
            };
            match t.commit(start).await {
                Ok(Response::Rejected { rejection }) => {
                    tracing::info!(database = %name, %rejection, "Maintenance-window modification not started; will retry.")
                }
                Ok(_) => {
                    tracing::info!(database = %name, job = %job_id, "Maintenance window open: applying the pending modification.")
                }
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "Could not start a maintenance-window modification.");
                    return;
                }
            }
        }
    }
}

/// Propose a prune when the history holds something older than the retention.
async fn prune(t: &Term) -> Result<(), String> {
    let now = now_ms();
    let before_ms = now.saturating_sub(t.config.history_retention_days.saturating_mul(86_400_000));
    let keep = t.config.history_keep_per_database;
    if t.read(|a| a.prunable(now, before_ms, keep).is_empty()) {
        return Ok(());
    }
    t.commit(Command::PruneHistory { before_ms, keep }).await.map(drop)
}
