//! The one door to external programs (systemctl, curl, date, the k3s installer, k3s).
//!
//! Steps describe a [`Cmd`]; the agent's context prints it under `--dry-run` and
//! otherwise hands it to a [`Runner`]. Tests plug in a [`RecordingRunner`].

use crate::supervise;
use std::fmt;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// An external command: program, arguments and environment changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmd {
    /// Program path or name (looked up in `PATH`).
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Variables to set.
    pub env: Vec<(String, String)>,
    /// Inherited variables with these prefixes are removed (e.g. `K3S_`).
    pub env_remove_prefixes: Vec<String>,
    /// Text fed to the program's standard input (e.g. an `sfdisk` script).
    pub stdin: Option<String>,
    /// Longest the program (with its child processes) may run; then its process
    /// group is killed and the [`Output`] says it timed out. `None`: no limit.
    pub timeout: Option<Duration>,
}

impl Cmd {
    /// A command with arguments and no environment changes.
    pub fn new(program: impl Into<String>, args: &[&str]) -> Self {
        Cmd {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Cmd::default()
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Feeds `text` to the program's standard input.
    pub fn stdin(mut self, text: impl Into<String>) -> Self {
        self.stdin = Some(text.into());
        self
    }

    /// Kills the program and its child processes when it runs longer than `limit`.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = |s: &str| {
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,%".contains(c))
            {
                s.to_string()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        };
        let mut parts: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        parts.push(quote(&self.program));
        parts.extend(self.args.iter().map(|a| quote(a)));
        if let Some(input) = &self.stdin {
            parts.push(format!("<<< {}", quote(input)));
        }
        f.write_str(&parts.join(" "))
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Exit code (`None` if killed by a signal or timed out).
    pub code: Option<i32>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
    /// True when the command ran past its [`Cmd::timeout`] and was killed (with
    /// every process of its group); `code` is then `None`.
    pub timed_out: bool,
}

impl Output {
    /// A successful, silent result.
    pub fn ok(stdout: &str) -> Self {
        Output {
            code: Some(0),
            stdout: stdout.to_string(),
            stderr: String::new(),
            timed_out: false,
        }
    }

    /// Why the command did not succeed, e.g. `exited with 3` or `did not finish
    /// within 30 s (killed with its child processes)`; `limit` is its timeout.
    pub fn failure(&self, limit: Option<Duration>) -> String {
        match (self.timed_out, self.code) {
            (true, _) => format!(
                "did not finish within {} s (killed with its child processes)",
                limit.map_or(0, |l| l.as_secs())
            ),
            (false, Some(c)) => format!("exited with {c}"),
            (false, None) => "exited with a signal".into(),
        }
    }

    /// True on exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Last non-empty line of stderr (or stdout), for error messages.
    pub fn last_words(&self) -> String {
        let pick = |s: &str| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::trim)
                .map(String::from)
        };
        pick(&self.stderr)
            .or_else(|| pick(&self.stdout))
            .unwrap_or_else(|| "no output".into())
    }
}

/// Runs external programs.
pub trait Runner {
    /// Runs `cmd` to completion and captures its output.
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output>;
}

/// Runs programs for real.
#[derive(Debug, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output> {
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if cmd
                .env_remove_prefixes
                .iter()
                .any(|p| k.starts_with(p.as_str()))
            {
                c.env_remove(&key);
            }
        }
        c.envs(cmd.env.iter().map(|(k, v)| (k, v)));
        let out = supervise::run(&mut c, cmd.stdin.as_deref(), cmd.timeout)?;
        Ok(Output {
            code: out.status.and_then(|s| s.code()),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            timed_out: out.timed_out,
        })
    }
}

type Responder = Box<dyn Fn(&Cmd) -> Output + Send + Sync>;

/// Records every command and answers with a scripted [`Output`] (for tests).
pub struct RecordingRunner {
    calls: Mutex<Vec<Cmd>>,
    responder: Responder,
}

impl RecordingRunner {
    /// Answers every command with `responder(cmd)`.
    pub fn new(responder: impl Fn(&Cmd) -> Output + Send + Sync + 'static) -> Self {
        RecordingRunner {
            calls: Mutex::new(Vec::new()),
            responder: Box::new(responder),
        }
    }

    /// The commands run so far, rendered as shell lines.
    pub fn calls(&self) -> Vec<String> {
        self.calls
            .lock()
            .map(|c| c.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &Cmd) -> std::io::Result<Output> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(cmd.clone());
        }
        Ok((self.responder)(cmd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sh(script: &str) -> Cmd {
        Cmd::new("/bin/sh", &["-c", script])
    }

    /// True when process `pid` no longer runs (gone, or a zombie nobody reaped yet).
    fn gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    fn forking(pids: &std::path::Path, before: &str) -> Cmd {
        sh(&format!(
            "{before} sleep 300 & echo $! > {}; echo started; sleep 300; echo never",
            pids.display()
        ))
    }

    #[test]
    fn a_timed_out_command_is_killed_with_the_child_it_forked() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let start = Instant::now();
        let out = SystemRunner
            .run(&forking(&pid_file, "").timeout(Duration::from_secs(1)))
            .unwrap();
        let took = start.elapsed();
        assert!(out.timed_out, "{out:?}");
        assert_eq!(out.code, None);
        assert!(!out.success());
        assert_eq!(out.stdout, "started\n");
        assert!(took >= Duration::from_secs(1), "{took:?}");
        assert!(took < Duration::from_secs(4), "SIGTERM sufficed: {took:?}");
        let child = std::fs::read_to_string(&pid_file).unwrap();
        assert!(gone(child.trim()), "child {} survived", child.trim());
        assert_eq!(
            out.failure(Some(Duration::from_secs(1))),
            "did not finish within 1 s (killed with its child processes)"
        );
    }

    #[test]
    fn a_group_that_ignores_sigterm_gets_sigkill_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let start = Instant::now();
        // The ignored SIGTERM is inherited by the forked sleep as well.
        let out = SystemRunner
            .run(&forking(&pid_file, "trap '' TERM;").timeout(Duration::from_secs(1)))
            .unwrap();
        let took = start.elapsed();
        assert!(out.timed_out, "{out:?}");
        assert_eq!(out.code, None);
        assert!(
            took >= Duration::from_secs(1) + supervise::GRACE,
            "{took:?}"
        );
        assert!(took < Duration::from_secs(10), "{took:?}");
        let child = std::fs::read_to_string(&pid_file).unwrap();
        assert!(gone(child.trim()), "child {} survived", child.trim());
    }

    #[test]
    fn commands_within_their_timeout_keep_exit_code_and_output() {
        let out = SystemRunner
            .run(&sh("echo out; echo err >&2; exit 3").timeout(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (Some(3), "out\n", "err\n")
        );
        assert!(!out.timed_out);
        assert_eq!(out.failure(None), "exited with 3");
    }

    #[test]
    fn large_input_and_output_on_both_pipes_never_deadlock() {
        // Far more than a pipe holds (64 KiB), on stdin, stdout and stderr at once.
        let input: String = (0..40_000).map(|i| format!("line {i}\n")).collect();
        for timeout in [None, Some(Duration::from_secs(60))] {
            let mut cmd = sh("tee /dev/stderr").stdin(input.clone());
            cmd.timeout = timeout;
            let out = SystemRunner.run(&cmd).unwrap();
            assert!(out.success(), "{timeout:?}: {:?}", out.code);
            assert_eq!(out.stdout, input);
            assert_eq!(out.stderr, input);
        }
    }

    #[test]
    fn a_command_waiting_for_more_input_times_out() {
        let start = Instant::now();
        let out = SystemRunner
            .run(
                &sh("read first; echo got $first; sleep 300")
                    .stdin("one\n")
                    .timeout(Duration::from_millis(500)),
            )
            .unwrap();
        assert!(out.timed_out);
        assert_eq!(out.stdout, "got one\n");
        assert!(start.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn a_background_child_is_left_alone_unless_it_keeps_the_output_open() {
        // Detached from the output: the command is done when its leader exits.
        let out = SystemRunner
            .run(&sh("sleep 300 >/dev/null 2>&1 & echo $!").timeout(Duration::from_secs(20)))
            .unwrap();
        assert!(out.success() && !out.timed_out, "{out:?}");
        let pid = out.stdout.trim();
        assert!(
            !gone(pid),
            "a detached child must survive its parent's success"
        );
        // SAFETY: kill(2) on the sleep this test started.
        unsafe { libc::kill(pid.parse().unwrap(), libc::SIGKILL) };
        // Holding the output: the command is not done until the timeout kills it.
        let out = SystemRunner
            .run(&sh("sleep 300 & echo leader done").timeout(Duration::from_millis(500)))
            .unwrap();
        assert!(out.timed_out, "{out:?}");
        assert_eq!(out.stdout, "leader done\n");
    }

    #[test]
    fn output_held_by_a_process_outside_the_group_delays_the_end_only_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("escaped.pid");
        let start = Instant::now();
        let out = SystemRunner
            .run(
                &sh(&format!(
                    "setsid sh -c 'echo $$ > {}; exec sleep 300' & echo started; sleep 300",
                    pid_file.display()
                ))
                .timeout(Duration::from_secs(1)),
            )
            .unwrap();
        let took = start.elapsed();
        let escaped = std::fs::read_to_string(&pid_file).unwrap();
        // SAFETY: kill(2) on the sleep this test started.
        unsafe { libc::kill(escaped.trim().parse().unwrap(), libc::SIGKILL) };
        assert!(out.timed_out, "{out:?}");
        assert_eq!(out.stdout, "started\n");
        assert!(took < Duration::from_secs(8), "{took:?}");
    }

    #[test]
    fn without_a_timeout_a_command_runs_to_its_end_and_reads_no_input() {
        let out = SystemRunner.run(&sh("sleep 1; cat; echo done")).unwrap();
        assert_eq!((out.code, out.stdout.as_str()), (Some(0), "done\n"));
        assert!(!out.timed_out);
    }
}
