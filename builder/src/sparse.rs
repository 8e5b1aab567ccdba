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

/// Bytes `[start, end)` of a file: `end` is not included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// The first byte.
    pub start: u64,
    /// The byte after the last.
    pub end: u64,
}

/// Blocks `first..=last` of a file: both are included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpan {
    /// The first block.
    pub first: u64,
    /// The last block.
    pub last: u64,
}

/// Byte ranges of the first `len` bytes of `file` that hold written data, sorted and
/// merged.
pub fn data_extents(file: &File, len: u64) -> io::Result<Vec<ByteRange>> {
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

fn push(out: &mut Vec<ByteRange>, start: u64, end: u64) {
    if start >= end {
        return;
    }
    match out.last_mut() {
        Some(last) if start <= last.end => last.end = last.end.max(end),
        _ => out.push(ByteRange { start, end }),
    }
}

fn fiemap(file: &File, len: u64) -> io::Result<Vec<ByteRange>> {
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

fn seek_extents(file: &File, len: u64) -> io::Result<Vec<ByteRange>> {
    seek_extents_in(file, 0, len)
}

/// Byte ranges of `file` within `[start, end)` that may hold non-zero bytes; the
/// rest are holes, which read as zeros. For *reading* a file cheaply (a FAT in a
/// sparse image is mostly holes), not for maps, which must not depend on how the file
/// was copied (use [`data_extents`]). SEEK_DATA/SEEK_HOLE; where the file system
/// cannot tell holes (or `file` is a block device), the whole range.
pub fn nonzero_candidates(file: &File, start: u64, end: u64) -> io::Result<Vec<ByteRange>> {
    seek_extents_in(file, start, end)
}

fn seek_extents_in(file: &File, start: u64, end: u64) -> io::Result<Vec<ByteRange>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match seek(fd, pos, libc::SEEK_DATA) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && pos == start => {
                return Ok(vec![ByteRange { start, end }]);
            }
            Err(e) => return Err(e),
        };
        if data >= end {
            break;
        }
        let hole = seek(fd, data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
        push(&mut out, data.max(start), hole);
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

/// The `block_size` blocks covering `extents` (sorted), rounded outwards and merged.
pub fn to_blocks(extents: impl IntoIterator<Item = ByteRange>, block_size: u64) -> Vec<BlockSpan> {
    let mut out: Vec<BlockSpan> = Vec::new();
    for ByteRange { start, end } in extents {
        let first = start / block_size;
        let last = end.div_ceil(block_size).saturating_sub(1);
        match out.last_mut() {
            Some(prev) if first <= prev.last + 1 => prev.last = prev.last.max(last),
            _ => out.push(BlockSpan { first, last }),
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
        let written = ByteRange {
            start: 1 << 20,
            end: (1 << 20) + 8192,
        };
        assert_eq!(data_extents(&f, 16 << 20).unwrap(), [written]);
        assert_eq!(seek_extents(&f, 16 << 20).unwrap()[0], written);
    }

    #[test]
    fn nonzero_candidates_cover_every_written_byte_of_the_range_and_stay_inside_it() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(&[1u8; 8192], 1 << 20).unwrap();
        f.write_all_at(&[2u8; 100], 5 << 20).unwrap();
        let (start, end) = ((1 << 20) + 4096, 6 << 20);
        let got = nonzero_candidates(&f, start, end).unwrap();
        assert!(!got.is_empty());
        assert!(
            got.iter()
                .all(|r| start <= r.start && r.start < r.end && r.end <= end)
        );
        let covered = |at: u64| got.iter().any(|r| r.start <= at && at < r.end);
        assert!(((1 << 20) + 4096..(1 << 20) + 8192).all(covered));
        assert!(((5 << 20)..(5 << 20) + 100).all(covered));
        // Nothing in a range without data.
        assert_eq!(nonzero_candidates(&f, 2 << 20, 3 << 20).unwrap().len(), {
            // a file system without SEEK_DATA reports the whole range
            usize::from(seek(f.as_raw_fd(), 2 << 20, libc::SEEK_DATA).unwrap() == Some(2 << 20))
        });
    }

    #[test]
    fn blocks_round_outwards_and_merge() {
        let bytes = |v: &[(u64, u64)]| -> Vec<ByteRange> {
            v.iter()
                .map(|&(start, end)| ByteRange { start, end })
                .collect()
        };
        assert_eq!(
            to_blocks(bytes(&[(0, 1), (4096, 8193), (3 * 4096, 4 * 4096)]), 4096),
            [BlockSpan { first: 0, last: 3 }]
        );
        assert_eq!(
            to_blocks(bytes(&[(8192, 12288)]), 4096),
            [BlockSpan { first: 2, last: 2 }]
        );
    }
}
