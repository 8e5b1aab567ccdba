//! Splitting mapped ranges into large aligned I/O chunks.

use super::ranges::SourceRange;

/// Size of one I/O (and of each pool buffer).
pub const CHUNK: u64 = 4 << 20;

/// The first MiB, where the partition table lives: written last.
pub const HEAD: u64 = 1 << 20;

/// I/O threads: several requests in flight keep cards, USB readers and disks busy.
pub const WORKERS: usize = 4;

/// One I/O: bytes `offset..offset+len` of range `range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset.
    pub offset: u64,
    /// Length (≤ [`CHUNK`]).
    pub len: u64,
    /// Index of the range it belongs to.
    pub range: usize,
    /// Last chunk of its range.
    pub last: bool,
}

/// Chunks of `ranges`, never crossing a [`CHUNK`] boundary or the [`HEAD`] boundary.
pub fn plan(ranges: &[SourceRange]) -> Vec<Chunk> {
    let mut out = Vec::new();
    for (i, r) in ranges.iter().enumerate() {
        let end = r.offset + r.len;
        let mut pos = r.offset;
        while pos < end {
            let boundary = if pos < HEAD {
                HEAD
            } else {
                (pos / CHUNK + 1) * CHUNK
            };
            let stop = end.min(boundary);
            out.push(Chunk {
                offset: pos,
                len: stop - pos,
                range: i,
                last: stop == end,
            });
            pos = stop;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(offset: u64, len: u64) -> SourceRange {
        SourceRange {
            offset,
            len,
            sha256: None,
        }
    }

    #[test]
    fn plan_splits_at_head_and_chunk_boundaries() {
        let chunks = plan(&[r(0, 9 << 20), r(10 << 20, 100)]);
        let spans: Vec<_> = chunks.iter().map(|c| (c.offset, c.len, c.last)).collect();
        assert_eq!(
            spans,
            vec![
                (0, 1 << 20, false),
                (1 << 20, 3 << 20, false),
                (4 << 20, 4 << 20, false),
                (8 << 20, 1 << 20, true),
                (10 << 20, 100, true),
            ]
        );
        assert_eq!(chunks[4].range, 1);
    }
}
