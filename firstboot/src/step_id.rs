//! The agent's steps by name: one [`StepId`] per step, in run order, each with the
//! [`Phase`] that runs it. The names are what the state file and the card status say.

use std::fmt;

/// Which part of the job a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Local identity, before networking (ends with the hand-off to phase 2).
    Local,
    /// Network, clock, k3s: as a systemd service after network-online.
    Cluster,
}

/// One step of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepId {
    /// Move the card's secrets into the root filesystem.
    Secrets,
    /// Lay down the files the builder rendered.
    Files,
    /// /etc/hostname and /etc/hosts.
    Hostname,
    /// Time zone, locale and keyboard layout (`[locale]`).
    Locale,
    /// The admin account (and its sudo rule, the wizard cancelled).
    User,
    /// The admin's authorized_keys.
    SshKeys,
    /// sshd enabled with the builder's drop-in.
    Ssh,
    /// The disk the root came from, reported (storage).
    BootDevice,
    /// SD-card wear mitigation (storage).
    SdWear,
    /// The profile's `[[files]]`, owners resolved on the node.
    UserFiles,
    /// The agent installed on the root filesystem, its phase-2 unit enabled.
    InstallAgent,
    /// The first-boot arguments removed from cmdline.txt.
    Unhook,
    /// End of phase 1.
    Handoff,
    /// Wait for a default route.
    Network,
    /// Wait for a synchronised clock (or take a server's `Date`).
    Clock,
    /// The memory cgroup controller checked.
    Cgroup,
    /// The data disk found, formatted or reused, and mounted (storage).
    DataDisk,
    /// The profile's `[packages]` installed with apt-get.
    Packages,
    /// The profile's `[[run_once]]` scripts, each once.
    RunOnce,
    /// The join decision.
    Join,
    /// k3s's config.yaml.
    K3sConfig,
    /// k3s installed.
    K3sInstall,
    /// k3s started.
    K3sStart,
    /// Wait for this node to be Ready.
    K3sReady,
    /// Secrets no longer needed removed.
    Scrub,
    /// The phase-2 unit disabled: provisioning complete.
    Disable,
}

impl StepId {
    /// Every step, in run order.
    pub const ALL: [StepId; 26] = [
        StepId::Secrets,
        StepId::Files,
        StepId::Hostname,
        StepId::Locale,
        StepId::User,
        StepId::SshKeys,
        StepId::Ssh,
        StepId::UserFiles,
        StepId::BootDevice,
        StepId::SdWear,
        StepId::InstallAgent,
        StepId::Unhook,
        StepId::Handoff,
        StepId::Network,
        StepId::Clock,
        StepId::Cgroup,
        StepId::DataDisk,
        StepId::Packages,
        StepId::RunOnce,
        StepId::Join,
        StepId::K3sConfig,
        StepId::K3sInstall,
        StepId::K3sStart,
        StepId::K3sReady,
        StepId::Scrub,
        StepId::Disable,
    ];

    /// The step's name in the state file and the card status.
    pub fn name(self) -> &'static str {
        match self {
            StepId::Secrets => "secrets",
            StepId::Files => "files",
            StepId::Hostname => "hostname",
            StepId::Locale => "locale",
            StepId::User => "user",
            StepId::SshKeys => "ssh-keys",
            StepId::Ssh => "ssh",
            StepId::BootDevice => "boot-device",
            StepId::SdWear => "sd-wear",
            StepId::DataDisk => "data-disk",
            StepId::UserFiles => "user-files",
            StepId::InstallAgent => "install-agent",
            StepId::Unhook => "unhook",
            StepId::Handoff => "handoff",
            StepId::Network => "network",
            StepId::Clock => "clock",
            StepId::Cgroup => "cgroup",
            StepId::Packages => "packages",
            StepId::RunOnce => "run-once",
            StepId::Join => "join",
            StepId::K3sConfig => "k3s-config",
            StepId::K3sInstall => "k3s-install",
            StepId::K3sStart => "k3s-start",
            StepId::K3sReady => "k3s-ready",
            StepId::Scrub => "scrub",
            StepId::Disable => "disable",
        }
    }

    /// The step called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<StepId> {
        StepId::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The phase that runs this step: everything up to [`StepId::Handoff`] is local.
    pub fn phase(self) -> Phase {
        match self {
            StepId::Secrets
            | StepId::Files
            | StepId::Hostname
            | StepId::Locale
            | StepId::User
            | StepId::SshKeys
            | StepId::Ssh
            | StepId::BootDevice
            | StepId::SdWear
            | StepId::UserFiles
            | StepId::InstallAgent
            | StepId::Unhook
            | StepId::Handoff => Phase::Local,
            _ => Phase::Cluster,
        }
    }

    /// True for the last step (its success completes provisioning).
    pub fn is_last(self) -> bool {
        StepId::ALL.last() == Some(&self)
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_phases_split_at_the_handoff() {
        for s in StepId::ALL {
            assert_eq!(StepId::from_name(s.name()), Some(s));
        }
        assert_eq!(StepId::from_name("nope"), None);
        let local: Vec<&str> = StepId::ALL
            .into_iter()
            .filter(|s| s.phase() == Phase::Local)
            .map(StepId::name)
            .collect();
        assert_eq!(
            local,
            [
                "secrets",
                "files",
                "hostname",
                "locale",
                "user",
                "ssh-keys",
                "ssh",
                "user-files",
                "boot-device",
                "sd-wear",
                "install-agent",
                "unhook",
                "handoff"
            ]
        );
        assert!(StepId::Disable.is_last() && !StepId::Scrub.is_last());
    }
}
