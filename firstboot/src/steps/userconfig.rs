//! Cancels userconf-pi's first-boot wizard once the admin user is set, the way
//! Raspberry Pi's own tools do: userconf-pi's `cancel-rename` (called by its
//! `userconf`, which Imager's firstrun.sh runs) removes the rename marker and the
//! sshd banner, runs `systemctl disable userconfig` and `systemctl enable
//! getty@tty1` (RPi-Distro/userconf-pi: cancel-rename, userconf). pi-gen enables the
//! wizard on every image (export-image/01-user-rename: `rename-user -f -s`, which
//! disables getty@tty1 and enables userconfig.service). Done on the files, so it
//! works under `--root` and on a node that is not booted normally.
//!
//! On Trixie the running boot's wizard is stopped earlier by the card's user-data
//! (`bootcmd`), since cloud-init runs the agent only after multi-user.target.

use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;

/// Where `systemctl enable userconfig` puts its link (the unit says
/// `WantedBy=multi-user.target`).
pub const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/userconfig.service";

/// The sshd banner `rename-user` installs ("SSH may not work until a valid user has
/// been set up").
pub const SSHD_BANNER: &str = "/etc/ssh/sshd_config.d/rename_user.conf";

/// Marker `rename-user` leaves when the image logged in automatically.
pub const AUTOLOGIN_MARKER: &str = "/var/lib/userconf-pi/autologin";

/// The getty link `systemctl enable getty@tty1` creates.
pub const GETTY_LINK: &str = "/etc/systemd/system/getty.target.wants/getty@tty1.service";

/// Cancels the wizard; returns what it did, for the step summary.
pub fn cancel(fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let unit = [
        "/usr/lib/systemd/system/userconfig.service",
        "/lib/systemd/system/userconfig.service",
    ]
    .into_iter()
    .find(|p| fs.exists(p));
    let was_enabled = fs.path(WANTS_LINK).symlink_metadata().is_ok();
    fs.rm(WANTS_LINK)?;
    fs.rm(SSHD_BANNER)?;
    fs.rm(AUTOLOGIN_MARKER)?;
    if unit.is_none() {
        return Ok(if was_enabled {
            "userconfig wizard link removed (userconf-pi not installed)".into()
        } else {
            "no userconfig wizard (userconf-pi not installed)".into()
        });
    }
    // `rename-user` disabled getty@tty1 for the wizard's sake: enable it again.
    if let Some(getty) = [
        "/lib/systemd/system/getty@.service",
        "/usr/lib/systemd/system/getty@.service",
    ]
    .into_iter()
    .find(|p| fs.exists(p))
    {
        fs.link(getty, GETTY_LINK)?;
        if exec.live() {
            // As cancel-rename does on a running system; a console is a convenience,
            // so a failure only warns.
            let start = Cmd::new("systemctl", &["--no-block", "start", "getty@tty1.service"]);
            match exec.run(&start) {
                Ok(o) if o.success() => {}
                Ok(o) => crate::log::warn(&format!("`{start}`: {}", o.last_words())),
                Err(e) => crate::log::warn(&e.to_string()),
            }
        }
    }
    Ok("userconfig wizard cancelled (disabled, getty@tty1 enabled)".into())
}
