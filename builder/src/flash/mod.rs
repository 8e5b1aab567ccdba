//! Writing an image to a card safely: target checks, mapped-range writer, read-back verify.
//!
//! [`target::inspect`] decides whether a device may be written; [`Source::open`] finds
//! the image's mapped ranges (its `.bmap` or its holes); [`flash`] writes them in 4 MiB
//! aligned chunks (O_DIRECT where possible), checking the image against its `.bmap`
//! checksums on the way, and, while later windows (≤ 64 MiB, smaller when memory is
//! short) are being written, fsyncs each finished window, drops its cached pages, reads
//! it back from the medium and compares it byte for byte with the buffers that were
//! written (kept until then, at most two windows). The first MiB — the partition table
//! — is written last, after an fsync, then fsynced and compared byte for byte.

mod buffer;
mod chunks;
mod device;
mod source;
pub mod target;
mod verify;
mod window;
mod write;

use std::path::PathBuf;
use std::time::Instant;

use crate::progress::Reporter;

pub use device::Device;
pub use source::{MapOrigin, Source, SourceRange};
pub use target::{Refusal, SystemView, Target, TargetKind, TargetPolicy};

/// Test seam: faults to inject into a flash. All `None` in normal use.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultInjection {
    /// Invert the byte at this offset of the target after writing, before verifying.
    pub flip_byte_at: Option<u64>,
    /// Stop with [`FlashError::Interrupted`] at the first chunk past the first MiB that
    /// starts after this many bytes were handed to the writers; chunks already handed
    /// out are written, the held-back first MiB is not.
    pub stop_after_bytes: Option<u64>,
}

impl FaultInjection {
    /// Faults from `PIIMG_FLASH_TEST_FLIP_OFFSET` / `PIIMG_FLASH_TEST_STOP_AFTER`, read
    /// only in debug builds so a release binary can never be told to corrupt a card.
    pub fn from_env() -> Self {
        if !cfg!(debug_assertions) {
            return Self::default();
        }
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse().ok());
        Self {
            flip_byte_at: var("PIIMG_FLASH_TEST_FLIP_OFFSET"),
            stop_after_bytes: var("PIIMG_FLASH_TEST_STOP_AFTER"),
        }
    }
}

/// How to flash.
#[derive(Debug, Clone, Copy)]
pub struct FlashOptions {
    /// Read back and compare after writing.
    pub verify: bool,
    /// Test-only faults.
    pub faults: FaultInjection,
}

impl Default for FlashOptions {
    fn default() -> Self {
        Self {
            verify: true,
            faults: FaultInjection::default(),
        }
    }
}

/// What a flash did (the `--json` summary).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashReport {
    /// Image written.
    pub image: PathBuf,
    /// Target written.
    pub target: PathBuf,
    /// Where the mapped ranges came from.
    pub map: MapOrigin,
    /// Image size in bytes.
    pub image_size: u64,
    /// Bytes in the mapped ranges.
    pub mapped_bytes: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Bytes read back from the target and matched (0 without verification).
    pub bytes_verified: u64,
    /// Seconds from the start until everything, the first MiB last, was written and
    /// fsynced.
    pub write_seconds: f64,
    /// Seconds from the first read-back to the end of verification; the read-back
    /// overlaps writing, so this overlaps `write_seconds`.
    pub verify_seconds: f64,
    /// Total seconds.
    pub seconds: f64,
    /// Whether the read-back matched (false when verification was skipped).
    pub verified: bool,
    /// Whether O_DIRECT was used to the end.
    pub direct_io: bool,
}

/// Why a flash failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The target failed a safety check.
    #[error("refusing to flash {0}")]
    Refused(Refusal),
    /// The image cannot be opened or inspected.
    #[error("cannot read image {path}: {source}")]
    Image {
        /// Image path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// Reading the image failed mid-way.
    #[error("cannot read image {path} at byte {offset}: {source}")]
    ImageRead {
        /// Image path.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// OS error.
        source: std::io::Error,
    },
    /// The image's bytes do not match its `.bmap`.
    #[error(
        "image {image} does not match its .bmap in the range at byte {offset} (+{len}): the image changed after the map was made; rebuild it or delete the stale .bmap (the partition table was not written)"
    )]
    ImageChanged {
        /// Image path.
        image: PathBuf,
        /// Range start.
        offset: u64,
        /// Range length.
        len: u64,
    },
    /// The target cannot be opened.
    #[error("cannot open {path} for writing: {source} (busy means mounted or in use)")]
    Open {
        /// Target path.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// A write failed.
    #[error("write to {path} failed at byte {offset}: {source}")]
    Write {
        /// Target path.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// OS error.
        source: std::io::Error,
    },
    /// A read-back failed.
    #[error("reading {path} back failed at byte {offset}: {source}")]
    Read {
        /// Target path.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// OS error.
        source: std::io::Error,
    },
    /// The read-back differs from the image.
    #[error(
        "verify failed: {path} differs from the image at byte {offset} (in the range at {range_offset}, {range_len} bytes); the card may be failing or counterfeit"
    )]
    VerifyMismatch {
        /// Target path.
        path: PathBuf,
        /// First differing byte.
        offset: u64,
        /// Start of the range holding it.
        range_offset: u64,
        /// Length of that range.
        range_len: u64,
    },
    /// Stopped by [`FaultInjection::stop_after_bytes`].
    #[error(
        "flash interrupted after {bytes} bytes; the partition table (first MiB) was not written"
    )]
    Interrupted {
        /// Bytes written before stopping.
        bytes: u64,
    },
}

impl From<Refusal> for FlashError {
    fn from(r: Refusal) -> Self {
        FlashError::Refused(r)
    }
}

/// Writes `src` to the checked `target` and (unless disabled) verifies it: each
/// window is read back while the next ones are written; the first MiB last.
pub fn flash(
    src: &Source,
    target: &Target,
    opts: &FlashOptions,
    out: &Reporter,
) -> Result<FlashReport, FlashError> {
    let start = Instant::now();
    let dev = Device::open(target, src.image_size)?;
    let mapped = src.mapped_bytes();

    // Both bars run at once: draw them together.
    let multi = indicatif::MultiProgress::new();
    let shown = |bar: indicatif::ProgressBar| {
        if bar.is_hidden() { bar } else { multi.add(bar) }
    };
    let bar = shown(out.bytes(mapped, "write"));
    let vbar = opts.verify.then(|| shown(out.bytes(mapped, "verify")));
    let finish = || {
        bar.finish_and_clear();
        if let Some(v) = &vbar {
            v.finish_and_clear();
        }
    };

    let result: Result<_, FlashError> = (|| {
        let body = write::write_body(src, &dev, &opts.faults, &bar, vbar.as_ref())?;
        let head = write::write_head(&dev, &body.held, &bar)?;
        let write_seconds = start.elapsed().as_secs_f64();
        let flipped = body.verified.is_some_and(|v| v.flipped);
        if let Some(offset) = opts.faults.flip_byte_at.filter(|_| !flipped) {
            dev.flip_byte(offset).map_err(|source| FlashError::Write {
                path: dev.path.clone(),
                offset,
                source,
            })?;
        }
        let mut verified = None;
        if let (Some(v), Some(vbar)) = (body.verified, &vbar) {
            let head_start = Instant::now();
            let head_bytes = verify::check_head(src, &dev, &body.held, vbar)?;
            let since = v.started.unwrap_or(head_start);
            verified = Some((v.bytes + head_bytes, since.elapsed().as_secs_f64()));
        }
        Ok((body.bytes + head, write_seconds, verified))
    })();
    finish();
    let (bytes_written, write_seconds, verified) = result?;

    Ok(FlashReport {
        image: src.path.clone(),
        target: target.path.clone(),
        map: src.origin.clone(),
        image_size: src.image_size,
        mapped_bytes: mapped,
        bytes_written,
        bytes_verified: verified.map_or(0, |v| v.0),
        write_seconds,
        verify_seconds: verified.map_or(0.0, |v| v.1),
        seconds: start.elapsed().as_secs_f64(),
        verified: verified.is_some(),
        direct_io: dev.is_direct(),
    })
}
