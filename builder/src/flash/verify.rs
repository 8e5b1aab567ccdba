//! Read-back verification, overlapped with writing. As soon as every chunk of a
//! [`Window`] is written, the [`Verifier`] fsyncs, drops the window's cached pages and
//! reads it back from the medium (O_DIRECT where the target allows it) on one thread
//! while another hashes it; each range's SHA256 is compared with the one computed from
//! the image while writing (equal to the `.bmap`'s, when there is one). Ranges reaching
//! into the first MiB are hashed with the image's bytes there; [`check_head`] compares
//! the first MiB byte for byte once it is written. On a mismatch the first differing
//! byte is found by comparing that range with the image.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Instant;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use super::buffer::AlignedBuf;
use super::chunks::{CHUNK, Chunk, HEAD};
use super::device::Device;
use super::source::Source;
use super::window::{Tracker, Window};
use super::write::write_err;

/// Read-back buffers in flight between the reading and the hashing thread.
const BUFFERS: usize = 3;

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

/// The read-back of the windows past the first MiB.
pub struct Verifier<'a> {
    /// The image.
    pub src: &'a Source,
    /// The target.
    pub dev: &'a Device,
    /// The write plan.
    pub plan: &'a [Chunk],
    /// Its windows.
    pub windows: &'a [Window],
    /// Which windows are written.
    pub tracker: &'a Tracker,
    /// SHA256 of each range as read from the image (set before its last chunk is written).
    pub sums: &'a Mutex<Vec<Option<String>>>,
    /// The image's first-MiB chunks (set before any later chunk is written).
    pub held: &'a Mutex<Vec<(u64, Vec<u8>)>>,
    /// Test fault: invert this byte after its window is written, before reading it.
    pub flip_byte_at: Option<u64>,
    /// Set when the flash failed.
    pub failed: &'a AtomicBool,
    /// Progress.
    pub bar: &'a ProgressBar,
}

impl Verifier<'_> {
    /// Verifies every window as it completes. `Some` when every range past the first
    /// MiB matched; `None` when stopped (the error, if any, went to `fail`).
    pub fn run(&self, fail: &(dyn Fn(FlashError) + Sync)) -> Option<Verified> {
        let need = self
            .src
            .ranges
            .iter()
            .filter(|r| r.offset + r.len > HEAD)
            .count();
        let (data_tx, data_rx) = mpsc::sync_channel::<(usize, AlignedBuf)>(BUFFERS);
        let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
        for _ in 0..BUFFERS {
            let _ = free_tx.send(AlignedBuf::new(CHUNK as usize));
        }
        std::thread::scope(|s| {
            let reader = s.spawn(move || {
                let mut started = None;
                let flipped = self.read_windows(&mut started, data_tx, free_rx, fail);
                (started, flipped)
            });
            let (free_tx, data_rx) = (free_tx, data_rx);
            let mut cur: Option<(usize, Sha256)> = None;
            let (mut compared, mut bytes) = (0usize, 0u64);
            while let Ok((i, buf)) = data_rx.recv() {
                let c = self.plan[i];
                let r = &self.src.ranges[c.range];
                if cur.as_ref().map(|(k, _)| *k) != Some(c.range) {
                    let mut h = Sha256::new();
                    if r.offset < HEAD {
                        // Its first-MiB part is not written yet: hash the image's
                        // bytes; check_head compares them on the card later.
                        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                        match held.iter().find(|(off, _)| *off == r.offset) {
                            Some((_, d)) => h.update(d),
                            None => return None,
                        }
                    }
                    cur = Some((c.range, h));
                }
                if let Some((_, h)) = cur.as_mut() {
                    h.update(buf.slice(c.len as usize));
                }
                let _ = free_tx.send(buf);
                bytes += c.len;
                self.bar.inc(c.len);
                if c.last {
                    let sum = cur.take().map(|(_, h)| hex::encode(h.finalize()));
                    let want = self.sums.lock().unwrap_or_else(|p| p.into_inner())[c.range].clone();
                    if want.is_none() || want != sum {
                        fail(first_difference(
                            self.src,
                            self.dev,
                            c.range,
                            r.offset.max(HEAD),
                        ));
                        return None;
                    }
                    compared += 1;
                }
            }
            drop(free_tx);
            let (started, flipped) = reader.join().ok()?;
            (compared == need && !self.failed.load(Ordering::SeqCst)).then_some(Verified {
                bytes,
                started,
                flipped,
            })
        })
    }

    /// Waits for each window, fsyncs, applies the flip fault, reads it back. Returns
    /// whether the flip was applied.
    fn read_windows(
        &self,
        started: &mut Option<Instant>,
        data_tx: mpsc::SyncSender<(usize, AlignedBuf)>,
        free_rx: mpsc::Receiver<AlignedBuf>,
        fail: &(dyn Fn(FlashError) + Sync),
    ) -> bool {
        let dev = self.dev;
        let mut flipped = false;
        for (w, win) in self.windows.iter().enumerate() {
            if !self.tracker.wait(w) || self.failed.load(Ordering::SeqCst) {
                return flipped;
            }
            started.get_or_insert_with(Instant::now);
            // On the medium (and out of the drive's cache) before it is read back.
            if let Err(source) = dev.sync_data() {
                fail(write_err(dev, win.start, source));
                return flipped;
            }
            if let Some(f) = self
                .flip_byte_at
                .filter(|f| (win.start..win.stop).contains(f))
            {
                if let Err(source) = dev.flip_byte(f) {
                    fail(write_err(dev, f, source));
                    return flipped;
                }
                flipped = true;
            }
            dev.forget(win.start, win.stop - win.start);
            for i in win.first..win.end {
                let c = self.plan[i];
                let Ok(mut buf) = free_rx.recv() else {
                    return flipped;
                };
                if let Err(source) =
                    dev.read_at(&mut buf.as_mut_slice()[..c.len as usize], c.offset)
                {
                    fail(FlashError::Read {
                        path: dev.path.clone(),
                        offset: c.offset,
                        source,
                    });
                    return flipped;
                }
                if data_tx.send((i, buf)).is_err() {
                    return flipped;
                }
            }
        }
        flipped
    }
}

/// Reads the written first MiB back from the medium and compares it with the image
/// byte for byte. Returns the bytes checked.
pub fn check_head(
    src: &Source,
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
            let r = src
                .ranges
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

/// Compares range `i` from byte `from` on with the image, chunk by chunk, to name the
/// first bad offset.
fn first_difference(src: &Source, dev: &Device, i: usize, from: u64) -> FlashError {
    let r = &src.ranges[i];
    let mut want = vec![0u8; CHUNK as usize];
    let mut got = AlignedBuf::new(CHUNK as usize);
    let end = r.offset + r.len;
    let mut pos = from.max(r.offset);
    dev.forget(pos, end - pos);
    while pos < end {
        let n = (end - pos).min(CHUNK - pos % CHUNK) as usize;
        if let Err(source) = src.file.read_exact_at(&mut want[..n], pos) {
            return FlashError::ImageRead {
                path: src.path.clone(),
                offset: pos,
                source,
            };
        }
        let g = &mut got.as_mut_slice()[..n];
        if let Err(source) = dev.read_at(g, pos) {
            return FlashError::Read {
                path: dev.path.clone(),
                offset: pos,
                source,
            };
        }
        if let Some(k) = want[..n].iter().zip(g.iter()).position(|(a, b)| a != b) {
            return FlashError::VerifyMismatch {
                path: dev.path.clone(),
                offset: pos + k as u64,
                range_offset: r.offset,
                range_len: r.len,
            };
        }
        pos += n as u64;
    }
    // The hash differed but the bytes now agree: the medium returns unstable data.
    FlashError::VerifyMismatch {
        path: dev.path.clone(),
        offset: from.max(r.offset),
        range_offset: r.offset,
        range_len: r.len,
    }
}
