//! Copying the base image: a reflink (FICLONE) where the file system shares
//! extents, otherwise only the written data extents (FIEMAP, else SEEK_DATA/SEEK_HOLE;
//! then copy_file_range),
//! so the copy stays as sparse as the base and costs no more than `cp --sparse`.
//!
//! The copy also streams its output to disk: each chunk's writeback is started as soon
//! as it is copied (`sync_file_range`), and once more than [`WINDOW`] bytes are in
//! flight the oldest chunk is waited for and dropped from the page cache
//! (`POSIX_FADV_DONTNEED`). The output's fsync, which the caller still does before
//! renaming it into place, then finds almost nothing left to write, and parallel
//! builds do not fill memory with dirty pages (the base stays cached for the next node).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// How the base was copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMethod {
    /// Shared extents (btrfs, XFS, bcachefs...): instant, no data moved.
    Reflink,
    /// Data extents copied in the kernel with copy_file_range.
    CopyFileRange,
    /// Data extents copied with reads and writes (all-zero blocks skipped).
    ReadWrite,
}

/// `_IOW(0x94, 9, int)`: clone all of a file's extents into another.
const FICLONE: libc::c_ulong = 0x4004_9409;
const CHUNK: usize = 8 << 20;
const ZERO_BLOCK: usize = 4096;
/// Copied bytes allowed in flight (dirty or under writeback) before the copy waits.
pub const WINDOW: u64 = 64 << 20;

/// Copies all of `src` into the empty file `dst` (same length afterwards, holes kept),
/// calling `progress(bytes_done_so_far)` as data moves. `reflink` allows FICLONE.
/// `keep_cached` keeps the written pages cached (they are still written back as the
/// copy goes) for a caller about to read the whole copy again, e.g. to hash it.
pub fn copy_sparse(
    src: &File,
    dst: &File,
    reflink: bool,
    keep_cached: bool,
    progress: &mut dyn FnMut(u64),
) -> io::Result<CopyMethod> {
    let len = src.metadata()?.len();
    if reflink {
        // SAFETY: FICLONE takes the source descriptor as its argument; both are open.
        let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
        if r == 0 {
            progress(len);
            return Ok(CopyMethod::Reflink);
        }
    }
    dst.set_len(len)?;
    let extents = crate::sparse::data_extents(src, len)?;
    let mut method = CopyMethod::CopyFileRange;
    let mut done = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    let mut stream = Writeback::new(dst, !keep_cached);
    for crate::sparse::ByteRange { start, end } in extents {
        let mut off = start;
        while off < end {
            crate::interrupt::check()?;
            let want = ((end - off) as usize).min(CHUNK);
            let n = if method == CopyMethod::CopyFileRange {
                match copy_range(src, dst, off, want) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("base image ends at byte {off}, expected {len}"),
                        ));
                    }
                    Ok(n) => n,
                    Err(e)
                        if [libc::EXDEV, libc::ENOSYS, libc::EINVAL, libc::EOPNOTSUPP]
                            .contains(&e.raw_os_error().unwrap_or(0)) =>
                    {
                        method = CopyMethod::ReadWrite;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                if buf.is_empty() {
                    buf = vec![0u8; CHUNK];
                }
                read_write(src, dst, off, &mut buf[..want])?
            };
            stream.written(off, n as u64);
            off += n as u64;
            done += n as u64;
            progress(done);
        }
    }
    Ok(method)
}

/// Streams a file's freshly written ranges to disk, keeping at most [`WINDOW`] bytes
/// of them in the page cache. Only hints: durability still comes from the caller's
/// fsync (which also reports any writeback error these calls do not).
struct Writeback<'a> {
    file: &'a File,
    in_flight: std::collections::VecDeque<(u64, u64)>,
    bytes: u64,
    drop_cache: bool,
}

impl<'a> Writeback<'a> {
    fn new(file: &'a File, drop_cache: bool) -> Self {
        Self {
            file,
            in_flight: std::collections::VecDeque::new(),
            bytes: 0,
            drop_cache,
        }
    }

    /// `len` bytes at `off` were just written: start their writeback, and retire the
    /// oldest ranges while too much is in flight.
    fn written(&mut self, off: u64, len: u64) {
        self.sync_range(off, len, libc::SYNC_FILE_RANGE_WRITE);
        self.in_flight.push_back((off, len));
        self.bytes += len;
        while self.bytes > WINDOW {
            let Some((o, l)) = self.in_flight.pop_front() else {
                break;
            };
            self.bytes -= l;
            self.sync_range(
                o,
                l,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            if !self.drop_cache {
                continue;
            }
            // SAFETY: advice on an open descriptor; no memory is touched.
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    o as libc::off_t,
                    l as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
        }
    }

    fn sync_range(&self, off: u64, len: u64, flags: libc::c_uint) {
        // SAFETY: sync_file_range on an open descriptor; no memory is touched. A
        // failure is ignored on purpose: this is a hint, the later fsync is the check.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                off as libc::off64_t,
                len as libc::off64_t,
                flags,
            );
        }
    }
}

fn copy_range(src: &File, dst: &File, off: u64, len: usize) -> io::Result<usize> {
    let mut off_in = off as libc::loff_t;
    let mut off_out = off as libc::loff_t;
    // SAFETY: both descriptors are open; the offsets are valid pointers to locals.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Reads up to `buf.len()` bytes at `off` and writes the non-zero 4 KiB blocks.
fn read_write(src: &File, dst: &File, off: u64, buf: &mut [u8]) -> io::Result<usize> {
    let n = src.read_at(buf, off)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("base image ends early at byte {off}"),
        ));
    }
    let mut i = 0;
    while i < n {
        let end = (i + ZERO_BLOCK).min(n);
        if buf[i..end].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[i..end], off + i as u64)?;
        }
        i = end;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sparse_file(dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("base.img");
        let f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(&[1u8; 1 << 20], 4 << 20).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        p
    }

    #[test]
    fn copy_is_identical_and_stays_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let src = sparse_file(dir.path());
        let dst = dir.path().join("out.img");
        let mut last = 0;
        let method = copy_sparse(
            &File::open(&src).unwrap(),
            &File::create(&dst).unwrap(),
            true,
            false,
            &mut |d| last = d,
        )
        .unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let m = std::fs::metadata(&dst).unwrap();
        assert_eq!(m.len(), 64 << 20);
        if method != CopyMethod::Reflink {
            // 1 MiB + one block of data, not 64 MiB.
            assert!(m.blocks() * 512 < 4 << 20, "{} blocks", m.blocks());
            assert!(last >= 1 << 20);
        }
    }

    #[test]
    fn streamed_copy_beyond_the_writeback_window_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("big.img");
        let f = File::create(&src).unwrap();
        let len = WINDOW * 2 + (3 << 20);
        f.set_len(len).unwrap();
        // Distinct data in several extents, more than the window in total.
        let mut off = 0u64;
        let mut i = 0u8;
        while off + (4 << 20) <= len {
            f.write_all_at(&vec![i.wrapping_add(1); 4 << 20], off)
                .unwrap();
            off += 5 << 20;
            i = i.wrapping_add(1);
        }
        drop(f);
        for keep_cached in [false, true] {
            let dst = dir.path().join(format!("out-{keep_cached}.img"));
            let out = File::create(&dst).unwrap();
            copy_sparse(
                &File::open(&src).unwrap(),
                &out,
                false,
                keep_cached,
                &mut |_| {},
            )
            .unwrap();
            out.sync_all().unwrap();
            assert!(std::fs::read(&src).unwrap() == std::fs::read(&dst).unwrap());
        }
    }

    #[test]
    fn read_write_fallback_skips_zero_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        std::fs::write(&src, [vec![0u8; 1 << 20], vec![7u8; 4096]].concat()).unwrap();
        let dst = dir.path().join("b");
        let d = File::create(&dst).unwrap();
        d.set_len((1 << 20) + 4096).unwrap();
        let mut buf = vec![0u8; CHUNK];
        let n = read_write(&File::open(&src).unwrap(), &d, 0, &mut buf).unwrap();
        assert_eq!(n, (1 << 20) + 4096);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(std::fs::metadata(&dst).unwrap().blocks() * 512 <= 64 << 10);
    }
}
