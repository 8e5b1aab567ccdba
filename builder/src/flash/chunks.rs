//! Splitting mapped ranges into large aligned I/O chunks, and a reader thread that
//! fills a small pool of aligned buffers ahead of the consumer.

use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::buffer::AlignedBuf;
use super::source::SourceRange;

/// Size of one I/O (and of each pool buffer).
pub const CHUNK: u64 = 4 << 20;

/// The first MiB, where the partition table lives: written last.
pub const HEAD: u64 = 1 << 20;

/// Buffers in flight between reader and consumer.
const POOL: usize = 4;

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

/// A filled chunk: its data, and the range's SHA256 when it is the range's last chunk
/// and the reader hashes.
pub struct Filled {
    /// Which chunk.
    pub chunk: Chunk,
    /// Its bytes (the first `chunk.len`).
    pub buf: AlignedBuf,
    /// Hex SHA256 of the whole range, on its last chunk (when hashing).
    pub range_sha256: Option<String>,
}

/// The consumer's ends of a reader pipeline.
pub struct Pipe {
    /// Filled chunks in order (or the offset and error of a failed read, after which
    /// nothing follows).
    pub filled: Receiver<Result<Filled, (u64, io::Error)>>,
    /// Where the consumer returns buffers for reuse.
    pub recycle: SyncSender<AlignedBuf>,
}

/// Runs `read(chunk, buf)` for every chunk on `scope`'s thread, `POOL` buffers ahead,
/// hashing each range on the way when `hash` is set.
pub fn spawn_reader<'scope, 'env, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    chunks: &'env [Chunk],
    hash: bool,
    mut read: F,
) -> Pipe
where
    F: FnMut(&Chunk, &mut [u8]) -> io::Result<()> + Send + 'scope,
{
    let (filled_tx, filled_rx) = mpsc::sync_channel::<Result<Filled, (u64, io::Error)>>(POOL);
    let (recycle_tx, recycle_rx) = mpsc::sync_channel::<AlignedBuf>(POOL * 2);
    for _ in 0..POOL {
        // Cannot fail: the channel has room for POOL * 2.
        let _ = recycle_tx.send(AlignedBuf::new(CHUNK as usize));
    }
    scope.spawn(move || {
        let mut hasher = Sha256::new();
        for chunk in chunks {
            let Ok(mut buf) = recycle_rx.recv() else {
                return; // consumer gave up
            };
            let len = chunk.len as usize;
            if let Err(e) = read(chunk, &mut buf.as_mut_slice()[..len]) {
                let _ = filled_tx.send(Err((chunk.offset, e)));
                return;
            }
            let mut range_sha256 = None;
            if hash {
                hasher.update(buf.slice(len));
                if chunk.last {
                    range_sha256 = Some(hex::encode(hasher.finalize_reset()));
                }
            }
            let filled = Filled {
                chunk: *chunk,
                buf,
                range_sha256,
            };
            if filled_tx.send(Ok(filled)).is_err() {
                return;
            }
        }
    });
    Pipe {
        filled: filled_rx,
        recycle: recycle_tx,
    }
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
