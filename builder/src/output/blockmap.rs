//! The output's `.bmap`: the blocks the image's file systems need
//! ([`crate::image::usage`]), never the file's holes, so the map is the same wherever
//! the output lives (tmpfs, another file system) and however the base was copied
//! (`cp --sparse=always`, `xz -d`). Nothing that did not change is rehashed: ranges
//! are split at the boot partition's bounds, and every range outside it that the
//! base image maps identically reuses the base's SHA-256 (the build writes nothing
//! outside the boot partition). The base's map is computed once and cached by file
//! identity.

use crate::bmap::{BLOCK_SIZE, BlockRange, Bmap, byte_span, hash_span};
use crate::digest::Sha256Digest;
use crate::image::{Image, ImageError, usage};
use crate::sparse::{ByteRange, to_blocks};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const READ_CHUNK: usize = 4 << 20;

/// Bumped whenever the way a base's map is derived changes, so a map cached by an
/// older piimg (e.g. one made from holes) is never reused.
const CACHE_VERSION: &str = "fsmap1";

/// Why a block map could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BlockMapError {
    /// Reading or hashing the image failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The image.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The image's partition table or file systems could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// The blocks (inclusive `BLOCK_SIZE` block pairs) the file systems of the image at
/// `path` need, rounded outwards to whole blocks.
pub fn fs_blocks(path: &Path) -> Result<Vec<(u64, u64)>, BlockMapError> {
    let image = Image::open(path)?;
    let used = usage::used_ranges(&image)?;
    let used = used
        .into_iter()
        .map(|(start, end)| ByteRange { start, end });
    Ok(to_blocks(used, BLOCK_SIZE)
        .into_iter()
        .map(|b| (b.first, b.last))
        .collect())
}

/// Hashes the block ranges `mapped` of `file` into a [`Bmap`] whose ranges are also
/// split at the block numbers in `cuts`. A range lying entirely outside the byte span
/// `changed` that `known` lists with the same bounds takes `known`'s checksum instead
/// of being read.
pub fn scan_split(
    file: &File,
    mapped: &[(u64, u64)],
    cuts: &[u64],
    known: Option<&Bmap>,
    changed: Option<(u64, u64)>,
) -> io::Result<Bmap> {
    let image_size = file.metadata()?.len();
    let reuse: HashMap<(u64, u64), Sha256Digest> = known
        .filter(|k| k.image_size == image_size && k.block_size == BLOCK_SIZE)
        .map(|k| {
            k.ranges
                .iter()
                .map(|r| ((r.first, r.last), r.sha256))
                .collect()
        })
        .unwrap_or_default();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut ranges = Vec::new();
    for (first, last) in split(mapped, cuts) {
        crate::interrupt::check()?;
        let (offset, len) = byte_span(first, last, BLOCK_SIZE, image_size);
        let outside = changed.is_none_or(|(s, e)| offset + len <= s || offset >= e);
        let sha256 = match reuse.get(&(first, last)) {
            Some(h) if outside => *h,
            _ => hash_span(file, offset, len, &mut buf)?,
        };
        ranges.push(BlockRange {
            first,
            last,
            sha256,
        });
    }
    Ok(Bmap::from_ranges(image_size, BLOCK_SIZE, ranges))
}

/// `ranges` (inclusive block pairs) with a new range starting at every cut.
fn split(ranges: &[(u64, u64)], cuts: &[u64]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(first, last) in ranges {
        let mut start = first;
        let mut inner: Vec<u64> = cuts
            .iter()
            .copied()
            .filter(|&c| c > first && c <= last)
            .collect();
        inner.sort_unstable();
        inner.dedup();
        for c in inner {
            out.push((start, c - 1));
            start = c;
        }
        out.push((start, last));
    }
    out
}

/// The base image's split file-system map, from `cache_dir` when a map for this
/// exact file (device, inode, size, modification time) is there, else made and
/// stored.
pub fn base_map(
    base: &Path,
    cuts: &[u64],
    cache_dir: Option<&Path>,
) -> Result<Bmap, BlockMapError> {
    let io_err = |what| {
        move |source| BlockMapError::Io {
            path: base.to_path_buf(),
            what,
            source,
        }
    };
    let file = File::open(base).map_err(io_err("opening"))?;
    let m = file.metadata().map_err(io_err("reading its metadata"))?;
    let key = format!(
        "{CACHE_VERSION}-{:x}-{:x}-{:x}-{}.{}-{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        cuts.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("_")
    );
    let cached: Option<PathBuf> = cache_dir.map(|d| d.join(format!("{key}.bmap")));
    if let Some(p) = &cached {
        if let Ok(b) = Bmap::load(p) {
            if b.image_size == m.size() {
                return Ok(b);
            }
        }
    }
    let mapped = fs_blocks(base)?;
    let map = scan_split(&file, &mapped, cuts, None, None).map_err(io_err("hashing"))?;
    if let (Some(dir), Some(p)) = (cache_dir, &cached) {
        // A cache that cannot be written only costs time on the next build.
        if std::fs::create_dir_all(dir).is_ok() {
            let _ = map.write(p);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn split_cuts_ranges_at_the_given_blocks() {
        assert_eq!(
            split(&[(0, 10), (20, 30)], &[5, 20, 25, 40]),
            [(0, 4), (5, 10), (20, 24), (25, 30)]
        );
    }

    #[test]
    fn reused_checksums_equal_a_fresh_scan() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(64 * 4096).unwrap();
        f.write_all_at(&[3u8; 40 * 4096], 4096).unwrap();
        let mapped = [(1, 40), (50, 51)];
        let base = scan_split(&f, &mapped, &[16, 32], None, None).unwrap();
        assert_eq!(
            base.ranges
                .iter()
                .map(|r| (r.first, r.last))
                .collect::<Vec<_>>(),
            [(1, 15), (16, 31), (32, 40), (50, 51)]
        );
        // A copy whose "boot partition" [16, 32) changed.
        let g = tempfile::tempfile().unwrap();
        super::super::copy::copy_sparse(&f, &g, false, false, &mut |_| {}).unwrap();
        g.write_all_at(b"card", 20 * 4096).unwrap();
        let reused = scan_split(
            &g,
            &mapped,
            &[16, 32],
            Some(&base),
            Some((16 * 4096, 32 * 4096)),
        )
        .unwrap();
        let fresh = scan_split(&g, &mapped, &[16, 32], None, None).unwrap();
        assert_eq!(reused, fresh);
        assert_ne!(reused.ranges[1].sha256, base.ranges[1].sha256);
        assert_eq!(reused.ranges[2].sha256, base.ranges[2].sha256);
        // The hole at blocks 50-51 is mapped and hashed as zeros.
        assert_eq!(reused.ranges[3].sha256, Sha256Digest::of(&[0u8; 2 * 4096]));
    }
}
