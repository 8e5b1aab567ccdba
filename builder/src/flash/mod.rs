//! Writing an image to a card so that it either works or has no partition table.
//!
//! [`target::inspect`] decides whether a device may be written; [`Source::open`] checks
//! the input is a disk image (raw, or `.xz`/`.zst`/`.gz`, decompressed once into a
//! temporary file, or streamed whole when there is no room for one) and finds the
//! ranges to write (the file systems' block map, with the image's `.bmap`). [`flash`] first erases the card's
//! partition structures (first and last MiB) and fsyncs, so a card whose flash stops
//! for any reason has no partition table and cannot boot half an image; then writes
//! the ranges in 4 MiB aligned chunks (O_DIRECT where possible), checking the image
//! against its `.bmap` checksums on the way, and, while later windows (≤ 64 MiB,
//! smaller when memory is short) are being written, fsyncs each finished window, drops
//! its cached pages, reads it back from the medium and compares it byte for byte with
//! the buffers that were written. The first MiB — the partition table — is written
//! last, after an fsync, then fsynced and compared byte for byte; if that fails, the
//! first MiB is erased again. Every failure says what state the card is in
//! ([`CardState`]).

mod buffer;
mod chunks;
pub mod content;
mod decode;
mod device;
mod error;
mod faults;
mod ranges;
mod source;
pub mod target;
mod unpack;
mod verify;
mod window;
mod write;
mod xz_size;

use std::path::PathBuf;
use std::time::Instant;

use crate::progress::Reporter;

pub use content::Compression;
pub use device::Device;
pub use error::{CardState, FlashError, FlashFailure, StopCause};
pub use faults::FaultInjection;
pub use source::{MapOrigin, Source, SourceRange, bmap_candidates};
pub use target::{Refusal, SystemView, Target, TargetKind, TargetPolicy};

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
    /// How the image file is compressed.
    pub compression: Compression,
    /// Where the ranges written came from.
    pub map: MapOrigin,
    /// Whether a compressed image was decompressed into a temporary file first (to
    /// map its file systems).
    pub decompressed_first: bool,
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
    /// Things the user should know that did not stop the flash (e.g. a `.bmap` whose
    /// checksums do not match the image).
    pub warnings: Vec<String>,
}

/// Writes `src` to the checked `target` and (unless disabled) verifies it: the card's
/// partition structures are erased first, each window is read back while the next ones
/// are written, the first MiB last. On failure the card's state is part of the error.
pub fn flash(
    src: &Source,
    target: &Target,
    opts: &FlashOptions,
    out: &Reporter,
) -> Result<FlashReport, FlashFailure> {
    let untouched = |error| FlashFailure {
        error,
        card: CardState::Untouched,
    };
    let start = Instant::now();
    let dev = Device::open(target, src.image_size).map_err(untouched)?;
    if crate::interrupt::interrupted() {
        return Err(untouched(FlashError::Interrupted {
            bytes: 0,
            cause: StopCause::Signal,
        }));
    }
    dev.erase_tables(false)
        .map_err(|(offset, source)| FlashFailure {
            error: FlashError::Erase {
                path: dev.path.clone(),
                offset,
                source,
            },
            card: CardState::Unknown,
        })?;
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

    // The table is on the card only once `write_head` started: until then an error
    // leaves the erased card; after it, the first MiB is erased again.
    let mut head_started = false;
    let mut warnings = Vec::new();
    let result: Result<_, FlashError> = (|| {
        let body = write::write_body(src, &dev, &opts.faults, &bar, vbar.as_ref())?;
        warnings.extend(body.mismatched.iter().map(|(offset, len)| {
            format!(
                "{} does not match the image in its range at byte {offset} (+{len}): it is stale or another image's; everything the card needs was written anyway",
                match &src.origin {
                    MapOrigin::BmapAndFileSystems(p) | MapOrigin::WholeImageWithBmap(p) => {
                        p.display().to_string()
                    }
                    _ => "the .bmap".into(),
                }
            )
        }));
        if crate::interrupt::interrupted() {
            return Err(FlashError::Interrupted {
                bytes: body.bytes,
                cause: StopCause::Signal,
            });
        }
        head_started = true;
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
    let (bytes_written, write_seconds, verified) = match result {
        Ok(r) => r,
        Err(error) => {
            // Whatever was written goes to the medium; the table goes (again).
            let _ = dev.sync();
            let card = if !head_started || dev.erase_tables(true).is_ok() {
                CardState::NoTable
            } else {
                CardState::Unknown
            };
            return Err(FlashFailure { error, card });
        }
    };

    Ok(FlashReport {
        image: src.path.clone(),
        target: target.path.clone(),
        compression: src.compression,
        map: src.origin.clone(),
        decompressed_first: src.decompressed_first,
        image_size: src.image_size,
        mapped_bytes: mapped,
        bytes_written,
        bytes_verified: verified.map_or(0, |v| v.0),
        write_seconds,
        verify_seconds: verified.map_or(0.0, |v| v.1),
        seconds: start.elapsed().as_secs_f64(),
        verified: verified.is_some(),
        direct_io: dev.is_direct(),
        warnings,
    })
}
