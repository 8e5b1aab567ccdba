//! The profile's day-one sections as written: `[locale]`, `[packages]`, `[[files]]`
//! and `[[run_once]]` (serde types that reject unknown keys), with their bounds.
//! `super::customize` checks and resolves them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    /// Seconds the script may run before the agent kills it (default 1800).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
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
