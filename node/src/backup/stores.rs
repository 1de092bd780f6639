//! The backup stores a host manager writes and reads: one per zone (the data
//! environment's, seed 004) and the control environment's. Configured on the host, so
//! credentials stay on the machines that use them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::store::{BackupStore, StoreConfig, StoreError};

/// `--backup-stores FILE`: `[zones.<zone>]` and `[control]` tables, each a [`StoreConfig`]
/// (`kind = "local"`, `dir = …`, or `kind = "s3"`, `endpoint`, `bucket`, `prefix`,
/// `credentials_file`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoresConfig {
    /// Each zone's store.
    #[serde(default)]
    pub zones: BTreeMap<String, StoreConfig>,
    /// The control environment's store.
    pub control: Option<StoreConfig>,
}

/// Where a host keeps and finds backups.
#[derive(Debug, Clone)]
pub enum Stores {
    /// No store configured: snapshots and the archive are refused with what to configure.
    None,
    /// Local directories under one root: `zone-<zone>/` and `control/` (keel dev, tests).
    Dir(PathBuf),
    /// As a configuration file says.
    Configured(StoresConfig),
}

impl Stores {
    /// Read a `--backup-stores` file.
    pub fn from_file(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|e| StoreError::Config(format!("{}: {e}", path.display())))?;
        let config: StoresConfig = toml::from_str(&text).map_err(|e| {
            StoreError::Config(format!(
                "{} must hold [zones.<zone>] and [control] tables (kind = \"local\" with dir, or kind = \"s3\" with endpoint, bucket, credentials_file): {e}",
                path.display()
            ))
        })?;
        Ok(Stores::Configured(config))
    }

    /// The store of `zone`.
    pub fn zone(&self, zone: &str) -> Result<BackupStore, StoreError> {
        match self {
            Stores::None => Err(StoreError::Config(
                "this host has no backup store; start it with --backup-dir DIR or --backup-stores FILE".into(),
            )),
            Stores::Dir(root) => BackupStore::open(&StoreConfig::Local {
                dir: root.join(format!("zone-{zone}")),
            }),
            Stores::Configured(c) => match c.zones.get(zone) {
                Some(config) => BackupStore::open(config),
                None => Err(StoreError::Config(format!(
                    "this host's backup stores name no store for zone {zone}; add [zones.{zone}] to its --backup-stores file"
                ))),
            },
        }
    }

    /// The control environment's store.
    pub fn control(&self) -> Result<BackupStore, StoreError> {
        match self {
            Stores::None => Err(StoreError::Config(
                "this host has no backup store; start it with --backup-dir DIR or --backup-stores FILE".into(),
            )),
            Stores::Dir(root) => BackupStore::open(&StoreConfig::Local { dir: root.join("control") }),
            Stores::Configured(c) => match &c.control {
                Some(config) => BackupStore::open(config),
                None => Err(StoreError::Config(
                    "this host's backup stores name no control-environment store; add [control] to its --backup-stores file"
                        .into(),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stores_file_names_zones_and_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stores.toml");
        std::fs::write(
            &file,
            format!(
                "[zones.a]\nkind = \"local\"\ndir = \"{}\"\n",
                dir.path().join("a").display()
            ),
        )
        .unwrap();
        let stores = Stores::from_file(&file).unwrap();
        assert!(stores.zone("a").is_ok());
        let err = stores.zone("b").unwrap_err().to_string();
        assert!(err.contains("[zones.b]"), "{err}");
        assert!(stores.control().unwrap_err().to_string().contains("[control]"));
        std::fs::write(&file, "[zone.a]\n").unwrap();
        assert!(Stores::from_file(&file)
            .unwrap_err()
            .to_string()
            .contains("[zones.<zone>]"));
        let none = Stores::None.zone("a").unwrap_err().to_string();
        assert!(none.contains("--backup-dir"), "{none}");
    }
}
