//! Steps `ssh-keys` and `ssh`: the admin's authorized_keys, and sshd enabled with the
//! builder's drop-in in place.

use super::user;
use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;
use piimg_contract::Admin;

/// The sshd drop-in the builder renders into `NodeConfig.files`.
pub const SSHD_DROP_IN: &str = "/etc/ssh/sshd_config.d/50-piimg.conf";

/// Step `ssh-keys`: every configured key exactly once in ~/.ssh/authorized_keys
/// (existing lines kept), file 0600 and directory 0700, owned by the admin.
pub fn authorized_keys(admin: &Admin, fs: &NodeFs) -> Result<String, Error> {
    let name = admin.user.clone();
    let acct = match user::lookup(fs, &name)? {
        Some(a) => a,
        None if fs.dry() => user::Account {
            name: name.clone(),
            uid: 1000,
            gid: 1000,
            home: format!("/home/{name}"),
            shell: user::LOGIN_SHELL.into(),
        },
        None => {
            return Err(Error::failed(format!(
                "user {name} is not in /etc/passwd; the `user` step must run first"
            )));
        }
    };
    let keys: Vec<String> = admin
        .ssh_authorized_keys
        .iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    if let Some(bad) = keys.iter().find(|k| k.contains('\n') || !k.contains(' ')) {
        return Err(Error::failed(format!(
            "node.json: admin.ssh_authorized_keys has an entry that is not one OpenSSH public key line: {bad:?}"
        )));
    }
    if keys.is_empty() && !admin.password_login {
        return Err(Error::failed(
            "node.json: admin.ssh_authorized_keys is empty and password login is off: nobody could log in",
        ));
    }
    let dir = format!("{}/.ssh", acct.home);
    let path = format!("{dir}/authorized_keys");
    let owner = Some((acct.uid, acct.gid));
    fs.mkdir(&dir, 0o700, owner)?;
    let existing = fs.read(&path)?.unwrap_or_default();
    let mut lines: Vec<String> = Vec::new();
    for l in existing
        .lines()
        .map(str::to_string)
        .chain(keys.iter().cloned())
    {
        if l.trim().is_empty() || !lines.iter().any(|x| x.trim() == l.trim()) {
            lines.push(l);
        }
    }
    let text = lines.join("\n") + "\n";
    fs.put(&path, 0o600, text.as_bytes(), owner)?;
    Ok(format!("{} key(s) in {path}", keys.len()))
}

/// Step `ssh`: check the drop-in, then enable ssh.service the way `systemctl enable`
/// does (wants-symlink plus the `sshd.service` alias), without running systemctl.
/// `password_login` is the card's `admin.password_login`. Host keys left empty or
/// damaged (a power cut seconds after cloud-init made them: the files exist, their data
/// never reached the card, and cloud-init makes keys once per instance) are removed and
/// made again with `ssh-keygen -A`; otherwise sshd never starts on that node.
pub fn enable(password_login: bool, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    if !password_login {
        let dropin = fs.read(SSHD_DROP_IN)?.unwrap_or_default();
        let off = dropin.lines().any(|l| {
            let mut w = l.split_whitespace();
            w.next()
                .is_some_and(|k| k.eq_ignore_ascii_case("PasswordAuthentication"))
                && w.next().is_some_and(|v| v.eq_ignore_ascii_case("no"))
        });
        if !off && !fs.dry() {
            return Err(Error::failed(format!(
                "{SSHD_DROP_IN} does not say `PasswordAuthentication no` but password login is off; the builder must put it in node.json files"
            )));
        }
    }
    let unit = [
        "/lib/systemd/system/ssh.service",
        "/usr/lib/systemd/system/ssh.service",
    ]
    .into_iter()
    .find(|p| fs.exists(p))
    .ok_or_else(|| {
        Error::failed("ssh.service not found in /lib/systemd/system: is openssh-server installed?")
    })?;
    fs.link(
        unit,
        "/etc/systemd/system/multi-user.target.wants/ssh.service",
    )?;
    fs.link(unit, "/etc/systemd/system/sshd.service")?;
    // Raspberry Pi OS's boot-partition convention: sshswitch enables ssh on an `ssh` file.
    let repaired = repair_host_keys(fs, exec)?;
    Ok(format!(
        "ssh.service enabled; {SSHD_DROP_IN} in place{repaired}"
    ))
}

/// Removes host keys that are empty or do not start like a private key, makes them
/// again (`ssh-keygen -A`, under `--root` with `-f ROOT`), flushes them to disk and, on
/// the live system, restarts sshd. Returns what it did for the step's message.
fn repair_host_keys(fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let broken: Vec<String> = fs
        .names_in("/etc/ssh")
        .into_iter()
        .filter(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
        .filter(|n| {
            fs.read_bytes(&format!("/etc/ssh/{n}"))
                .map(|b| !b.starts_with(b"-----BEGIN "))
                .unwrap_or(true)
        })
        .collect();
    if broken.is_empty() {
        return Ok(String::new());
    }
    for n in &broken {
        fs.rm(&format!("/etc/ssh/{n}"))?;
        fs.rm(&format!("/etc/ssh/{n}.pub"))?;
    }
    let root = fs.path("/").to_string_lossy().into_owned();
    if exec.live() {
        exec.run_ok(&Cmd::new("ssh-keygen", &["-A"]))?;
    } else {
        exec.run_ok(&Cmd::new("ssh-keygen", &["-A", "-f", &root]))?;
    }
    exec.run_ok(&Cmd::new("sync", &[]))?;
    exec.run_ok_live(&Cmd::new("systemctl", &["reset-failed", "ssh.service"]))?;
    exec.run_ok_live(&Cmd::new("systemctl", &["restart", "ssh.service"]))?;
    Ok(format!(
        "; host key(s) {} were empty or damaged (a power cut before they reached the card?): made again with ssh-keygen -A",
        broken.join(", ")
    ))
}
