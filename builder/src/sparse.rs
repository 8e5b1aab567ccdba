//! The one sparse-map module: which byte ranges of a file hold data, independent of
//! the page cache (image copies, the `.bmap` of a file's holes).
//!
//! SEEK_DATA alone is not enough for reproducible output: on ext4 an *unwritten*
//! (preallocated, reads-as-zero) extent counts as data wherever its pages happen to
//! be cached, so the same file maps differently after someone merely read it
//! (mke2fs leaves such extents in generated images). FIEMAP says which extents are
//! unwritten; those are skipped like holes. File systems without FIEMAP (tmpfs)
//! fall back to SEEK_DATA/SEEK_HOLE, where that ambiguity does not exist.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;

/// `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
const BATCH: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; BATCH],
}

/// Byte ranges `[start, end)` of the first `len` bytes of `file` that hold written
/// data, sorted and merged.
pub fn data_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    match fiemap(file, len) {
        Ok(v) => Ok(v),
        Err(e)
            if [libc::ENOTTY, libc::EOPNOTSUPP, libc::EINVAL, libc::ENOSYS]
                .contains(&e.raw_os_error().unwrap_or(0)) =>
        {
            seek_extents(file, len)
        }
        Err(e) => Err(e),
    }
}

fn push(out: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    match out.last_mut() {
        Some(last) if start <= last.1 => last.1 = last.1.max(end),
        _ => out.push((start, end)),
    }
}

fn fiemap(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut flags = FIEMAP_FLAG_SYNC;
    while pos < len {
        let mut fm = Box::new(Fiemap {
            start: pos,
            length: len - pos,
            flags,
            mapped_extents: 0,
            extent_count: BATCH as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); BATCH],
        });
        // SAFETY: `fm` is a valid, writable fiemap with room for `extent_count` extents.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *fm) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        flags = 0;
        let n = (fm.mapped_extents as usize).min(BATCH);
        if n == 0 {
            break;
        }
        let mut last_seen = false;
        for e in &fm.extents[..n] {
            let end = e.logical.saturating_add(e.length).min(len);
            if e.flags & FIEMAP_EXTENT_UNWRITTEN == 0 {
                push(&mut out, e.logical.min(len), end);
            }
            pos = pos.max(end);
            last_seen |= e.flags & FIEMAP_EXTENT_LAST != 0;
        }
        if last_seen {
            break;
        }
    }
    Ok(out)
}

fn seek_extents(file: &File, len: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < len {
        let data = match seek(fd, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && pos == 0 => {
                return Ok(vec![(0, len)]);
            }
            Err(e) => return Err(e),
        };
        if data >= len {
            break;
        }
        let hole = seek(fd, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        push(&mut out, data, hole);
        pos = hole.max(data + 1);
    }
    Ok(out)
}

fn seek(fd: i32, pos: u64, whence: i32) -> io::Result<Option<u64>> {
    let off = i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek on an open descriptor has no memory effects.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r as u64))
}

/// Inclusive block ranges `(first, last)` of `block_size` blocks covering `extents`.
pub fn to_blocks(extents: &[(u64, u64)], block_size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in extents {
        let first = s / block_size;
        let last = e.div_ceil(block_size).saturating_sub(1);
        match out.last_mut() {
            Some(prev) if first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn unwritten_extents_are_not_data_even_when_cached() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[1u8; 8192], 1 << 20).unwrap();
        // Preallocate (unwritten) 4 MiB and read it so its pages are cached.
        // SAFETY: plain fallocate on an open file.
        let r =
            unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 4 << 20, 4 << 20) };
        if r == 0 {
            let mut buf = vec![0u8; 4 << 20];
            f.read_exact_at(&mut buf, 4 << 20).unwrap();
        }
        f.sync_all().unwrap();
        assert_eq!(
            data_extents(&f, 16 << 20).unwrap(),
            [((1 << 20), (1 << 20) + 8192)]
        );
        assert_eq!(
            seek_extents(&f, 16 << 20).unwrap()[0],
            ((1 << 20), (1 << 20) + 8192)
        );
    }

    #[test]
    fn blocks_round_outwards_and_merge() {
        assert_eq!(
            to_blocks(&[(0, 1), (4096, 8193), (3 * 4096, 4 * 4096)], 4096),
            [(0, 3)]
        );
        assert_eq!(to_blocks(&[(8192, 12288)], 4096), [(2, 2)]);
    }
}
