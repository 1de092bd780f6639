//! The scheduler: starts pending modifications when a database's maintenance
//! window opens. Each start is an ordinary modify job, so the workflow engine,
//! its events and its failure handling are the same as for `--apply-immediately`.

use std::time::Duration;

use keel_raft_store::{Command, DatabaseStatus, Modification, RequestKey, Response};

use super::Term;
use crate::clock::now_ms;
use crate::window::Window;

/// Run until the term ends.
pub async fn run(t: Term) {
    let interval = Duration::from_millis(t.config.scheduler_interval_ms);
    loop {
        tokio::select! {
            _ = t.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = now_ms();
        let due: Vec<(String, Modification)> = t.read(|a| {
            a.databases
                .values()
                .filter(|d| d.operation.is_none())
                .filter(|d| matches!(d.status, DatabaseStatus::Available | DatabaseStatus::StorageFull))
                .filter(|d| Window::weekly(&d.spec.maintenance_window).is_ok_and(|w| w.contains(now)))
                .filter_map(|d| Some((d.name.clone(), d.pending.clone()?)))
                .collect()
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
