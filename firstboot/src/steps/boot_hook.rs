//! Steps `unhook` (remove exactly the first-boot arguments from cmdline.txt) and
//! `handoff` (end of phase 1: reboot on Bookworm, start the phase-2 unit on Trixie).

use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;
use piimg_contract::{AGENT_UNIT, BootHook, PHASE1_DONE_FILE};

/// cmdline.txt on the boot partition.
pub const CMDLINE: &str = "cmdline.txt";

/// `cmdline` without any argument in `remove`; one line, single spaces.
pub fn strip_args(cmdline: &str, remove: &[String]) -> String {
    let kept: Vec<&str> = cmdline
        .split_whitespace()
        .filter(|a| !remove.iter().any(|r| r == a))
        .collect();
    kept.join(" ") + "\n"
}

/// Step `unhook`.
pub fn unhook(boot: &BootHook, fs: &NodeFs) -> Result<String, Error> {
    let BootHook::SystemdRun { cmdline_args } = boot else {
        return Ok("cloud-init start: no cmdline.txt hook to remove".into());
    };
    let text = fs.read_card(CMDLINE)?.ok_or_else(|| {
        Error::failed(format!(
            "{CMDLINE} not found on the boot partition {}",
            fs.boot().display()
        ))
    })?;
    let present = text
        .split_whitespace()
        .filter(|a| cmdline_args.iter().any(|c| c == a))
        .count();
    let stripped = strip_args(&text, cmdline_args);
    if stripped.trim().is_empty() {
        return Err(Error::failed(format!(
            "{CMDLINE} would be empty after removing the hook; refusing"
        )));
    }
    if present == 0 && text == stripped {
        return Ok(format!("{CMDLINE}: hook already removed"));
    }
    fs.put_card(CMDLINE, stripped.as_bytes())?;
    Ok(format!("{CMDLINE}: removed {present} hook argument(s)"))
}

/// Step `handoff`: nothing to write; [`after_handoff`] acts once it is persisted.
pub fn handoff(boot: &BootHook) -> String {
    match boot {
        BootHook::SystemdRun { .. } => "phase 1 done; rebooting into phase 2".into(),
        BootHook::CloudInit { .. } => format!("phase 1 done; starting {AGENT_UNIT}"),
    }
}

/// Runs after `handoff` is persisted: Bookworm reboots (by `systemd.run_success_action`
/// when the hook set it, else `systemctl reboot`); Trixie writes [`PHASE1_DONE_FILE`]
/// (the user-data stops re-arming `runcmd`) and starts the phase-2 unit. Commands run
/// only on the live system; under `--root` it says what it would do.
pub fn after_handoff(boot: &BootHook, fs: &NodeFs, exec: &Exec) -> Result<(), Error> {
    if let BootHook::CloudInit { .. } = boot {
        fs.put(
            PHASE1_DONE_FILE,
            0o644,
            b"phase 1 handed off; cloud-init's runcmd is no longer re-armed\n",
            Some((0, 0)),
        )?;
    }
    let cmds: Vec<Cmd> = match boot {
        BootHook::SystemdRun { cmdline_args } => {
            if cmdline_args
                .iter()
                .any(|a| a == "systemd.run_success_action=reboot")
            {
                crate::log::info("exiting; systemd reboots (systemd.run_success_action=reboot)");
                return Ok(());
            }
            vec![Cmd::new("systemctl", &["reboot"])]
        }
        BootHook::CloudInit { .. } => vec![
            Cmd::new("systemctl", &["daemon-reload"]),
            Cmd::new("systemctl", &["start", "--no-block", AGENT_UNIT]),
        ],
    };
    for c in cmds {
        exec.run_ok_live(&c)?;
    }
    Ok(())
}
