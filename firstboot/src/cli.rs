//! Command-line parsing (by hand: the binary must stay small).

use crate::options::Options;
use crate::step_id::Phase;
use std::path::PathBuf;
use std::time::Duration;

/// Usage text.
pub const USAGE: &str = "\
Usage: piimg-firstboot [OPTIONS]          provision this node (resumes where it stopped)
       piimg-firstboot status [OPTIONS]   print the persisted state and the card status

Options:
  --root DIR              node filesystem root (default /); services are only
                          started and the clock only set when it is /
  --boot DIR              boot partition (default ROOT/boot/firmware)
  --dry-run               print the pending actions; change nothing
  --phase 1|2             run this phase (default: decided by the persisted state)
  --api-port PORT         k3s supervisor port of the servers (default 6443)
  --time-url URL          extra source of an HTTP Date for the clock (repeatable)
  --network-timeout SECS  bound on waiting for a default route (default 600)
  --clock-timeout SECS    bound on waiting for time sync (default 120)
  --join-timeout SECS     bound on waiting for the join target (default 600)
  --ready-timeout SECS    bound on waiting for node Ready (default 1800)
  --self PATH             agent binary to install (default: this executable)
  --systemctl PATH        systemctl that starts k3s; used even with --root
  --apt-get PATH          apt-get that installs the card's packages; used even
                          with --root
  --packages-timeout SECS bound on retrying apt while no mirror answers (default 600)
  --run-scripts           run the card's run-once scripts even with --root (they
                          run on THIS machine)
  -h, --help              this text
  -V, --version           version
";

/// What to do.
#[derive(Debug, Clone)]
pub enum Command {
    /// Provision (the default).
    Run(Options),
    /// Print state and status.
    Status(Options),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Parses arguments (without the program name); errors are one line.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut root = PathBuf::from("/");
    let mut boot: Option<PathBuf> = None;
    let mut status = false;
    let mut o = Options::for_root(PathBuf::from("/"));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let secs = |name: &str, v: String| -> Result<Duration, String> {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{name}: {v:?} is not a number of seconds"))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "status" if !status => status = true,
            "--root" => root = PathBuf::from(value(flag)?),
            "--boot" => boot = Some(PathBuf::from(value(flag)?)),
            "--dry-run" => o.dry_run = true,
            "--phase" => {
                o.phase = Some(match value(flag)?.as_str() {
                    "1" => Phase::Local,
                    "2" => Phase::Cluster,
                    v => return Err(format!("--phase: {v:?} is not 1 or 2")),
                })
            }
            "--api-port" => {
                let v = value(flag)?;
                o.api_port = v
                    .parse()
                    .map_err(|_| format!("--api-port: {v:?} is not a port"))?;
            }
            "--time-url" => o.time_urls.push(value(flag)?),
            "--network-timeout" => o.network_timeout = secs(flag, value(flag)?)?,
            "--clock-timeout" => o.clock_timeout = secs(flag, value(flag)?)?,
            "--join-timeout" => o.join_timeout = secs(flag, value(flag)?)?,
            "--ready-timeout" => o.ready_timeout = secs(flag, value(flag)?)?,
            "--self" => o.self_exe = Some(PathBuf::from(value(flag)?)),
            "--systemctl" => o.systemctl = Some(PathBuf::from(value(flag)?)),
            "--apt-get" => o.apt_get = Some(PathBuf::from(value(flag)?)),
            "--packages-timeout" => o.packages_timeout = secs(flag, value(flag)?)?,
            "--run-scripts" => o.run_scripts = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    if !root.is_absolute() {
        root = std::env::current_dir()
            .map_err(|e| format!("--root: {e}"))?
            .join(root);
    }
    o.boot = boot.unwrap_or_else(|| root.join(piimg_contract::BOOT_MOUNT.trim_start_matches('/')));
    o.root = root;
    Ok(if status {
        Command::Status(o)
    } else {
        Command::Run(o)
    })
}
