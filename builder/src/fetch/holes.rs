//! Punching holes into the cached image exactly where its bmap says the data does
//! not matter (the unmapped blocks), so later copies and flashes can skip them.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::bmap::{Bmap, byte_span};

/// The unmapped byte ranges `(offset, len)` of `bmap`'s image, in order.
pub(crate) fn unmapped(bmap: &Bmap) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for r in &bmap.ranges {
        let (off, len) = byte_span(r.first, r.last, bmap.block_size, bmap.image_size);
        if off > pos {
            out.push((pos, off - pos));
        }
        pos = pos.max(off + len);
    }
    if bmap.image_size > pos {
        out.push((pos, bmap.image_size - pos));
    }
    out
}

/// Deallocates `(offset, len)` ranges of `file` (keeping its size); they read as zeros.
pub(crate) fn punch(file: &File, ranges: &[(u64, u64)]) -> std::io::Result<()> {
    for &(off, len) in ranges {
        let (Ok(o), Ok(l)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
            return Err(std::io::Error::other(format!(
                "range {off}+{len} is beyond what fallocate takes"
            )));
        };
        // SAFETY: fallocate on a valid open fd with plain integer arguments.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                o,
                l,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
