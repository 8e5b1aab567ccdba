//! The write pass, for one card or several at once: one thread reads the image in
//! order, once, and hashes each range (checking the `.bmap`'s checksums when there is
//! one); each chunk goes to every card (a card with a [`Patch`] gets its own bytes in
//! the patch's span), and [`WORKERS`] threads per card write it, several requests in
//! flight. The first MiB is held back in memory for [`write_head`], after everything
//! else is on the medium. With verification on, each written buffer is kept
//! ([`verify::Retained`]) until its window has been read back and compared
//! ([`verify::Verifier`]) while later windows are written. Buffers come from one pool
//! shared by all cards, so the reader runs at most a bounded distance ahead of the
//! slowest card; a card that fails drops out and the others go on.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::buffer::{AlignedBuf, PoolBuf, Shared};
use super::chunks::{self, CHUNK, HEAD, WORKERS};
use super::device::Device;
use super::error::write_err;
use super::patch::Patch;
use super::ranges::SourceRange;
use super::source::Source;
use super::verify::{self, Retained, Verified};
use super::window::{self, Budget, Tracker};
use super::{FlashError, StopCause};
use crate::digest::Sha256Digest;

/// One card of the write pass.
pub struct Lane<'a> {
    /// The opened card.
    pub dev: &'a Device,
    /// The card's own bytes, if it has any.
    pub patch: Option<&'a Patch>,
    /// Test fault: invert this byte of the card after writing, before verifying.
    pub flip_byte_at: Option<u64>,
    /// The card's progress: bytes written plus bytes verified.
    pub bar: &'a ProgressBar,
}

/// What writing everything past the first MiB did to one card.
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

/// One card's state during the pass.
struct LaneState<'a> {
    lane: &'a Lane<'a>,
    tracker: Tracker,
    retained: Retained,
    written: AtomicU64,
    failed: AtomicBool,
    first_error: Mutex<Option<FlashError>>,
    held: Mutex<Vec<(u64, Vec<u8>)>>,
}

impl LaneState<'_> {
    fn fail(&self, e: FlashError) {
        self.failed.store(true, Ordering::SeqCst);
        let mut slot = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
        drop(slot);
        self.tracker.abort();
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// What ends the pass for every card at once.
pub struct Stop {
    /// Test fault: stop at the first chunk past the first MiB that starts after this
    /// many bytes were handed to the writers.
    pub after_bytes: Option<u64>,
}

/// Writes every range of `ranges` past the first MiB to every lane's card, reading
/// `src` once, checking it against its `.bmap` checksums on the way; with `verify`,
/// reads each written window back and compares it while the next windows are written.
/// Stops between chunks on SIGINT/SIGTERM (the flag [`crate::interrupt`] raises) or
/// the injected stop fault. One result per lane, in order.
pub fn write_bodies<'a>(
    src: &Source,
    ranges: &[SourceRange],
    lanes: &'a [Lane<'a>],
    verify: bool,
    stop: &Stop,
) -> Vec<Result<Body, FlashError>> {
    let plan = chunks::plan(ranges);
    // Each card keeps up to two windows for its read-back: split the memory between them.
    let n = lanes.len().max(1) as u64;
    let budget = Budget::for_memory(Budget::from_system().span() * 2 / n);
    let (windows, window_of) = window::windows(&plan, budget);
    let states: Vec<LaneState<'a>> = lanes
        .iter()
        .map(|lane| LaneState {
            lane,
            tracker: Tracker::new(&windows),
            retained: Retained::new(plan.len()),
            written: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            first_error: Mutex::new(None),
            held: Mutex::new(Vec::new()),
        })
        .collect();
    let mut stopped: Option<StopCause> = None;
    let mut mismatched = Vec::new();
    let mut verified: Vec<Option<Verified>> = vec![None; lanes.len()];
    let mut read_error: Option<(u64, std::io::Error)> = None;
    let mut handed = 0;

    // The writers' buffers, plus two windows per card kept for the read-back: one
    // being compared while the next is written; a chunk inside a patch needs one
    // buffer per card. More than one window, so never a deadlock.
    let kept = if verify { 2 * budget.chunks } else { 0 };
    let pool = WORKERS * 2 + 1 + kept * lanes.len();
    let (free_tx, free_rx) = mpsc::sync_channel::<AlignedBuf>(pool);
    for _ in 0..pool {
        let _ = free_tx.send(AlignedBuf::new(CHUNK as usize));
    }
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut verifiers = Vec::new();
        for st in &states {
            let (work_tx, work_rx) = mpsc::sync_channel::<(usize, Shared)>(WORKERS);
            senders.push(work_tx);
            let work_rx = std::sync::Arc::new(Mutex::new(work_rx));
            for _ in 0..WORKERS {
                let work_rx = work_rx.clone();
                let (plan, window_of) = (&plan, &window_of);
                scope.spawn(move || {
                    loop {
                        let next = work_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((i, buf))) = next else { return };
                        if st.failed() {
                            continue;
                        }
                        let c = plan[i];
                        let dev = st.lane.dev;
                        match dev.write_at(buf.slice(c.len as usize), c.offset) {
                            Ok(()) => {
                                st.written.fetch_add(c.len, Ordering::Relaxed);
                                st.lane.bar.inc(c.len);
                                // Kept for the read-back before the window counts it.
                                if verify {
                                    drop(st.retained.keep(i, buf));
                                }
                                if let Some(w) = window_of[i] {
                                    st.tracker.chunk_written(w);
                                }
                            }
                            Err(source) => st.fail(write_err(&dev.path, c.offset, source)),
                        }
                    }
                });
            }
            if verify {
                let v = verify::Verifier {
                    ranges,
                    dev: st.lane.dev,
                    plan: &plan,
                    windows: &windows,
                    tracker: &st.tracker,
                    retained: &st.retained,
                    flip_byte_at: st.lane.flip_byte_at,
                    failed: &st.failed,
                    bar: st.lane.bar,
                };
                verifiers.push(Some(scope.spawn(move || v.run(&|e| st.fail(e)))));
            } else {
                verifiers.push(None);
            }
        }

        // This thread reads the image in order and hands chunks out.
        let mut reader = match src.reader() {
            Ok(r) => Some(r),
            Err(FlashError::ImageRead { offset, source, .. }) => {
                read_error = Some((offset, source));
                None
            }
            Err(e) => {
                read_error = Some((0, std::io::Error::other(e.to_string())));
                None
            }
        };
        let mut range_hash = Sha256::new();
        let mut range_hashed = true;
        let mut sent: u64 = 0;
        for (i, c) in plan.iter().enumerate() {
            let Some(reader) = reader.as_mut() else { break };
            if states.iter().all(LaneState::failed) {
                break;
            }
            let cause = if crate::interrupt::interrupted() {
                Some(StopCause::Signal)
            } else {
                stop.after_bytes
                    .filter(|&limit| c.offset >= HEAD && sent >= limit)
                    .map(|_| StopCause::Injected)
            };
            if cause.is_some() {
                stopped = cause;
                break;
            }
            let own = |st: &LaneState<'a>| -> Option<&'a Patch> {
                st.lane.patch.filter(|p| p.covers(c.offset, c.len))
            };
            // The image's bytes, read once, for every card without its own here (and
            // always from a stream, which only moves forward).
            let need_base =
                !src.is_raw() || states.iter().any(|st| !st.failed() && own(st).is_none());
            let mut base: Option<AlignedBuf> = None;
            if need_base {
                let Ok(mut b) = free_rx.recv() else { break };
                let data = &mut b.as_mut_slice()[..c.len as usize];
                if let Err(source) = reader.read_at(data, c.offset) {
                    read_error = Some((c.offset, source));
                    break;
                }
                range_hash.update(&*data);
                base = Some(b);
            } else {
                range_hashed = false;
            }
            if c.last {
                let sum = Sha256Digest::finish_reset(&mut range_hash);
                let range = &ranges[c.range];
                // The ranges always include what the card needs (the file systems'
                // map, or every byte): a stale or foreign `.bmap` costs nothing.
                if range_hashed && range.sha256.as_ref().is_some_and(|want| *want != sum) {
                    mismatched.push((range.offset, range.len));
                }
                range_hashed = true;
            }
            let shared = base.map(|b| PoolBuf::new(b, free_tx.clone()));
            let mut lost = false;
            for (k, st) in states.iter().enumerate() {
                if st.failed() {
                    continue;
                }
                let buf = match (own(st), &shared) {
                    (Some(p), _) => {
                        let Ok(mut b) = free_rx.recv() else {
                            lost = true;
                            break;
                        };
                        if let Err(source) =
                            p.read_at(&mut b.as_mut_slice()[..c.len as usize], c.offset)
                        {
                            st.fail(FlashError::ImageRead {
                                path: src.path.clone(),
                                offset: c.offset,
                                source,
                            });
                            continue;
                        }
                        PoolBuf::new(b, free_tx.clone())
                    }
                    (None, Some(s)) => s.clone(),
                    (None, None) => continue,
                };
                if c.offset < HEAD {
                    st.held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((c.offset, buf.slice(c.len as usize).to_vec()));
                } else if senders[k].send((i, buf)).is_err() {
                    st.fail(stopped_early(src));
                }
            }
            if lost {
                break;
            }
            if c.offset >= HEAD {
                sent += c.len;
            }
            handed += 1;
        }
        if handed == plan.len() && stopped.is_none() && read_error.is_none() {
            // A stream's integrity (xz index and checks) is known only at its end:
            // before the partition table is written.
            if let Some(Err(source)) = reader.as_mut().map(|r| r.finish(src.image_size)) {
                read_error = Some((src.image_size, source));
            }
        }
        drop(senders);
        if handed < plan.len() || read_error.is_some() {
            // Some windows will never be complete: do not let the read-backs wait.
            for st in &states {
                st.tracker.abort();
            }
        }
        for (k, v) in verifiers.into_iter().enumerate() {
            if let Some(v) = v {
                verified[k] = v.join().ok().flatten();
            }
        }
    });

    let read_error = read_error.map(|(offset, source)| (offset, source.to_string(), source.kind()));
    states
        .into_iter()
        .zip(verified)
        .map(|(st, verified)| {
            if let Some(e) = st
                .first_error
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
            {
                return Err(e);
            }
            let bytes = st.written.load(Ordering::SeqCst);
            if let Some((offset, msg, kind)) = &read_error {
                return Err(FlashError::ImageRead {
                    path: src.path.clone(),
                    offset: *offset,
                    source: std::io::Error::new(*kind, msg.clone()),
                });
            }
            if let Some(cause) = stopped {
                return Err(FlashError::Interrupted { bytes, cause });
            }
            if handed < plan.len() || (verify && verified.is_none()) {
                return Err(stopped_early(src));
            }
            let mut held = st.held.into_inner().unwrap_or_else(|p| p.into_inner());
            held.sort_by_key(|(off, _)| *off);
            Ok(Body {
                bytes,
                held,
                verified,
                mismatched: mismatched.clone(),
            })
        })
        .collect()
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
