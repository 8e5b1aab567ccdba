//! What a Pi owner sets up on day one besides the cluster: time zone, locale and
//! keyboard, extra Debian packages, files on the root file system and run-once
//! scripts.
//!
//! The builder fills [`Customize`] from the profile (`[locale]`, `[packages]`,
//! `[[files]]`, `[[run_once]]`); the agent applies it: locale and files in phase 1,
//! packages and then the run-once scripts in phase 2, before k3s.

use crate::RootFile;
use serde::{Deserialize, Serialize};

/// Where the agent keeps each run-once script it runs (one file per script).
pub const RUN_ONCE_DIR: &str = "/var/lib/piimg/run-once";

/// How long a run-once script may run when its card sets no `timeout_secs` (30 min:
/// enough for a download or a build on a Pi, short of blocking the node for good).
pub const RUN_ONCE_DEFAULT_TIMEOUT_SECS: u64 = 1800;
/// The `timeout_secs` a run-once script may have: 1 s to 24 h.
pub const RUN_ONCE_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 1..=86_400;

/// The customisation part of a card.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customize {
    /// Time zone, locale and keyboard layout; `None` leaves the image's.
    #[serde(default)]
    pub locale: Option<Locale>,
    /// Debian packages the agent installs with apt-get before k3s, in order.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Files laid onto the root file system after the admin user exists, with their
    /// owner resolved on the node.
    #[serde(default)]
    pub files: Vec<RootFile>,
    /// Scripts run once each, in order, after the packages and before k3s.
    #[serde(default)]
    pub run_once: Vec<RunOnce>,
}

impl Customize {
    /// True when the card asks for nothing.
    pub fn is_empty(&self) -> bool {
        self == &Customize::default()
    }
}

/// `[locale]`: each part is optional; an unset part keeps the image's setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locale {
    /// A tz database name, e.g. `Europe/Berlin` (`/usr/share/zoneinfo/<name>`).
    #[serde(default)]
    pub timezone: Option<String>,
    /// A glibc locale as listed in `/usr/share/i18n/SUPPORTED`, e.g. `en_GB.UTF-8`.
    #[serde(default)]
    pub locale: Option<String>,
    /// An XKB layout code, e.g. `gb` or `de` (`XKBLAYOUT` in /etc/default/keyboard).
    #[serde(default)]
    pub keyboard: Option<String>,
}

/// The owner of a [`RootFile`], by name (resolved in the node's passwd and group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOwner {
    /// User name (e.g. the admin user).
    pub user: String,
    /// Group name; `None` means the user's primary group.
    #[serde(default)]
    pub group: Option<String>,
}

/// A script the agent runs exactly once (its completion is recorded in the agent's
/// state; a failed script runs again on the next run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOnce {
    /// Unique name (letters, digits, `-`, `_`), shown in the status.
    pub name: String,
    /// The script; one without a `#!` line runs with `/bin/sh`.
    pub script: String,
    /// Seconds the script (with its child processes) may run before the agent kills
    /// it; `None` (cards from before this field): [`RUN_ONCE_DEFAULT_TIMEOUT_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl RunOnce {
    /// The script's time limit in seconds: its own, else the default.
    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs.unwrap_or(RUN_ONCE_DEFAULT_TIMEOUT_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_once_without_a_timeout_parses_and_stays_without_one() {
        // A card written before `timeout_secs` existed.
        let old: RunOnce = serde_json::from_str(r#"{"name":"a","script":"true"}"#).unwrap();
        assert_eq!(old.timeout_secs, None);
        assert_eq!(old.timeout_secs(), RUN_ONCE_DEFAULT_TIMEOUT_SECS);
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"name":"a","script":"true"}"#
        );
        let new: RunOnce =
            serde_json::from_str(r#"{"name":"a","script":"true","timeout_secs":60}"#).unwrap();
        assert_eq!(new.timeout_secs(), 60);
        let unknown = serde_json::from_str::<RunOnce>(r#"{"name":"a","script":"","timeout":1}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }
}
