//! The verify pass: read every written range back from the medium and compare its
//! SHA256; on a mismatch, find the first differing byte.

use std::os::unix::fs::FileExt;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FlashError;
use super::buffer::AlignedBuf;
use super::chunks::{self, CHUNK};
use super::device::Device;
use super::source::Source;

/// Checks that every range of `src` reads back from `dev` with hash `expected[i]`.
pub fn verify_ranges(
    src: &Source,
    dev: &mut Device,
    expected: &[String],
    bar: &ProgressBar,
) -> Result<(), FlashError> {
    dev.drop_caches();
    let plan = chunks::plan(&src.ranges);
    let mut bad_range: Option<usize> = None;
    let path = dev.path.clone();
    let reader = &mut *dev;
    std::thread::scope(|scope| -> Result<(), FlashError> {
        let pipe =
            chunks::spawn_reader(scope, &plan, false, |c, buf| reader.read_at(buf, c.offset));
        let mut hasher = Sha256::new();
        for item in pipe.filled.iter() {
            let f = item.map_err(|(offset, source)| FlashError::Read {
                path: path.clone(),
                offset,
                source,
            })?;
            hasher.update(f.buf.slice(f.chunk.len as usize));
            bar.inc(f.chunk.len);
            if f.chunk.last {
                let sum = hex::encode(hasher.finalize_reset());
                if expected.get(f.chunk.range) != Some(&sum) {
                    bad_range = Some(f.chunk.range);
                    return Ok(());
                }
            }
            let _ = pipe.recycle.send(f.buf);
        }
        Ok(())
    })?;
    match bad_range {
        None => Ok(()),
        Some(i) => Err(first_difference(src, dev, i)),
    }
}

/// Compares range `i` byte by byte to name the first bad offset.
fn first_difference(src: &Source, dev: &mut Device, i: usize) -> FlashError {
    let r = &src.ranges[i];
    let mut want = vec![0u8; CHUNK as usize];
    let mut got = AlignedBuf::new(CHUNK as usize);
    let mut pos = r.offset;
    let end = r.offset + r.len;
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
