//! Which release vintage of `upstream.toml`'s `[vintages.*]` tables an image is,
//! from evidence on its root (first user, sudoers drop-in, userconfig.service) and
//! boot partition (cluster size, cloud-init seed templates).

use serde::Serialize;

use super::release::Release;
use crate::upstream;

/// What the boot partition says about the vintage (read by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootEvidence {
    /// Bytes per cluster of the FAT boot file system.
    pub cluster_size: Option<u64>,
    /// Whether cloud-init's seed templates (`user-data`, `meta-data`,
    /// `network-config`) are on it.
    pub seed_templates: Option<bool>,
}

/// The `[vintages.*]` table of `upstream.toml` an image matches best.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VintageMatch {
    /// Table name, e.g. `trixie-2026`.
    pub name: String,
    /// True when every fact of the table holds on the image.
    pub exact: bool,
    /// What the image shows that the vintage is known by.
    pub traits: Vec<String>,
    /// Facts of the table the image does not match.
    pub differences: Vec<String>,
}

impl VintageMatch {
    /// One line for people: "trixie-2026 (first user pi without a login shell …)".
    pub fn line(&self) -> String {
        let traits = if self.traits.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.traits.join("; "))
        };
        if self.exact {
            format!("{}{traits}", self.name)
        } else {
            format!(
                "closest {}{traits}, but {}",
                self.name,
                self.differences.join("; ")
            )
        }
    }
}

/// The vintage of `upstream.toml` whose facts the image matches best (same codename,
/// most facts equal), or `None` when no vintage has its codename.
pub fn vintage(release: &Release, boot: BootEvidence) -> Option<VintageMatch> {
    let facts = upstream::facts();
    let user = release.default_user();
    let spc = boot.cluster_size.map(|c| c / 512);
    let mut best: Option<(usize, VintageMatch)> = None;
    for (name, v) in &facts.vintages {
        if v.codename != release.codename {
            continue;
        }
        let mut traits = Vec::new();
        let mut differences = Vec::new();
        let mut score = 0;
        let mut judge = |ok: bool, trait_: String, diff: String| {
            if ok {
                score += 1;
                traits.push(trait_);
            } else {
                differences.push(diff);
            }
        };
        match user {
            Some(u) => {
                let nologin = v.first_user_shell.ends_with("nologin");
                judge(
                    u.name == v.first_user && u.shell == v.first_user_shell,
                    if nologin {
                        format!("first user {} without a login shell ({})", u.name, u.shell)
                    } else {
                        format!("first user {} with shell {}", u.name, u.shell)
                    },
                    format!(
                        "its first user is {} with shell {} ({name} ships {} with {})",
                        u.name, u.shell, v.first_user, v.first_user_shell
                    ),
                );
            }
            None => judge(
                false,
                String::new(),
                format!("it has no uid-1000 user ({name} ships {})", v.first_user),
            ),
        }
        let sudoers = &facts.first_boot.sudoers_nopasswd;
        judge(
            release.nopasswd_sudo == v.nopasswd_sudo,
            if v.nopasswd_sudo {
                format!("passwordless sudo ({sudoers})")
            } else {
                format!("no {sudoers}")
            },
            if release.nopasswd_sudo {
                format!("{sudoers} is there ({name} has none)")
            } else {
                format!("{sudoers} is missing ({name} ships it)")
            },
        );
        judge(
            release.userconfig_service == v.userconfig_service,
            if v.userconfig_service {
                "userconfig.service enabled".into()
            } else {
                "userconfig.service not enabled".into()
            },
            if release.userconfig_service {
                format!("userconfig.service is enabled ({name}: not)")
            } else {
                format!("userconfig.service is not enabled ({name} enables it)")
            },
        );
        if let Some(spc) = spc {
            judge(
                spc == u64::from(v.bootfs_sectors_per_cluster),
                format!("{}-byte boot clusters", spc * 512),
                format!(
                    "its boot clusters are {} bytes ({name}: {})",
                    spc * 512,
                    u64::from(v.bootfs_sectors_per_cluster) * 512
                ),
            );
        }
        if boot.seed_templates == Some(false) && v.init_format.starts_with("cloudinit") {
            traits.push("no cloud-init seed templates on the boot partition".into());
        }
        let m = VintageMatch {
            name: name.clone(),
            exact: differences.is_empty(),
            traits,
            differences,
        };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, m));
        }
    }
    best.map(|(_, m)| m)
}
