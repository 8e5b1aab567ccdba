//! A node's card composed on the fly, so flashing a cluster needs no image per node
//! on disk: the card is the base image everywhere but the boot partition, and the
//! boot partition is built into an unnamed temporary file of the base's size that
//! holds only the base's partition tables, gaps and boot partition (sparse: the root
//! partition stays a hole). The card is laid onto it by [`lay_card`], the very code
//! `piimg build` uses for its images, so the bytes are the ones `build` would write.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::patch::Patch;
use crate::card::Card;
use crate::image::{Image, ImageError, usage};
use crate::output::write::{WriteError, lay_card};

/// Bytes copied per read.
const COPY_CHUNK: usize = 4 << 20;

/// Why a card could not be composed.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// Reading the base or writing the temporary file failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The base or the composed partition could not be read as a disk image.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Laying the card onto the boot partition failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// `card` (with `extra` boot files, the manifest) composed over `base`: the boot
/// partition's span, the ranges of it the card needs, and its bytes in a temporary
/// file made in `dir` (unnamed: it goes when the patch is dropped, or the process
/// dies).
pub fn compose(
    base: &Path,
    card: &Card,
    extra: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
) -> Result<Patch, ComposeError> {
    let io_err = |path: &Path, what| {
        let path = path.to_path_buf();
        move |source| ComposeError::Io { path, what, source }
    };
    let image = Image::open(base)?;
    let size = image.size();
    // Everything but the partitions other than the boot partition: the tables (MBR,
    // both GPT headers), gaps, and the boot partition itself.
    let boot = image.boot_partition()?.index;
    let mut skip: Vec<(u64, u64)> = image
        .table()
        .partitions
        .iter()
        .filter(|p| p.index != boot)
        .map(|p| (p.start, p.end().min(size)))
        .collect();
    skip.sort_unstable();
    drop(image);

    let src = File::open(base).map_err(io_err(base, "opening the base image"))?;
    let tmp = tempfile::tempfile_in(dir).map_err(io_err(dir, "creating a temporary file"))?;
    tmp.set_len(size)
        .map_err(io_err(dir, "sizing a temporary file"))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let extents =
        crate::sparse::data_extents(&src, size).map_err(io_err(base, "mapping its data"))?;
    for e in extents {
        for (start, end) in outside(e.start, e.end, &skip) {
            copy_range(&src, &tmp, start, end, &mut buf)
                .map_err(io_err(base, "copying its boot partition"))?;
        }
    }

    let path = PathBuf::from(format!("/proc/self/fd/{}", tmp.as_raw_fd()));
    let span = lay_card(&path, base, card, extra)?;
    let used = usage::used_ranges(&Image::open(&path)?)?;
    Ok(Patch::new(span, &used, tmp))
}

/// The parts of `[start, end)` outside every span of `skip` (sorted).
fn outside(start: u64, end: u64, skip: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = start;
    for &(s, e) in skip {
        if e <= pos || s >= end {
            continue;
        }
        if s > pos {
            out.push((pos, s));
        }
        pos = pos.max(e);
    }
    if pos < end {
        out.push((pos, end));
    }
    out
}

/// Copies `[start, end)` of `src` to the same offsets of `dst`, all-zero blocks left
/// as holes.
fn copy_range(src: &File, dst: &File, start: u64, end: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut off = start;
    while off < end {
        crate::interrupt::check()?;
        let n = ((end - off) as usize).min(buf.len());
        src.read_exact_at(&mut buf[..n], off)?;
        for (k, block) in buf[..n].chunks(4096).enumerate() {
            if block.iter().any(|&b| b != 0) {
                dst.write_all_at(block, off + (k * 4096) as u64)?;
            }
        }
        off += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_skips_the_other_partitions() {
        assert_eq!(outside(0, 100, &[(10, 20), (50, 200)]), [(0, 10), (20, 50)]);
        assert_eq!(outside(30, 40, &[(10, 20)]), [(30, 40)]);
        assert!(outside(12, 18, &[(10, 20)]).is_empty());
    }
}
