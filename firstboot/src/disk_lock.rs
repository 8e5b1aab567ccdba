//! An exclusive BSD lock on a whole disk while the agent partitions and formats it.
//!
//! systemd-udevd neither probes a block device nor re-reads its partition table while
//! another process holds `flock(LOCK_EX)` on it ("Locking Block Device Access",
//! <https://systemd.io/BLOCK_DEVICE_LOCKING/>). Without the lock, the close after
//! sfdisk's write makes udevd re-read the table (`BLKRRPART`): the new partition's
//! device disappears and comes back while mkfs.ext4 or blkid use it.

use crate::error::Error;
use crate::fsx;
use std::fs::File;
use std::time::{Duration, Instant};

/// How long to wait for udevd (or anyone) to let go of the disk.
const WAIT: Duration = Duration::from_secs(10);

/// The lock; released when dropped.
#[derive(Debug)]
pub struct DiskLock {
    _file: File,
}

impl DiskLock {
    /// Opens `dev` read-only (a read-only close makes no udev change event) and locks
    /// it, waiting up to 10 s for another holder.
    pub fn take(dev: &str) -> Result<DiskLock, Error> {
        Self::take_within(dev, WAIT)
    }

    fn take_within(dev: &str, wait: Duration) -> Result<DiskLock, Error> {
        let file = File::open(dev)
            .map_err(|e| Error::failed(format!("{dev}: cannot open it to lock it: {e}")))?;
        let start = Instant::now();
        loop {
            match fsx::try_lock_exclusive(&file) {
                Ok(true) => return Ok(DiskLock { _file: file }),
                Ok(false) => {}
                Err(e) => return Err(Error::failed(format!("{dev}: cannot lock it: {e}"))),
            }
            if start.elapsed() > wait {
                return Err(Error::failed(format!(
                    "{dev}: another process holds its lock (flock) for more than {} s; \
                     the agent tries again on its next run",
                    wait.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_and_fails_while_the_first_holds_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = dir.path().join("disk");
        std::fs::write(&dev, [0u8; 512]).expect("write");
        let dev = dev.to_string_lossy().into_owned();
        let first = DiskLock::take(&dev).expect("first lock");
        let t = std::thread::spawn({
            let dev = dev.clone();
            move || DiskLock::take_within(&dev, Duration::from_secs(1)).map(|_| ())
        });
        let err = t.join().expect("join").expect_err("second lock while held");
        assert!(err.to_string().contains("holds its lock"), "{err}");
        drop(first);
        DiskLock::take(&dev).expect("lock after release");
        let missing = DiskLock::take("/nonexistent/disk").expect_err("missing device");
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/disk: cannot open it"),
            "{missing}"
        );
    }
}
