//! Fetching what a restore replays: a snapshot's objects and its lineage's archived WAL,
//! every object checked against its checksum (the catalog's for snapshots, the one in
//! its name for WAL), several at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use keel_raft_store::BackupObject;

use super::progress::Progress;
use super::store::{BackupStore, StoreError, StoredObject};
use super::wal::{self, WalObject};
use super::work::wal_prefix;

/// Objects downloaded at once.
const IN_FLIGHT: usize = 4;

/// Download `objects` into `dir` (each under its key's last part), verified, counting
/// into `progress`.
pub async fn snapshot(
    store: &BackupStore,
    objects: &[BackupObject],
    dir: &Path,
    progress: &Arc<Progress>,
) -> Result<u64, StoreError> {
    progress.expect(objects.iter().map(|o| o.size).sum());
    let downloads: Vec<_> = objects
        .iter()
        .map(|o| {
            let file = o.key.rsplit('/').next().unwrap_or(&o.key);
            let (store, o, path, progress) = (store.clone(), o.clone(), dir.join(file), progress.clone());
            async move {
                store
                    .get_file_counted(&o, &path, Some(&progress))
                    .await
                    .map(|()| o.size)
            }
        })
        .collect();
    futures::stream::iter(downloads)
        .buffer_unordered(IN_FLIGHT)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await
}

/// How far `lineage`'s archive in `store` reaches: the end of its furthest whole segment
/// or uploaded stretch.
pub async fn reach(store: &BackupStore, lineage: &str) -> Result<u64, StoreError> {
    let keys = store.list(&wal_prefix(lineage)).await?;
    Ok(keys
        .iter()
        .filter_map(|k| WalObject::parse(k.rsplit('/').next().unwrap_or(k)))
        .filter_map(|o| match &o {
            WalObject::Segment { name, .. } => wal::segment_start(name).map(|s| s + wal::SEGMENT_BYTES),
            WalObject::Part { name, end, .. } => wal::segment_start(name).map(|s| s + end),
            WalObject::History { .. } => None,
        })
        .max()
        .unwrap_or(0))
}

/// Download `lineage`'s archived WAL from the segment holding `start_lsn` on into `dir`,
/// as the files PostgreSQL's restore_command asks for: whole segments, the segment being
/// written rebuilt from its stretches and padded to a whole segment (replay stops where
/// the data does), and timeline history files. Returns the bytes fetched.
pub async fn wal(
    store: &BackupStore,
    lineage: &str,
    start_lsn: u64,
    dir: &Path,
    progress: &Arc<Progress>,
) -> Result<u64, StoreError> {
    let prefix = wal_prefix(lineage);
    let listed = store.list_sized(&prefix).await?;
    let sizes: BTreeMap<&str, u64> = listed.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    let keys: Vec<String> = listed.iter().map(|(k, _)| k.clone()).collect();
    let mut whole: BTreeMap<String, WalObject> = BTreeMap::new();
    let mut parts: BTreeMap<String, Vec<WalObject>> = BTreeMap::new();
    for key in &keys {
        let Some(obj) = WalObject::parse(key.rsplit('/').next().unwrap_or(key)) else {
            continue;
        };
        match &obj {
            WalObject::Part { name, .. } => {
                if wal::segment_start(name).is_some_and(|s| s + wal::SEGMENT_BYTES > start_lsn) {
                    parts.entry(name.clone()).or_default().push(obj);
                }
            }
            WalObject::Segment { name, .. } => {
                if wal::segment_start(name).is_some_and(|s| s + wal::SEGMENT_BYTES > start_lsn) {
                    whole.insert(name.clone(), obj);
                }
            }
            WalObject::History { name, .. } => {
                whole.insert(name.clone(), obj);
            }
        }
    }
    let object = |o: &WalObject| StoredObject {
        key: format!("{prefix}{}", o.file_name()),
        size: 0,
        sha256: match o {
            WalObject::Segment { sha256, .. } | WalObject::Part { sha256, .. } | WalObject::History { sha256, .. } => {
                sha256.clone()
            }
        },
    };
    let stretches = parts
        .iter()
        .filter(|(name, _)| !whole.contains_key(*name))
        .flat_map(|(_, p)| p);
    let wanted = whole.values().chain(stretches).map(|o| object(o).key);
    progress.expect(wanted.filter_map(|k| sizes.get(k.as_str())).sum());
    let downloads: Vec<_> = whole
        .values()
        .map(|o| {
            let (store, obj, path, progress) = (store.clone(), object(o), dir.join(o.name()), progress.clone());
            async move {
                store.get_file_counted(&obj, &path, Some(&progress)).await?;
                Ok::<u64, StoreError>(std::fs::metadata(&path).map_or(0, |m| m.len()))
            }
        })
        .collect();
    let mut fetched: u64 = futures::stream::iter(downloads)
        .buffer_unordered(IN_FLIGHT)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await?;
    for (name, stretches) in parts {
        if whole.contains_key(&name) {
            continue;
        }
        let mut bytes = Vec::with_capacity(wal::SEGMENT_BYTES as usize);
        for part in wal::part_chain(&stretches) {
            let tmp = dir.join(format!("{name}.stretch"));
            store.get_file_counted(&object(&part), &tmp, Some(progress)).await?;
            let data = std::fs::read(&tmp).map_err(|source| StoreError::Io {
                path: tmp.clone(),
                source,
            })?;
            let _ = std::fs::remove_file(&tmp);
            if let WalObject::Part { start, .. } = part {
                bytes.truncate(start as usize);
            }
            bytes.extend_from_slice(&data);
        }
        fetched += bytes.len() as u64;
        bytes.resize(wal::SEGMENT_BYTES as usize, 0);
        let path = dir.join(&name);
        std::fs::write(&path, bytes).map_err(|source| StoreError::Io { path, source })?;
    }
    Ok(fetched)
}
