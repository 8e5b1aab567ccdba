//! The write pass: one thread reads the image in order and hashes each range
//! (checking the `.bmap`'s checksums when there is one), [`WORKERS`] threads write the
//! chunks, several requests in flight. The first MiB is held back and written after everything else is on the
//! medium.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::buffer::AlignedBuf;
use super::chunks::{self, CHUNK, HEAD, WORKERS};
use super::device::Device;
use super::source::Source;
use super::{FaultInjection, FlashError};

/// What the write pass did.
#[derive(Debug)]
pub struct Written {
    /// Bytes written to the target.
    pub bytes: u64,
    /// SHA256 (hex) of each range as read from the image, for the read-back.
    pub range_sha256: Vec<String>,
}

/// Writes every mapped range of `src` to `dev`, the first MiB last, with fsyncs
/// between, checking the image against its `.bmap` checksums on the way.
pub fn write_ranges(
    src: &Source,
    dev: &Device,
    faults: &FaultInjection,
    bar: &ProgressBar,
) -> Result<Written, FlashError> {
    let plan = chunks::plan(&src.ranges);
    let mut sums: Vec<String> = Vec::with_capacity(src.ranges.len());
    let held: Mutex<Vec<(u64, Vec<u8>)>> = Mutex::new(Vec::new());
    let written = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<FlashError>> = Mutex::new(None);
    let fail = |e: FlashError| {
        failed.store(true, Ordering::SeqCst);
        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    };
    let mut interrupted = false;

    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, AlignedBuf)>(WORKERS);
    let work_rx = Mutex::new(work_rx);
    let pool = WORKERS * 2 + 1;
    let (free_tx, free_rx) = mpsc::sync_channel::<AlignedBuf>(pool);
    for _ in 0..pool {
        let _ = free_tx.send(AlignedBuf::new(CHUNK as usize));
    }
    std::thread::scope(|scope| {
        let (work_tx, free_tx) = (work_tx, free_tx);
        for _ in 0..WORKERS {
            let (work_rx, free_tx) = (&work_rx, free_tx.clone());
            let (plan, held, written, failed) = (&plan, &held, &written, &failed);
            let fail = &fail;
            scope.spawn(move || {
                loop {
                    let next = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok((i, buf))) = next else { return };
                    let c = plan[i];
                    let data = buf.slice(c.len as usize);
                    if c.offset < HEAD {
                        if let Ok(mut h) = held.lock() {
                            h.push((c.offset, data.to_vec()));
                        }
                    } else if !failed.load(Ordering::SeqCst) {
                        match dev.write_at(data, c.offset) {
                            Ok(()) => {
                                written.fetch_add(c.len, Ordering::Relaxed);
                                bar.inc(c.len);
                            }
                            Err(source) => fail(write_err(dev, c.offset, source)),
                        }
                    }
                    let _ = free_tx.send(buf);
                }
            });
        }
        drop(free_tx);

        // This thread reads the image in order and hands chunks out.
        let mut range_hash = Sha256::new();
        let mut sent: u64 = 0;
        for (i, c) in plan.iter().enumerate() {
            if failed.load(Ordering::SeqCst) {
                break;
            }
            if let Some(limit) = faults.stop_after_bytes {
                if c.offset >= HEAD && sent >= limit {
                    interrupted = true;
                    break;
                }
            }
            let Ok(mut buf) = free_rx.recv() else { break };
            let data = &mut buf.as_mut_slice()[..c.len as usize];
            if let Err(source) = src.file.read_exact_at(data, c.offset) {
                fail(FlashError::ImageRead {
                    path: src.path.clone(),
                    offset: c.offset,
                    source,
                });
                break;
            }
            range_hash.update(&*data);
            if c.last {
                let sum = hex::encode(range_hash.finalize_reset());
                let range = &src.ranges[c.range];
                if range.sha256.as_ref().is_some_and(|want| *want != sum) {
                    fail(FlashError::ImageChanged {
                        image: src.path.clone(),
                        offset: range.offset,
                        len: range.len,
                    });
                    break;
                }
                sums.push(sum);
            }
            if c.offset >= HEAD {
                sent += c.len;
            }
            if work_tx.send((i, buf)).is_err() {
                break;
            }
        }
        drop(work_tx);
    });

    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut bytes = written.load(Ordering::SeqCst);
    if interrupted {
        return Err(FlashError::Interrupted { bytes });
    }
    if sums.len() != src.ranges.len() {
        return Err(FlashError::Image {
            path: src.path.clone(),
            source: std::io::Error::other("the write pass stopped before the end"),
        });
    }
    // Everything else must be on the medium before the partition table points at it.
    dev.sync().map_err(|source| write_err(dev, 0, source))?;
    let mut held = held.into_inner().unwrap_or_else(|p| p.into_inner());
    held.sort_by_key(|(off, _)| *off);
    let mut buf = AlignedBuf::new(HEAD as usize);
    for (offset, data) in &held {
        let b = &mut buf.as_mut_slice()[..data.len()];
        b.copy_from_slice(data);
        dev.write_at(b, *offset)
            .map_err(|source| write_err(dev, *offset, source))?;
        bytes += data.len() as u64;
        bar.inc(data.len() as u64);
    }
    dev.sync().map_err(|source| write_err(dev, 0, source))?;
    Ok(Written {
        bytes,
        range_sha256: sums,
    })
}

fn write_err(dev: &Device, offset: u64, source: std::io::Error) -> FlashError {
    FlashError::Write {
        path: dev.path.clone(),
        offset,
        source,
    }
}
