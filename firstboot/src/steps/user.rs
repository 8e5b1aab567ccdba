//! Step `user`: the admin account, made able to log in on every Raspberry Pi OS
//! vintage. Renames the first user (uid 1000) the way userconf-pi's `userconf` does
//! (RPi-Distro/userconf-pi: userconf), or creates the user; gives it a login shell;
//! locks its password when password login is off; installs piimg's sudo drop-in
//! ([`super::sudoers`]); cancels the userconfig wizard ([`super::userconfig`]).
//!
//! The first user is not what it was: pi-gen creates it with
//! `adduser --disabled-login` since 2026-02 (RPi-Distro/pi-gen 4b9cd15c,
//! stage1/01-sys-tweaks/00-run.sh), i.e. shell /usr/sbin/nologin, and only a password
//! given at image build (FIRST_USER_PASS) gives it /bin/bash. cloud-init skips an
//! existing user and never changes its shell (canonical/cloud-init
//! cloudinit/distros/__init__.py, `add_user`: "already exists, skipping"), so this
//! step, not cloud-init, makes the account right on Bookworm and Trixie alike.
//!
//! Edits /etc/passwd, shadow, group and gshadow directly (so it works under
//! `--root`), writing /etc/passwd last: it decides whether the rename happened.

use super::{sudoers, userconfig};
use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use piimg_contract::Admin;

/// The shell the admin gets when its own cannot log in (pi-gen's `usermod -s
/// /bin/bash` when the image has a first-user password).
pub const LOGIN_SHELL: &str = "/bin/bash";

/// Supplementary groups Raspberry Pi OS gives its first user (those that exist).
const GROUPS: &[&str] = &[
    "adm", "dialout", "cdrom", "sudo", "audio", "video", "plugdev", "games", "users", "input",
    "render", "netdev", "gpio", "i2c", "spi",
];

/// A login from /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (node path).
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// Parses /etc/passwd lines into accounts (malformed lines are skipped).
pub fn accounts(passwd: &str) -> Vec<Account> {
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 7).then_some(())?;
            Some(Account {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

/// Looks up `name` in the node's /etc/passwd.
pub fn lookup(fs: &NodeFs, name: &str) -> Result<Option<Account>, Error> {
    let passwd = fs.read("/etc/passwd")?.unwrap_or_default();
    Ok(accounts(&passwd).into_iter().find(|a| a.name == name))
}

/// Applies the admin account with `password_hash` (crypt(3), from the card's
/// secrets) as its password, else locked when SSH password login is off; `exec` runs
/// visudo and getty on the live system.
pub fn apply(
    admin: &Admin,
    password_hash: Option<&str>,
    fs: &NodeFs,
    exec: &Exec,
) -> Result<String, Error> {
    let user = admin.user.clone();
    if !sudoers::valid_login(&user) {
        return Err(Error::failed(format!(
            "node.json: admin.user {user:?} is not a usable login name (lowercase letters, digits, '-', '_'; not root)"
        )));
    }
    let passwd = fs.read("/etc/passwd")?.ok_or_else(|| {
        Error::failed("/etc/passwd does not exist: is --root a Raspberry Pi OS root filesystem?")
    })?;
    let all = accounts(&passwd);
    let mut summary = if all.iter().any(|a| a.name == user) {
        format!("user {user} exists")
    } else if let Some(first) = all.iter().find(|a| a.uid == 1000) {
        let old = first.name.clone();
        rename(fs, &passwd, &old, &user)?;
        format!("renamed first user {old} (uid 1000) to {user}")
    } else {
        create(fs, &passwd, &user)?
    };
    let acct = lookup(fs, &user)?.or_else(|| {
        // Under --dry-run nothing was written: describe the account as it would be.
        fs.dry().then(|| Account {
            name: user.clone(),
            uid: 1000,
            gid: 1000,
            home: format!("/home/{user}"),
            shell: LOGIN_SHELL.into(),
        })
    });
    let acct = acct.ok_or_else(|| {
        Error::failed(format!(
            "user {user} missing from /etc/passwd after creating it"
        ))
    })?;
    fs.mkdir(&acct.home, 0o700, Some((acct.uid, acct.gid)))?;
    if !can_log_in(&acct.shell) {
        set_shell(fs, &user, LOGIN_SHELL)?;
        summary.push_str(&format!("; shell {} -> {LOGIN_SHELL}", acct.shell));
    }
    ensure_shadow_entry(fs, &user)?;
    if let Some(hash) = password_hash {
        set_password_hash(fs, &user, hash)?;
        summary.push_str("; password set from the profile's hash");
    } else if !admin.password_login {
        lock_password(fs, &user)?;
        summary.push_str("; password locked");
    }
    summary.push_str("; ");
    summary.push_str(&sudoers::install(&user, fs, exec)?);
    summary.push_str("; ");
    summary.push_str(&userconfig::cancel(fs, exec)?);
    Ok(summary)
}

/// Whether `shell` lets the account log in: not empty, not nologin or false (the
/// shells adduser's --disabled-login and system accounts get).
pub fn can_log_in(shell: &str) -> bool {
    let name = shell.rsplit('/').next().unwrap_or("");
    !shell.trim().is_empty() && name != "nologin" && name != "false"
}

fn set_shell(fs: &NodeFs, user: &str, shell: &str) -> Result<(), Error> {
    let passwd = fs
        .read("/etc/passwd")?
        .ok_or_else(|| Error::failed("/etc/passwd disappeared while the user step ran"))?;
    let edited = map_lines(&passwd, |mut f| {
        if f[0] == user && f.len() >= 7 {
            f[6] = shell.to_string();
        }
        f
    });
    fs.put_like("/etc/passwd", edited.as_bytes(), 0o644)?;
    Ok(())
}

/// An account without a shadow line cannot pass PAM's account check: add a locked
/// one (as useradd writes it) when /etc/shadow exists and lacks the user.
fn ensure_shadow_entry(fs: &NodeFs, user: &str) -> Result<(), Error> {
    let Some(shadow) = fs.read("/etc/shadow")? else {
        return Ok(());
    };
    if shadow.lines().any(|l| l.split(':').next() == Some(user)) {
        return Ok(());
    }
    let days = crate::time::now() / 86_400;
    let line = format!("{user}:!:{days}:0:99999:7:::");
    fs.put_like("/etc/shadow", append_line(&shadow, &line).as_bytes(), 0o640)?;
    Ok(())
}

fn map_lines(text: &str, f: impl Fn(Vec<String>) -> Vec<String>) -> String {
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim().is_empty() || l.starts_with('#') {
                l.to_string()
            } else {
                f(l.split(':').map(String::from).collect()).join(":")
            }
        })
        .collect();
    out.push(String::new());
    out.join("\n")
}

fn rename_members(list: &str, old: &str, new: &str) -> String {
    list.split(',')
        .map(|m| if m == old { new } else { m })
        .collect::<Vec<_>>()
        .join(",")
}

fn rename(fs: &NodeFs, passwd: &str, old: &str, new: &str) -> Result<(), Error> {
    let group_taken = fs
        .read("/etc/group")?
        .is_some_and(|g| g.lines().any(|l| l.split(':').next() == Some(new)));
    for (path, members) in [
        ("/etc/shadow", &[][..]),
        ("/etc/group", &[3][..]),
        ("/etc/gshadow", &[2, 3][..]),
    ] {
        let Some(text) = fs.read(path)? else {
            continue;
        };
        let is_group = path != "/etc/shadow";
        let edited = map_lines(&text, |mut f| {
            if f[0] == old && !(is_group && group_taken) {
                f[0] = new.to_string();
            }
            for &i in members {
                if let Some(v) = f.get_mut(i) {
                    *v = rename_members(v, old, new);
                }
            }
            f
        });
        fs.put_like(path, edited.as_bytes(), 0o640)?;
    }
    for path in ["/etc/subuid", "/etc/subgid"] {
        if let Some(text) = fs.read(path)? {
            let edited = map_lines(&text, |mut f| {
                if f[0] == old {
                    f[0] = new.to_string();
                }
                f
            });
            fs.put_like(path, edited.as_bytes(), 0o644)?;
        }
    }
    for path in [
        "/etc/sudoers.d/010_pi-nopasswd",
        "/etc/sudoers.d/90-cloud-init-users",
    ] {
        if let Some(text) = fs.read(path)? {
            let prefix = format!("{old} ");
            let edited: String = text
                .lines()
                .map(|l| match l.strip_prefix(&prefix) {
                    Some(rest) => format!("{new} {rest}\n"),
                    None => format!("{l}\n"),
                })
                .collect();
            fs.put_like(path, edited.as_bytes(), 0o440)?;
        }
    }
    let (old_home, new_home) = (format!("/home/{old}"), format!("/home/{new}"));
    if fs.path(&old_home).is_dir() && !fs.exists(&new_home) {
        fs.rename(&old_home, &new_home)?;
    }
    let edited = map_lines(passwd, |mut f| {
        if f[0] == old && f.len() >= 7 {
            f[0] = new.to_string();
            if f[5] == old_home {
                f[5] = new_home.clone();
            }
        }
        f
    });
    fs.put_like("/etc/passwd", edited.as_bytes(), 0o644)?;
    Ok(())
}

fn create(fs: &NodeFs, passwd: &str, user: &str) -> Result<String, Error> {
    let used: Vec<u32> = accounts(passwd).iter().map(|a| a.uid).collect();
    let group = fs.read("/etc/group")?.unwrap_or_default();
    let gids: Vec<u32> = group
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    let uid = (1000..60000)
        .find(|u| !used.contains(u))
        .ok_or_else(|| Error::failed("/etc/passwd: no free uid between 1000 and 60000"))?;
    let gid = if gids.contains(&uid) {
        (1000..60000)
            .find(|g| !gids.contains(g))
            .ok_or_else(|| Error::failed("/etc/group: no free gid between 1000 and 60000"))?
    } else {
        uid
    };
    let home = format!("/home/{user}");
    // Groups first (membership edits are idempotent), /etc/passwd last.
    let mut group_text = group.clone();
    if !group.lines().any(|l| l.split(':').next() == Some(user)) {
        group_text = append_line(&group_text, &format!("{user}:x:{gid}:"));
    }
    group_text = map_lines(&group_text, |mut f| {
        if GROUPS.contains(&f[0].as_str()) && f.len() >= 4 {
            let mut members: Vec<&str> = f[3].split(',').filter(|m| !m.is_empty()).collect();
            if !members.contains(&user) {
                members.push(user);
            }
            f[3] = members.join(",");
        }
        f
    });
    fs.put_like("/etc/group", group_text.as_bytes(), 0o644)?;
    let gshadow = fs.read("/etc/gshadow")?;
    if let Some(gs) = gshadow.filter(|gs| !gs.lines().any(|l| l.split(':').next() == Some(user))) {
        fs.put_like(
            "/etc/gshadow",
            append_line(&gs, &format!("{user}:!::")).as_bytes(),
            0o640,
        )?;
    }
    let shadow = fs.read("/etc/shadow")?;
    if let Some(sh) = shadow.filter(|sh| !sh.lines().any(|l| l.split(':').next() == Some(user))) {
        let days = crate::time::now() / 86_400;
        let line = format!("{user}:!:{days}:0:99999:7:::");
        fs.put_like("/etc/shadow", append_line(&sh, &line).as_bytes(), 0o640)?;
    }
    fs.mkdir(&home, 0o700, Some((uid, gid)))?;
    for name in fs.files_in("/etc/skel") {
        let dest = format!("{home}/{name}");
        if !fs.exists(&dest) {
            let data = fs.read_bytes(&format!("/etc/skel/{name}"))?;
            fs.put(&dest, 0o644, &data, Some((uid, gid)))?;
        }
    }
    let line = format!("{user}:x:{uid}:{gid}:,,,:{home}:/bin/bash");
    fs.put_like("/etc/passwd", append_line(passwd, &line).as_bytes(), 0o644)?;
    Ok(format!("created user {user} (uid {uid})"))
}

fn append_line(text: &str, line: &str) -> String {
    let mut t = text.to_string();
    if !t.is_empty() && !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str(line);
    t.push('\n');
    t
}

/// Sets `user`'s /etc/shadow password field to `hash` (a crypt(3) hash the builder
/// checked; refused here too if it could break the file's format).
fn set_password_hash(fs: &NodeFs, user: &str, hash: &str) -> Result<(), Error> {
    if !hash.starts_with('$') || hash.contains([':', '\n']) {
        return Err(Error::failed(
            "secrets.json: password_hash is not a crypt(3) hash; rebuild the card with a valid access.password_hash",
        ));
    }
    let Some(shadow) = fs.read("/etc/shadow")? else {
        return Err(Error::failed(
            "/etc/shadow does not exist: cannot set the admin's password",
        ));
    };
    let edited = map_lines(&shadow, |mut f| {
        if f[0] == user && f.len() > 1 {
            f[1] = hash.to_string();
        }
        f
    });
    fs.put_like("/etc/shadow", edited.as_bytes(), 0o640)?;
    Ok(())
}

fn lock_password(fs: &NodeFs, user: &str) -> Result<(), Error> {
    let Some(shadow) = fs.read("/etc/shadow")? else {
        return Ok(());
    };
    let edited = map_lines(&shadow, |mut f| {
        if f[0] == user && f.len() > 1 && !f[1].starts_with('!') {
            f[1] = format!("!{}", f[1]);
        }
        f
    });
    fs.put_like("/etc/shadow", edited.as_bytes(), 0o640)?;
    Ok(())
}
