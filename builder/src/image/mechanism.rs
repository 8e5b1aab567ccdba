//! The ways an OS can run code on a node's first boot, and which of them a root shows
//! evidence of (found by `first_boot`, recorded in a `Release`).

use serde::Serialize;

/// How a card can run code on the node's first boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstBoot {
    /// Bookworm style: `systemd.run=` on cmdline.txt runs a script from the boot
    /// partition in `kernel-command-line.target`.
    SystemdRun,
    /// Trixie style: cloud-init's NoCloud datasource reads `user-data`, `meta-data`
    /// and `network-config` from the boot partition.
    CloudInit,
}

/// A first-boot mechanism an OS can have, whether or not piimg supports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// cloud-init with a NoCloud datasource (Imager's `cloudinit`, `cloudinit-rpi`).
    CloudInit,
    /// `systemd.run=` on cmdline.txt (Imager's `systemd`).
    SystemdRun,
    /// The rpi-preseed package reading `rpi-preseed.toml` (Imager's `rpi-preseed`).
    RpiPreseed,
}

impl Mechanism {
    /// The name `upstream.toml`'s `[init_formats.*] mechanism` uses.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::CloudInit => "cloud-init",
            Mechanism::SystemdRun => "systemd-run",
            Mechanism::RpiPreseed => "rpi-preseed",
        }
    }

    /// The card mechanism piimg writes for it, if it writes one.
    pub fn card(self) -> Option<FirstBoot> {
        match self {
            Mechanism::CloudInit => Some(FirstBoot::CloudInit),
            Mechanism::SystemdRun => Some(FirstBoot::SystemdRun),
            Mechanism::RpiPreseed => None,
        }
    }
}

/// A mechanism the root supports, and the files that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Supported {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// What on the root shows it (paths, versions).
    pub evidence: Vec<String>,
}
