//! Read-back verification, overlapped with writing. The write workers hand each
//! written buffer to [`Retained`] instead of back to the pool; as soon as every chunk
//! of a [`Window`] is written, the [`Verifier`] fsyncs, drops the window's cached pages,
//! reads it back from the medium (O_DIRECT where the target allows it) into its own
//! buffer and compares it byte for byte with the buffer that was written, then lets
//! that buffer go (back to the pool once no other card keeps it). The pool holds at
//! most two windows per card besides the writers' buffers, so the memory kept is
//! bounded (see [`super::window::Budget`]). The image
//! itself is checked against the `.bmap` while writing; [`check_head`] compares the
//! first MiB once it is written.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::ProgressBar;

use super::FlashError;
use super::buffer::{AlignedBuf, Shared};
use super::chunks::{CHUNK, Chunk, HEAD};
use super::device::Device;
use super::error::write_err;
use super::ranges::SourceRange;
use super::window::{Tracker, Window};

/// What the overlapped read-back checked.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    /// Bytes read back and matched.
    pub bytes: u64,
    /// When the first window was read back.
    pub started: Option<Instant>,
    /// Whether the flip fault was applied (inside a window).
    pub flipped: bool,
}

#[derive(Debug)]
struct Slots {
    bufs: Vec<Option<Shared>>,
    closed: bool,
}

/// Written buffers, by plan index, kept until their window has been compared.
#[derive(Debug)]
pub struct Retained {
    slots: Mutex<Slots>,
}

impl Retained {
    /// Room for a plan of `chunks` chunks, nothing kept.
    pub fn new(chunks: usize) -> Self {
        Self {
            slots: Mutex::new(Slots {
                bufs: (0..chunks).map(|_| None).collect(),
                closed: false,
            }),
        }
    }

    /// Keeps chunk `i`'s written buffer; gives it straight back once the read-back has
    /// stopped (so the pool never runs dry).
    pub fn keep(&self, i: usize, buf: Shared) -> Option<Shared> {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *s;
        match s.bufs.get_mut(i) {
            Some(slot) if !s.closed => {
                *slot = Some(buf);
                None
            }
            _ => Some(buf),
        }
    }

    /// Takes chunk `i`'s written buffer.
    fn take(&self, i: usize) -> Option<Shared> {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        s.bufs.get_mut(i).and_then(Option::take)
    }

    /// Stops keeping buffers; returns every one still kept.
    fn close(&self) -> Vec<Shared> {
        let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        s.closed = true;
        s.bufs.iter_mut().filter_map(Option::take).collect()
    }
}

/// The read-back of the windows past the first MiB.
pub struct Verifier<'a> {
    /// The ranges written (for naming the one a mismatch is in).
    pub ranges: &'a [SourceRange],
    /// The target.
    pub dev: &'a Device,
    /// The write plan.
    pub plan: &'a [Chunk],
    /// Its windows.
    pub windows: &'a [Window],
    /// Which windows are written.
    pub tracker: &'a Tracker,
    /// The written buffers, until compared.
    pub retained: &'a Retained,
    /// Test fault: invert this byte after its window is written, before reading it.
    pub flip_byte_at: Option<u64>,
    /// Set when the flash failed.
    pub failed: &'a AtomicBool,
    /// Progress.
    pub bar: &'a ProgressBar,
}

impl Verifier<'_> {
    /// Verifies every window as it completes. `Some` when every chunk past the first
    /// MiB matched; `None` when stopped (the error, if any, went to `fail`). Either way
    /// every kept buffer has been let go when it returns.
    pub fn run(&self, fail: &(dyn Fn(FlashError) + Sync)) -> Option<Verified> {
        let out = self.compare_windows(fail);
        drop(self.retained.close());
        out
    }

    /// Waits for each window, fsyncs, applies the flip fault, drops the cache, reads it
    /// back and compares it with the written buffers.
    fn compare_windows(&self, fail: &(dyn Fn(FlashError) + Sync)) -> Option<Verified> {
        let dev = self.dev;
        let mut got = AlignedBuf::new(CHUNK as usize);
        let (mut started, mut flipped, mut bytes) = (None, false, 0u64);
        for (w, win) in self.windows.iter().enumerate() {
            if !self.tracker.wait(w) || self.failed.load(Ordering::SeqCst) {
                return None;
            }
            started.get_or_insert_with(Instant::now);
            // On the medium (and out of the drive's cache) before it is read back.
            if let Err(source) = dev.sync_data() {
                fail(write_err(&dev.path, win.start, source));
                return None;
            }
            if let Some(f) = self
                .flip_byte_at
                .filter(|f| (win.start..win.stop).contains(f))
            {
                if let Err(source) = dev.flip_byte(f) {
                    fail(write_err(&dev.path, f, source));
                    return None;
                }
                flipped = true;
            }
            dev.forget(win.start, win.stop - win.start);
            for i in win.first..win.end {
                if self.failed.load(Ordering::SeqCst) {
                    return None;
                }
                let c = self.plan[i];
                let n = c.len as usize;
                // Every chunk of a complete window was kept before it was counted.
                let want = self.retained.take(i)?;
                let g = &mut got.as_mut_slice()[..n];
                if let Err(source) = dev.read_at(g, c.offset) {
                    fail(FlashError::Read {
                        path: dev.path.clone(),
                        offset: c.offset,
                        source,
                    });
                    return None;
                }
                let mismatch = want.slice(n) != &g[..];
                let at = mismatch.then(|| {
                    let k = want.slice(n).iter().zip(g.iter()).position(|(a, b)| a != b);
                    c.offset + k.unwrap_or(0) as u64
                });
                drop(want);
                if let Some(offset) = at {
                    let r = &self.ranges[c.range];
                    fail(FlashError::VerifyMismatch {
                        path: dev.path.clone(),
                        offset,
                        range_offset: r.offset,
                        range_len: r.len,
                    });
                    return None;
                }
                bytes += c.len;
                self.bar.inc(c.len);
            }
        }
        (!self.failed.load(Ordering::SeqCst)).then_some(Verified {
            bytes,
            started,
            flipped,
        })
    }
}

/// Reads the written first MiB back from the medium and compares it with the image
/// byte for byte. Returns the bytes checked.
pub fn check_head(
    ranges: &[SourceRange],
    dev: &Device,
    held: &[(u64, Vec<u8>)],
    bar: &ProgressBar,
) -> Result<u64, FlashError> {
    dev.forget(0, HEAD);
    let mut got = AlignedBuf::new(HEAD as usize);
    let mut bytes = 0;
    for (offset, want) in held {
        let g = &mut got.as_mut_slice()[..want.len()];
        dev.read_at(g, *offset).map_err(|source| FlashError::Read {
            path: dev.path.clone(),
            offset: *offset,
            source,
        })?;
        if let Some(k) = want.iter().zip(g.iter()).position(|(a, b)| a != b) {
            let bad = offset + k as u64;
            let r = ranges
                .iter()
                .find(|r| (r.offset..r.offset + r.len).contains(&bad));
            return Err(FlashError::VerifyMismatch {
                path: dev.path.clone(),
                offset: bad,
                range_offset: r.map_or(*offset, |r| r.offset),
                range_len: r.map_or(want.len() as u64, |r| r.len),
            });
        }
        bytes += want.len() as u64;
        bar.inc(want.len() as u64);
    }
    Ok(bytes)
}
