//! How a run that fails ends: one `error: …` line on stderr naming each cause once,
//! and with `--json` exactly one JSON document on stdout — also for usage errors,
//! which clap would otherwise print as text only.

use piimg::progress;
use std::error::Error;

/// Exit status of a usage error (clap's, and the BSD `EX_USAGE` family's habit).
pub const USAGE_EXIT: i32 = 2;
/// Exit status of a run stopped by Ctrl-C or SIGTERM: 128 + SIGINT, as a shell
/// reports a command the signal ended.
pub const INTERRUPTED_EXIT: i32 = 130;

/// True when `--json` appears among the arguments (before `--`), however the rest
/// of the command line parses.
pub fn json_requested(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// The message of `err` with each cause once ([`piimg::error_text::chain`]).
pub fn message(err: &anyhow::Error) -> String {
    let top: &(dyn Error + 'static) = err.as_ref();
    piimg::error_text::chain(top)
}

/// Prints a failed run's error (stderr, plus the JSON document when `json` and the
/// command has not printed its own) and returns the exit status to end with.
pub fn report(err: &anyhow::Error, json: bool) -> i32 {
    let msg = message(err);
    if json && !progress::json_printed() {
        println!("{}", serde_json::json!({ "error": msg }));
    }
    eprintln!("error: {msg}");
    if piimg::interrupt::interrupted() {
        INTERRUPTED_EXIT
    } else {
        1
    }
}

/// Prints a command-line usage error: clap's text on stderr and, with `--json`,
/// `{"error": …, "usage": true}` on stdout. `--help`/`--version` print as usual.
pub fn usage(err: &clap::Error, json: bool) -> i32 {
    use clap::error::ErrorKind;
    let informational = matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if json && !informational {
        let text = err.render().to_string();
        // clap's first line is `error: <what>`; the rest is usage and tips.
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string();
        println!(
            "{}",
            serde_json::json!({ "error": first, "usage": true, "detail": text.trim_end() })
        );
    }
    // clap prints to stderr (errors) or stdout (help), with its own exit status.
    let _ = err.print();
    // Help asked for, even with --json, is text and success.
    if informational { 0 } else { USAGE_EXIT }
}
