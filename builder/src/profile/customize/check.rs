//! The rules of `[locale]`, `[packages]`, `[[files]]` and `[[run_once]]`: every
//! problem at once, each naming its field, with a hint.

use super::{names, read_source};
use crate::profile::day_one::{DEFAULT_FILE_MODE, MAX_ITEM_BYTES, MAX_TOTAL_BYTES, parse_mode};
use crate::profile::model::Profile;
use crate::profile::suggest;
use piimg_contract::customize::{RUN_ONCE_DEFAULT_TIMEOUT_SECS, RUN_ONCE_TIMEOUT_SECS};
use piimg_contract::{AGENT_INSTALL_PATH, AGENT_UNIT, BOOT_MOUNT};
use std::collections::HashMap;

/// Directories a `[[files]]` entry may not write into: the boot partition, piimg's
/// own state, k3s's configuration, and what is not a disk.
const RESERVED_DIRS: &[&str] = &[
    BOOT_MOUNT,
    "/var/lib/piimg",
    "/etc/rancher",
    "/proc",
    "/sys",
    "/dev",
    "/run",
];

/// Files the agent writes itself (the `[locale]` ones only when `[locale]` sets them).
const RESERVED_FILES: &[&str] = &[
    AGENT_INSTALL_PATH,
    "/etc/ssh/sshd_config.d/50-piimg.conf",
    "/etc/sudoers.d/piimg-admin",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/gshadow",
];

/// The files `[locale]` makes the agent write.
const LOCALE_FILES: &[&str] = &[
    "/etc/localtime",
    "/etc/timezone",
    "/etc/locale.gen",
    "/etc/default/locale",
    "/etc/default/keyboard",
];

/// One problem found: the field, what is wrong, and whether it only warns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `files[2].mode`.
    pub field: String,
    /// What is wrong, with a hint.
    pub message: String,
    /// True for a warning (the build goes on).
    pub warning: bool,
}

/// Every problem of the customisation sections, in profile order.
#[derive(Debug, Default)]
pub struct Findings {
    /// The problems.
    pub problems: Vec<Problem>,
}

impl Findings {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field.into(), message.into(), false);
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(field.into(), message.into(), true);
    }

    fn push(&mut self, field: String, message: String, warning: bool) {
        self.problems.push(Problem {
            field,
            message,
            warning,
        });
    }
}

/// A user or group name as the node's account tools accept it (Debian's adduser
/// `SYS_NAME_REGEX`-like: system accounts such as `_apt` or `www-data` included).
pub fn is_account_name(s: &str) -> bool {
    let body = s.strip_suffix('$').unwrap_or(s);
    !body.is_empty()
        && s.len() <= 32
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Checks the customisation sections of `p`: every problem at once.
pub fn check(p: &Profile) -> Vec<Problem> {
    let mut f = Findings::default();
    check_into(p, &mut f);
    f.problems
}

fn check_into(p: &Profile, f: &mut Findings) {
    locale(p, f);
    packages(p, f);
    let mut total = 0;
    files(p, f, &mut total);
    run_once(p, f, &mut total);
    if total > MAX_TOTAL_BYTES {
        f.error(
            "files",
            format!(
                "[[files]] and [[run_once]] add up to {total} bytes, more than the {MAX_TOTAL_BYTES} a card carries; copy large files with a run_once script instead"
            ),
        );
    }
}

fn unknown(
    f: &mut Findings,
    field: &str,
    value: &str,
    what: &str,
    list: impl Iterator<Item = &'static str> + Clone,
    example: &str,
) {
    if list.clone().any(|n| n == value) {
        return;
    }
    let hint = suggest::nearest(value, list)
        .map(|s| format!("did you mean \"{s}\"?"))
        .unwrap_or_else(|| format!("e.g. \"{example}\""));
    f.error(field, format!("\"{value}\" is not a known {what}; {hint}"));
}

fn locale(p: &Profile, f: &mut Findings) {
    let Some(l) = &p.locale else {
        return;
    };
    if let Some(tz) = &l.timezone {
        unknown(
            f,
            "locale.timezone",
            tz,
            "time zone (tz database name)",
            names::timezones(),
            "Europe/London",
        );
    }
    if let Some(loc) = &l.locale {
        unknown(
            f,
            "locale.locale",
            loc,
            "locale (glibc's SUPPORTED list)",
            names::locales(),
            "en_GB.UTF-8",
        );
    }
    if let Some(kb) = &l.keyboard {
        unknown(
            f,
            "locale.keyboard",
            kb,
            "keyboard layout (XKB layout code)",
            names::keyboards(),
            "gb",
        );
    }
}

/// A Debian package name (Debian Policy 5.6.1): lowercase letters, digits, `+`, `-`
/// and `.`, at least two characters, starting with a letter or digit.
pub fn is_package_name(s: &str) -> bool {
    s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn packages(p: &Profile, f: &mut Findings) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in p.packages.install.iter().enumerate() {
        let field = format!("packages.install[{i}]");
        if !is_package_name(name) {
            f.error(
                field,
                format!(
                    "\"{name}\" is not a Debian package name (lowercase letters, digits, '+', '-', '.'; at least 2 characters; no versions or options)"
                ),
            );
        } else if let Some(j) = seen.insert(name, i) {
            f.error(
                field,
                format!("\"{name}\" is already packages.install[{j}]"),
            );
        }
    }
}

/// Why `path` cannot be a `[[files]]` path, if it cannot.
pub fn path_problem(path: &str, locale_set: bool) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("\"{path}\" is not an absolute path"));
    }
    if path.len() > 4096 || path.chars().any(char::is_control) {
        return Some(format!("{path:?} is too long or holds control characters"));
    }
    if path.ends_with('/')
        || path[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some(format!(
            "\"{path}\" is not a normalised file path (no `//`, `.`, `..` or trailing `/`)"
        ));
    }
    let under = |dir: &str| path == dir || path.starts_with(&format!("{dir}/"));
    if let Some(dir) = RESERVED_DIRS.iter().find(|d| under(d)) {
        return Some(format!(
            "\"{path}\" is under {dir}, which piimg or the OS manages; pick another place"
        ));
    }
    let unit = format!("/etc/systemd/system/{AGENT_UNIT}");
    if RESERVED_FILES.contains(&path)
        || path == unit
        || path.starts_with("/etc/NetworkManager/system-connections/piimg-")
    {
        return Some(format!(
            "\"{path}\" is written by piimg's agent itself; use the matching profile setting"
        ));
    }
    if locale_set && LOCALE_FILES.contains(&path) {
        return Some(format!(
            "\"{path}\" is written by the agent from [locale]; set it there"
        ));
    }
    None
}

fn files(p: &Profile, f: &mut Findings, total: &mut usize) {
    let locale_set = p.locale.is_some();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, e) in p.files.iter().enumerate() {
        let field = |k: &str| format!("files[{i}].{k}");
        if let Some(why) = path_problem(&e.path, locale_set) {
            f.error(field("path"), why);
        } else if let Some(j) = seen.insert(&e.path, i) {
            f.error(
                field("path"),
                format!("\"{}\" is already files[{j}]", e.path),
            );
        }
        let mode = match &e.mode {
            None => Some(DEFAULT_FILE_MODE),
            Some(m) => {
                let parsed = parse_mode(m);
                if parsed.is_none() {
                    f.error(
                        field("mode"),
                        format!("{m:?} is not an octal permission mode; write it as a string like \"0644\""),
                    );
                }
                parsed
            }
        };
        for (k, v) in [("owner", &e.owner), ("group", &e.group)] {
            if let Some(name) = v {
                if !is_account_name(name) {
                    f.error(
                        field(k),
                        format!("\"{name}\" is not a user or group name (lowercase letters, digits, '-', '_', starting with a letter)"),
                    );
                }
            }
        }
        let size = body(
            p,
            f,
            &field("content"),
            &field("source"),
            "content",
            &e.content,
            &e.source,
        );
        *total += size;
        if mode.is_some_and(|m| m & 0o004 == 0) && size > 0 {
            f.warn(
                field("mode"),
                format!(
                    "{} is not world-readable, but its content stays readable in piimg/node.json on the card's boot partition; keep secrets out of [[files]]",
                    e.path
                ),
            );
        }
    }
}

/// Checks that exactly one of an inline body and a `source` is given, that the
/// source can be read and that either is within [`MAX_ITEM_BYTES`]; returns its size.
fn body(
    p: &Profile,
    f: &mut Findings,
    inline_field: &str,
    source_field: &str,
    inline_key: &str,
    inline: &Option<String>,
    source: &Option<std::path::PathBuf>,
) -> usize {
    match (inline, source) {
        (Some(_), Some(_)) => {
            f.error(
                source_field,
                format!("give either {inline_key} or source, not both"),
            );
            0
        }
        (None, None) => {
            f.error(
                inline_field,
                format!("missing; give {inline_key} = \"...\" or source = \"FILE\" (relative to the profile)"),
            );
            0
        }
        (Some(text), None) if text.len() > MAX_ITEM_BYTES => {
            f.error(
                inline_field,
                format!("{} bytes, more than {MAX_ITEM_BYTES}", text.len()),
            );
            text.len()
        }
        (Some(text), None) => text.len(),
        (None, Some(src)) => match read_source(p, source_field, src) {
            Ok(text) => text.len(),
            Err(e) => {
                let full = e.to_string();
                let msg = full
                    .strip_prefix(&format!("{source_field}: "))
                    .unwrap_or(&full)
                    .to_string();
                f.error(source_field, msg);
                0
            }
        },
    }
}

/// A run-once name: letters, digits, `-` and `_`, at most 64 characters.
pub fn is_run_once_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn run_once(p: &Profile, f: &mut Findings, total: &mut usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, r) in p.run_once.iter().enumerate() {
        let field = |k: &str| format!("run_once[{i}].{k}");
        if !is_run_once_name(&r.name) {
            f.error(
                field("name"),
                format!(
                    "\"{}\" is not a script name (letters, digits, '-', '_'; at most 64)",
                    r.name
                ),
            );
        } else if let Some(j) = seen.insert(&r.name, i) {
            f.error(
                field("name"),
                format!("\"{}\" is already run_once[{j}]", r.name),
            );
        }
        let size = body(
            p,
            f,
            &field("script"),
            &field("source"),
            "script",
            &r.script,
            &r.source,
        );
        if size == 0 && (r.script.is_some() || r.source.is_some()) {
            f.error(field("script"), "the script is empty");
        }
        if let Some(t) = r
            .timeout_secs
            .filter(|t| !RUN_ONCE_TIMEOUT_SECS.contains(t))
        {
            f.error(
                field("timeout_secs"),
                format!(
                    "{t} is not 1..=86400 seconds; leave it out for the default {RUN_ONCE_DEFAULT_TIMEOUT_SECS} (30 min)"
                ),
            );
        }
        *total += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names_include_system_accounts() {
        for ok in [
            "root",
            "admin",
            "_apt",
            "www-data",
            "systemd-network",
            "machine$",
        ] {
            assert!(is_account_name(ok), "{ok}");
        }
        for bad in ["", "Admin", "1user", "a b", "-x", "$"] {
            assert!(!is_account_name(bad), "{bad}");
        }
    }

    #[test]
    fn package_names_follow_debian_policy() {
        for ok in ["vim", "g++", "libc6", "python3.11", "open-iscsi", "0ad"] {
            assert!(is_package_name(ok), "{ok}");
        }
        for bad in [
            "v",
            "Vim",
            "-vim",
            "vim=2:9.0",
            "vim/bookworm",
            "vim git",
            "",
        ] {
            assert!(!is_package_name(bad), "{bad}");
        }
    }

    #[test]
    fn file_paths_are_absolute_normalised_and_not_piimgs() {
        assert_eq!(path_problem("/etc/motd", false), None);
        assert_eq!(path_problem("/etc/localtime", false), None);
        for bad in [
            "etc/motd",
            "/etc//motd",
            "/etc/./motd",
            "/etc/../motd",
            "/etc/",
            "/boot/firmware/config.txt",
            "/var/lib/piimg/state.json",
            "/etc/rancher/k3s/config.yaml",
            "/etc/hostname",
            "/etc/systemd/system/piimg-firstboot.service",
            "/etc/NetworkManager/system-connections/piimg-eth0.nmconnection",
        ] {
            assert!(path_problem(bad, false).is_some(), "{bad}");
        }
        assert!(path_problem("/etc/localtime", true).is_some());
    }
}
