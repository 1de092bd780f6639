//! Database engines a host manager runs. PostgreSQL is the first; a second
//! engine implements the same operations.

pub mod fencing;
pub mod postgres;
pub mod replication;
pub mod restore;
pub mod snapshot;
pub mod unpack;
pub mod verify;

use serde::{Deserialize, Serialize};

/// Engine settings derived from an instance class (see `crate::classes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// shared_buffers, MiB.
    pub shared_buffers_mb: u32,
    /// max_connections.
    pub max_connections: u32,
    /// work_mem, MiB.
    pub work_mem_mb: u32,
    /// effective_cache_size, MiB.
    pub effective_cache_size_mb: u32,
}

/// Everything an engine needs to know about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Instance id (names the volume directory).
    pub id: String,
    /// Address it listens on (the host's address).
    pub listen_addr: String,
    /// Port, fixed for the database's life.
    pub port: u16,
    /// Engine settings.
    pub settings: Settings,
    /// Allocated storage.
    pub storage_gib: u32,
    /// Master user name.
    pub master_user: String,
    /// The master password as a SCRAM-SHA-256 verifier: the clear password never leaves the API node.
    pub master_verifier: String,
    /// Client networks allowed to connect (from the database's security groups);
    /// `None` for specs from before security groups: any address.
    #[serde(default)]
    pub allowed_cidrs: Option<Vec<String>>,
    /// The lineage its WAL is archived under, when the database keeps backups.
    #[serde(default)]
    pub backup_lineage: Option<String>,
    /// Commits wait until their WAL is in the archive's store (`--backup-rpo zero`).
    #[serde(default)]
    pub archive_sync: bool,
    /// Its part in a Multi-AZ database's replication, if it has one.
    #[serde(default)]
    pub replication: Option<ReplicationSpec>,
}

/// An instance's part in its database's streaming replication. Standbys stream over
/// mutual TLS with their host's Keel certificate, as the `keel_replication` role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationSpec {
    /// On a primary: the followers (standby and read replicas, instance ids) it keeps a slot for.
    pub standbys: Vec<String>,
    /// On a primary: the standby every commit waits for.
    pub sync_standby: Option<String>,
    /// On a standby or read replica: the primary it streams from.
    pub upstream: Option<Upstream>,
    /// On a follower: clients may read from it (a read replica); a standby admits none.
    pub readable: bool,
}

/// Where a standby streams from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// The primary's host address.
    pub addr: String,
    /// The primary's port.
    pub port: u16,
}

/// The replication slot, and the name the primary knows it by, of standby `instance`.
pub fn standby_name(instance: &str) -> String {
    // A slot name holds at most 63 lowercase letters, digits and '_'.
    let id: String = instance.replace('-', "_").to_lowercase().chars().take(58).collect();
    format!("keel_{id}")
}

/// `text` as a canonical CIDR (`10.1.2.3/8` → `10.0.0.0/8`; a bare address is a /32 or
/// /128), or why it is not one.
pub fn canonical_cidr(text: &str) -> Result<String, String> {
    let net = match text.parse::<ipnet::IpNet>() {
        Ok(n) => n,
        Err(_) => text
            .parse::<std::net::IpAddr>()
            .map(ipnet::IpNet::from)
            .map_err(|_| format!("{text:?} is not a CIDR such as 10.0.0.0/8 or an IP address"))?,
    };
    Ok(net.trunc().to_string())
}

/// A spec field the host manager refuses to write into configuration or SQL.
#[derive(Debug, thiserror::Error)]
#[error("instance spec field {field} is not valid: {why}")]
pub struct InvalidSpec {
    /// Which field.
    pub field: &'static str,
    /// What is wrong with it.
    pub why: String,
}

/// Master user names the engine keeps for itself.
pub fn reserved_user(name: &str) -> bool {
    RESERVED_USERS.contains(&name) || name.starts_with("pg_")
}

/// Role names PostgreSQL refuses even quoted, and `postgres`, the engine's own.
pub const RESERVED_USERS: [&str; 6] = [
    "postgres",
    "public",
    "none",
    "current_user",
    "session_user",
    "current_role",
];

impl InstanceSpec {
    /// The checks of [`InstanceSpec::validate`], and the master user is not a reserved
    /// name: what a new instance's role is made from (instances made by an older version
    /// may have a reserved master user, and are still configured and restarted).
    pub fn validate_new(&self) -> Result<(), InvalidSpec> {
        self.validate()?;
        if reserved_user(&self.master_user) {
            return Err(InvalidSpec {
                field: "master_user",
                why: "the name is reserved (postgres, pg_*)".into(),
            });
        }
        Ok(())
    }

    /// Check every field a host writes into a file or SQL: ids are file-name safe,
    /// the address is an IP address, the user is a plain identifier, the verifier has the
    /// SCRAM-SHA-256 form, and nothing holds a control character.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let bad = |field, why: &str| {
            Err(InvalidSpec {
                field,
                why: why.to_string(),
            })
        };
        if !crate::host::journal::valid_id(&self.id) {
            return bad("id", "use 1-128 letters, digits, '-' or '_'");
        }
        if self.listen_addr.parse::<std::net::IpAddr>().is_err() {
            return bad("listen_addr", "must be an IP address");
        }
        if self.port < 1024 {
            return bad("port", "must be 1024-65535");
        }
        let user = self.master_user.as_bytes();
        let identifier = !user.is_empty()
            && user.len() <= 63
            && (user[0].is_ascii_lowercase() || user[0] == b'_')
            && user
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        if !identifier {
            return bad(
                "master_user",
                "use 1-63 lowercase letters, digits or '_', not starting with a digit",
            );
        }
        let lineage_ok = |l: &str| {
            !l.is_empty() && l.len() <= 200 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if self.backup_lineage.as_deref().is_some_and(|l| !lineage_ok(l)) {
            return bad("backup_lineage", "use 1-200 letters, digits, '.', '-' or '_'");
        }
        for cidr in self.allowed_cidrs.iter().flatten() {
            if canonical_cidr(cidr).as_deref() != Ok(cidr.as_str()) {
                return bad("allowed_cidrs", "each must be a canonical CIDR such as 10.0.0.0/8");
            }
        }
        if !scram_verifier(&self.master_verifier) {
            return bad(
                "master_verifier",
                "must be SCRAM-SHA-256$<iterations>:<salt>$<stored key>:<server key> in base64",
            );
        }
        if let Some(r) = &self.replication {
            let ids = r.standbys.iter().chain(r.sync_standby.iter());
            if ids.clone().any(|id| !crate::host::journal::valid_id(id)) {
                return bad("replication", "standby ids use 1-128 letters, digits, '-' or '_'");
            }
            if r.upstream
                .as_ref()
                .is_some_and(|u| u.addr.parse::<std::net::IpAddr>().is_err())
            {
                return bad("replication", "the upstream address must be an IP address");
            }
        }
        Ok(())
    }
}

/// Whether `v` has the form PostgreSQL stores a SCRAM-SHA-256 verifier in.
fn scram_verifier(v: &str) -> bool {
    let base64 = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    let Some(rest) = v.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((iter_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let (Some((iterations, salt)), Some((stored, server))) = (iter_salt.split_once(':'), keys.split_once(':')) else {
        return false;
    };
    !iterations.is_empty()
        && iterations.len() <= 9
        && iterations.bytes().all(|b| b.is_ascii_digit())
        && base64(salt)
        && base64(stored)
        && base64(server)
}

/// What an engine observed of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The engine process is running.
    pub running: bool,
    /// A SQL connection succeeded.
    pub accepting: bool,
    /// Bytes the volume uses.
    pub used_bytes: u64,
    /// What went wrong, if anything.
    pub problem: Option<String>,
    /// On a primary with standbys: each as it sees it (read on the probe's connection).
    pub standbys: Vec<(String, replication::StandbyStatus)>,
    /// On a standby: what it sees of its primary (read on the probe's connection).
    pub upstream: Option<replication::UpstreamStatus>,
}

/// An engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's binaries or OS user are missing.
    #[error("engine not usable on this host: {0}")]
    Unavailable(String),
    /// A command ran and failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// Which step.
        what: String,
        /// Its output or error.
        detail: String,
    },
    /// The instance was replaced by a recovery: it never starts again.
    #[error("instance {id} was fenced at generation {generation} (a recovery replaced it); it never starts again, only a destroy removes it")]
    Fenced {
        /// The instance.
        id: String,
        /// The database's generation when it was fenced.
        generation: u64,
    },
    /// File system trouble.
    #[error("{what}: {source}")]
    Io {
        /// Which step.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl EngineError {
    /// Whether retrying the same task may succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, EngineError::Unavailable(_) | EngineError::Fenced { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> InstanceSpec {
        InstanceSpec {
            id: "i1".into(),
            listen_addr: "127.0.1.1".into(),
            port: 5432,
            settings: Settings {
                shared_buffers_mb: 128,
                max_connections: 50,
                work_mem_mb: 4,
                effective_cache_size_mb: 512,
            },
            storage_gib: 10,
            master_user: "app".into(),
            master_verifier: postgres_protocol::password::scram_sha_256(b"change me please"),
            allowed_cidrs: Some(vec!["10.0.0.0/8".into()]),
            backup_lineage: None,
            archive_sync: false,
            replication: None,
        }
    }

    #[test]
    fn a_real_verifier_and_spec_pass() {
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn every_injection_is_refused() {
        type Inject = Box<dyn Fn(&mut InstanceSpec)>;
        let cases: Vec<(&str, Inject)> = vec![
            (
                "listen_addr",
                Box::new(|s| s.listen_addr = "127.0.0.1'\nssl = off".into()),
            ),
            ("listen_addr", Box::new(|s| s.listen_addr = "*".into())),
            (
                "allowed_cidrs",
                Box::new(|s| s.allowed_cidrs = Some(vec!["0.0.0.0/0 trust\nhost all all 0.0.0.0/0".into()])),
            ),
            (
                "allowed_cidrs",
                Box::new(|s| s.allowed_cidrs = Some(vec!["10.1.2.3/8".into()])),
            ),
            (
                "master_user",
                Box::new(|s| s.master_user = "app\"; DROP ROLE x; --".into()),
            ),
            ("master_user", Box::new(|s| s.master_user = "postgres".into())),
            ("master_user", Box::new(|s| s.master_user = "pg_monitor".into())),
            (
                "master_verifier",
                Box::new(|s| s.master_verifier = "x'; ALTER ROLE app SUPERUSER; --".into()),
            ),
            (
                "master_verifier",
                Box::new(|s| s.master_verifier.push_str("\nALTER ROLE app SUPERUSER;")),
            ),
            ("id", Box::new(|s| s.id = "../other".into())),
            ("port", Box::new(|s| s.port = 22)),
            (
                "backup_lineage",
                Box::new(|s| s.backup_lineage = Some("../../etc".into())),
            ),
        ];
        for (field, change) in cases {
            let mut s = spec();
            change(&mut s);
            let err = s.validate_new().expect_err(field);
            assert_eq!(err.field, field, "{s:?}");
        }
    }
}
