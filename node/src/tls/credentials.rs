//! A process's TLS material (trust bundle, certificate, key), loaded from disk and
//! reloaded when the files change, so rotation needs no restart.
//!
//! Handshakes read the material in force at that moment; established connections keep
//! what they were authenticated with. A change that does not load (a certificate
//! written before its key, a garbled file) is reported and retried on the next check,
//! and the previous material stays in force meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use tokio_util::sync::CancellationToken;

use super::ca::{certificates, CA_FILE, CERT_FILE, KEY_FILE};
use super::identity::Identity;
use super::TlsError;

/// Where a process's three files are.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsFiles {
    /// Trust bundle (PEM, one or more CA certificates).
    pub ca: PathBuf,
    /// Own certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Own private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in `dir` (what `keel ca issue --out dir` writes).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join(CA_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }

    /// What the files look like now (to notice a change without reading them).
    fn stamp(&self) -> Vec<Option<(SystemTime, u64, u64)>> {
        use std::os::unix::fs::MetadataExt;
        [&self.ca, &self.cert, &self.key]
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()))
            })
            .collect()
    }
}

/// The provider every Keel TLS configuration uses (ring; see the workspace manifest),
/// built once: the verifiers consult it on every handshake.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// One consistent load of the three files.
pub struct Material {
    /// Who the certificate says this process is (`None` for an API certificate).
    pub identity: Option<Identity>,
    /// Certificate chain and key, for handshakes.
    pub key: Arc<CertifiedKey>,
    /// The trusted CAs.
    pub roots: Arc<RootCertStore>,
    /// Chain checks of client certificates against `roots`.
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// SHA-256 of the leaf certificate, hex (what `/v1/node` shows).
    pub fingerprint: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("identity", &self.identity)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Read and check the files: the key matches the certificate, the bundle parses.
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let provider = provider();
        let chain = certificates(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Pem {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
        let certified = CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| TlsError::Pem {
            path: files.key.clone(),
            reason: format!("the key does not belong to {}: {e}", files.cert.display()),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certificates(&files.ca)? {
            roots.add(ca).map_err(|e| TlsError::Pem {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| TlsError::Pem {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
        use sha2::Digest;
        let fingerprint = crate::hex::encode(&sha2::Sha256::digest(chain[0].as_ref()));
        Ok(Self {
            identity: Identity::of_certificate(&chain[0]).ok(),
            key: Arc::new(certified),
            roots,
            client_verifier,
            fingerprint,
        })
    }
}

/// A process's material, swapped in place when its files change.
pub struct Credentials {
    files: TlsFiles,
    current: ArcSwap<Material>,
    stamp: std::sync::Mutex<Vec<Option<(SystemTime, u64, u64)>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("files", self.files()).finish()
    }
}

impl Credentials {
    /// Load `files` now (a process without valid material does not start).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = files.stamp();
        let material = Material::load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::from_pointee(material),
            stamp: std::sync::Mutex::new(stamp),
        }))
    }

    /// The material in force.
    pub fn current(&self) -> Arc<Material> {
        self.current.load_full()
    }

    /// The files this material comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reload if any file changed since the last good load; `Ok(true)` when it did.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = self.files.stamp();
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if *last == stamp {
            return Ok(false);
        }
        let material = Material::load(&self.files)?;
        let old = self.current();
        if let (Some(was), Some(now)) = (&old.identity, &material.identity) {
            if was != now {
                return Err(TlsError::Identity(format!(
                    "the new certificate at {} is for {now}, but this process is {was}; keeping the old one",
                    self.files.cert.display()
                )));
            }
        }
        self.current.store(Arc::new(material));
        *last = stamp;
        Ok(true)
    }

    /// Check the files every `every` until `shutdown`, logging each reload or failure.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    failing = false;
                    tracing::info!(cert = %self.files.cert.display(), fingerprint = %self.current().fingerprint, "Reloaded the TLS certificate and trust bundle.");
                }
                Ok(false) => {}
                Err(e) => {
                    // Once per failure, not once per check.
                    if !failing {
                        tracing::warn!(error = %e, "The changed TLS files do not load; the previous ones stay in force until they do.");
                    }
                    failing = true;
                }
            }
        }
    }
}
