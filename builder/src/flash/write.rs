//! The write pass: mapped chunks in order, the first MiB held back and written after
//! everything else is on the medium.

use std::os::unix::fs::FileExt;

use indicatif::ProgressBar;

use super::buffer::AlignedBuf;
use super::chunks::{self, Chunk, HEAD};
use super::device::Device;
use super::source::Source;
use super::{FaultInjection, FlashError};

/// What the write pass did.
#[derive(Debug)]
pub struct Written {
    /// Bytes written to the target.
    pub bytes: u64,
    /// SHA256 of each range as read from the image while writing.
    pub range_sha256: Vec<String>,
}

/// Writes every mapped range of `src` to `dev`, the first MiB last, with fsyncs
/// between, checking the image against its `.bmap` checksums on the way.
pub fn write_ranges(
    src: &Source,
    dev: &mut Device,
    faults: &FaultInjection,
    bar: &ProgressBar,
) -> Result<Written, FlashError> {
    let plan = chunks::plan(&src.ranges);
    let mut written = Written {
        bytes: 0,
        range_sha256: Vec::with_capacity(src.ranges.len()),
    };
    let mut held: Vec<(Chunk, AlignedBuf)> = Vec::new();
    let image = &src.file;
    std::thread::scope(|scope| -> Result<(), FlashError> {
        let pipe = chunks::spawn_reader(scope, &plan, true, |c, buf| {
            image.read_exact_at(buf, c.offset)
        });
        for item in pipe.filled.iter() {
            let f = item.map_err(|(offset, source)| FlashError::ImageRead {
                path: src.path.clone(),
                offset,
                source,
            })?;
            if let Some(sum) = f.range_sha256.clone() {
                let range = &src.ranges[f.chunk.range];
                if let Some(expected) = &range.sha256 {
                    if *expected != sum {
                        return Err(FlashError::ImageChanged {
                            image: src.path.clone(),
                            offset: range.offset,
                            len: range.len,
                        });
                    }
                }
                written.range_sha256.push(sum);
            }
            if f.chunk.offset < HEAD {
                held.push((f.chunk, f.buf));
                let _ = pipe.recycle.send(AlignedBuf::new(chunks::CHUNK as usize));
                continue;
            }
            if let Some(limit) = faults.stop_after_bytes {
                if written.bytes >= limit {
                    return Err(FlashError::Interrupted {
                        bytes: written.bytes,
                    });
                }
            }
            dev.write_at(f.buf.slice(f.chunk.len as usize), f.chunk.offset)
                .map_err(|source| write_err(dev, f.chunk.offset, source))?;
            written.bytes += f.chunk.len;
            bar.inc(f.chunk.len);
            let _ = pipe.recycle.send(f.buf);
        }
        Ok(())
    })?;
    if written.range_sha256.len() != src.ranges.len() {
        return Err(FlashError::Image {
            path: src.path.clone(),
            source: std::io::Error::other("reader stopped early"),
        });
    }
    // Everything else must be on the medium before the partition table points at it.
    dev.sync().map_err(|source| write_err(dev, 0, source))?;
    for (chunk, buf) in &held {
        dev.write_at(buf.slice(chunk.len as usize), chunk.offset)
            .map_err(|source| write_err(dev, chunk.offset, source))?;
        written.bytes += chunk.len;
        bar.inc(chunk.len);
    }
    dev.sync().map_err(|source| write_err(dev, 0, source))?;
    Ok(written)
}

fn write_err(dev: &Device, offset: u64, source: std::io::Error) -> FlashError {
    FlashError::Write {
        path: dev.path.clone(),
        offset,
        source,
    }
}
