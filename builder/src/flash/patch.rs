//! A card's own bytes over a shared image: the byte span one card differs in (a
//! node's boot partition composed on the fly), the ranges of it the card needs, and
//! a file holding those bytes at their image offsets. Every other byte of the card
//! comes from the image shared by all cards of the flash.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// One card's bytes over the span `span` of the shared image.
#[derive(Debug)]
pub struct Patch {
    /// Byte span `[start, end)` of the image this card has its own bytes for.
    pub span: (u64, u64),
    /// Ranges `[start, end)` inside `span` the card needs, sorted and disjoint.
    pub ranges: Vec<(u64, u64)>,
    /// The card's bytes, at their image offsets (only `span` is read).
    file: File,
}

impl Patch {
    /// A patch whose bytes are `file`'s over `span`; `ranges` are clipped to `span`.
    pub fn new(span: (u64, u64), ranges: &[(u64, u64)], file: File) -> Self {
        let ranges = ranges
            .iter()
            .map(|&(s, e)| (s.max(span.0), e.min(span.1)))
            .filter(|(s, e)| s < e)
            .collect();
        Self { span, ranges, file }
    }

    /// True when `[offset, offset+len)` lies inside the span.
    pub fn covers(&self, offset: u64, len: u64) -> bool {
        offset >= self.span.0 && offset + len <= self.span.1
    }

    /// Fills `buf` with the card's bytes at `offset` (inside the span).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Bytes in the ranges.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
}
