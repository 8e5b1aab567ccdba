//! How long-running commands talk to the user: progress bars for humans, nothing
//! with `--quiet`, one JSON document on stdout with `--json`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once [`Reporter::json`] printed the run's document (see [`json_printed`]).
static JSON_PRINTED: AtomicBool = AtomicBool::new(false);

/// True once this process printed its JSON document: an error after it must not
/// print a second one (`--json` promises exactly one per run).
pub fn json_printed() -> bool {
    JSON_PRINTED.load(Ordering::SeqCst)
}

/// Output mode chosen by the global `--quiet` / `--json` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Progress bars and messages on stderr, human text on stdout.
    Human,
    /// Nothing but errors.
    Quiet,
    /// No bars; a single JSON document on stdout.
    Json,
}

/// Hands out progress bars and prints messages according to the [`OutputMode`].
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    mode: OutputMode,
}

impl Reporter {
    /// A reporter for `mode`.
    pub fn new(mode: OutputMode) -> Self {
        Self { mode }
    }

    /// The output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// True when output should be JSON.
    pub fn is_json(&self) -> bool {
        self.mode == OutputMode::Json
    }

    /// A byte-count bar (bytes, rate, ETA) of `len` bytes; hidden unless human mode.
    /// Like every bar handed out here, it vanishes when dropped unfinished (an
    /// error or Ctrl-C): only the command's result stays on the screen.
    pub fn bytes(&self, len: u64, what: &str) -> ProgressBar {
        let bar = self.new_bar(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        self.show(bar)
    }

    /// A counting bar of `len` items; hidden unless human mode.
    pub fn items(&self, len: u64, what: &str) -> ProgressBar {
        let bar = self.new_bar(len);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        self.show(bar)
    }

    /// A status line on stderr (human mode only).
    pub fn info(&self, msg: impl AsRef<str>) {
        if self.mode == OutputMode::Human {
            eprintln!("{}", msg.as_ref());
        }
    }

    /// A warning on stderr (human and JSON modes; JSON output stays clean on stdout).
    pub fn warn(&self, msg: impl AsRef<str>) {
        if self.mode != OutputMode::Quiet {
            eprintln!("warning: {}", msg.as_ref());
        }
    }

    /// Prints `value` as the command's JSON result (JSON mode only).
    pub fn json<T: Serialize>(&self, value: &T) -> serde_json::Result<()> {
        if self.mode == OutputMode::Json {
            println!("{}", serde_json::to_string_pretty(value)?);
            JSON_PRINTED.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// A bar that draws nowhere yet: setting its style and message must not draw
    /// it on stderr on its own, outside the `MultiProgress` it may be added to
    /// (such a line is never cleared).
    fn new_bar(&self, len: u64) -> ProgressBar {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
            .with_finish(ProgressFinish::AndClear)
    }

    /// `bar`, set up, now drawn where this mode draws.
    fn show(&self, bar: ProgressBar) -> ProgressBar {
        bar.set_draw_target(self.target());
        bar
    }

    fn target(&self) -> ProgressDrawTarget {
        match self.mode {
            OutputMode::Human => ProgressDrawTarget::stderr(),
            _ => ProgressDrawTarget::hidden(),
        }
    }
}
