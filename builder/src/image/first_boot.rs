//! How a card runs code on the node's first boot: which mechanisms a root supports,
//! each backed by files on it (listed in `upstream.toml`'s `[init_formats.*]` and
//! `[first_boot]`), and the one piimg uses, checked against the Imager OS list's
//! `init_format` when the base came from the list. Never guessed: a root piimg cannot
//! serve on its release is refused with what was found.

use std::path::Path;

use super::error::ImageError;
use super::release::Release;
use super::rootfs::RootFs;
use crate::upstream::{self, Facts};

pub use super::mechanism::{FirstBoot, Mechanism, Supported};

/// Which first-boot mechanisms `root` supports (with evidence), and notes on what
/// was looked for and is missing. Paths and versions come from `upstream.toml`.
pub(super) fn support(
    root: &RootFs,
    codename: &str,
    facts: &Facts,
) -> Result<(Vec<Supported>, Vec<String>), ImageError> {
    let fb = &facts.first_boot;
    let mut found = Vec::new();
    let mut missing = Vec::new();

    // cloud-init: the binary of the cloudinit-rpi format, and a NoCloud datasource.
    let ci_files = evidence_files(facts, "cloudinit-rpi");
    let ci_present = all_exist(root, &ci_files)?;
    if ci_present.len() == ci_files.len() && !ci_files.is_empty() {
        match nocloud_config(root, &fb.cloud_init_configs)? {
            Some(cfg) => {
                let mut evidence = ci_present;
                evidence.push(format!("NoCloud datasource in {cfg}"));
                found.push(Supported {
                    mechanism: Mechanism::CloudInit,
                    evidence,
                });
            }
            None => missing.push(format!(
                "cloud-init is installed ({}) but no NoCloud datasource is configured in {}",
                ci_files.join(", "),
                fb.cloud_init_configs.join(" or ")
            )),
        }
    } else {
        missing.push(format!("no cloud-init ({})", ci_files.join(", ")));
    }

    // rpi-preseed: the package's program.
    let rp_files = evidence_files(facts, "rpi-preseed");
    let rp_present = all_exist(root, &rp_files)?;
    if rp_present.len() == rp_files.len() && !rp_files.is_empty() {
        found.push(Supported {
            mechanism: Mechanism::RpiPreseed,
            evidence: rp_present,
        });
    }

    // systemd.run=: systemd new enough, and on Bookworm raspberrypi-sys-mods' firstboot.
    let mut evidence = Vec::new();
    let mut ok = true;
    match systemd_version(root, facts)? {
        SystemdVersion::Found(v, how) if v >= fb.systemd_run_min_systemd => {
            evidence.push(format!("systemd {v} ({how})"));
        }
        SystemdVersion::Found(v, how) => {
            ok = false;
            missing.push(format!(
                "systemd {v} ({how}) is older than {}, the first with systemd.run=",
                fb.systemd_run_min_systemd
            ));
        }
        SystemdVersion::Generator => evidence.push(format!(
            "{} (systemd >= {})",
            fb.systemd_run_generator, fb.systemd_run_min_systemd
        )),
        SystemdVersion::Missing(why) => {
            ok = false;
            missing.push(why);
        }
    }
    if fb.sysmods_firstboot_codenames.iter().any(|c| c == codename) {
        if root.exists(&fb.sysmods_firstboot)? {
            evidence.push(fb.sysmods_firstboot.clone());
        } else {
            ok = false;
            missing.push(format!(
                "no {} (raspberrypi-sys-mods), which {codename}'s cmdline.txt runs before any \
                 systemd.run= hook",
                fb.sysmods_firstboot
            ));
        }
    }
    if ok {
        found.push(Supported {
            mechanism: Mechanism::SystemdRun,
            evidence,
        });
    }
    Ok((found, missing))
}

/// The `root_evidence` paths of init format `name` in the facts.
fn evidence_files(facts: &Facts, name: &str) -> Vec<String> {
    facts
        .init_formats
        .get(name)
        .map(|f| f.root_evidence.clone())
        .unwrap_or_default()
}

/// Those of `paths` that exist on `root`.
fn all_exist(root: &RootFs, paths: &[String]) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    for p in paths {
        if root.exists(p)? {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// The first cloud-init configuration file (of `configs`: files, or directories of
/// `*.cfg`) with a non-comment line naming the NoCloud datasource.
fn nocloud_config(root: &RootFs, configs: &[String]) -> Result<Option<String>, ImageError> {
    let mentions = |text: &str| {
        text.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("");
            l.to_ascii_lowercase().contains("nocloud")
        })
    };
    for c in configs {
        let files = match root.list(c) {
            Ok(Some(names)) => names
                .into_iter()
                .filter(|n| n.ends_with(".cfg"))
                .map(|n| format!("{}/{n}", c.trim_end_matches('/')))
                .collect(),
            _ => vec![c.clone()],
        };
        for f in files {
            if let Some(text) = root.read_text(&f)?
                && mentions(&text)
            {
                return Ok(Some(f));
            }
        }
    }
    Ok(None)
}

/// What the root says about its systemd.
enum SystemdVersion {
    /// Major version and where it was read.
    Found(u32, String),
    /// No version, but `systemd-run-generator` is there.
    Generator,
    /// No systemd found; why.
    Missing(String),
}

fn systemd_version(root: &RootFs, facts: &Facts) -> Result<SystemdVersion, ImageError> {
    let fb = &facts.first_boot;
    let status = root.read_text("/var/lib/dpkg/status")?.unwrap_or_default();
    if let Some(v) = dpkg_version(&status, "systemd") {
        return Ok(match major_version(&v) {
            Some(m) => SystemdVersion::Found(m, format!("dpkg: systemd {v}")),
            None => SystemdVersion::Missing(format!(
                "dpkg records systemd version {v:?}, which is not a version number"
            )),
        });
    }
    if root.exists(&fb.systemd_run_generator)? {
        return Ok(SystemdVersion::Generator);
    }
    Ok(SystemdVersion::Missing(format!(
        "dpkg records no systemd and there is no {}",
        fb.systemd_run_generator
    )))
}

/// The leading number of a Debian version (`252.38-1~deb12u1` -> 252).
fn major_version(v: &str) -> Option<u32> {
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The `Version:` of an installed `package` in a dpkg status file.
fn dpkg_version(status: &str, package: &str) -> Option<String> {
    let wanted = format!("Package: {package}");
    status.split("\n\n").find_map(|stanza| {
        let mut is_it = false;
        let mut installed = true;
        let mut version = None;
        for line in stanza.lines() {
            if line == wanted {
                is_it = true;
            } else if let Some(s) = line.strip_prefix("Status:") {
                installed = s.trim().ends_with(" installed");
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = Some(v.trim().to_string());
            }
        }
        if is_it && installed { version } else { None }
    })
}

/// The mechanism piimg uses for `release`, confirmed from its root, and checked
/// against the OS list's `init_format` when the base came from the list.
///
/// Refused: an `init_format` piimg does not know or writes no card for, an
/// `init_format` the root has no evidence of, and a root whose mechanisms piimg
/// does not use on its release (e.g. a Trixie root without cloud-init: the
/// `systemd.run=` hook is tested on Bookworm only).
pub fn choose(
    image: &Path,
    release: &Release,
    init_format: Option<&str>,
) -> Result<FirstBoot, ImageError> {
    let facts = upstream::facts();
    let found = describe_found(release);
    let supports = |m: Mechanism| release.first_boot_support.iter().any(|s| s.mechanism == m);
    let tested = |m: Mechanism| {
        facts.init_formats.values().any(|f| {
            f.mechanism == m.name() && f.tested_codenames.iter().any(|c| c == &release.codename)
        })
    };
    let mut wanted = None;
    if let Some(name) = init_format {
        let name = if name.is_empty() { "none" } else { name };
        let Some(format) = facts.init_formats.get(name) else {
            return Err(ImageError::UnknownInitFormat {
                image: image.to_path_buf(),
                init_format: name.to_string(),
                known: facts
                    .init_formats
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let mechanism = [
            Mechanism::CloudInit,
            Mechanism::SystemdRun,
            Mechanism::RpiPreseed,
        ]
        .into_iter()
        .find(|m| {
            m.name() == format.mechanism || (format.mechanism.is_empty() && m.name() == name)
        });
        let Some(mechanism) = mechanism else {
            return Err(ImageError::UnsupportedFirstBoot {
                image: image.to_path_buf(),
                codename: release.codename.clone(),
                reason: format!(
                    "the OS list gives init_format \"{name}\": the image takes no first-boot \
                     customisation"
                ),
                found,
            });
        };
        if !supports(mechanism) {
            return Err(ImageError::InitFormatContradiction {
                image: image.to_path_buf(),
                init_format: name.to_string(),
                mechanism: mechanism.name(),
                missing: missing_for(release, mechanism, facts, name),
                found,
            });
        }
        if mechanism.card().is_none() {
            return Err(ImageError::UnsupportedFirstBoot {
                image: image.to_path_buf(),
                codename: release.codename.clone(),
                reason: format!(
                    "the OS list gives init_format \"{name}\" (Imager writes {}); piimg writes \
                     no cards for it",
                    format.boot_files.join(", ")
                ),
                found,
            });
        }
        wanted = Some(mechanism);
    }
    let usable: Vec<Mechanism> = release
        .first_boot_support
        .iter()
        .map(|s| s.mechanism)
        .filter(|m| m.card().is_some() && tested(*m))
        .collect();
    let chosen = match wanted {
        Some(m) if usable.contains(&m) => Some(m),
        _ => usable.into_iter().min(),
    };
    match chosen.and_then(Mechanism::card) {
        Some(fb) => Ok(fb),
        None => Err(ImageError::UnsupportedFirstBoot {
            image: image.to_path_buf(),
            codename: release.codename.clone(),
            reason: format!(
                "none of its first-boot mechanisms is one piimg uses on {} ({}){}",
                release.codename,
                tested_summary(facts),
                if release.first_boot_missing.is_empty() {
                    String::new()
                } else {
                    format!("; {}", release.first_boot_missing.join("; "))
                }
            ),
            found,
        }),
    }
}

/// "cloud-init (…); systemd-run (…)" or "nothing", for messages.
fn describe_found(release: &Release) -> String {
    if release.first_boot_support.is_empty() {
        return "no first-boot mechanism".into();
    }
    release
        .first_boot_support
        .iter()
        .map(|s| format!("{} ({})", s.mechanism.name(), s.evidence.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What piimg uses where: "cloud-init on trixie, systemd-run on bookworm".
fn tested_summary(facts: &Facts) -> String {
    let mut pairs: Vec<String> = facts
        .init_formats
        .values()
        .filter(|f| !f.mechanism.is_empty())
        .flat_map(|f| {
            f.tested_codenames
                .iter()
                .map(move |c| format!("{} on {c}", f.mechanism))
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    format!("piimg uses {}", pairs.join(", "))
}

/// Why the root does not support `mechanism`, for a contradiction message.
fn missing_for(release: &Release, mechanism: Mechanism, facts: &Facts, format: &str) -> String {
    let notes: Vec<&str> = release
        .first_boot_missing
        .iter()
        .map(String::as_str)
        .filter(|n| match mechanism {
            Mechanism::CloudInit => n.contains("cloud-init"),
            Mechanism::SystemdRun => n.contains("systemd") || n.contains("raspberrypi-sys-mods"),
            Mechanism::RpiPreseed => false,
        })
        .collect();
    if notes.is_empty() {
        let files = evidence_files(facts, format);
        if files.is_empty() {
            format!("no evidence of {}", mechanism.name())
        } else {
            format!("no {}", files.join(", "))
        }
    } else {
        notes.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_versions_and_majors() {
        let status = "Package: systemd\nStatus: install ok installed\nVersion: 252.38-1~deb12u1\n\nPackage: udev\nStatus: deinstall ok config-files\nVersion: 1:2\n";
        assert_eq!(
            dpkg_version(status, "systemd").as_deref(),
            Some("252.38-1~deb12u1")
        );
        assert_eq!(dpkg_version(status, "udev"), None, "not installed");
        assert_eq!(major_version("252.38-1~deb12u1"), Some(252));
        assert_eq!(major_version("1:257~rc3-1"), Some(257));
        assert_eq!(major_version("x"), None);
    }
}
