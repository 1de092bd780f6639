//! A snapshot's check as its base tar streams: every file's size and CRC-32C against
//! `backup_manifest`, and the manifest's own SHA-256, which is what `pg_verifybackup`
//! checks of the files. PostgreSQL 15's `pg_verifybackup` reads only a plain directory, and
//! unpacking one cost 7.4 s of its 8 s at scale 100 (first-touch memory, not checksums).
//! The WAL the snapshot needs is still parsed by `pg_waldump`, as `pg_verifybackup` does.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::hex::{decode as unhex, encode as hex};

/// Top-level paths `pg_verifybackup` leaves unchecked: the manifest itself, the WAL
/// (checked by parsing it), and files a restore's own setup may write or change.
const IGNORED: [&str; 5] = [
    "backup_manifest",
    "pg_wal",
    "postgresql.auto.conf",
    "recovery.signal",
    "standby.signal",
];

/// At most this many problems are named in an error (a damaged copy can have thousands).
const NAMED: usize = 10;

/// What a snapshot's `backup_manifest` says: each file's size and checksum, and the WAL it
/// needs to be consistent.
#[derive(Debug)]
pub struct Manifest {
    files: BTreeMap<Vec<u8>, Expected>,
    /// The WAL ranges, oldest first.
    pub wal_ranges: Vec<WalRange>,
}

#[derive(Debug)]
struct Expected {
    size: u64,
    crc32c: u32,
}

/// One timeline's stretch of WAL the snapshot needs.
#[derive(Debug, Clone, Deserialize)]
pub struct WalRange {
    /// The timeline.
    #[serde(rename = "Timeline")]
    pub timeline: u32,
    /// Where replay starts.
    #[serde(rename = "Start-LSN")]
    pub start: String,
    /// Where the copy is consistent.
    #[serde(rename = "End-LSN")]
    pub end: String,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    #[serde(rename = "Files", default)]
    files: Vec<RawFile>,
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<WalRange>,
    #[serde(rename = "Manifest-Checksum")]
    checksum: String,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    /// A path that is not UTF-8, in hex.
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

impl Manifest {
    /// Parse `text` and check its own SHA-256, which covers everything up to its last line.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let raw: Raw = serde_json::from_slice(text).map_err(|e| format!("the manifest is not readable: {e}"))?;
        if raw.version != 1 {
            return Err(format!(
                "manifest version {} is not one this host reads (1)",
                raw.version
            ));
        }
        let body = text.strip_suffix(b"\n").unwrap_or(text);
        let covered = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let actual = hex(&Sha256::digest(&text[..covered]));
        if !actual.eq_ignore_ascii_case(&raw.checksum) {
            return Err(format!(
                "the manifest's checksum is {actual}, but it says {}: the manifest is damaged",
                raw.checksum
            ));
        }
        let mut files = BTreeMap::new();
        for f in raw.files {
            let path = match (f.path, f.encoded_path) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(h)) => unhex(&h).ok_or_else(|| format!("the manifest's encoded path {h} is not hex"))?,
                (None, None) => return Err("a manifest entry has no path".into()),
            };
            let shown = String::from_utf8_lossy(&path).to_string();
            if f.algorithm.as_deref() != Some("CRC32C") {
                return Err(format!(
                    "{shown}: the manifest's checksum algorithm is {}, not CRC32C as snapshots are taken",
                    f.algorithm.as_deref().unwrap_or("none")
                ));
            }
            // PostgreSQL writes the CRC's bytes as they lie in memory: little-endian.
            let crc32c = f
                .checksum
                .as_deref()
                .and_then(unhex)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| format!("{shown}: the manifest's checksum is not 4 bytes of hex"))?;
            files.insert(path, Expected { size: f.size, crc32c });
        }
        if raw.wal_ranges.is_empty() {
            return Err("the manifest names no WAL range".into());
        }
        Ok(Self {
            files,
            wal_ranges: raw.wal_ranges,
        })
    }

    /// Check the base tar read from `tar` against this manifest: every file it lists is
    /// there, with its size and checksum, and nothing else is (the ignored paths aside).
    /// Every problem is named (up to [`NAMED`]); `stop` ends the check early, as failed.
    pub fn check_base(&self, tar: impl Read, stop: &AtomicBool) -> Result<Checked, String> {
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut checked = Checked::default();
        let mut archive = tar::Archive::new(tar);
        let entries = archive
            .entries()
            .map_err(|e| format!("the base tar is not readable: {e}"))?;
        let mut buf = vec![0u8; 1 << 20];
        for entry in entries {
            let mut entry = entry.map_err(|e| format!("the base tar is not readable: {e}"))?;
            if stop.load(Ordering::Relaxed) {
                return Err("the check was stopped".into());
            }
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let path = raw.strip_prefix(b"./").unwrap_or(&raw).to_vec();
            if ignored(&path) {
                continue;
            }
            let shown = String::from_utf8_lossy(&path).to_string();
            let (mut crc, mut size) = (0u32, 0u64);
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| format!("{shown}: the base tar is not readable: {e}"))?;
                if n == 0 {
                    break;
                }
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                size += n as u64;
            }
            checked.files += 1;
            checked.bytes += size;
            match self.files.get(&path) {
                None => problems.push(format!("{shown} is in the copy but not in its manifest")),
                Some(e) if e.size != size => {
                    problems.push(format!("{shown} has {size} bytes, its manifest says {}", e.size))
                }
                Some(e) if e.crc32c != crc => problems.push(format!(
                    "{shown}: its CRC-32C is {}, its manifest says {}",
                    hex(&crc.to_le_bytes()),
                    hex(&e.crc32c.to_le_bytes())
                )),
                Some(_) => {}
            }
            seen.insert(path);
        }
        for path in self.files.keys() {
            if !seen.contains(path) && !ignored(path) {
                problems.push(format!(
                    "{} is in the manifest but not in the copy",
                    String::from_utf8_lossy(path)
                ));
            }
        }
        if problems.is_empty() {
            return Ok(checked);
        }
        let more = problems.len().saturating_sub(NAMED);
        let mut text = problems.into_iter().take(NAMED).collect::<Vec<_>>().join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        Err(text)
    }
}

/// What a passing check read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Files checked.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Whether `path` is under one of the [`IGNORED`] top-level paths.
fn ignored(path: &[u8]) -> bool {
    let top = path.split(|&b| b == b'/').next().unwrap_or(path);
    IGNORED.iter().any(|i| i.as_bytes() == top)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as PostgreSQL writes it, for `files` (path, contents), sealed with its
    /// checksum unless `seal` is false.
    fn manifest(files: &[(&str, &[u8])], seal: bool) -> Vec<u8> {
        let mut text = String::from("{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n");
        let lines: Vec<String> = files
            .iter()
            .map(|(p, c)| {
                format!(
                    "{{ \"Path\": \"{p}\", \"Size\": {}, \"Last-Modified\": \"2026-12-02 02:17:15 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
                    c.len(),
                    hex(&crc32c::crc32c(c).to_le_bytes())
                )
            })
            .collect();
        text.push_str(&lines.join(",\n"));
        text.push_str("\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n");
        let sum = if seal {
            hex(&Sha256::digest(text.as_bytes()))
        } else {
            "00".repeat(32)
        };
        text.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
        text.into_bytes()
    }

    /// A tar of `files`, with the directory entries and `./` prefixes pg_basebackup writes.
    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_ustar();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o700);
        b.append_data(&mut dir, "./pg_wal/archive_status/", std::io::empty())
            .unwrap();
        for (p, c) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(c.len() as u64);
            h.set_mode(0o600);
            b.append_data(&mut h, p, *c).unwrap();
        }
        b.into_inner().unwrap()
    }

    const FILES: [(&str, &[u8]); 3] = [
        ("PG_VERSION", b"15\n"),
        ("base/5/2601", &[7u8; 8192]),
        ("global/pg_control", b"control"),
    ];

    fn check(manifest_text: &[u8], files: &[(&str, &[u8])]) -> Result<Checked, String> {
        Manifest::parse(manifest_text)?.check_base(tar(files).as_slice(), &AtomicBool::new(false))
    }

    #[test]
    fn checksums_read_as_postgresql_writes_them() {
        // From a real pg_basebackup manifest: PG_VERSION holding "15\n".
        assert_eq!(hex(&crc32c::crc32c(b"15\n").to_le_bytes()), "8a744722");
    }

    #[test]
    fn a_whole_copy_passes_and_says_what_it_read() {
        let checked = check(&manifest(&FILES, true), &FILES).unwrap();
        assert_eq!(
            checked,
            Checked {
                files: 3,
                bytes: 3 + 8192 + 7
            }
        );
    }

    #[test]
    fn each_kind_of_damage_is_named() {
        let m = manifest(&FILES, true);
        let flipped: &[u8] = &[8u8; 8192];
        type Case<'a> = (Vec<(&'a str, &'a [u8])>, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![FILES[0], ("base/5/2601", flipped), FILES[2]],
                "base/5/2601: its CRC-32C",
            ),
            (
                vec![FILES[0], ("base/5/2601", &[7u8; 100]), FILES[2]],
                "base/5/2601 has 100 bytes",
            ),
            (
                vec![FILES[0], FILES[2]],
                "base/5/2601 is in the manifest but not in the copy",
            ),
            (
                vec![FILES[0], FILES[1], FILES[2], ("base/5/9999", b"x")],
                "base/5/9999 is in the copy but not in its manifest",
            ),
        ];
        for (files, expected) in cases {
            let err = check(&m, &files).unwrap_err();
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }

    #[test]
    fn ignored_paths_pass_either_way() {
        let mut files = FILES.to_vec();
        files.push(("postgresql.auto.conf", b"changed by a restore"));
        files.push(("standby.signal", b""));
        let listed = [FILES[0], FILES[1], FILES[2], ("postgresql.auto.conf", b"as taken")];
        check(&manifest(&listed, true), &files).unwrap();
        check(&manifest(&listed, true), &FILES).unwrap();
    }

    #[test]
    fn a_damaged_manifest_is_refused() {
        let err = check(&manifest(&FILES, false), &FILES).unwrap_err();
        assert!(err.contains("the manifest is damaged"), "{err}");
        let mut m = manifest(&FILES, true);
        let at = m.windows(4).position(|w| w == b"8192").unwrap();
        m[at] = b'9';
        assert!(check(&m, &FILES).unwrap_err().contains("the manifest is damaged"));
    }

    #[test]
    fn many_problems_are_counted_not_all_named() {
        let listed: Vec<(String, Vec<u8>)> = (0..25).map(|i| (format!("base/5/{i}"), vec![1u8])).collect();
        let listed: Vec<(&str, &[u8])> = listed.iter().map(|(p, c)| (p.as_str(), c.as_slice())).collect();
        let err = check(&manifest(&listed, true), &[]).unwrap_err();
        assert!(err.ends_with("; and 15 more"), "{err}");
    }

    #[test]
    fn a_stopped_check_fails() {
        let m = Manifest::parse(&manifest(&FILES, true)).unwrap();
        let err = m
            .check_base(tar(&FILES).as_slice(), &AtomicBool::new(true))
            .unwrap_err();
        assert!(err.contains("stopped"), "{err}");
    }
}
