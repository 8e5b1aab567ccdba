//! Step `files`: lay down the files the builder rendered into `NodeConfig.files`.

use crate::error::Error;
use crate::node_fs::NodeFs;
use piimg_contract::{NODE_CONFIG_FILE, RootFile};

/// Refuses relative paths and `..` components (a card must not write outside `/`).
pub fn check_path(path: &str, what: &str) -> Result<(), Error> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") || path.ends_with('/') {
        return Err(Error::failed(format!(
            "{what}: path {path:?} must be an absolute file path without `..`"
        )));
    }
    Ok(())
}

/// Writes every `NodeConfig.files` entry (owner root, the given mode), atomically.
pub fn lay_down(files: &[RootFile], fs: &NodeFs) -> Result<String, Error> {
    let mut changed = 0;
    for (i, f) in files.iter().enumerate() {
        check_path(&f.path, &format!("{NODE_CONFIG_FILE}: files[{i}]"))?;
        if f.mode > 0o7777 {
            return Err(Error::failed(format!(
                "{NODE_CONFIG_FILE}: files[{i}] ({}): mode {:o} is not a permission mode",
                f.path, f.mode
            )));
        }
        if fs.put(&f.path, f.mode, f.content.as_bytes(), Some((0, 0)))? {
            changed += 1;
        }
    }
    Ok(format!(
        "{} file(s) from the card, {changed} written",
        files.len()
    ))
}
