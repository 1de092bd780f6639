//! The host manager's durable memory: task outcomes and fencing tokens.
//!
//! Plain files under `<root>/journal`, each written to a temporary name,
//! fsynced and renamed, so a crash leaves either the old or the new record.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Outcome {
    /// It did what it was asked.
    Succeeded {
        /// What it observed.
        detail: String,
        /// What it produced for the catalog.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<keel_raft_store::TaskOutput>,
    },
    /// It could not.
    Failed {
        /// Why.
        detail: String,
        /// Whether the same task may succeed if sent again.
        retryable: bool,
    },
}

/// A call carried an older fencing token than this host has seen for the instance.
#[derive(Debug, thiserror::Error)]
#[error(
    "fencing token {given} is older than token {seen} already seen for instance {instance}; newer leader services are in charge"
)]
pub struct StaleFence {
    /// The instance.
    pub instance: String,
    /// Highest token seen.
    pub seen: u64,
    /// Token the call carried.
    pub given: u64,
}

/// Task outcomes and fencing tokens, on disk.
pub struct Journal {
    tasks: PathBuf,
    fences: PathBuf,
    fence_lock: Mutex<HashMap<String, u64>>,
}

/// Ids become file names: keep them to a safe alphabet.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Journal {
    /// Open (or create) the journal under `root`.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let tasks = root.join("journal/tasks");
        let fences = root.join("journal/fences");
        std::fs::create_dir_all(&tasks)?;
        std::fs::create_dir_all(&fences)?;
        Ok(Self {
            tasks,
            fences,
            fence_lock: Mutex::new(HashMap::new()),
        })
    }

    /// The recorded outcome of `task_id`, if it finished.
    pub fn outcome(&self, task_id: &str) -> Option<Outcome> {
        let bytes = std::fs::read(self.tasks.join(task_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record how `task_id` ended, durably.
    pub fn record(&self, task_id: &str, outcome: &Outcome) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(outcome).map_err(std::io::Error::other)?;
        write_atomically(&self.tasks.join(task_id), &bytes)
    }

    /// Admit a call for `instance` carrying fencing token `fence`: refuse older ones, persist newer ones.
    pub fn admit(&self, instance: &str, fence: u64) -> Result<(), FenceError> {
        let mut seen = self.fence_lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.fences.join(instance);
        let current = match seen.get(instance) {
            Some(t) => *t,
            None => std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        };
        if fence < current {
            return Err(FenceError::Stale(StaleFence {
                instance: instance.to_string(),
                seen: current,
                given: fence,
            }));
        }
        if fence > current {
            write_atomically(&path, fence.to_string().as_bytes()).map_err(FenceError::Io)?;
        }
        seen.insert(instance.to_string(), fence);
        Ok(())
    }
}

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Older than what this host has seen.
    #[error(transparent)]
    Stale(StaleFence),
    /// The token could not be persisted.
    #[error("cannot persist the fencing token: {0}")]
    Io(std::io::Error),
    /// The instance was replaced by a recovery.
    #[error("instance {instance} was fenced at generation {generation} (a recovery replaced it); this call carries generation {given}: only a destroy from generation {generation} on is accepted")]
    Fenced {
        /// The instance.
        instance: String,
        /// Its fence.
        generation: u64,
        /// The call's generation.
        given: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_fences_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let ok = Outcome::Succeeded {
            detail: "done".into(),
            output: None,
        };
        j.record("t1", &ok).unwrap();
        j.admit("i1", 5).unwrap();
        assert!(j.admit("i1", 5).is_ok(), "the same token again is fine");
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.outcome("t1"), Some(ok));
        assert_eq!(j.outcome("t2"), None);
        assert!(matches!(
            j.admit("i1", 4),
            Err(FenceError::Stale(StaleFence { seen: 5, given: 4, .. }))
        ));
        assert!(j.admit("i1", 6).is_ok());
        assert!(j.admit("i2", 1).is_ok(), "tokens are per instance");
    }

    #[test]
    fn ids_are_file_name_safe() {
        assert!(valid_id("0191-abc_def"));
        for bad in ["", "../x", "a/b", "a.b", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
