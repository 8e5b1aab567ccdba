//! Day-one customisation in the profile: `[locale]`, `[packages]`, `[[files]]` and
//! `[[run_once]]`. The model lives here, its rules in [`check`], the names it is
//! checked against in [`names`]; [`resolve`] reads `source` files and turns the
//! sections into the card's [`Customize`].

pub mod check;
pub mod names;

use super::model::Profile;
use piimg_contract::RootFile;
use piimg_contract::customize::{Customize, FileOwner, RunOnce};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `[locale]` is the card's type as it is: `timezone`, `locale`, `keyboard`.
pub use piimg_contract::customize::Locale;

/// Largest `[[files]]` content or `[[run_once]]` script, in bytes (the card's
/// node.json carries it and the agent holds it in memory).
pub const MAX_ITEM_BYTES: usize = 256 * 1024;
/// Largest total of every `[[files]]` content and `[[run_once]]` script, in bytes.
pub const MAX_TOTAL_BYTES: usize = 1024 * 1024;
/// A file's mode when `[[files]]` gives none.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// `[packages]`: Debian packages the agent installs before k3s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packages {
    /// Package names, installed in one `apt-get install` in this order.
    #[serde(default)]
    pub install: Vec<String>,
}

/// `[[files]]`: one file on the node's root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Absolute, normalised path on the node.
    pub path: String,
    /// Octal permission bits as a string, e.g. `"0640"` (default `"0644"`).
    #[serde(default)]
    pub mode: Option<String>,
    /// Owner user name (default root), resolved on the node.
    #[serde(default)]
    pub owner: Option<String>,
    /// Group name (default: the owner's primary group), resolved on the node.
    #[serde(default)]
    pub group: Option<String>,
    /// Inline content (exactly one of `content` and `source`).
    #[serde(default)]
    pub content: Option<String>,
    /// A file relative to the profile whose bytes (UTF-8) are the content.
    #[serde(default)]
    pub source: Option<PathBuf>,
}

/// `[[run_once]]`: a script the agent runs exactly once, in the order written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOnceEntry {
    /// Unique name: letters, digits, `-` and `_`.
    pub name: String,
    /// Inline script (exactly one of `script` and `source`).
    #[serde(default)]
    pub script: Option<String>,
    /// A script file relative to the profile.
    #[serde(default)]
    pub source: Option<PathBuf>,
}

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

/// Parses a `mode` string such as `"0640"` or `"750"`.
pub fn parse_mode(mode: &str) -> Option<u32> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
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
