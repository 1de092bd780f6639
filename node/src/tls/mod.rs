//! TLS: the Keel CA, each process's reloadable certificate, mutual TLS on internal links.

pub mod api;
pub mod ca;
pub mod credentials;
pub mod identity;
pub mod link;

use std::path::PathBuf;

/// Why TLS material could not be made, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate's identity is missing, malformed or not the expected one.
    #[error("{0}")]
    Identity(String),
    /// A certificate could not be issued.
    #[error("cannot issue the certificate: {0}")]
    Issue(String),
}

/// TLS material for in-process tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::ca::{CaDir, Subject};
    use super::credentials::{Credentials, TlsFiles};
    use super::identity::Identity;

    /// A fresh CA for `cluster` and the credentials it issues to `who` (keep the directory).
    pub fn credentials(cluster: &str, who: Identity) -> (tempfile::TempDir, Arc<Credentials>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaDir::at(&dir.path().join("ca"));
        ca.init(cluster).unwrap();
        let out = dir.path().join("issued");
        ca.issue(&Subject::Member(who), 1, &out).unwrap();
        let creds = Credentials::load(TlsFiles::in_dir(&out)).unwrap();
        (dir, creds)
    }
}
