//! Page-aligned buffers for O_DIRECT I/O, without unsafe code, and the pool they
//! are shared from: one buffer read from the image is written to every card, and goes
//! back to the pool when the last card is done with it.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

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

/// A pool buffer holding one chunk of the image; back in its pool when dropped.
#[derive(Debug)]
pub struct PoolBuf {
    buf: Option<AlignedBuf>,
    home: SyncSender<AlignedBuf>,
}

/// One chunk shared by every card it is written to.
pub type Shared = Arc<PoolBuf>;

impl PoolBuf {
    /// `buf`, returned to `home` (a channel with room for every pool buffer) on drop.
    pub fn new(buf: AlignedBuf, home: SyncSender<AlignedBuf>) -> Shared {
        Arc::new(Self {
            buf: Some(buf),
            home,
        })
    }

    /// The first `n` bytes.
    pub fn slice(&self, n: usize) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| b.slice(n))
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            // The pool channel has room for every buffer: this never blocks.
            let _ = self.home.try_send(b);
        }
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

    #[test]
    fn a_shared_buffer_goes_home_when_the_last_card_drops_it() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let shared = PoolBuf::new(AlignedBuf::new(ALIGN), tx);
        let other = shared.clone();
        drop(shared);
        assert!(rx.try_recv().is_err(), "still held by one card");
        drop(other);
        assert!(rx.try_recv().is_ok());
    }
}
