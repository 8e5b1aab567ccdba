//! A closed stdout ends `piimg` the way it ends `cat` or `ls`: quietly, by SIGPIPE.
//!
//! Rust ignores SIGPIPE at start-up, so a write to a closed pipe returns EPIPE and
//! `println!` panics on it (`piimg plan | head -1`). Restoring the default action
//! makes the kernel end the process at that write, like coreutils: no message, and
//! the shell reports status 141 (128 + SIGPIPE), which is what `set -o pipefail`
//! scripts expect from a producer whose reader went away. Sockets are unaffected:
//! std's and reqwest's TCP writes use `MSG_NOSIGNAL`.

use std::io::Write;

/// Gives SIGPIPE its default action back; called first thing in `main`.
pub fn restore_default_sigpipe() {
    // SAFETY: `signal` with SIG_DFL installs no handler; nothing else runs yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Writes `bytes` to stdout and flushes it.
pub fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}
