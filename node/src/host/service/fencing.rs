//! Fenced instances on this host: the fence task (mark, stop, move the volume's last WAL
//! to the archive), the fences every monitor probe carries (an instance replaced while
//! this host was away is stopped when it answers again), and the start of instances
//! after a restart, which waits for the monitor's word on which were fenced.

use std::time::Duration;

use keel_proto::host::FencedInstance;

use super::HostService;
use crate::backup::wal::{format_lsn, parse_lsn};
use crate::backup::work::TaskWork;
use crate::host::engine::{EngineError, InstanceSpec};
use crate::host::journal::valid_id;

/// How long moving a fenced volume's last WAL to the archive may take.
const SALVAGE_WITHIN: Duration = Duration::from_secs(300);

impl HostService {
    /// The fence task: mark the instance fenced at `generation` (first, so nothing
    /// starts it again), stop it at once, then move the WAL its volume holds beyond the
    /// archive to the archive. A volume whose WAL cannot be read is still fenced: the
    /// detail says what could not be moved, and the recovery goes on with what the
    /// archive has.
    pub(super) async fn fence(
        &self,
        spec: InstanceSpec,
        work: Option<TaskWork>,
        generation: u64,
    ) -> Result<String, EngineError> {
        let Some(TaskWork::Fence { lineage }) = work else {
            return Err(EngineError::Unavailable(
                "a fence task needs the lineage to archive into".into(),
            ));
        };
        self.engine.mark_fenced(&spec.id, generation)?;
        self.archives.stop(&spec.id);
        self.engine.shut_down_now(&spec.id).await?;
        if !self.engine.provisioned(&spec.id) {
            return Ok(format!("fenced at generation {generation}; there was no volume"));
        }
        let salvaged = self.salvage(&spec, &lineage).await;
        self.archives.stop(&spec.id);
        let stopped = self.engine.shut_down(&spec.id).await;
        let detail = match salvaged {
            Ok(moved) => format!("fenced at generation {generation}; {moved}"),
            Err(why) => format!(
                "fenced at generation {generation}; its last WAL could not be moved to the archive ({why}): commits after the archive's reach are lost"
            ),
        };
        stopped.map(|()| detail)
    }

    /// Start the fenced instance with no listener, archive its WAL up to where it ends,
    /// and say how far that reached.
    async fn salvage(&self, spec: &InstanceSpec, lineage: &str) -> Result<String, String> {
        let store = self.stores.zone(&self.config.zone).map_err(|e| e.to_string())?;
        self.engine.start_unlisted(&spec.id).await.map_err(|e| e.to_string())?;
        let end = self.engine.current_wal_lsn(spec).await.map_err(|e| e.to_string())?;
        let end = parse_lsn(&end).ok_or_else(|| format!("unreadable WAL position {end:?}"))?;
        self.archives
            .ensure(self.engine.clone(), spec, lineage, store, self.spool(&spec.id));
        let until = tokio::time::Instant::now() + SALVAGE_WITHIN;
        loop {
            let coverage = self.archives.coverage(&spec.id).unwrap_or_default();
            if coverage.archived_lsn >= end {
                return Ok(format!("its WAL up to {} is in the archive", format_lsn(end)));
            }
            if tokio::time::Instant::now() >= until {
                return Err(format!(
                    "the archive reached {} of {} within {SALVAGE_WITHIN:?}{}",
                    format_lsn(coverage.archived_lsn),
                    format_lsn(end),
                    coverage.problem.map(|p| format!(": {p}")).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fence what a monitor probe names that is not fenced yet: mark it, stop its
    /// archive, and stop it at once (in the background: the probe answers now).
    pub(super) fn fence_named(&self, fenced: &[FencedInstance]) {
        for f in fenced {
            if !valid_id(&f.instance_id) || self.engine.fenced_at(&f.instance_id).is_some() {
                continue;
            }
            if !self.engine.volume(&f.instance_id).exists() {
                continue;
            }
            if let Err(e) = self.engine.mark_fenced(&f.instance_id, f.generation) {
                tracing::error!(instance = %f.instance_id, error = %e, "Cannot mark a replaced instance fenced.");
                continue;
            }
            tracing::warn!(instance = %f.instance_id, generation = f.generation, "A recovery replaced this instance while this host was away: fenced, stopping it.");
            self.archives.stop(&f.instance_id);
            let (engine, id) = (self.engine.clone(), f.instance_id.clone());
            tokio::spawn(async move {
                if let Err(e) = engine.shut_down_now(&id).await {
                    tracing::error!(instance = %id, error = %e, "Cannot stop a fenced instance.");
                }
            });
        }
    }

    /// After a restart: once the monitor's first probe has said which instances were
    /// fenced (and those are marked), start every other instance that should run. Until
    /// then none starts, so an instance a recovery replaced while this host was down
    /// never serves again, not even for a moment.
    pub async fn restore_instances_when_confirmed(self, stop: tokio_util::sync::CancellationToken) {
        for spec in self.instances() {
            // Left running by a host manager that stopped before it could stop it.
            if self.engine.fenced_at(&spec.id).is_some() && self.engine.running(&spec.id) {
                if let Err(e) = self.engine.shut_down_now(&spec.id).await {
                    tracing::error!(instance = %spec.id, error = %e, "Cannot stop a fenced instance.");
                }
            }
        }
        let down: Vec<String> = self
            .instances()
            .into_iter()
            .filter(|s| !self.engine.running(&s.id) && !self.engine.stopped_on_purpose(&s.id))
            .filter(|s| self.engine.fenced_at(&s.id).is_none())
            .map(|s| s.id)
            .collect();
        if down.is_empty() {
            tracing::info!("No instance is down: nothing to start.");
            return;
        }
        tracing::info!(instances = ?down, "Waiting for the control plane's monitor before starting instances that are down (one may have been replaced).");
        let mut confirmed = self.confirmed.subscribe();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = confirmed.wait_for(|c| *c) => {}
        }
        self.restore_instances().await;
        tracing::info!("The control plane's monitor answered: started the instances that should run.");
    }
}
