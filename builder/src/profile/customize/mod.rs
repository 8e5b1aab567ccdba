//! Day-one customisation in the profile: `[locale]`, `[packages]`, `[[files]]` and
//! `[[run_once]]`. Their types live in [`super::day_one`], their rules in [`check`],
//! the names they are checked against in [`names`]; [`resolve`] reads `source`
//! files and turns the sections into the card's [`Customize`].

pub mod check;
pub mod names;

use super::day_one::{DEFAULT_FILE_MODE, Locale, MAX_ITEM_BYTES, parse_mode};
use super::model::Profile;
use piimg_contract::RootFile;
use piimg_contract::customize::{Customize, FileOwner, RunOnce};
use std::path::{Path, PathBuf};

/// Why the customisation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CustomizeError {
    /// A `source` file could not be read.
    #[error("{field}: cannot read {}: {message}", path.display())]
    Source {
        /// The profile field, e.g. `files[0].source`.
        field: String,
        /// The resolved file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A `mode` is not an octal permission mode.
    #[error("{field}: {message}")]
    Invalid {
        /// The profile field.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads `path` (relative to the profile) as UTF-8 text for `field`.
pub fn read_source(profile: &Profile, field: &str, path: &Path) -> Result<String, CustomizeError> {
    let full = profile.resolve_path(path);
    let err = |message: String| CustomizeError::Source {
        field: field.to_string(),
        path: full.clone(),
        message,
    };
    let meta = std::fs::metadata(&full).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_ITEM_BYTES as u64 {
        return Err(err(format!(
            "{} bytes, more than the {MAX_ITEM_BYTES} a card carries per item",
            meta.len()
        )));
    }
    let bytes = std::fs::read(&full).map_err(|e| err(e.to_string()))?;
    String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))
}

/// The card's customisation from a validated profile (reads every `source`).
pub fn resolve(profile: &Profile) -> Result<Customize, CustomizeError> {
    let mut files = Vec::with_capacity(profile.files.len());
    for (i, f) in profile.files.iter().enumerate() {
        let content = match (&f.content, &f.source) {
            (Some(c), _) => c.clone(),
            (None, Some(src)) => read_source(profile, &format!("files[{i}].source"), src)?,
            (None, None) => String::new(),
        };
        let mode = match &f.mode {
            None => DEFAULT_FILE_MODE,
            Some(m) => parse_mode(m).ok_or_else(|| CustomizeError::Invalid {
                field: format!("files[{i}].mode"),
                message: format!("{m:?} is not an octal mode like \"0644\""),
            })?,
        };
        let owner = match (&f.owner, &f.group) {
            (None, None) => None,
            (user, group) => Some(FileOwner {
                user: user.clone().unwrap_or_else(|| "root".into()),
                group: group.clone(),
            }),
        };
        files.push(RootFile {
            path: f.path.clone(),
            mode,
            content,
            owner,
        });
    }
    let mut run_once = Vec::with_capacity(profile.run_once.len());
    for (i, r) in profile.run_once.iter().enumerate() {
        let script = match (&r.script, &r.source) {
            (Some(s), _) => s.clone(),
            (None, Some(src)) => read_source(profile, &format!("run_once[{i}].source"), src)?,
            (None, None) => String::new(),
        };
        run_once.push(RunOnce {
            name: r.name.clone(),
            script,
            timeout_secs: r.timeout_secs,
        });
    }
    let locale = profile.locale.clone().filter(|l| l != &Locale::default());
    Ok(Customize {
        locale,
        packages: profile.packages.install.clone(),
        files,
        run_once,
    })
}
