//! The backup tasks a host runs: snapshot into its zone's store, restore from the first
//! copy that serves, copy to the control store, delete from both. Each returns its
//! detail (and, for the catalog, its output); the service around them admits, journals
//! and answers.

use std::sync::Arc;

use keel_raft_store::{TaskAction, TaskOutput};

use super::HostService;
use crate::backup::progress::Progress;
use crate::backup::work::{snapshot_prefix, TaskWork};
use crate::host::engine::{EngineError, InstanceSpec};

impl HostService {
    /// Take a snapshot of the running instance (a primary, or a standby), verify it and
    /// store it in the zone's store the task names; on any failure nothing of it stays in
    /// the store.
    pub(super) async fn snapshot(
        &self,
        spec: InstanceSpec,
        work: Option<TaskWork>,
    ) -> Result<(String, TaskOutput), EngineError> {
        let Some(TaskWork::Snapshot { lineage, id, zone }) = work else {
            return Err(EngineError::Unavailable(
                "a snapshot task needs its lineage and id".into(),
            ));
        };
        let zone = zone.unwrap_or_else(|| self.config.zone.clone());
        let store = self
            .stores
            .zone(&zone)
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let dir = self.config.root.join("snapshots").join(&spec.id);
        let snap = self.engine.snapshot(&spec, &dir).await?;
        let prefix = snapshot_prefix(&lineage, &id);
        let uploading = std::time::Instant::now();
        let mut objects = Vec::new();
        let mut failure = None;
        for file in &snap.files {
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match store.put_file(&format!("{prefix}{name}"), file).await {
                Ok(o) => objects.push(o),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            for o in &objects {
                let _ = store.delete(&o.key).await;
            }
            return Err(EngineError::Command {
                what: "store the snapshot".into(),
                detail: e.to_string(),
            });
        }
        let bytes: u64 = objects.iter().map(|o| o.size).sum();
        let detail = format!(
            "snapshot verified and stored in {} ({bytes} bytes, WAL {} to {}): copy {:.1} s, verification {:.1} s, upload {:.1} s",
            store.name(),
            snap.start_lsn,
            snap.end_lsn,
            snap.copy_time.as_secs_f64(),
            snap.verify_time.as_secs_f64(),
            uploading.elapsed().as_secs_f64()
        );
        let output = TaskOutput::Snapshot {
            taken_at_ms: snap.copied_at_ms,
            timeline: snap.timeline,
            start_lsn: snap.start_lsn,
            end_lsn: snap.end_lsn,
            objects,
            zone,
        };
        Ok((detail, output))
    }

    /// Remove a snapshot's objects, and the WAL no remaining snapshot needs, from a
    /// zone's store (idempotent: a missing object counts as removed).
    pub(super) async fn delete_backup(&self, work: Option<TaskWork>) -> Result<String, EngineError> {
        let Some(TaskWork::DeleteBackup {
            zone,
            keys,
            control_keys,
            wal_before,
        }) = work
        else {
            return Err(EngineError::Unavailable(
                "a delete-backup task needs its objects".into(),
            ));
        };
        let unusable = |e: crate::backup::store::StoreError| EngineError::Unavailable(e.to_string());
        let mut stores = vec![(self.stores.zone(&zone).map_err(unusable)?, keys)];
        // The control store holds a copy only if the daily copy made one; its WAL copy goes too.
        if let Ok(control) = self.stores.control() {
            stores.push((control, control_keys));
        }
        let mut removed = (0, 0);
        for (store, keys) in stores {
            let (objects, wal) =
                Self::remove(&store, &keys, wal_before.as_ref())
                    .await
                    .map_err(|e| EngineError::Command {
                        what: "delete backup objects".into(),
                        detail: e.to_string(),
                    })?;
            removed.0 += objects;
            removed.1 += wal;
        }
        Ok(format!(
            "removed {} snapshot objects and {} WAL objects",
            removed.0, removed.1
        ))
    }

    /// Remove `keys` from `store`, and the WAL `wal_before` says no snapshot needs.
    async fn remove(
        store: &crate::backup::store::BackupStore,
        keys: &[String],
        wal_before: Option<&(String, u64)>,
    ) -> Result<(usize, usize), crate::backup::store::StoreError> {
        for key in keys {
            store.delete(key).await?;
        }
        let mut wal = 0;
        if let Some((lineage, before)) = wal_before {
            let prefix = crate::backup::work::wal_prefix(lineage);
            for key in store.list(&prefix).await? {
                let file = key.rsplit('/').next().unwrap_or(&key);
                let Some(obj) = crate::backup::wal::WalObject::parse(file) else {
                    continue;
                };
                let end = crate::backup::wal::segment_start(obj.name()).map(|s| s + crate::backup::wal::SEGMENT_BYTES);
                // History files go only with the whole lineage.
                let unneeded = match end {
                    Some(end) => end <= *before,
                    None => *before == u64::MAX,
                };
                if unneeded {
                    store.delete(&key).await?;
                    wal += 1;
                }
            }
        }
        Ok((keys.len(), wal))
    }

    /// Make the instance from a snapshot and the archive, replayed to the target.
    pub(super) async fn restore(
        &self,
        spec: &InstanceSpec,
        work: Option<TaskWork>,
        progress: &Arc<Progress>,
    ) -> Result<(String, TaskOutput), EngineError> {
        let Some(TaskWork::Restore {
            lineage,
            sources,
            choice,
            target,
        }) = work
        else {
            return Err(EngineError::Unavailable(
                "a restore task needs its snapshot and target".into(),
            ));
        };
        let restored = |detail: String| {
            let last_commit_ms = self.engine.last_replayed_commit(&spec.id);
            (detail, TaskOutput::Restored { last_commit_ms })
        };
        if self.engine.provisioned(&spec.id) {
            self.engine.start(spec).await?;
            return Ok(restored("already restored".into()));
        }
        let dir = self.config.root.join("restores").join(&spec.id);
        let (files, wal) = (dir.join("snapshot"), dir.join("wal"));
        // The first copy that fetches whole serves; each failure is kept for the record.
        let mut failures = Vec::new();
        let started = std::time::Instant::now();
        let mut fetched = None;
        for source in &sources {
            progress.phase(&format!("fetching and unpacking the backup from {}", source.copy));
            match self.fetch(spec, source, &lineage, &dir, progress).await {
                Ok(bytes) => {
                    fetched = Some((source, bytes));
                    break;
                }
                Err(e) => {
                    tracing::warn!(instance = %spec.id, copy = %source.copy, error = %e, "A copy of the backup could not be fetched; trying the next.");
                    failures.push(format!("{}: {e}", source.copy));
                }
            }
        }
        let Some((source, (base, logs))) = fetched else {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(EngineError::Command {
                what: "fetch the backup".into(),
                detail: failures.join("; "),
            });
        };
        let fetch_time = started.elapsed();
        progress.phase(&format!(
            "fetched and unpacked {:.1} MiB in {:.1} s; replaying WAL to the target and promoting",
            (base + logs) as f64 / (1 << 20) as f64,
            fetch_time.as_secs_f64()
        ));
        let replay = self
            .engine
            .finish_restore(spec, &files, &wal, &target, TaskAction::Restore.deadline())
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        replay?;
        let fallback = if failures.is_empty() {
            format!("chosen: {choice}")
        } else {
            format!("after {} failed: {}", failures.len(), failures.join("; "))
        };
        Ok(restored(format!(
            "restored from {} ({fallback}); {base} bytes of snapshot and {logs} bytes of WAL fetched and unpacked in {:.1}s, replayed and promoted in {:.1}s",
            source.copy,
            fetch_time.as_secs_f64(),
            (started.elapsed() - fetch_time).as_secs_f64()
        )))
    }

    /// Fetch one copy of the backup: the base tar streamed straight into the instance's
    /// empty volume (checked as it streams: a damaged object fails here, before anything
    /// starts), the rest of the snapshot and the WAL into `dir` (emptied first), all at
    /// once; bytes of snapshot and of WAL.
    pub(super) async fn fetch(
        &self,
        spec: &InstanceSpec,
        source: &crate::backup::work::RestoreFrom,
        lineage: &str,
        dir: &std::path::Path,
        progress: &Arc<Progress>,
    ) -> Result<(u64, u64), String> {
        let store = match source.tier {
            keel_raft_store::BackupTier::Zone => self.stores.zone(&source.zone),
            keel_raft_store::BackupTier::Control => self.stores.control(),
        }
        .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(dir);
        let (files, wal) = (dir.join("snapshot"), dir.join("wal"));
        for d in [&files, &wal] {
            std::fs::create_dir_all(d).map_err(|e| format!("cannot make {}: {e}", d.display()))?;
        }
        self.engine.chown(dir).map_err(|e| e.to_string())?;
        let data = self.engine.begin_restore(spec).await.map_err(|e| e.to_string())?;
        let is_base =
            |o: &&keel_raft_store::BackupObject| o.key.rsplit('/').next().is_some_and(|f| f.starts_with("base.tar"));
        let base_tar = source
            .objects
            .iter()
            .find(is_base)
            .ok_or("the snapshot has no base.tar")?;
        let others: Vec<_> = source.objects.iter().filter(|o| !is_base(o)).cloned().collect();
        progress.expect(base_tar.size);
        let unpack = async {
            let name = base_tar.key.rsplit('/').next().unwrap_or_default();
            let mut unpacker = self.engine.untar_stdin(name, &data).map_err(|e| e.to_string())?;
            let stdin = unpacker.stdin.take().ok_or("the unpacking has no input")?;
            let copied = store.copy_to(base_tar, stdin, &data, Some(progress)).await;
            let unpacked = unpacker.finish().await;
            // A damaged object is the story, whatever it made the unpacking do.
            copied.map_err(|e| e.to_string())?;
            unpacked.map_err(|e| format!("unpacking {name}: {e}"))?;
            Ok(base_tar.size)
        };
        let rest = async {
            crate::backup::fetch::snapshot(&store, &others, &files, progress)
                .await
                .map_err(|e| e.to_string())
        };
        let start = crate::backup::wal::parse_lsn(&source.start_lsn).unwrap_or(0);
        let logs = async {
            crate::backup::fetch::wal(&store, lineage, start, &wal, progress)
                .await
                .map_err(|e| e.to_string())
        };
        let (base, rest, logs) = tokio::try_join!(unpack, rest, logs)?;
        Ok((base + rest, logs))
    }

    /// Copy a snapshot and its lineage's WAL from a zone's store to the control store,
    /// every object checked on the way; objects already there (same name, same sum) stay.
    pub(super) async fn copy_backup(&self, work: Option<TaskWork>) -> Result<(String, TaskOutput), EngineError> {
        let Some(TaskWork::CopyBackup {
            zone,
            lineage,
            objects,
            start_lsn,
            wal_until_ms,
        }) = work
        else {
            return Err(EngineError::Unavailable("a copy-backup task needs its snapshot".into()));
        };
        let unusable = |e: crate::backup::store::StoreError| EngineError::Unavailable(e.to_string());
        let (from, to) = (
            self.stores.zone(&zone).map_err(unusable)?,
            self.stores.control().map_err(unusable)?,
        );
        let failed = |e: crate::backup::store::StoreError| EngineError::Command {
            what: "copy the backup".into(),
            detail: e.to_string(),
        };
        let scratch = self.config.root.join("copies");
        std::fs::create_dir_all(&scratch).map_err(|source| EngineError::Io {
            what: "make the copy directory".into(),
            source,
        })?;
        let tmp = scratch.join(format!("{}.part", uuid::Uuid::now_v7().simple()));
        let copy = |o: crate::backup::store::StoredObject| {
            let (from, to, tmp) = (from.clone(), to.clone(), tmp.clone());
            async move {
                from.get_file(&o, &tmp).await?;
                let stored = to.put_file(&o.key, &tmp).await?;
                let _ = std::fs::remove_file(&tmp);
                Ok::<_, crate::backup::store::StoreError>(stored)
            }
        };
        let mut copied = Vec::new();
        for o in objects {
            copied.push(copy(o).await.map_err(failed)?);
        }
        // The WAL from the snapshot's start on, as far as the zone store has it now.
        let prefix = crate::backup::work::wal_prefix(&lineage);
        let there: std::collections::BTreeSet<String> = to.list(&prefix).await.map_err(failed)?.into_iter().collect();
        let start = crate::backup::wal::parse_lsn(&start_lsn).unwrap_or(0);
        let mut wal = 0;
        for key in from.list(&prefix).await.map_err(failed)? {
            let file = key.rsplit('/').next().unwrap_or(&key).to_string();
            let Some(obj) = crate::backup::wal::WalObject::parse(&file) else {
                continue;
            };
            let needed = crate::backup::wal::segment_start(obj.name())
                .is_none_or(|s| s + crate::backup::wal::SEGMENT_BYTES > start);
            if !needed || there.contains(&key) {
                continue;
            }
            let sha256 = file.rsplit('.').next().unwrap_or_default().to_string();
            copy(crate::backup::store::StoredObject { key, size: 0, sha256 })
                .await
                .map_err(failed)?;
            wal += 1;
        }
        let detail = format!(
            "copied {} snapshot objects and {wal} WAL objects from {} to {}",
            copied.len(),
            from.name(),
            to.name()
        );
        Ok((
            detail,
            TaskOutput::ControlCopy {
                objects: copied,
                wal_until_ms,
            },
        ))
    }
}
