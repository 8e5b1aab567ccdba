//! Advisory file locks (flock) so two fetches of the same image do not collide.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// An exclusive lock held until dropped (the kernel also drops it if we die).
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock on `path` (created if missing) without waiting: `Ok(None)` if
    /// another process holds it.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        let file = open(path)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the lock on `path`, waiting for its holder.
    pub(crate) fn acquire(path: &Path) -> io::Result<Self> {
        let file = open(path)?;
        flock(&file, libc::LOCK_EX)?;
        Ok(Self { _file: file })
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let a = Lock::try_acquire(&p).unwrap().unwrap();
        assert!(Lock::try_acquire(&p).unwrap().is_none());
        drop(a);
        assert!(Lock::try_acquire(&p).unwrap().is_some());
    }
}
