//! What operating system a root file system holds: Debian release, architecture,
//! which first-boot mechanisms it supports (with the evidence), networking stack,
//! users, and which release vintage of `upstream.toml` it matches.
//!
//! The first-boot mechanism is never guessed: every mechanism is backed by files on
//! the root, and an Imager OS-list `init_format` (when the base came from the list)
//! must agree with them; see [`choose_first_boot`].

use std::path::Path;

use serde::Serialize;

use super::elf::{self, Arch, ElfMachine};
use super::error::ImageError;
use super::rootfs::RootFs;
use crate::upstream::{self, Facts};

/// Binaries every Debian root has, checked in order for their ELF architecture.
const ELF_PROBES: &[&str] = &[
    "/usr/bin/env",
    "/bin/sh",
    "/usr/bin/dpkg",
    "/usr/bin/ls",
    "/sbin/init",
];

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

/// Reads the release facts from `root`.
pub fn detect(root: &RootFs) -> Result<Release, ImageError> {
    let image = root.image_path();
    let fail = |reason: String| ImageError::Release {
        image: image.to_path_buf(),
        reason,
    };
    let os_release = match root.read_text("/etc/os-release")? {
        Some(t) => t,
        None => root.read_text("/usr/lib/os-release")?.ok_or_else(|| {
            fail(
                "neither /etc/os-release nor /usr/lib/os-release exists; is this a Debian root?"
                    .into(),
            )
        })?,
    };
    let fields = parse_os_release(&os_release);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut codename = get("VERSION_CODENAME");
    if codename.is_empty() {
        // Older files only say VERSION="12 (bookworm)".
        let version = get("VERSION");
        if let (Some(a), Some(b)) = (version.find('('), version.find(')')) {
            codename = version[a + 1..b].trim().to_string();
        }
    }
    if codename.is_empty() {
        return Err(fail(
            "/etc/os-release has no VERSION_CODENAME (expected bookworm or trixie)".into(),
        ));
    }
    let (arch, arch_evidence) = detect_arch(root)?;
    let facts = upstream::facts();
    let (first_boot_support, first_boot_missing) = first_boot_support(root, &codename, facts)?;
    let network_manager = root.exists("/usr/sbin/NetworkManager")?;
    let users = root
        .read_text("/etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let mut release = Release {
        codename,
        version_id: get("VERSION_ID"),
        pretty_name: get("PRETTY_NAME"),
        id: get("ID"),
        arch,
        arch_evidence,
        first_boot: None,
        first_boot_support,
        first_boot_missing,
        nopasswd_sudo: root.exists(&facts.first_boot.sudoers_nopasswd)?,
        userconfig_service: root.exists(&facts.first_boot.userconfig_service)?,
        network_manager,
        users,
    };
    release.first_boot = choose_first_boot(image, &release, None).ok();
    Ok(release)
}

/// Which first-boot mechanisms `root` supports (with evidence), and notes on what
/// was looked for and is missing. Paths and versions come from `upstream.toml`.
fn first_boot_support(
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
    match systemd_version(root, codename, facts)? {
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

/// Packages a real Debian root's dpkg status lists at least (a Lite image lists
/// hundreds); fewer means the status is a stub and says nothing about systemd.
const DPKG_FULL_STATUS: usize = 50;

fn systemd_version(
    root: &RootFs,
    codename: &str,
    facts: &Facts,
) -> Result<SystemdVersion, ImageError> {
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
    let packages = status.matches("Package: ").count();
    if packages >= DPKG_FULL_STATUS {
        return Ok(SystemdVersion::Missing(format!(
            "no systemd: dpkg lists {packages} packages, none of them systemd, and there is no {}",
            fb.systemd_run_generator
        )));
    }
    Ok(match fb.debian_systemd.get(codename) {
        Some(&v) => SystemdVersion::Found(
            v,
            format!("the version Debian {codename} ships; this root has no dpkg record of it"),
        ),
        None => SystemdVersion::Missing(format!(
            "no dpkg record of systemd, no {}, and {codename} is not a release piimg knows",
            fb.systemd_run_generator
        )),
    })
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
pub fn choose_first_boot(
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

/// The architecture from the ELF header of a core binary, else from dpkg's records.
fn detect_arch(root: &RootFs) -> Result<(Arch, String), ImageError> {
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

    #[test]
    fn dpkg_status_architecture() {
        let status = "Package: base-files\nArchitecture: arm64\n\nPackage: dpkg\nStatus: install ok installed\nArchitecture: armhf\n";
        assert_eq!(dpkg_arch(status).as_deref(), Some("armhf"));
        assert_eq!(dpkg_arch("Package: foo\nArchitecture: all\n"), None);
    }
}
