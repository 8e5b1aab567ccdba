//! Writing test files in one call.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `text` to `path` (parents created) with permission bits `mode`.
///
/// Panics on failure: a test that cannot set up its tree has nothing to test.
pub fn put(path: &Path, text: &str, mode: u32) {
    let parent = path
        .parent()
        .unwrap_or_else(|| panic!("{}: no parent", path.display()));
    fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
