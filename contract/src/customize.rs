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
}
