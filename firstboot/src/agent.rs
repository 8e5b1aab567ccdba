//! The run loop: load the card, lock, resume the state machine at the first unfinished
//! step of the current phase, persist state and write the card status after every step.

use crate::error::Error;
use crate::exec::Exec;
use crate::http::Probe;
use crate::join_policy::JoinPolicy;
use crate::node_fs::NodeFs;
use crate::options::Options;
use crate::runner::Runner;
use crate::state::{State, StateStore};
use crate::status::{StatusCard, write_status};
use crate::step_id::{Phase, StepId};
use crate::steps::{self, StepEnv};
use crate::time::{now, rfc3339};
use piimg_contract::{NODE_CONFIG_FILE, NodeConfig, STATE_FILE, StepRecord, StepResult};
use std::path::Path;

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

fn crash_point(step: StepId, when: &str) -> bool {
    std::env::var(CRASH_ENV).is_ok_and(|v| v == format!("{step}:{when}"))
}

/// The node's state file under `--root`.
pub fn state_store(opts: &Options) -> StateStore {
    StateStore::new(opts.root.join(STATE_FILE.trim_start_matches('/')))
}

/// Loads the state file; a missing file is a fresh start.
pub fn load_state(opts: &Options) -> Result<State, Error> {
    state_store(opts).load(now())
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
    let store = state_store(opts);
    let _lock = if opts.dry_run {
        None
    } else {
        Some(store.lock()?)
    };
    let mut state = store.load(now())?;
    let fs = NodeFs::new(opts.root.clone(), opts.boot.clone(), opts.dry_run);
    let exec = Exec::new(runner, opts.dry_run, opts.root == Path::new("/"));
    let card = StatusCard {
        boot: &opts.boot,
        node_name: &cfg.node_name,
        dry: opts.dry_run,
    };
    let checkpoint = |s: &State| {
        if opts.dry_run { Ok(()) } else { store.save(s) }
    };
    let env = StepEnv {
        opts,
        cfg: &cfg,
        fs: &fs,
        exec: &exec,
        probe,
        join_policy,
        status: card,
        checkpoint: &checkpoint,
    };
    if state.complete {
        crate::log::info("provisioning already complete; nothing to do");
        return Ok(Outcome::AlreadyComplete);
    }
    let phase = opts.phase.unwrap_or(if state.is_done(StepId::Handoff) {
        Phase::Cluster
    } else {
        Phase::Local
    });
    if phase == Phase::Cluster && !opts.dry_run {
        if let Some(s) = StepId::ALL
            .into_iter()
            .find(|&s| s.phase() == Phase::Local && s != StepId::Handoff && !state.is_done(s))
        {
            return Err(Error::failed(format!(
                "phase 1 step `{s}` has not finished; run without --phase to finish phase 1 first"
            )));
        }
    }
    for step in StepId::ALL.into_iter().filter(|s| s.phase() == phase) {
        if state.is_done(step) {
            continue;
        }
        if opts.dry_run {
            println!("step {step}:");
        }
        crate::log::info(&format!("step {step}: starting"));
        write_status(&card, &state, step.name(), StepResult::Running, "running");
        let result = if crash_point(step, "fail") {
            Err(Error::failed(format!("injected failure ({CRASH_ENV})")))
        } else {
            steps::run(step, &env, &mut state)
        };
        if crash_point(step, "unsaved") {
            std::process::exit(CRASH_EXIT);
        }
        let (res, msg) = match &result {
            Ok(m) => (StepResult::Ok, m.clone()),
            Err(e) => (StepResult::Error, e.to_string()),
        };
        state.record(StepRecord {
            name: step.name().into(),
            result: res,
            message: msg.clone(),
            at: rfc3339(now()),
        });
        if result.is_ok() && !opts.dry_run {
            state.mark_done(step);
            if step.is_last() {
                state.complete = true;
            }
        }
        if !opts.dry_run {
            store.save(&state)?;
        }
        let shown = if state.complete {
            "complete"
        } else {
            step.name()
        };
        write_status(&card, &state, shown, res, &msg);
        match result {
            Ok(m) => crate::log::info(&format!("step {step}: ok: {m}")),
            Err(e) => {
                crate::log::error(&format!("step {step}: {e}"));
                return Err(e);
            }
        }
        if crash_point(step, "after") {
            std::process::exit(CRASH_EXIT);
        }
    }
    if phase == Phase::Local {
        steps::boot_hook::after_handoff(&cfg.boot, &fs, &exec)?;
    }
    Ok(if opts.dry_run {
        Outcome::DryRun
    } else if phase == Phase::Local {
        Outcome::HandedOff
    } else {
        Outcome::Complete
    })
}
