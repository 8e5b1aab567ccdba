//! The run loop: load the card, lock, resume the state machine at the first unfinished
//! step of the current phase, persist state and write the card status after every step.

use crate::ctx::{Ctx, Options, Phase};
use crate::error::{Error, io};
use crate::fsx;
use crate::http::Probe;
use crate::join::JoinPolicy;
use crate::runner::Runner;
use crate::state::{STATE_VERSION, State};
use crate::steps::{self, STEPS};
use crate::time::{now, rfc3339};
use piimg_contract::status_slots::{self, STATUS_SLOTS_FILE};
use piimg_contract::{
    AgentStatus, CONTRACT_VERSION, NODE_CONFIG_FILE, NodeConfig, STATE_FILE, StepRecord, StepResult,
};

/// How a run ended (when it did not fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Phase 1 finished; the node reboots (or starts phase 2).
    HandedOff,
    /// Every step finished.
    Complete,
    /// Nothing was left to do.
    AlreadyComplete,
    /// `--dry-run` printed the pending actions.
    DryRun,
}

/// Test hook: `PIIMG_FIRSTBOOT_CRASH=<step>:<when>` simulates a power cut or failure.
/// `when` is `fail` (the step fails), `unsaved` (the step's work is done but the
/// process dies before the state is saved) or `after` (dies right after saving).
pub const CRASH_ENV: &str = "PIIMG_FIRSTBOOT_CRASH";

/// Exit code of a simulated power cut.
pub const CRASH_EXIT: i32 = 137;

fn crash_point(step: &str, when: &str) -> bool {
    std::env::var(CRASH_ENV).is_ok_and(|v| v == format!("{step}:{when}"))
}

/// Loads the state file; a missing file is a fresh start.
pub fn load_state(opts: &Options) -> Result<State, Error> {
    let path = opts.root.join(STATE_FILE.trim_start_matches('/'));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let st: State = serde_json::from_str(&text).map_err(|e| {
                Error::failed(format!(
                    "{STATE_FILE}: unreadable ({e}); delete it to start provisioning over"
                ))
            })?;
            if st.version != STATE_VERSION {
                return Err(Error::failed(format!(
                    "{STATE_FILE}: state version {} but this agent writes {STATE_VERSION}",
                    st.version
                )));
            }
            Ok(st)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::new(now())),
        Err(e) => Err(io(STATE_FILE)(e)),
    }
}

fn save_state(ctx: &Ctx) -> Result<(), Error> {
    if ctx.dry() {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&ctx.state).unwrap_or_default() + "\n";
    fsx::ensure_dir(&ctx.host("/var/lib/piimg"), 0o700, None).map_err(io("/var/lib/piimg"))?;
    fsx::write_atomic(&ctx.host(STATE_FILE), text.as_bytes(), 0o600, None)
        .map_err(io(STATE_FILE))?;
    Ok(())
}

/// Writes the card status (not under `--dry-run`; a card that cannot be written only warns).
pub(crate) fn write_status(ctx: &Ctx, step: &str, result: StepResult, message: &str) {
    if ctx.dry() {
        return;
    }
    let status = AgentStatus {
        contract_version: CONTRACT_VERSION,
        node_name: ctx.cfg.node_name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        step: step.into(),
        result,
        message: message.into(),
        complete: ctx.state.complete,
        started_at: rfc3339(ctx.state.started_at),
        updated_at: rfc3339(now()),
        steps: ctx.state.records.clone(),
    };
    // The card may be missing or read-only; the journal still has everything.
    // In place into the slots the builder preallocated: a power cut cannot lose it.
    if let Err(e) = status_slots::write_status(&ctx.card(STATUS_SLOTS_FILE), &status) {
        crate::log::warn(&format!("cannot write card {STATUS_SLOTS_FILE}: {e}"));
    }
}

/// Reads and checks the card's node.json.
pub fn load_config(opts: &Options) -> Result<NodeConfig, Error> {
    let path = opts.boot.join(NODE_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::failed(format!(
            "{}: {e}; is the boot partition mounted at {}?",
            path.display(),
            opts.boot.display()
        ))
    })?;
    Ok(NodeConfig::from_json(&text)?)
}

/// Runs the agent: the pending steps of the current phase.
pub fn run(
    opts: &Options,
    runner: &dyn Runner,
    probe: &dyn Probe,
    join_policy: &dyn JoinPolicy,
) -> Result<Outcome, Error> {
    let cfg = load_config(opts)?;
    let _lock = if opts.dry_run {
        None
    } else {
        Some(lock(opts)?)
    };
    let state = load_state(opts)?;
    let mut ctx = Ctx {
        opts,
        cfg,
        runner,
        probe,
        join_policy,
        state,
    };
    if ctx.state.complete {
        crate::log::info("provisioning already complete; nothing to do");
        return Ok(Outcome::AlreadyComplete);
    }
    let phase = opts.phase.unwrap_or(if ctx.state.is_done("handoff") {
        Phase::Cluster
    } else {
        Phase::Local
    });
    if phase == Phase::Cluster && !opts.dry_run {
        if let Some(s) = STEPS
            .iter()
            .find(|s| s.phase == Phase::Local && s.name != "handoff" && !ctx.state.is_done(s.name))
        {
            return Err(Error::failed(format!(
                "phase 1 step `{}` has not finished; run without --phase to finish phase 1 first",
                s.name
            )));
        }
    }
    for step in STEPS.iter().filter(|s| s.phase == phase) {
        if ctx.state.is_done(step.name) {
            continue;
        }
        if opts.dry_run {
            println!("step {}:", step.name);
        }
        crate::log::info(&format!("step {}: starting", step.name));
        write_status(&ctx, step.name, StepResult::Running, "running");
        let result = if crash_point(step.name, "fail") {
            Err(Error::failed(format!("injected failure ({CRASH_ENV})")))
        } else {
            (step.run)(&mut ctx)
        };
        if crash_point(step.name, "unsaved") {
            std::process::exit(CRASH_EXIT);
        }
        let (res, msg) = match &result {
            Ok(m) => (StepResult::Ok, m.clone()),
            Err(e) => (StepResult::Error, e.to_string()),
        };
        ctx.state.record(StepRecord {
            name: step.name.into(),
            result: res,
            message: msg.clone(),
            at: rfc3339(now()),
        });
        if result.is_ok() && !opts.dry_run {
            ctx.state.mark_done(step.name);
        }
        let last = STEPS.last().is_some_and(|s| s.name == step.name);
        if last && result.is_ok() && !opts.dry_run {
            ctx.state.complete = true;
        }
        save_state(&ctx)?;
        let shown = if ctx.state.complete {
            "complete"
        } else {
            step.name
        };
        write_status(&ctx, shown, res, &msg);
        match result {
            Ok(m) => crate::log::info(&format!("step {}: ok: {m}", step.name)),
            Err(e) => {
                crate::log::error(&format!("step {}: {e}", step.name));
                return Err(e);
            }
        }
        if crash_point(step.name, "after") {
            std::process::exit(CRASH_EXIT);
        }
    }
    if opts.dry_run {
        if phase == Phase::Local {
            steps::boot_hook::after_handoff(&ctx)?;
        }
        return Ok(Outcome::DryRun);
    }
    if phase == Phase::Local {
        steps::boot_hook::after_handoff(&ctx)?;
        Ok(Outcome::HandedOff)
    } else {
        Ok(Outcome::Complete)
    }
}

fn lock(opts: &Options) -> Result<std::fs::File, Error> {
    let dir = opts.root.join("var/lib/piimg");
    fsx::ensure_dir(&dir, 0o700, None).map_err(io("/var/lib/piimg"))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(io("/var/lib/piimg/lock"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(f);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Err(Error::failed(
            "another piimg-firstboot holds /var/lib/piimg/lock; not running twice",
        ))
    } else {
        Err(io("/var/lib/piimg/lock")(e))
    }
}
