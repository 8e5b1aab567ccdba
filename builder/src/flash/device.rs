//! The open target: an exclusive buffered handle (the lock, small writes, fsync) and,
//! where the target allows it, an O_DIRECT handle for the big aligned writes and the
//! read-back that must come from the medium, not the page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::FlashError;
use super::buffer::{ALIGN, AlignedBuf};
use super::chunks::HEAD;
use super::target::{Target, TargetKind};

/// The target opened for flashing.
#[derive(Debug)]
pub struct Device {
    /// Path opened.
    pub path: PathBuf,
    /// Buffered read-write handle; for block devices opened O_EXCL, which the kernel
    /// refuses while anything has the device mounted or claimed.
    buffered: File,
    /// O_DIRECT handle, if the target accepts it.
    direct: Option<File>,
    /// Cleared when the target rejects an O_DIRECT request.
    direct_ok: AtomicBool,
    /// Size of the target in bytes.
    size: u64,
}

impl Device {
    /// Opens `target` for writing an image of `image_size` bytes.
    pub fn open(target: &Target, image_size: u64) -> Result<Device, FlashError> {
        let path = target.resolved.clone();
        let open_err = |source: io::Error| FlashError::Open {
            path: target.path.clone(),
            source,
        };
        let buffered = match target.kind {
            TargetKind::BlockDevice => OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_EXCL)
                .open(&path)
                .map_err(open_err)?,
            TargetKind::File => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .open(&path)
                    .map_err(open_err)?;
                if f.metadata().map_err(open_err)?.len() < image_size {
                    f.set_len(image_size).map_err(open_err)?;
                }
                f
            }
        };
        let size = seek_end(&buffered).map_err(open_err)?;
        if size < image_size {
            return Err(FlashError::Refused(super::Refusal::TooSmall {
                path: target.path.clone(),
                size,
                needed: image_size,
            }));
        }
        let direct = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .ok();
        let direct_ok = AtomicBool::new(direct.is_some());
        Ok(Device {
            path,
            buffered,
            direct,
            direct_ok,
            size,
        })
    }

    /// Size of the target in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Zeroes the partition structures a card may hold (`upstream.toml`
    /// `[flash_erase]`): its first MiB (MBR at sector 0, a primary GPT header at LBA 1
    /// and its entries, for 512- and 4096-byte sectors alike) and, unless `head_only`,
    /// its last MiB (a previous OS's backup GPT), then fsyncs. After it no tool or
    /// kernel finds a partition table on the card. A failed write comes back with its
    /// offset.
    pub fn erase_tables(&self, head_only: bool) -> Result<(), (u64, io::Error)> {
        let facts = &crate::upstream::facts().flash_erase;
        // The held-back first MiB is rewritten last: erasing more of it is pointless.
        let head = facts.head_bytes.min(HEAD).min(self.size);
        let zeros = AlignedBuf::new(facts.head_bytes.max(facts.tail_bytes) as usize);
        self.write_at(zeros.slice(head as usize), 0)
            .map_err(|e| (0, e))?;
        if !head_only {
            let tail = self.size.saturating_sub(facts.tail_bytes).max(head);
            self.write_at(zeros.slice((self.size - tail) as usize), tail)
                .map_err(|e| (tail, e))?;
        }
        self.sync().map_err(|e| (0, e))
    }

    /// True while O_DIRECT is in use.
    pub fn is_direct(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    fn direct(&self) -> Option<&File> {
        self.direct.as_ref().filter(|_| self.is_direct())
    }

    /// Writes `data` at `offset`, O_DIRECT when aligned; falls back to buffered I/O for
    /// good if the target rejects O_DIRECT.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        if let Some(d) = self.direct() {
            if aligned(data.as_ptr() as usize, offset, data.len()) {
                match d.write_all_at(data, offset) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.direct_ok.store(false, Ordering::Relaxed)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.buffered.write_all_at(data, offset)
    }

    /// Reads `buf.len()` bytes at `offset` from the medium (O_DIRECT when aligned).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(d) = self.direct() {
            if aligned(buf.as_ptr() as usize, offset, buf.len()) {
                match d.read_exact_at(buf, offset) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        self.direct_ok.store(false, Ordering::Relaxed)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.buffered.read_exact_at(buf, offset)
    }

    /// Flushes everything written so far to the medium.
    pub fn sync(&self) -> io::Result<()> {
        self.buffered.sync_all()?;
        if let Some(d) = &self.direct {
            d.sync_all()?;
        }
        Ok(())
    }

    /// Flushes written data to the medium (one fdatasync: for a block device it also
    /// flushes the drive's write cache).
    pub fn sync_data(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }

    /// Drops clean cached pages of `offset..offset+len` so buffered reads of it (the
    /// fallback when O_DIRECT is not possible) come from the medium. Call after a sync.
    pub fn forget(&self, offset: u64, len: u64) {
        let fd = self.buffered.as_raw_fd();
        // SAFETY: a plain syscall on an open descriptor; a failure only means buffered
        // reads may be served from the cache, and O_DIRECT reads never are.
        unsafe {
            libc::posix_fadvise(
                fd,
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }

    /// Test seam: inverts the byte at `offset` on the medium.
    pub fn flip_byte(&self, offset: u64) -> io::Result<()> {
        let mut b = [0u8; 1];
        self.buffered.read_exact_at(&mut b, offset)?;
        b[0] ^= 0xFF;
        self.buffered.write_all_at(&b, offset)?;
        self.buffered.sync_all()
    }
}

fn aligned(ptr: usize, offset: u64, len: usize) -> bool {
    ptr % ALIGN == 0 && offset % ALIGN as u64 == 0 && len % ALIGN == 0
}

fn seek_end(f: &File) -> io::Result<u64> {
    use std::io::Seek;
    let mut f = f;
    f.seek(io::SeekFrom::End(0))
}
