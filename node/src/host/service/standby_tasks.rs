//! A Multi-AZ database's standby tasks: on the primary, its replication made to match
//! the spec (role, slots, TLS, the standby commits wait for); on the standby's host, the
//! standby built from the latest snapshot and the archive, then streaming.

use std::sync::Arc;
use std::time::Duration;

use keel_raft_store::{TaskAction, TaskOutput};

use super::HostService;
use crate::backup::progress::Progress;
use crate::backup::work::TaskWork;
use crate::host::engine::{EngineError, InstanceSpec};

impl HostService {
    /// On a primary: settings (TLS, replication access, the synchronous standby) written
    /// and reloaded, the role and slots made; with `wait`, until the synchronous standby
    /// has caught up. Its output: the slots' newest start, or (waiting) that it is in sync.
    pub(super) async fn replicate(&self, spec: &InstanceSpec, wait: bool) -> Result<(String, TaskOutput), EngineError> {
        self.engine.configure(spec)?;
        self.save_spec(spec)?;
        self.engine.reload(spec).await?;
        let newest = self.engine.prepare_standbys(spec).await?;
        let sync = spec.replication.as_ref().and_then(|r| r.sync_standby.clone());
        match (wait, sync) {
            (true, Some(standby)) => {
                // Leave the task's own deadline a margin to report in.
                let within = TaskAction::SyncStandby
                    .deadline()
                    .saturating_sub(Duration::from_secs(30));
                self.engine.wait_in_sync(spec, within).await?;
                Ok((
                    format!("every commit now waits for standby {standby}, which has everything written before"),
                    TaskOutput::InSync { standby },
                ))
            }
            _ => {
                let lsn = newest.unwrap_or_default();
                Ok((
                    format!("replication ready; the standbys' slots keep WAL from {lsn}"),
                    TaskOutput::StandbySlot { lsn },
                ))
            }
        }
    }

    /// Build a standby: wait until the archive reaches where the primary's slot keeps WAL
    /// from, fetch the snapshot and the archive, and start it streaming. A standby built
    /// before is only started.
    pub(super) async fn build_standby(
        &self,
        spec: &InstanceSpec,
        work: Option<TaskWork>,
        progress: &Arc<Progress>,
    ) -> Result<String, EngineError> {
        let streaming_within = Duration::from_secs(120);
        let Some(TaskWork::BuildStandby {
            lineage,
            sources,
            choice,
            need_lsn,
        }) = work
        else {
            return Err(EngineError::Unavailable(
                "a build-standby task needs its snapshot and the primary's slot".into(),
            ));
        };
        if self.engine.provisioned(&spec.id) {
            self.engine.configure(spec)?;
            self.engine.start(spec).await?;
            return Ok("already built; started".into());
        }
        let need = crate::backup::wal::parse_lsn(&need_lsn).unwrap_or(0);
        let dir = self.config.root.join("restores").join(&spec.id);
        let started = std::time::Instant::now();
        let mut failures = Vec::new();
        for source in &sources {
            progress.phase(&format!(
                "waiting for the archive in {} to reach {need_lsn}",
                source.copy
            ));
            if let Err(e) = self.await_archive(source, &lineage, need).await {
                failures.push(format!("{}: {e}", source.copy));
                continue;
            }
            progress.phase(&format!("fetching and unpacking the backup from {}", source.copy));
            match self.fetch(spec, source, &lineage, &dir, progress).await {
                Ok((base, logs)) => {
                    progress.phase("starting the standby; it replays the archive, then streams from the primary");
                    let finished = self
                        .engine
                        .finish_standby(spec, &dir.join("snapshot"), &dir.join("wal"), streaming_within)
                        .await;
                    let _ = std::fs::remove_dir_all(&dir);
                    finished?;
                    return Ok(format!(
                        "built from {} ({choice}): {base} bytes of snapshot and {logs} bytes of WAL; streaming from the primary after {:.1} s",
                        source.copy,
                        started.elapsed().as_secs_f64()
                    ));
                }
                Err(e) => failures.push(format!("{}: {e}", source.copy)),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(EngineError::Command {
            what: "build the standby".into(),
            detail: failures.join("; "),
        })
    }

    /// Wait (at most two minutes) until `lineage`'s archive in the store of `source`
    /// reaches `need`.
    async fn await_archive(
        &self,
        source: &crate::backup::work::RestoreFrom,
        lineage: &str,
        need: u64,
    ) -> Result<(), String> {
        let store = match source.tier {
            keel_raft_store::BackupTier::Zone => self.stores.zone(&source.zone),
            keel_raft_store::BackupTier::Control => self.stores.control(),
        }
        .map_err(|e| e.to_string())?;
        let until = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let reach = crate::backup::fetch::reach(&store, lineage)
                .await
                .map_err(|e| e.to_string())?;
            if reach >= need {
                return Ok(());
            }
            if tokio::time::Instant::now() > until {
                return Err(format!(
                    "the archive reaches {} but the standby needs WAL up to {} (the primary keeps it from there); is the primary archiving?",
                    crate::backup::wal::format_lsn(reach),
                    crate::backup::wal::format_lsn(need)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
