//! The verify pass: [`WORKERS`] threads each take the next whole range, read it back
//! from the medium (O_DIRECT) and hash it, so reads and hashing of different ranges
//! overlap; each range's SHA256 is compared with the one computed from the image
//! while writing (equal to the `.bmap`'s, when there is one). On a mismatch the first
//! differing byte is found by comparing that range with the image.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use super::buffer::AlignedBuf;
use super::chunks::{CHUNK, WORKERS};
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
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let bad: Mutex<Option<usize>> = Mutex::new(None);
    let read_error: Mutex<Option<FlashError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..WORKERS {
            scope.spawn(|| {
                let mut buf = AlignedBuf::new(CHUNK as usize);
                while !stop.load(Ordering::SeqCst) {
                    // Ranges are taken in order, so when a bad one is found every
                    // earlier range is already being checked: the smallest bad wins.
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(r) = src.ranges.get(i) else { return };
                    let mut hasher = Sha256::new();
                    let (mut pos, end) = (r.offset, r.offset + r.len);
                    while pos < end {
                        // 4 MiB-aligned reads, as written.
                        let n = (end - pos).min(CHUNK - pos % CHUNK) as usize;
                        let data = &mut buf.as_mut_slice()[..n];
                        if let Err(source) = dev.read_at(data, pos) {
                            stop.store(true, Ordering::SeqCst);
                            if let Ok(mut e) = read_error.lock() {
                                e.get_or_insert(FlashError::Read {
                                    path: dev.path.clone(),
                                    offset: pos,
                                    source,
                                });
                            }
                            return;
                        }
                        hasher.update(&*data);
                        bar.inc(n as u64);
                        pos += n as u64;
                    }
                    let sum = hex::encode(hasher.finalize());
                    if expected.get(i) != Some(&sum) {
                        stop.store(true, Ordering::SeqCst);
                        if let Ok(mut b) = bad.lock() {
                            *b = Some(b.map_or(i, |j| j.min(i)));
                        }
                    }
                }
            });
        }
    });
    if let Some(i) = bad.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(first_difference(src, dev, i));
    }
    if let Some(e) = read_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
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
