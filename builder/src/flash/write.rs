//! The write pass: one thread reads the image in order and hashes each range
//! (checking the `.bmap`'s checksums when there is one), [`WORKERS`] threads write the
//! chunks, several requests in flight. The first MiB is held back in memory for
//! [`write_head`], after everything else is on the medium. With verification on, each
//! written buffer is kept ([`verify::Retained`]) until its window has been read back
//! and compared ([`verify::Verifier`]) while later windows are written; the pool then
//! grows by two windows, whose size adapts to the memory available.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::buffer::AlignedBuf;
use super::chunks::{self, CHUNK, HEAD, WORKERS};
use super::device::Device;
use super::error::write_err;
use super::source::Source;
use super::verify::Retained;
use super::verify::{self, Verified};
use super::window::{self, Budget, Tracker};
use super::{FaultInjection, FlashError, StopCause};
use crate::digest::Sha256Digest;

/// What writing everything past the first MiB did.
#[derive(Debug)]
pub struct Body {
    /// Bytes written to the target.
    pub bytes: u64,
    /// The first MiB's chunks `(offset, bytes)` in order, not yet written.
    pub held: Vec<(u64, Vec<u8>)>,
    /// What the overlapped read-back checked (`None` without verification).
    pub verified: Option<Verified>,
    /// `.bmap` ranges whose checksum did not match the image (the ranges written cover
    /// what the card needs anyway, so the flash went on).
    pub mismatched: Vec<(u64, u64)>,
}

/// Writes every range of `src` past the first MiB to `dev`, checking the image against
/// its `.bmap` checksums on the way; with `verify_bar`, reads each written window back
/// and compares it with the image while the next windows are written. Stops between
/// chunks on SIGINT/SIGTERM (the flag [`crate::interrupt`] raises) or the
/// injected stop fault.
pub fn write_body(
    src: &Source,
    dev: &Device,
    faults: &FaultInjection,
    bar: &ProgressBar,
    verify_bar: Option<&ProgressBar>,
) -> Result<Body, FlashError> {
    let mut reader = src.reader()?;
    let plan = chunks::plan(&src.ranges);
    let budget = Budget::from_system();
    let (windows, window_of) = window::windows(&plan, budget);
    let tracker = Tracker::new(&windows);
    let retained = Retained::new(plan.len());
    let verifying = verify_bar.is_some();
    let sums: Mutex<Vec<Option<Sha256Digest>>> = Mutex::new(vec![None; src.ranges.len()]);
    let held: Mutex<Vec<(u64, Vec<u8>)>> = Mutex::new(Vec::new());
    let written = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<FlashError>> = Mutex::new(None);
    let fail = |e: FlashError| {
        failed.store(true, Ordering::SeqCst);
        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
        drop(slot);
        tracker.abort();
    };
    let mut stopped: Option<StopCause> = None;
    let mut mismatched = Vec::new();
    let mut verified = None;

    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, AlignedBuf)>(WORKERS);
    let work_rx = Mutex::new(work_rx);
    // The writers' buffers, plus two windows kept for the read-back: one being
    // compared while the next is written. More than one window, so never a deadlock.
    let pool = WORKERS * 2 + 1 + if verifying { 2 * budget.chunks } else { 0 };
    let (free_tx, free_rx) = mpsc::sync_channel::<AlignedBuf>(pool);
    for _ in 0..pool {
        let _ = free_tx.send(AlignedBuf::new(CHUNK as usize));
    }
    std::thread::scope(|scope| {
        let (work_tx, free_tx) = (work_tx, free_tx);
        for _ in 0..WORKERS {
            let (work_rx, free_tx) = (&work_rx, free_tx.clone());
            let (plan, window_of, written, failed) = (&plan, &window_of, &written, &failed);
            let (fail, tracker, retained) = (&fail, &tracker, &retained);
            scope.spawn(move || {
                loop {
                    let next = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, buf))) = next else { return };
                    let c = plan[i];
                    let back = if failed.load(Ordering::SeqCst) {
                        Some(buf)
                    } else {
                        match dev.write_at(buf.slice(c.len as usize), c.offset) {
                            Ok(()) => {
                                written.fetch_add(c.len, Ordering::Relaxed);
                                bar.inc(c.len);
                                // Kept for the read-back before the window counts it.
                                let back = if verifying {
                                    retained.keep(i, buf)
                                } else {
                                    Some(buf)
                                };
                                if let Some(w) = window_of[i] {
                                    tracker.chunk_written(w);
                                }
                                back
                            }
                            Err(source) => {
                                fail(write_err(&dev.path, c.offset, source));
                                Some(buf)
                            }
                        }
                    };
                    if let Some(buf) = back {
                        let _ = free_tx.send(buf);
                    }
                }
            });
        }
        let verifier = verify_bar.map(|vbar| {
            let v = verify::Verifier {
                src,
                dev,
                plan: &plan,
                windows: &windows,
                tracker: &tracker,
                retained: &retained,
                free: free_tx.clone(),
                flip_byte_at: faults.flip_byte_at,
                failed: &failed,
                bar: vbar,
            };
            let fail = &fail;
            scope.spawn(move || v.run(fail))
        });
        drop(free_tx);

        // This thread reads the image in order and hands chunks out.
        let mut range_hash = Sha256::new();
        let mut sent: u64 = 0;
        let mut handed = 0;
        for (i, c) in plan.iter().enumerate() {
            if failed.load(Ordering::SeqCst) {
                break;
            }
            let cause = if crate::interrupt::interrupted() {
                Some(StopCause::Signal)
            } else {
                faults
                    .stop_after_bytes
                    .filter(|&limit| c.offset >= HEAD && sent >= limit)
                    .map(|_| StopCause::Injected)
            };
            if cause.is_some() {
                stopped = cause;
                tracker.abort();
                break;
            }
            // The first MiB is read into memory and held back; the rest goes to the
            // writers in pool buffers.
            let mut buf = if c.offset < HEAD {
                None
            } else {
                match free_rx.recv() {
                    Ok(b) => Some(b),
                    Err(_) => break,
                }
            };
            let mut head = if buf.is_none() {
                vec![0u8; c.len as usize]
            } else {
                Vec::new()
            };
            let data: &mut [u8] = match buf.as_mut() {
                Some(b) => &mut b.as_mut_slice()[..c.len as usize],
                None => &mut head,
            };
            if let Err(source) = reader.read_at(data, c.offset) {
                fail(FlashError::ImageRead {
                    path: src.path.clone(),
                    offset: c.offset,
                    source,
                });
                break;
            }
            range_hash.update(&*data);
            if c.last {
                let sum = Sha256Digest::finish_reset(&mut range_hash);
                let range = &src.ranges[c.range];
                // The ranges always include what the card needs (the file systems'
                // map, or every byte): a stale or foreign `.bmap` costs nothing.
                if range.sha256.as_ref().is_some_and(|want| *want != sum) {
                    mismatched.push((range.offset, range.len));
                }
                sums.lock().unwrap_or_else(|p| p.into_inner())[c.range] = Some(sum);
            }
            let Some(buf) = buf else {
                held.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((c.offset, head));
                handed += 1;
                continue;
            };
            sent += c.len;
            if work_tx.send((i, buf)).is_err() {
                break;
            }
            handed += 1;
        }
        if handed == plan.len() && stopped.is_none() && !failed.load(Ordering::SeqCst) {
            // A stream's integrity (xz index and checks) is known only at its end:
            // before the partition table is written.
            if let Err(source) = reader.finish(src.image_size) {
                fail(FlashError::ImageRead {
                    path: src.path.clone(),
                    offset: src.image_size,
                    source,
                });
            }
        }
        drop(work_tx);
        if handed < plan.len() {
            // Some windows will never be complete: do not let the read-back wait.
            tracker.abort();
        }
        if let Some(v) = verifier {
            verified = v.join().ok().flatten();
        }
    });

    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let bytes = written.load(Ordering::SeqCst);
    if let Some(cause) = stopped {
        return Err(FlashError::Interrupted { bytes, cause });
    }
    let sums = sums.into_inner().unwrap_or_else(|p| p.into_inner());
    if sums.iter().any(Option::is_none) {
        return Err(stopped_early(src));
    }
    if verify_bar.is_some() && verified.is_none() {
        return Err(stopped_early(src));
    }
    let mut held = held.into_inner().unwrap_or_else(|p| p.into_inner());
    held.sort_by_key(|(off, _)| *off);
    Ok(Body {
        bytes,
        held,
        verified,
        mismatched,
    })
}

/// Writes the held-back first MiB (after an fsync, so everything it points at is on
/// the medium), then fsyncs again. Returns the bytes written.
pub fn write_head(
    dev: &Device,
    held: &[(u64, Vec<u8>)],
    bar: &ProgressBar,
) -> Result<u64, FlashError> {
    dev.sync()
        .map_err(|source| write_err(&dev.path, 0, source))?;
    let mut buf = AlignedBuf::new(HEAD as usize);
    let mut bytes = 0;
    for (offset, data) in held {
        let b = &mut buf.as_mut_slice()[..data.len()];
        b.copy_from_slice(data);
        dev.write_at(b, *offset)
            .map_err(|source| write_err(&dev.path, *offset, source))?;
        bytes += data.len() as u64;
        bar.inc(data.len() as u64);
    }
    dev.sync()
        .map_err(|source| write_err(&dev.path, 0, source))?;
    Ok(bytes)
}

fn stopped_early(src: &Source) -> FlashError {
    FlashError::Image {
        path: src.path.clone(),
        source: std::io::Error::other("the write pass stopped before the end"),
    }
}
