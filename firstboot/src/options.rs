//! How the agent was invoked: the command line's settings, read by the run loop and
//! handed to steps piece by piece.

use crate::step_id::Phase;
use std::path::PathBuf;
use std::time::Duration;

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
    /// `apt-get` that installs the card's packages; when given, it is run even
    /// under `--root` (host tests point it at a stand-in).
    pub apt_get: Option<PathBuf>,
    /// Bound on retrying apt while it cannot reach a mirror.
    pub packages_timeout: Duration,
    /// Run the card's run-once scripts even under `--root` (on this machine).
    pub run_scripts: bool,
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
            apt_get: None,
            packages_timeout: Duration::from_secs(600),
            run_scripts: false,
        }
    }
}
