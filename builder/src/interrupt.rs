//! Ctrl-C (and SIGTERM) during a build, a fetch or a flash: the signal only raises a
//! flag; the copy, compress, hash, download and write loops check it between chunks
//! and return an error, so temp files are dropped (deleted) and no finished-looking
//! output appears.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handler (idempotent).
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

/// True once a signal arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a signal arrived.
pub fn check() -> io::Result<()> {
    if interrupted() {
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "interrupted; unfinished output removed",
        ))
    } else {
        Ok(())
    }
}
