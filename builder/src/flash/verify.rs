//! The verify pass: [`WORKERS`] threads read the written chunks back from the medium
//! (O_DIRECT, several requests in flight) and compare each chunk's SHA256 with the
//! one computed from the image while writing; on a mismatch the first differing
//! byte is found by comparing that chunk with the image.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use super::buffer::AlignedBuf;
use super::chunks::{CHUNK, Chunk, WORKERS};
use super::device::Device;
use super::source::Source;

/// Checks that every chunk reads back from `dev` with hash `expected[i]`.
pub fn verify_chunks(
    src: &Source,
    dev: &Device,
    chunks: &[Chunk],
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
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(c) = chunks.get(i) else { return };
                    let data = &mut buf.as_mut_slice()[..c.len as usize];
                    if let Err(source) = dev.read_at(data, c.offset) {
                        stop.store(true, Ordering::SeqCst);
                        if let Ok(mut e) = read_error.lock() {
                            e.get_or_insert(FlashError::Read {
                                path: dev.path.clone(),
                                offset: c.offset,
                                source,
                            });
                        }
                        return;
                    }
                    if expected.get(i).map(String::as_str)
                        != Some(hex::encode(Sha256::digest(&*data)).as_str())
                    {
                        // Chunks are taken in order, so every earlier chunk is
                        // already being checked: the smallest bad index wins.
                        stop.store(true, Ordering::SeqCst);
                        if let Ok(mut b) = bad.lock() {
                            *b = Some(b.map_or(i, |j| j.min(i)));
                        }
                    }
                    bar.inc(c.len);
                }
            });
        }
    });
    if let Some(i) = bad.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(first_difference(src, dev, &chunks[i]));
    }
    if let Some(e) = read_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(())
}

/// Compares chunk `c` byte by byte with the image to name the first bad offset.
fn first_difference(src: &Source, dev: &Device, c: &Chunk) -> FlashError {
    let range = &src.ranges[c.range];
    let n = c.len as usize;
    let mut want = vec![0u8; n];
    if let Err(source) = src.file.read_exact_at(&mut want, c.offset) {
        return FlashError::ImageRead {
            path: src.path.clone(),
            offset: c.offset,
            source,
        };
    }
    let mut got = AlignedBuf::new(n);
    let g = got.as_mut_slice();
    if let Err(source) = dev.read_at(g, c.offset) {
        return FlashError::Read {
            path: dev.path.clone(),
            offset: c.offset,
            source,
        };
    }
    // If the bytes now agree the medium returns unstable data: name the chunk start.
    let k = want
        .iter()
        .zip(g.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    FlashError::VerifyMismatch {
        path: dev.path.clone(),
        offset: c.offset + k as u64,
        range_offset: range.offset,
        range_len: range.len,
    }
}
