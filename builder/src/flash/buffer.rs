//! Page-aligned buffers for O_DIRECT I/O, without unsafe code.

/// Alignment that satisfies O_DIRECT on every device we meet (logical blocks ≤ 4 KiB).
pub const ALIGN: usize = 4096;

/// A zeroed buffer whose start is [`ALIGN`]-aligned.
#[derive(Debug)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        // The heap block never moves, so the offset stays valid when `self` moves.
        let start = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { raw, start, len }
    }

    /// The whole buffer.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }

    /// The first `n` bytes.
    pub fn slice(&self, n: usize) -> &[u8] {
        &self.raw[self.start..self.start + n.min(self.len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_after_moves() {
        let bufs: Vec<AlignedBuf> = (0..8).map(|_| AlignedBuf::new(8192)).collect();
        for mut b in bufs {
            let s = b.as_mut_slice();
            assert_eq!(s.len(), 8192);
            assert_eq!(s.as_ptr() as usize % ALIGN, 0);
        }
    }
}
