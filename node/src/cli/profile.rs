//! The CLI profile: where Keel is and which token to use, so a shell needs no flags.
//! `keel dev` writes one; `--keel-addr`/`KEEL_ADDR` and `--token`/`KEEL_TOKEN` override it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Address and credentials of one Keel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// API address, e.g. `http://127.0.0.1:7080`.
    pub addr: String,
    /// API token.
    pub token: String,
    /// CA bundle that signed the API's certificate (for an https:// address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// `$XDG_CONFIG_HOME/keel/dev.toml`, else `~/.config/keel/dev.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("keel").join("dev.toml"))
}

/// The profile at `path`, if there is one.
pub fn load(path: &Path) -> anyhow::Result<Option<Profile>> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .with_context(|| format!("the CLI profile {} is not valid; remove it or fix it", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read the CLI profile {}", path.display())),
    }
}

/// Write `profile` to `path`, readable by its owner only (it holds a token).
pub fn save(path: &Path, profile: &Profile) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = toml::to_string(profile).context("cannot encode the CLI profile")?;
    write_private(path, &text).with_context(|| format!("cannot write {}", path.display()))
}

/// Replace `path` with `text`, readable only by its owner from its first byte.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    crate::files::replace(path, text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_profile_round_trips_and_only_its_owner_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel").join("dev.toml");
        assert_eq!(load(&path).unwrap(), None);
        let p = Profile {
            addr: "http://127.0.0.1:7080".into(),
            token: "keel_x_y".into(),
            ca: None,
        };
        save(&path, &p).unwrap();
        assert_eq!(load(&path).unwrap(), Some(p));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
