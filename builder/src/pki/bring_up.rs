//! Whether the bootstrap card of a first-ever bring-up was issued: recorded with the
//! secrets, so a rebuilt bootstrap card joins instead of creating a second cluster.

use super::{PkiError, io_err};
use std::path::Path;

/// Marker file in the secrets directory.
pub const BOOTSTRAP_ISSUED_FILE: &str = "bootstrap-issued";

/// True if a bootstrap card was issued before for this secrets directory.
pub fn bootstrap_issued(secrets_dir: &Path) -> Result<bool, PkiError> {
    let path = secrets_dir.join(BOOTSTRAP_ISSUED_FILE);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Whether the bootstrap card being built may initialise: only if none was issued
/// before, or the user asked to start over (`--new-cluster`).
pub fn first_bring_up(secrets_dir: &Path, new_cluster: bool) -> Result<bool, PkiError> {
    Ok(new_cluster || !bootstrap_issued(secrets_dir)?)
}

/// Records that the bootstrap card `node` was issued (call once its image is written).
pub fn mark_bootstrap_issued(secrets_dir: &Path, node: &str) -> Result<(), PkiError> {
    let path = secrets_dir.join(BOOTSTRAP_ISSUED_FILE);
    let text = format!(
        "{node}\nissued {}\n",
        time::OffsetDateTime::now_utc().unix_timestamp()
    );
    crate::atomic::write_atomic(&path, text.as_bytes(), 0o600).map_err(io_err(path))
}
