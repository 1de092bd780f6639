//! Instance classes: the documented table of sizes a database can be created with.

use crate::host::engine::Settings;

/// One instance class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// Name used in the API.
    pub name: &'static str,
    /// Engine settings it stands for.
    pub shared_buffers_mb: u32,
    /// max_connections.
    pub max_connections: u32,
    /// work_mem in MiB.
    pub work_mem_mb: u32,
    /// effective_cache_size in MiB.
    pub effective_cache_size_mb: u32,
}

/// Every class, smallest first. README's "Instance classes" table mirrors this.
pub const CLASSES: [Class; 4] = [
    Class {
        name: "micro",
        shared_buffers_mb: 32,
        max_connections: 20,
        work_mem_mb: 2,
        effective_cache_size_mb: 128,
    },
    Class {
        name: "small",
        shared_buffers_mb: 128,
        max_connections: 50,
        work_mem_mb: 4,
        effective_cache_size_mb: 512,
    },
    Class {
        name: "medium",
        shared_buffers_mb: 512,
        max_connections: 100,
        work_mem_mb: 8,
        effective_cache_size_mb: 2048,
    },
    Class {
        name: "large",
        shared_buffers_mb: 2048,
        max_connections: 200,
        work_mem_mb: 16,
        effective_cache_size_mb: 6144,
    },
];

/// The class called `name`.
pub fn lookup(name: &str) -> Option<&'static Class> {
    CLASSES.iter().find(|c| c.name == name)
}

impl Class {
    /// The engine settings of this class.
    pub fn settings(&self) -> Settings {
        Settings {
            shared_buffers_mb: self.shared_buffers_mb,
            max_connections: self.max_connections,
            work_mem_mb: self.work_mem_mb,
            effective_cache_size_mb: self.effective_cache_size_mb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_grow_and_are_found_by_name() {
        assert!(CLASSES
            .windows(2)
            .all(|w| w[0].shared_buffers_mb < w[1].shared_buffers_mb));
        assert_eq!(lookup("small").unwrap().max_connections, 50);
        assert!(lookup("huge").is_none());
    }
}
