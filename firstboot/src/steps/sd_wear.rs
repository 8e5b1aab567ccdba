//! Step `sd-wear`: fewer writes to the SD card (`storage.sd_wear = "minimal"`).
//!
//! Each change is one line of the step's status message, and each says when it is
//! already so (rerun, or a release that does it itself):
//! - journald keeps the journal in RAM, capped ([`JOURNALD_DROPIN`]);
//! - Bookworm's `dphys-swapfile` masked and its swap file removed (Trixie's
//!   `rpi-swap` zram swap is left alone);
//! - the root mounted `noatime` with a longer journal commit interval ([`COMMIT_SECS`]);
//! - `/tmp` on tmpfs (systemd's `tmp.mount`: Trixie enables it itself, Bookworm ships
//!   it in /usr/share/systemd);
//! - apt's package cache emptied.
//!
//! Reversible only by re-imaging (or by hand).

use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;
use piimg_contract::storage::SdWear;

/// piimg's journald drop-in.
pub const JOURNALD_DROPIN: &str = "/etc/systemd/journald.conf.d/60-piimg-sd-wear.conf";
/// The journal's RAM cap.
pub const JOURNAL_RUNTIME_MAX: &str = "64M";
/// ext4's `commit=` on the root, seconds between journal commits (default 5).
pub const COMMIT_SECS: u32 = 600;

const JOURNALD_TEXT: &str = "\
# piimg: [storage] sd_wear = \"minimal\": the journal lives in RAM (lost at reboot),
# capped, so logging does not wear the SD card. Remove this file for a persistent journal.
[Journal]
Storage=volatile
RuntimeMaxUse=64M
";

/// Step `sd-wear`: applies `level`; `Off` changes nothing.
pub fn apply(level: SdWear, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    if level == SdWear::Off {
        return Ok("sd_wear = off: nothing changed".into());
    }
    let lines = [
        journald(fs)?,
        swap(fs, exec)?,
        root_options(fs, exec)?,
        tmp_on_tmpfs(fs)?,
        apt_cache(fs)?,
    ];
    Ok(format!("sd_wear = minimal:\n{}", lines.join("\n")))
}

fn journald(fs: &NodeFs) -> Result<String, Error> {
    let changed = fs.put(
        JOURNALD_DROPIN,
        0o644,
        JOURNALD_TEXT.as_bytes(),
        Some((0, 0)),
    )?;
    Ok(format!(
        "journald: Storage=volatile, RuntimeMaxUse={JOURNAL_RUNTIME_MAX} ({JOURNALD_DROPIN}{})",
        if changed {
            ", from the next boot"
        } else {
            ", already so"
        }
    ))
}

/// dphys-swapfile's swap file (`CONF_SWAPFILE` in /etc/dphys-swapfile, default /var/swap).
fn swap_file(fs: &NodeFs) -> Result<String, Error> {
    let conf = fs.read("/etc/dphys-swapfile")?.unwrap_or_default();
    Ok(conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("CONF_SWAPFILE="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next_back()
        .filter(|v| v.starts_with('/') && !v.split('/').any(|c| c == ".."))
        .unwrap_or_else(|| "/var/swap".into()))
}

fn swap(fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let installed = [
        "/lib/systemd/system/dphys-swapfile.service",
        "/usr/lib/systemd/system/dphys-swapfile.service",
        "/etc/init.d/dphys-swapfile",
    ]
    .iter()
    .any(|p| fs.exists(p));
    let file = swap_file(fs)?;
    if !installed && !fs.exists(&file) {
        let zram = if fs.exists("/usr/lib/systemd/system-generators/rpi-swap-generator")
            || fs.exists("/lib/systemd/system-generators/rpi-swap-generator")
        {
            "rpi-swap's zram swap left as is"
        } else {
            "no swap file"
        };
        return Ok(format!("swap: no dphys-swapfile, {zram}"));
    }
    // Masking covers both its systemd unit and its SysV script.
    let masked = fs.link("/dev/null", "/etc/systemd/system/dphys-swapfile.service")?;
    fs.rm("/etc/systemd/system/multi-user.target.wants/dphys-swapfile.service")?;
    let active = fs
        .read("/proc/swaps")?
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(file.as_str()));
    if active {
        exec.run_ok_live(&Cmd::new("swapoff", &[&file]))?;
    }
    let removed = fs.rm(&file)?;
    Ok(format!(
        "swap: dphys-swapfile {}, {file} {}",
        if masked { "masked" } else { "already masked" },
        if removed { "removed" } else { "absent" }
    ))
}

/// `opts` with `noatime` and `commit=SECS` (replacing another `commit=`).
pub fn wear_options(opts: &str) -> String {
    let mut out: Vec<String> = opts
        .split(',')
        .filter(|o| {
            !o.is_empty()
                && !o.starts_with("commit=")
                && *o != "atime"
                && *o != "relatime"
                && *o != "strictatime"
        })
        .map(String::from)
        .collect();
    if !out.iter().any(|o| o == "noatime") {
        out.push("noatime".into());
    }
    out.push(format!("commit={COMMIT_SECS}"));
    out.join(",")
}

/// fstab text with the root line's options made [`wear_options`]; `None` when it has
/// no root line.
pub fn fstab_with_root_options(fstab: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::new();
    for line in fstab.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !found && !line.trim_start().starts_with('#') && fields.len() >= 4 && fields[1] == "/" {
            found = true;
            // Replace the fourth field in place, keeping the line's spacing.
            let mut rest = line;
            let mut prefix = String::new();
            for f in &fields[..3] {
                let at = rest.find(f).unwrap_or(0) + f.len();
                prefix.push_str(&rest[..at]);
                rest = &rest[at..];
            }
            let at = rest.find(fields[3]).unwrap_or(0);
            prefix.push_str(&rest[..at]);
            prefix.push_str(&wear_options(fields[3]));
            prefix.push_str(&rest[at + fields[3].len()..]);
            out.push_str(&prefix);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    found.then_some(out)
}

fn root_options(fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let fstab = fs.read("/etc/fstab")?.unwrap_or_default();
    let Some(text) = fstab_with_root_options(&fstab) else {
        return Ok("root: /etc/fstab has no line for / (left as is)".into());
    };
    let changed = fs.put_like("/etc/fstab", text.as_bytes(), 0o644)?;
    let opts = format!("noatime,commit={COMMIT_SECS}");
    if changed {
        exec.run_ok_live(&Cmd::new("mount", &["-o", &format!("remount,{opts}"), "/"]))?;
    }
    Ok(format!(
        "root: {opts} in /etc/fstab{}",
        if changed { "" } else { ", already so" }
    ))
}

fn tmp_on_tmpfs(fs: &NodeFs) -> Result<String, Error> {
    let fstab = fs.read("/etc/fstab")?.unwrap_or_default();
    if let Some(l) = fstab
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && l.split_whitespace().nth(1) == Some("/tmp"))
    {
        return Ok(format!(
            "/tmp: /etc/fstab mounts it ({}); left as is",
            l.trim()
        ));
    }
    if fs
        .read_link("/etc/systemd/system/tmp.mount")
        .is_some_and(|t| t.as_os_str() == "/dev/null")
    {
        return Ok("/tmp: tmp.mount is masked on this image; left as is".into());
    }
    if [
        "/usr/lib/systemd/system/tmp.mount",
        "/lib/systemd/system/tmp.mount",
    ]
    .iter()
    .any(|p| fs.exists(p))
    {
        return Ok("/tmp: tmpfs already (systemd's tmp.mount)".into());
    }
    let Some(unit) = fs.read("/usr/share/systemd/tmp.mount")? else {
        return Ok("/tmp: no tmp.mount on this image; left on the root".into());
    };
    let a = fs.put(
        "/etc/systemd/system/tmp.mount",
        0o644,
        unit.as_bytes(),
        Some((0, 0)),
    )?;
    let b = fs.link(
        "/etc/systemd/system/tmp.mount",
        "/etc/systemd/system/local-fs.target.wants/tmp.mount",
    )?;
    Ok(format!(
        "/tmp: tmpfs (tmp.mount enabled{})",
        if a || b {
            ", from the next boot"
        } else {
            ", already so"
        }
    ))
}

fn apt_cache(fs: &NodeFs) -> Result<String, Error> {
    let mut removed = 0;
    for dir in ["/var/cache/apt/archives", "/var/cache/apt/archives/partial"] {
        for f in fs.files_in(dir) {
            if f.ends_with(".deb") {
                fs.rm(&format!("{dir}/{f}"))?;
                removed += 1;
            }
        }
    }
    for f in fs.files_in("/var/cache/apt") {
        if f.ends_with(".bin") {
            fs.rm(&format!("/var/cache/apt/{f}"))?;
            removed += 1;
        }
    }
    Ok(format!(
        "apt: package cache cleaned ({removed} file(s) removed)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_line_gets_noatime_and_commit_and_keeps_its_spacing() {
        let pigen = "proc            /proc           proc    defaults          0       0\nPARTUUID=abc-01  /boot/firmware  vfat    defaults          0       2\nPARTUUID=abc-02  /               ext4    defaults,noatime  0       1\n";
        let out = fstab_with_root_options(pigen).unwrap();
        assert!(
            out.ends_with(
                "PARTUUID=abc-02  /               ext4    defaults,noatime,commit=600  0       1\n"
            ),
            "{out}"
        );
        assert!(out.starts_with("proc            /proc "));
        assert_eq!(fstab_with_root_options(&out).unwrap(), out, "idempotent");
        assert_eq!(
            wear_options("rw,relatime,commit=5"),
            "rw,noatime,commit=600"
        );
        assert_eq!(fstab_with_root_options("# / nothing\n"), None);
    }
}
