//! The one door to external programs: every [`Cmd`] a step runs goes through [`Exec`],
//! which prints it instead of running it under `--dry-run`, logs it, and knows whether
//! the agent acts on the running system (`--root /`) or on a tree under `--root`.

use crate::error::Error;
use crate::log::{info, would};
use crate::runner::{Cmd, Output, Runner};

/// Runs programs for a step.
#[derive(Clone, Copy)]
pub struct Exec<'a> {
    runner: &'a dyn Runner,
    dry: bool,
    live: bool,
}

impl<'a> Exec<'a> {
    /// Runs through `runner`; `dry` prints instead, `live` says the root is `/`.
    pub fn new(runner: &'a dyn Runner, dry: bool, live: bool) -> Self {
        Exec { runner, dry, live }
    }

    /// True when acting on the running system (`--root /`): only then are services
    /// started and the clock set.
    pub fn live(&self) -> bool {
        self.live
    }

    /// True under `--dry-run`.
    pub fn dry(&self) -> bool {
        self.dry
    }

    /// Runs an external program, logged (printed under `--dry-run`, which pretends
    /// success).
    pub fn run(&self, cmd: &Cmd) -> Result<Output, Error> {
        if self.dry {
            would(&format!("run {cmd}"));
            return Ok(Output::ok(""));
        }
        info(&format!("running {cmd}"));
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
                "`{cmd}` {}: {}",
                out.failure(cmd.timeout),
                out.last_words()
            )))
        }
    }

    /// [`Exec::run_ok`] on the live system (and under `--dry-run`, which prints it);
    /// under `--root` it only logs that it skipped the command. `true` if it ran.
    pub fn run_ok_live(&self, cmd: &Cmd) -> Result<bool, Error> {
        if self.live || self.dry {
            self.run_ok(cmd)?;
            Ok(true)
        } else {
            info(&format!("not the live system (--root): skipped `{cmd}`"));
            Ok(false)
        }
    }

    /// Runs a program a waiting loop repeats (a probe, a readiness check): not logged
    /// each time (the loop reports its progress), printed under `--dry-run`.
    pub fn poll(&self, cmd: &Cmd) -> std::io::Result<Output> {
        if self.dry {
            would(&format!("run {cmd}"));
            return Ok(Output::ok(""));
        }
        self.runner.run(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::RecordingRunner;

    #[test]
    fn dry_runs_never_reach_the_runner_and_root_runs_skip_live_only_commands() {
        let r = RecordingRunner::new(|_| Output::ok("out"));
        let cmd = Cmd::new("systemctl", &["reboot"]);
        let dry = Exec::new(&r, true, false);
        assert_eq!(dry.run_ok(&cmd).unwrap().stdout, "");
        assert!(dry.run_ok_live(&cmd).unwrap());
        assert_eq!(dry.poll(&cmd).unwrap().stdout, "");
        assert!(r.calls().is_empty());
        let under_root = Exec::new(&r, false, false);
        assert!(!under_root.run_ok_live(&cmd).unwrap());
        assert!(r.calls().is_empty());
        assert_eq!(under_root.run_ok(&cmd).unwrap().stdout, "out");
        assert!(Exec::new(&r, false, true).run_ok_live(&cmd).unwrap());
        assert_eq!(r.calls(), ["systemctl reboot", "systemctl reboot"]);
        let failing = RecordingRunner::new(|_| Output {
            code: Some(3),
            stdout: String::new(),
            stderr: "boom\n".into(),
            ..Output::default()
        });
        let e = Exec::new(&failing, false, true).run_ok(&cmd).unwrap_err();
        assert_eq!(e.to_string(), "`systemctl reboot` exited with 3: boom");
    }
}
