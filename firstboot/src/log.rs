//! Logging to stderr, which systemd captures into the journal.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line carries an sd-daemon level prefix
//! (`<3>` error, `<4>` warning, `<6>` info) so `journalctl -p` filters work.

use std::io::Write;

fn emit(level: u8, tag: &str, msg: &str) {
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut err = std::io::stderr().lock();
    for line in msg.lines() {
        let _ = if journal {
            writeln!(err, "<{level}>{line}")
        } else {
            writeln!(err, "piimg-firstboot: {tag}{line}")
        };
    }
}

/// Logs an informational line.
pub fn info(msg: &str) {
    emit(6, "", msg);
}

/// Logs a warning.
pub fn warn(msg: &str) {
    emit(4, "warning: ", msg);
}

/// Logs an error.
pub fn error(msg: &str) {
    emit(3, "error: ", msg);
}

/// Prints an action under `--dry-run` (`would …` on stdout, where a dry run's plan goes).
pub fn would(what: &str) {
    println!("would {what}");
}
