//! The Keel CA: a directory holding the signing key, its certificate and the trust bundle,
//! and the certificates it issues to control nodes, host managers and the public API.
//!
//! Layout of a CA directory: `cluster` (the cluster name its identities carry),
//! `ca.key` (signing key, 0600), `ca.crt` (its certificate), `bundle.pem` (every CA
//! certificate to trust: the current one, and while a rotation is under way the
//! previous one too). An issued directory holds `ca.pem` (the bundle), `cert.pem` and
//! `key.pem` (0600) — the three files every process reads and reloads.
//!
//! Rotation without downtime: `rotate` makes a new signing key and trusts both, the
//! bundle is spread to every process, then every certificate is re-issued, then
//! `finish_rotation` drops the old CA from the bundle, which is spread again.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::identity::Identity;
use super::TlsError;

/// The trust bundle's name in an issued directory.
pub const CA_FILE: &str = "ca.pem";
/// The certificate's name in an issued directory.
pub const CERT_FILE: &str = "cert.pem";
/// The private key's name in an issued directory.
pub const KEY_FILE: &str = "key.pem";

const CA_VALID_DAYS: i64 = 3650;
/// Default lifetime of an issued certificate.
pub const DEFAULT_VALID_DAYS: u32 = 365;

/// What a certificate is for.
#[derive(Debug, Clone)]
pub enum Subject {
    /// An internal link's end (control node or host manager), named by its identity.
    Member(Identity),
    /// The public API, valid for these DNS names and IP addresses.
    Api(Vec<String>),
}

fn io(path: &Path, e: std::io::Error) -> TlsError {
    TlsError::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| io(path, e))
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    crate::files::replace(path, text.as_bytes(), mode).map_err(|e| io(path, e))
}

fn rc(e: rcgen::Error) -> TlsError {
    TlsError::Issue(e.to_string())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive integer
    SerialNumber::from_slice(&bytes)
}

/// A CA directory.
pub struct CaDir {
    dir: PathBuf,
}

impl CaDir {
    /// The CA directory at `dir` (not read until used).
    pub fn at(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether a CA was made here.
    pub fn exists(&self) -> bool {
        self.path("ca.key").exists()
    }

    /// The cluster this CA's identities belong to.
    pub fn cluster(&self) -> Result<String, TlsError> {
        Ok(read(&self.path("cluster"))?.trim().to_string())
    }

    /// Make a new CA for `cluster`; refuses to overwrite one.
    pub fn init(&self, cluster: &str) -> Result<(), TlsError> {
        Identity::node(cluster, 1).validate()?;
        if self.exists() {
            return Err(TlsError::Issue(format!(
                "{} already holds a CA; use `keel ca rotate` to replace its key",
                self.dir.display()
            )));
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        write(&self.path("cluster"), &format!("{cluster}\n"), 0o644)?;
        let (cert, key) = self.new_signing_pair(cluster)?;
        write(&self.path("ca.key"), &key, 0o600)?;
        write(&self.path("ca.crt"), &cert, 0o644)?;
        write(&self.path("bundle.pem"), &cert, 0o644)
    }

    fn new_signing_pair(&self, cluster: &str) -> Result<(String, String), TlsError> {
        let key = KeyPair::generate().map_err(rc)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Keel");
        // Distinct per key, so a rotation's two CAs are told apart in the bundle.
        dn.push(
            DnType::CommonName,
            format!("Keel CA {cluster} {}", &uuid::Uuid::now_v7().simple().to_string()[..12]),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(CA_VALID_DAYS);
        let cert = params.self_signed(&key).map_err(rc)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Start a rotation: a new signing key, trusted together with the current one.
    pub fn rotate(&self) -> Result<(), TlsError> {
        let cluster = self.cluster()?;
        let old = read(&self.path("ca.crt"))?;
        let (cert, key) = self.new_signing_pair(&cluster)?;
        // The bundle first, so a crash part-way never leaves a signing key nothing trusts.
        write(&self.path("bundle.pem"), &format!("{cert}{old}"), 0o644)?;
        write(&self.path("ca.key"), &key, 0o600)?;
        write(&self.path("ca.crt"), &cert, 0o644)
    }

    /// End a rotation: trust only the current signing certificate.
    pub fn finish_rotation(&self) -> Result<(), TlsError> {
        let cert = read(&self.path("ca.crt"))?;
        write(&self.path("bundle.pem"), &cert, 0o644)
    }

    /// The trust bundle (PEM).
    pub fn bundle(&self) -> Result<String, TlsError> {
        read(&self.path("bundle.pem"))
    }

    /// Issue a certificate for `subject`, valid `days`, into `out` (ca.pem, cert.pem, key.pem).
    pub fn issue(&self, subject: &Subject, days: u32, out: &Path) -> Result<(), TlsError> {
        let cluster = self.cluster()?;
        let ca_key = KeyPair::from_pem(&read(&self.path("ca.key"))?).map_err(rc)?;
        let ca_cert = CertificateParams::from_ca_cert_pem(&read(&self.path("ca.crt"))?)
            .map_err(rc)?
            .self_signed(&ca_key)
            .map_err(rc)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Keel");
        match subject {
            Subject::Member(id) => {
                if id.cluster != cluster {
                    return Err(TlsError::Issue(format!(
                        "this CA is cluster {cluster}'s; it cannot issue {id}"
                    )));
                }
                id.validate()?;
                dn.push(DnType::CommonName, id.uri());
                let uri = id.uri().try_into().map_err(rc)?;
                params.subject_alt_names = vec![SanType::URI(uri)];
                params.extended_key_usages =
                    vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            }
            Subject::Api(names) => {
                if names.is_empty() {
                    return Err(TlsError::Issue(
                        "an API certificate needs at least one DNS name or IP address".into(),
                    ));
                }
                dn.push(DnType::CommonName, format!("Keel API {cluster}"));
                params.subject_alt_names = names
                    .iter()
                    .map(|n| match n.parse::<std::net::IpAddr>() {
                        Ok(ip) => Ok(SanType::IpAddress(ip)),
                        Err(_) => n.clone().try_into().map(SanType::DnsName).map_err(rc),
                    })
                    .collect::<Result<_, _>>()?;
                params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
        }
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(i64::from(days.max(1)));
        let key = KeyPair::generate().map_err(rc)?;
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(rc)?;
        std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
        // Trust first, then key before certificate: a reader that sees a new certificate
        // with the old key refuses the pair and keeps what it had until both match.
        write(&out.join(CA_FILE), &self.bundle()?, 0o644)?;
        write(&out.join(KEY_FILE), &key.serialize_pem(), 0o600)?;
        write(&out.join(CERT_FILE), &cert.pem(), 0o644)
    }

    /// Copy the trust bundle into an issued directory (step two and four of a rotation).
    pub fn spread_bundle(&self, out: &Path) -> Result<(), TlsError> {
        write(&out.join(CA_FILE), &self.bundle()?, 0o644)
    }
}

/// Every certificate in a PEM file.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_identity_and_rotation_trusts_both_cas() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CaDir::at(&dir.path().join("ca"));
        ca.init("prod").unwrap();
        assert!(ca.init("prod").is_err(), "a second init would orphan every certificate");
        let out = dir.path().join("node-1");
        ca.issue(&Subject::Member(Identity::node("prod", 1)), 30, &out).unwrap();
        let cert = certificates(&out.join(CERT_FILE)).unwrap();
        assert_eq!(Identity::of_certificate(&cert[0]).unwrap(), Identity::node("prod", 1));
        assert!(ca
            .issue(&Subject::Member(Identity::node("other", 1)), 30, &out)
            .is_err());
        assert_eq!(certificates(&out.join(CA_FILE)).unwrap().len(), 1);
        ca.rotate().unwrap();
        assert_eq!(certificates(&dir.path().join("ca/bundle.pem")).unwrap().len(), 2);
        ca.finish_rotation().unwrap();
        assert_eq!(certificates(&dir.path().join("ca/bundle.pem")).unwrap().len(), 1);
    }
}
