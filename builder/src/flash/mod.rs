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
pub use source::{MapOrigin, Source, SourceRange, bmap_candidates};
pub use target::{Refusal, SystemView, Target, TargetKind, TargetPolicy};

/// Test seam: faults to inject into a flash. All `None` in normal use.
#[derive(Debug, Clone, Copy, Default)]
pub struct FaultInjection {
    /// Invert the byte at this offset of the target after writing, before verifying.
    pub flip_byte_at: Option<u64>,
    /// Stop with [`FlashError::Interrupted`] at the first chunk past the first MiB that
    /// starts after this many bytes were handed to the writers; chunks already handed
    /// out are written, the held-back first MiB is not (the card is left erased).
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

/// The state a failed flash left the card in; its `Display` is the sentence the user
/// reads after the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CardState {
    /// Nothing was written to it.
    Untouched,
    /// Its partition table was erased and the new one not written: it boots nothing
    /// and no system mounts anything from it.
    NoTable,
    /// Erasing its partition table failed: it may hold part of the image under a
    /// partition table.
    Unknown,
}

impl std::fmt::Display for CardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CardState::Untouched => "nothing was written to the card",
            CardState::NoTable => {
                "the card has no partition table now (it was erased before writing); run the same command again"
            }
            CardState::Unknown => {
                "the card's partition table could not be erased either: it may hold a partly written image; do not boot it, run the same command again or wipe it (`wipefs -a`)"
            }
        })
    }
}

/// A failed flash: why, and the state of the card.
#[derive(Debug, thiserror::Error)]
#[error("{error}; {card}")]
pub struct FlashFailure {
    /// What went wrong.
    pub error: FlashError,
    /// What the card holds now.
    pub card: CardState,
}

impl FlashFailure {
    /// True when the flash stopped on SIGINT/SIGTERM.
    pub fn by_signal(&self) -> bool {
        matches!(
            self.error,
            FlashError::Interrupted {
                cause: StopCause::Signal,
                ..
            }
        )
    }
}

/// What stopped a flash before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT or SIGTERM.
    Signal,
    /// [`FaultInjection::stop_after_bytes`].
    Injected,
}

impl std::fmt::Display for StopCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopCause::Signal => "a signal (Ctrl-C or SIGTERM)",
            StopCause::Injected => "the injected test fault",
        })
    }
}

/// Why a flash failed.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The target failed a safety check.
    #[error("refusing to flash {0}")]
    Refused(Refusal),
    /// The input is not a disk image.
    #[error(
        "{path}: not a disk image: {what} (hint: flash takes a disk image with a partition table: `piimg build` output, .img or .img.xz)"
    )]
    NotAnImage {
        /// The input path.
        path: PathBuf,
        /// What it is instead.
        what: String,
    },
    /// The image's file systems could not be mapped.
    #[error("{path}: cannot map the image's file systems: {reason}")]
    Map {
        /// Image path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
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
    /// Stopped by a signal or [`FaultInjection::stop_after_bytes`].
    #[error("flash stopped by {cause} after {bytes} bytes were written")]
    Interrupted {
        /// Bytes written before stopping.
        bytes: u64,
        /// What stopped it.
        cause: StopCause,
    },
    /// Erasing the card's old partition structures failed.
    #[error("erasing the old partition table of {path} failed at byte {offset}: {source}")]
    Erase {
        /// Target path.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// OS error.
        source: std::io::Error,
    },
}

impl From<Refusal> for FlashError {
    fn from(r: Refusal) -> Self {
        FlashError::Refused(r)
    }
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
    if crate::output::interrupt::interrupted() {
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
        if crate::output::interrupt::interrupted() {
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
