//! What operating system a root file system holds: Debian release, architecture,
//! networking stack, users, and which first-boot mechanisms it supports (see
//! [`super::first_boot`]).

use std::path::Path;

use serde::Serialize;

use super::elf::{self, Arch, ElfMachine};
use super::error::ImageError;
use super::mechanism::{FirstBoot, Supported};
use super::rootfs::RootFs;

/// Binaries every Debian root has, checked in order for their ELF architecture.
const ELF_PROBES: &[&str] = &[
    "/usr/bin/env",
    "/bin/sh",
    "/usr/bin/dpkg",
    "/usr/bin/ls",
    "/sbin/init",
];

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// The OS found on an image's root partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// `VERSION_CODENAME` from os-release (`bookworm`, `trixie`).
    pub codename: String,
    /// `VERSION_ID` (`12`, `13`), empty if absent.
    pub version_id: String,
    /// `PRETTY_NAME`, empty if absent.
    pub pretty_name: String,
    /// `ID` (`debian`, `raspbian`), empty if absent.
    pub id: String,
    /// CPU architecture of the root's binaries.
    pub arch: Arch,
    /// Which file told us the architecture.
    pub arch_evidence: String,
    /// The first-boot mechanism piimg would use judging by the root alone (no OS-list
    /// `init_format`); `None` when the root supports none piimg can use here.
    pub first_boot: Option<FirstBoot>,
    /// Every first-boot mechanism the root supports, with its evidence.
    pub first_boot_support: Vec<Supported>,
    /// What was looked for and not found, one note per missing piece.
    pub first_boot_missing: Vec<String>,
    /// True when `/etc/sudoers.d/010_pi-nopasswd` ships.
    pub nopasswd_sudo: bool,
    /// True when `userconfig.service` is enabled.
    pub userconfig_service: bool,
    /// True when NetworkManager is installed (`/usr/sbin/NetworkManager`).
    pub network_manager: bool,
    /// Accounts from `/etc/passwd`, in file order.
    pub users: Vec<User>,
}

impl Release {
    /// The first account with uid 1000 (Raspberry Pi OS's default user, `pi`, which
    /// first boot renames), if any.
    pub fn default_user(&self) -> Option<&User> {
        self.users.iter().find(|u| u.uid == 1000)
    }
}

/// Refuses a root that is not arm64.
pub fn require_supported_arch(image: &Path, release: &Release) -> Result<(), ImageError> {
    if release.arch == Arch::Arm64 {
        Ok(())
    } else {
        Err(ImageError::UnsupportedArch {
            image: image.to_path_buf(),
            arch: release.arch.to_string(),
            evidence: release.arch_evidence.clone(),
        })
    }
}

/// The architecture from the ELF header of a core binary, else from dpkg's records.
pub(super) fn detect_arch(root: &RootFs) -> Result<(Arch, String), ImageError> {
    let image = root.image_path();
    for probe in ELF_PROBES {
        let Some(head) = root.read_head(probe, 64)? else {
            continue;
        };
        match elf::machine(&head) {
            Some(ElfMachine::Known(arch)) => {
                return Ok((arch, format!("ELF header of {probe}")));
            }
            Some(ElfMachine::Unknown(m)) => {
                return Err(ImageError::UnsupportedArch {
                    image: image.to_path_buf(),
                    arch: format!("an unknown architecture (ELF e_machine {m})"),
                    evidence: format!("ELF header of {probe}"),
                });
            }
            None => continue,
        }
    }
    if let Some(text) = root.read_text("/var/lib/dpkg/status")?
        && let Some(arch) = dpkg_arch(&text)
    {
        return match Arch::from_debian(&arch) {
            Some(a) => Ok((a, "dpkg's record of the dpkg package".into())),
            None => Err(ImageError::UnsupportedArch {
                image: image.to_path_buf(),
                arch,
                evidence: "dpkg's record of the dpkg package".into(),
            }),
        };
    }
    Err(ImageError::Release {
        image: image.to_path_buf(),
        reason: format!(
            "cannot tell the architecture: no ELF binary at {} and no dpkg status",
            ELF_PROBES.join(", ")
        ),
    })
}

/// The `Architecture:` of the `dpkg` package in a dpkg status file.
fn dpkg_arch(status: &str) -> Option<String> {
    status.split("\n\n").find_map(|stanza| {
        let mut is_dpkg = false;
        let mut arch = None;
        for line in stanza.lines() {
            if line == "Package: dpkg" {
                is_dpkg = true;
            } else if let Some(a) = line.strip_prefix("Architecture:") {
                arch = Some(a.trim().to_string());
            }
        }
        if is_dpkg { arch } else { None }
    })
}

/// `KEY=value` pairs of an os-release file, quotes removed.
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// Accounts of an `/etc/passwd` file; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(User {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_fields() {
        let f = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n# c\nVERSION_CODENAME=trixie\nID=debian\n",
        );
        assert!(f.contains(&("VERSION_CODENAME".into(), "trixie".into())));
        assert!(f.contains(&("PRETTY_NAME".into(), "Debian GNU/Linux 13 (trixie)".into())));
    }

    #[test]
    fn passwd_lines() {
        let users = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\nbad line\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
        );
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].name, "pi");
        assert_eq!(users[1].uid, 1000);
        assert_eq!(users[1].home, "/home/pi");
    }

    #[test]
    fn dpkg_status_architecture() {
        let status = "Package: base-files\nArchitecture: arm64\n\nPackage: dpkg\nStatus: install ok installed\nArchitecture: armhf\n";
        assert_eq!(dpkg_arch(status).as_deref(), Some("armhf"));
        assert_eq!(dpkg_arch("Package: foo\nArchitecture: all\n"), None);
    }
}
