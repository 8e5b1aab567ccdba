//! The one door to external programs (systemctl, curl, date, the k3s installer, k3s).
//!
//! Steps describe a [`Cmd`]; the agent's context prints it under `--dry-run` and
//! otherwise hands it to a [`Runner`]. Tests plug in a [`RecordingRunner`].

use std::fmt;
use std::process::Command;
use std::sync::Mutex;

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
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
}

impl Output {
    /// A successful, silent result.
    pub fn ok(stdout: &str) -> Self {
        Output {
            code: Some(0),
            stdout: stdout.to_string(),
            stderr: String::new(),
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
        let out = match &cmd.stdin {
            None => c.output()?,
            Some(input) => {
                use std::io::Write;
                use std::process::Stdio;
                c.stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                let mut child = c.spawn()?;
                if let Some(mut pipe) = child.stdin.take() {
                    // A program that exits without reading all of it reports why itself.
                    let _ = pipe.write_all(input.as_bytes());
                }
                child.wait_with_output()?
            }
        };
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
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
