//! Fetching what a restore replays: a snapshot's objects and its lineage's archived WAL,
//! every object checked against its checksum (the catalog's for snapshots, the one in
//! its name for WAL), several at once.

use std::collections::BTreeMap;
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use keel_raft_store::BackupObject;

use super::store::{BackupStore, StoreError, StoredObject};
use super::wal::{self, WalObject};
use super::work::wal_prefix;

/// Objects downloaded at once.
const IN_FLIGHT: usize = 4;

/// Download `objects` into `dir` (each under its key's last part), verified.
pub async fn snapshot(store: &BackupStore, objects: &[BackupObject], dir: &Path) -> Result<u64, StoreError> {
    let downloads: Vec<_> = objects
        .iter()
        .map(|o| {
            let file = o.key.rsplit('/').next().unwrap_or(&o.key);
            let (store, o, path) = (store.clone(), o.clone(), dir.join(file));
            async move { store.get_file(&o, &path).await.map(|()| o.size) }
        })
        .collect();
    futures::stream::iter(downloads)
        .buffer_unordered(IN_FLIGHT)
        .try_fold(0, |sum, n| async move { Ok(sum + n) })
        .await
}

/// Download `lineage`'s archived WAL from the segment holding `start_lsn` on into `dir`,
/// as the files PostgreSQL's restore_command asks for: whole segments, the segment being
/// written rebuilt from its stretches and padded to a whole segment (replay stops where
/// the data does), and timeline history files. Returns the bytes fetched.
pub async fn wal(store: &BackupStore, lineage: &str, start_lsn: u64, dir: &Path) -> Result<u64, StoreError> {
    let prefix = wal_prefix(lineage);
    let keys = store.list(&prefix).await?;
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
    let downloads: Vec<_> = whole
        .values()
        .map(|o| {
            let (store, obj, path) = (store.clone(), object(o), dir.join(o.name()));
            async move {
                store.get_file(&obj, &path).await?;
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
            store.get_file(&object(&part), &tmp).await?;
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
