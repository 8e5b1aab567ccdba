//! The verify pass: [`WORKERS`] threads read the written chunks back from the medium
//! (O_DIRECT, several requests in flight) while this thread hashes them in order and
//! compares each range's SHA256 with the one computed from the image while writing
//! (equal to the `.bmap`'s, when there is one); on a mismatch the first differing
//! byte is found by comparing that range with the image.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use super::buffer::AlignedBuf;
use super::chunks::{self, CHUNK, WORKERS};
use super::device::Device;
use super::source::Source;

/// Checks that every range of `src` reads back from `dev` with hash `expected[i]`.
pub fn verify_ranges(
    src: &Source,
    dev: &Device,
    expected: &[String],
    bar: &ProgressBar,
) -> Result<(), FlashError> {
    dev.drop_caches();
    let plan = chunks::plan(&src.ranges);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let pool = WORKERS * 2;
    let (free_tx, free_rx) = mpsc::sync_channel::<AlignedBuf>(pool);
    for _ in 0..pool {
        let _ = free_tx.send(AlignedBuf::new(CHUNK as usize));
    }
    let free_rx = Mutex::new(free_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, io::Result<AlignedBuf>)>();
    let mut bad_range: Option<usize> = None;
    let mut read_error: Option<FlashError> = None;

    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            let (done_tx, free_rx, plan) = (done_tx.clone(), &free_rx, &plan);
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                loop {
                    // Take a buffer before an index, so the owner of the lowest
                    // outstanding index always has one and the in-order hashing advances.
                    let Ok(Ok(mut buf)) = free_rx.lock().map(|rx| rx.recv()) else {
                        return;
                    };
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(c) = plan.get(i) else { return };
                    let r = dev
                        .read_at(&mut buf.as_mut_slice()[..c.len as usize], c.offset)
                        .map(|()| buf);
                    if done_tx.send((i, r)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let free_tx = free_tx;

        let mut pending: BTreeMap<usize, AlignedBuf> = BTreeMap::new();
        let mut want = 0;
        let mut hasher = Sha256::new();
        'outer: while want < plan.len() {
            let Ok((i, r)) = done_rx.recv() else { break };
            match r {
                Ok(buf) => {
                    pending.insert(i, buf);
                }
                Err(source) => {
                    read_error = Some(FlashError::Read {
                        path: dev.path.clone(),
                        offset: plan[i].offset,
                        source,
                    });
                    break;
                }
            }
            while let Some(buf) = pending.remove(&want) {
                let c = &plan[want];
                hasher.update(buf.slice(c.len as usize));
                bar.inc(c.len);
                if c.last {
                    let sum = hex::encode(hasher.finalize_reset());
                    if expected.get(c.range) != Some(&sum) {
                        bad_range = Some(c.range);
                        break 'outer;
                    }
                }
                let _ = free_tx.send(buf);
                want += 1;
            }
        }
        stop.store(true, Ordering::SeqCst);
        drop(free_tx);
        drop(pending);
    });
    if let Some(i) = bad_range {
        return Err(first_difference(src, dev, i));
    }
    if let Some(e) = read_error {
        return Err(e);
    }
    Ok(())
}

/// Compares range `i` with the image chunk by chunk to name the first bad offset.
fn first_difference(src: &Source, dev: &Device, i: usize) -> FlashError {
    let r = &src.ranges[i];
    let mut want = vec![0u8; CHUNK as usize];
    let mut got = AlignedBuf::new(CHUNK as usize);
    let end = r.offset + r.len;
    let mut pos = r.offset;
    while pos < end {
        let n = (end - pos).min(CHUNK) as usize;
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
        offset: r.offset,
        range_offset: r.offset,
        range_len: r.len,
    }
}
