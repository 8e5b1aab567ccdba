//! The named steps, in order. Each is idempotent: rerunning a finished or half-done
//! step converges to the same files without duplicating anything.

pub mod boot_hook;
pub mod cgroup;
pub mod clock;
pub mod files;
pub mod hostname;
pub mod join;
pub mod k3s;
pub mod network;
pub mod secrets;
pub mod self_install;
pub mod ssh;
pub mod sudoers;
pub mod user;
pub mod userconfig;

use crate::ctx::{Ctx, Phase};
use crate::error::Error;

/// One step of the state machine.
pub struct Step {
    /// Name persisted in the state file and shown in the status.
    pub name: &'static str,
    /// The phase that runs it.
    pub phase: Phase,
    /// Does the work; returns a one-line summary.
    pub run: fn(&mut Ctx) -> Result<String, Error>,
}

/// Every step, in run order.
pub const STEPS: &[Step] = &[
    Step {
        name: "secrets",
        phase: Phase::Local,
        run: secrets::take,
    },
    Step {
        name: "files",
        phase: Phase::Local,
        run: files::lay_down,
    },
    Step {
        name: "hostname",
        phase: Phase::Local,
        run: hostname::apply,
    },
    Step {
        name: "user",
        phase: Phase::Local,
        run: user::apply,
    },
    Step {
        name: "ssh-keys",
        phase: Phase::Local,
        run: ssh::authorized_keys,
    },
    Step {
        name: "ssh",
        phase: Phase::Local,
        run: ssh::enable,
    },
    Step {
        name: "install-agent",
        phase: Phase::Local,
        run: self_install::install,
    },
    Step {
        name: "unhook",
        phase: Phase::Local,
        run: boot_hook::unhook,
    },
    Step {
        name: "handoff",
        phase: Phase::Local,
        run: boot_hook::handoff,
    },
    Step {
        name: "network",
        phase: Phase::Cluster,
        run: network::wait,
    },
    Step {
        name: "clock",
        phase: Phase::Cluster,
        run: clock::sync,
    },
    Step {
        name: "cgroup",
        phase: Phase::Cluster,
        run: cgroup::check,
    },
    Step {
        name: "join",
        phase: Phase::Cluster,
        run: join::decide,
    },
    Step {
        name: "k3s-config",
        phase: Phase::Cluster,
        run: k3s::config,
    },
    Step {
        name: "k3s-install",
        phase: Phase::Cluster,
        run: k3s::install,
    },
    Step {
        name: "k3s-start",
        phase: Phase::Cluster,
        run: k3s::start,
    },
    Step {
        name: "k3s-ready",
        phase: Phase::Cluster,
        run: k3s::ready,
    },
    Step {
        name: "scrub",
        phase: Phase::Cluster,
        run: secrets::scrub,
    },
    Step {
        name: "disable",
        phase: Phase::Cluster,
        run: self_install::disable,
    },
];

/// Looks a step up by name.
pub fn by_name(name: &str) -> Option<&'static Step> {
    STEPS.iter().find(|s| s.name == name)
}
