//! What every step gets: options, the card's config, the runner, and file helpers that
//! resolve node paths under `--root` and print instead of acting under `--dry-run`.

use crate::error::{Error, io};
use crate::fsx;
use crate::http::Probe;
use crate::join::JoinPolicy;
use crate::runner::{Cmd, Output, Runner};
use crate::state::State;
use piimg_contract::NodeConfig;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which part of the job a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Local identity, before networking (ends with the hand-off to phase 2).
    Local,
    /// Network, clock, k3s: as a systemd service after network-online.
    Cluster,
}

/// How the agent was invoked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Root of the node's filesystem (`/` on the Pi).
    pub root: PathBuf,
    /// Root of the boot partition (`<root>/boot/firmware` by default).
    pub boot: PathBuf,
    /// Print actions instead of doing them; nothing is persisted.
    pub dry_run: bool,
    /// Force a phase (default: from the persisted state).
    pub phase: Option<Phase>,
    /// k3s supervisor port on the servers (6443; tests use another).
    pub api_port: u16,
    /// Extra HTTP(S) URLs whose `Date` header may set the clock.
    pub time_urls: Vec<String>,
    /// Bound on waiting for a default route.
    pub network_timeout: Duration,
    /// Bound on waiting for time synchronisation before the HTTP `Date` fallback.
    pub clock_timeout: Duration,
    /// Bound on waiting for the join target to answer.
    pub join_timeout: Duration,
    /// Bound on waiting for this node to become Ready.
    pub ready_timeout: Duration,
    /// The agent binary to install (default: the running executable).
    pub self_exe: Option<PathBuf>,
    /// `systemctl` to start k3s with; when given, it is run even under `--root`
    /// (host tests point it at a stand-in).
    pub systemctl: Option<PathBuf>,
}

impl Options {
    /// Defaults for a real node: `/`, `/boot/firmware`, generous bounds.
    pub fn for_root(root: PathBuf) -> Self {
        let boot = root.join(piimg_contract::BOOT_MOUNT.trim_start_matches('/'));
        Options {
            root,
            boot,
            dry_run: false,
            phase: None,
            api_port: 6443,
            time_urls: Vec::new(),
            network_timeout: Duration::from_secs(600),
            clock_timeout: Duration::from_secs(120),
            join_timeout: Duration::from_secs(600),
            ready_timeout: Duration::from_secs(1800),
            self_exe: None,
            systemctl: None,
        }
    }
}

/// The context a step runs in.
pub struct Ctx<'a> {
    /// Invocation options.
    pub opts: &'a Options,
    /// The card's node configuration.
    pub cfg: NodeConfig,
    /// Runs external programs.
    pub runner: &'a dyn Runner,
    /// Fetches URLs.
    pub probe: &'a dyn Probe,
    /// Decides how to join.
    pub join_policy: &'a dyn JoinPolicy,
    /// The persisted state (steps may record decisions in it).
    pub state: State,
}

impl Ctx<'_> {
    /// A node path (e.g. `/etc/hostname`) resolved under `--root`.
    pub fn host(&self, node_path: &str) -> PathBuf {
        self.opts.root.join(node_path.trim_start_matches('/'))
    }

    /// A boot-partition path (e.g. `piimg/node.json`) resolved under `--boot`.
    pub fn card(&self, rel: &str) -> PathBuf {
        self.opts.boot.join(rel)
    }

    /// True when acting on the running system (`--root /`): only then are services
    /// started and the clock set.
    pub fn live(&self) -> bool {
        self.opts.root == Path::new("/")
    }

    /// True under `--dry-run`.
    pub fn dry(&self) -> bool {
        self.opts.dry_run
    }

    /// Reports progress of a long step (e.g. waiting for a peer) in the log and on the
    /// card's status, so a pulled card says what the node was waiting for and why.
    pub fn progress(&self, step: &str, msg: &str) {
        crate::log::info(&format!("step {step}: {msg}"));
        crate::agent::write_status(self, step, piimg_contract::StepResult::Running, msg);
    }

    /// Prints an action under `--dry-run`.
    pub fn would(&self, what: &str) {
        println!("would {what}");
    }

    /// Reads a node file; `None` if it does not exist.
    pub fn read(&self, node_path: &str) -> Result<Option<String>, Error> {
        read_opt(&self.host(node_path), node_path)
    }

    /// Reads a card file; `None` if it does not exist.
    pub fn read_card(&self, rel: &str) -> Result<Option<String>, Error> {
        read_opt(&self.card(rel), rel)
    }

    /// Writes a node file atomically with `mode` and `owner`; `true` if it changed.
    pub fn put(
        &self,
        node_path: &str,
        mode: u32,
        data: &[u8],
        owner: Option<(u32, u32)>,
    ) -> Result<bool, Error> {
        if self.dry() {
            self.would(&format!(
                "write {node_path} (mode {mode:04o}, {} bytes)",
                data.len()
            ));
            return Ok(true);
        }
        fsx::write_atomic(&self.host(node_path), data, mode, owner).map_err(io(node_path))
    }

    /// Rewrites a node file keeping its mode and owner.
    pub fn put_like(&self, node_path: &str, data: &[u8], default_mode: u32) -> Result<bool, Error> {
        if self.dry() {
            self.would(&format!("rewrite {node_path} ({} bytes)", data.len()));
            return Ok(true);
        }
        fsx::write_like(&self.host(node_path), data, default_mode).map_err(io(node_path))
    }

    /// Writes a card file atomically.
    pub fn put_card(&self, rel: &str, data: &[u8]) -> Result<bool, Error> {
        if self.dry() {
            self.would(&format!("write card {rel} ({} bytes)", data.len()));
            return Ok(true);
        }
        fsx::write_card(&self.card(rel), data).map_err(io(rel))
    }

    /// Creates a node directory with mode and owner.
    pub fn mkdir(
        &self,
        node_path: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), Error> {
        if self.dry() {
            self.would(&format!("create directory {node_path} (mode {mode:04o})"));
            return Ok(());
        }
        fsx::ensure_dir(&self.host(node_path), mode, owner).map_err(io(node_path))
    }

    /// Points node symlink `link` at `target`.
    pub fn link(&self, target: &str, link: &str) -> Result<bool, Error> {
        if self.dry() {
            self.would(&format!("link {link} -> {target}"));
            return Ok(true);
        }
        fsx::symlink(target, &self.host(link)).map_err(io(link))
    }

    /// Removes a node file or symlink.
    pub fn rm(&self, node_path: &str) -> Result<bool, Error> {
        if self.dry() {
            if self.host(node_path).symlink_metadata().is_ok() {
                self.would(&format!("remove {node_path}"));
            }
            return Ok(true);
        }
        fsx::remove(&self.host(node_path)).map_err(io(node_path))
    }

    /// Runs an external program (printed under `--dry-run`, which pretends success).
    pub fn run(&self, cmd: &Cmd) -> Result<Output, Error> {
        if self.dry() {
            self.would(&format!("run {cmd}"));
            return Ok(Output::ok(""));
        }
        crate::log::info(&format!("running {cmd}"));
        self.runner
            .run(cmd)
            .map_err(|e| Error::failed(format!("cannot run {}: {e}", cmd.program)))
    }

    /// Runs a program and fails with its last words unless it exits 0.
    pub fn run_ok(&self, cmd: &Cmd) -> Result<Output, Error> {
        let out = self.run(cmd)?;
        if out.success() {
            Ok(out)
        } else {
            Err(Error::failed(format!(
                "`{cmd}` exited with {}: {}",
                out.code.map_or("a signal".into(), |c| c.to_string()),
                out.last_words()
            )))
        }
    }
}

fn read_opt(path: &Path, shown: &str) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(shown)(e)),
    }
}

/// Human duration for messages: `90 s`, `10 min`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 120 && s % 60 == 0 {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

/// Waits with exponential backoff (1 s doubling to 30 s) until `check` returns
/// `Ok(Some(v))`, or `limit` elapses; returns the last failure reason on timeout.
pub fn wait_for<T>(
    limit: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    let mut last = String::from("no attempt finished");
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        let elapsed = start.elapsed();
        if elapsed >= limit {
            return Err(last);
        }
        std::thread::sleep(delay.min(limit - elapsed));
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
