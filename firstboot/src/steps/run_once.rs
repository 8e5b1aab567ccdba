//! Step `run-once`: the card's `[[run_once]]` scripts, in order, each at most once.
//!
//! A script that exits 0 is recorded in the agent's state (saved at once) and never
//! runs again; each run is recorded in the card status as `run-once:<name>` with its
//! exit code and last lines of output. A failing script stops the step with its
//! output; the next run resumes at that script. A script cut off by a power cut has
//! no record yet and runs again: scripts should be safe to repeat up to their end.
//! A script that runs longer than its `timeout_secs` (default 30 min) is killed with
//! every process of its group and counts as failed, so a script waiting for input
//! or a network that never comes cannot hold up provisioning for good.

use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::progress::Progress;
use crate::runner::{Cmd, Output};
use crate::state::State;
use crate::time::{now, rfc3339};
use piimg_contract::customize::{RUN_ONCE_DIR, RUN_ONCE_TIMEOUT_SECS, RunOnce};
use piimg_contract::{StepRecord, StepResult};
use std::time::Duration;

/// Lines of output kept in the status per script.
const TAIL_LINES: usize = 5;
/// Characters of output kept in the status per script (the status slots are small).
const TAIL_CHARS: usize = 400;

/// Saves the state after each finished script (the run loop's store).
pub type Checkpoint<'a> = &'a dyn Fn(&State) -> Result<(), Error>;

/// The status record name of script `name`.
pub fn record_name(name: &str) -> String {
    format!("run-once:{name}")
}

/// The last lines of a script's output (stdout, then stderr), trimmed for the status.
pub fn tail(out: &Output) -> String {
    let text = format!("{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    if tail.is_empty() {
        return "no output".into();
    }
    let chars: Vec<char> = tail.chars().collect();
    if chars.len() > TAIL_CHARS {
        format!(
            "…{}",
            chars[chars.len() - TAIL_CHARS..].iter().collect::<String>()
        )
    } else {
        tail
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Runs every script of `scripts` not yet recorded as done in `state`. Scripts run
/// on the live system, or under `--root` only when `allowed` (`--run-scripts`).
pub fn run_all(
    scripts: &[RunOnce],
    allowed: bool,
    state: &mut State,
    checkpoint: Checkpoint,
    progress: Progress,
    fs: &NodeFs,
    exec: &Exec,
) -> Result<String, Error> {
    if scripts.is_empty() {
        return Ok("no [[run_once]] scripts on the card".into());
    }
    if let Some(bad) = scripts.iter().find(|s| !valid_name(&s.name)) {
        return Err(Error::failed(format!(
            "node.json: customize.run_once: {:?} is not a script name",
            bad.name
        )));
    }
    if let Some(bad) = scripts
        .iter()
        .find(|s| !RUN_ONCE_TIMEOUT_SECS.contains(&s.timeout_secs()))
    {
        return Err(Error::failed(format!(
            "node.json: customize.run_once: {}: timeout_secs {} is not 1..=86400",
            bad.name,
            bad.timeout_secs()
        )));
    }
    if !exec.live() && !exec.dry() && !allowed {
        return Ok(format!(
            "not the live system (--root): skipped {} script(s)",
            scripts.len()
        ));
    }
    fs.mkdir(RUN_ONCE_DIR, 0o700, Some((0, 0)))?;
    let mut ran = Vec::new();
    let mut skipped = 0;
    for s in scripts {
        if state.run_once_done.iter().any(|d| d == &s.name) {
            skipped += 1;
            continue;
        }
        let file = format!("{RUN_ONCE_DIR}/{}", s.name);
        fs.put(&file, 0o700, s.script.as_bytes(), Some((0, 0)))?;
        let path = fs.path(&file).to_string_lossy().into_owned();
        let limit = s.timeout_secs();
        let cmd = if s.script.starts_with("#!") {
            Cmd::new(path, &[])
        } else {
            Cmd::new("/bin/sh", &[&path])
        }
        .timeout(Duration::from_secs(limit));
        progress.report(&format!("running script {}", s.name));
        let out = exec.run(&cmd)?;
        let code = out.code.map_or("a signal".into(), |c| c.to_string());
        let words = tail(&out);
        let message = if out.timed_out {
            format!("killed after {limit} s: {words}")
        } else {
            format!("exit {code}: {words}")
        };
        crate::log::info(&format!("run-once {}: {message}", s.name));
        state.record(StepRecord {
            name: record_name(&s.name),
            result: if out.success() {
                StepResult::Ok
            } else {
                StepResult::Error
            },
            message,
            at: rfc3339(now()),
        });
        if out.timed_out {
            checkpoint(state)?;
            return Err(Error::failed(format!(
                "run-once script {} did not finish within {limit} s (killed with its child processes); it runs again on the next run",
                s.name
            )));
        }
        if !out.success() {
            checkpoint(state)?;
            return Err(Error::failed(format!(
                "run-once script {} exited with {code}: {words}; it runs again on the next run",
                s.name
            )));
        }
        if !exec.dry() {
            state.run_once_done.push(s.name.clone());
        }
        checkpoint(state)?;
        ran.push(s.name.clone());
    }
    Ok(format!(
        "{} script(s) ran ({}), {skipped} had run before",
        ran.len(),
        if ran.is_empty() {
            "none".into()
        } else {
            ran.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_within_bounds() {
        let out = Output {
            code: Some(1),
            stdout: (1..=9).map(|i| format!("line {i}\n")).collect(),
            stderr: "boom\n".into(),
            ..Output::default()
        };
        assert_eq!(tail(&out), "line 6 | line 7 | line 8 | line 9 | boom");
        assert_eq!(tail(&Output::ok("")), "no output");
        let long = Output::ok(&"x".repeat(1000));
        assert_eq!(tail(&long).chars().count(), TAIL_CHARS + 1);
    }
}
