//! The admin's sudo rule: piimg's own drop-in in /etc/sudoers.d, because Raspberry Pi
//! OS stopped shipping one. raspberrypi-sys-mods used to install
//! `/etc/sudoers.d/010_pi-nopasswd` (`pi ALL=(ALL) NOPASSWD: ALL`); since 2026-02 it
//! does not, and pi-gen only writes a rule when the image is built with
//! PASSWORDLESS_SUDO=1 (RPi-Distro/pi-gen c020178c, stage2/01-sys-tweaks/01-run.sh).
//! The profile's admin logs in with keys and has no usable password, so a sudo that
//! asks for one would be no sudo at all: the rule is password-less.
//!
//! The file is checked the way `visudo -c` would check a drop-in before it goes in
//! place: mode 0440, owned by root, a name sudo's `@includedir` reads (no `.`, no
//! trailing `~`: sudoers(5)), one well-formed rule for a valid login name; on the
//! live node `visudo -cf` itself checks it when installed.

use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;

/// piimg's drop-in. Named to sort after the images' own `010_*` and cloud-init's
/// `90-cloud-init-users`: with several matching rules sudo applies the last one.
pub const DROP_IN: &str = "/etc/sudoers.d/piimg-admin";

/// Mode sudo requires of its files (it refuses world-writable ones; 0440 is what
/// visudo and the distributions use).
pub const MODE: u32 = 0o440;

/// The drop-in's text for `user`.
pub fn rule(user: &str) -> String {
    format!(
        "# Written by piimg's first-boot agent: the profile's admin user, key login only,\n\
         # gets password-less sudo (Raspberry Pi OS no longer ships 010_pi-nopasswd).\n\
         {user} ALL=(ALL) NOPASSWD: ALL\n"
    )
}

/// Checks a drop-in the way visudo would for what piimg writes: the file name is one
/// sudo reads, and every rule line is `USER ALL=(ALL) NOPASSWD: ALL` for a valid
/// login name. Returns the first problem, naming the file and line.
pub fn check(path: &str, text: &str) -> Result<(), String> {
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.is_empty() || name.contains('.') || name.ends_with('~') {
        return Err(format!(
            "{path}: sudo skips files whose name contains '.' or ends in '~'"
        ));
    }
    let mut rules = 0;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || (l.starts_with('#') && !l.starts_with("#include")) {
            continue;
        }
        let mut words = l.split_whitespace();
        let (Some(user), Some("ALL=(ALL)"), Some("NOPASSWD:"), Some("ALL"), None) = (
            words.next(),
            words.next(),
            words.next(),
            words.next(),
            words.next(),
        ) else {
            return Err(format!(
                "{path} line {}: not a `USER ALL=(ALL) NOPASSWD: ALL` rule: {l:?}",
                i + 1
            ));
        };
        if !valid_login(user) {
            return Err(format!(
                "{path} line {}: {user:?} is not a login name",
                i + 1
            ));
        }
        rules += 1;
    }
    if rules == 0 {
        return Err(format!("{path}: no rule"));
    }
    Ok(())
}

/// A login name as Debian's adduser and userconf-pi accept it (lowercase letters,
/// digits, `-`, `_`; not starting with `-`; at most 32 characters; not root).
pub fn valid_login(name: &str) -> bool {
    !name.is_empty()
        && name != "root"
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Installs the drop-in for `user` (idempotent). On the live node, when `visudo`
/// exists, a copy under a name sudo ignores is checked with `visudo -cf` first.
pub fn install(user: &str, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let text = rule(user);
    check(DROP_IN, &text).map_err(Error::failed)?;
    if exec.live() && !exec.dry() {
        if let Some(visudo) = ["/usr/sbin/visudo", "/sbin/visudo"]
            .into_iter()
            .find(|p| fs.exists(p))
        {
            // A '.' in the name: sudo never reads this file, even if left behind.
            let probe = "/etc/sudoers.d/.piimg-admin.check";
            fs.put(probe, MODE, text.as_bytes(), Some((0, 0)))?;
            let out = exec.run(&Cmd::new(visudo, &["-c", "-q", "-f", probe]));
            fs.rm(probe)?;
            let out = out?;
            if !out.success() {
                return Err(Error::failed(format!(
                    "{DROP_IN}: visudo refuses the rule for {user}: {}",
                    out.last_words()
                )));
            }
        }
    }
    fs.put(DROP_IN, MODE, text.as_bytes(), Some((0, 0)))?;
    Ok(format!("{DROP_IN}: {user} may sudo without a password"))
}
