//! The cluster's CA and server token, opened read-only from the secrets directory.
//!
//! Unlike a build, reaching the cluster never creates or repairs secrets: a missing
//! directory is refused, saying whether the cluster exists (the state file next to
//! the profile) and how to restore it.

use super::{ClusterError, io_err};
use crate::pki::ClusterCa;
use crate::profile::secrets::{self, TOKEN_FILE};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What piimg needs to talk to a running cluster.
#[derive(Debug, Clone)]
pub struct ClusterAccess {
    /// The secrets directory it was read from.
    pub dir: PathBuf,
    /// The cluster CA (server-ca verifies the servers, client-ca signs admin certificates).
    pub ca: ClusterCa,
    /// The server token's secret (k3s's password of the `server` user), when the
    /// secrets directory holds one; `/db/info` needs it.
    pub token_secret: Option<String>,
}

impl ClusterAccess {
    /// Opens the secrets of the profile at `profile_path` without creating anything.
    pub fn open(profile_path: &Path) -> Result<Self, ClusterError> {
        let dir = secrets::secrets_dir(profile_path);
        if !dir.is_dir() {
            return Err(match secrets::peek_state(profile_path)? {
                Some(state) if state.cluster_exists() => ClusterError::SecretsMissing {
                    dir,
                    state: secrets::state_path(profile_path),
                    cluster: state.cluster_id.clone(),
                    issued: state.issued.iter().cloned().collect::<Vec<_>>().join(", "),
                },
                _ => ClusterError::NoCluster { dir },
            });
        }
        let ca = ClusterCa::open(&dir)?.ok_or_else(|| ClusterError::NoCa { dir: dir.clone() })?;
        let token_secret = read_token(&dir.join(TOKEN_FILE))?;
        Ok(Self {
            dir,
            ca,
            token_secret,
        })
    }
}

/// The token secret in `path` (bare, or a whole `K10…::server:<secret>` token);
/// `None` when the file does not exist. A file open to others is refused.
fn read_token(path: &Path) -> Result<Option<String>, ClusterError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(secrets::SecretsError::Permissions {
            path: path.to_path_buf(),
            mode,
            want: 0o600,
        }
        .into());
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let (secret, _) =
        secrets::parse_token(&text).ok_or_else(|| secrets::SecretsError::BadToken {
            path: path.to_path_buf(),
        })?;
    Ok(Some(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_without_secrets_and_says_whether_the_cluster_exists() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let profile = tmp.path().join("lab.toml");
        let err = ClusterAccess::open(&profile).expect_err("no secrets");
        assert!(matches!(err, ClusterError::NoCluster { .. }), "{err}");
        std::fs::write(
            secrets::state_path(&profile),
            "cluster_id = \"abc\"\ntoken_sha256 = \"00\"\nbootstrap_issued = true\nissued = [\"s1\"]\n",
        )
        .expect("state");
        let err = ClusterAccess::open(&profile).expect_err("lost secrets");
        let msg = err.to_string();
        assert!(
            msg.contains("records that cluster `abc` exists") && msg.contains("Restore"),
            "{msg}"
        );
    }

    #[test]
    fn a_token_open_to_others_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(TOKEN_FILE);
        std::fs::write(&path, "K10abc::server:s3cret\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(read_token(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_token(&path).expect("read").as_deref(), Some("s3cret"));
        assert_eq!(read_token(&tmp.path().join("none")).expect("read"), None);
    }
}
