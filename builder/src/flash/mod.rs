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
//!
//! [`flash_many`] writes several cards at once, the single card of [`flash`] being
//! its case of one: the image is read once and each chunk goes to every card (a card
//! with a [`Patch`], e.g. a node's boot partition composed on the fly, gets its own
//! bytes there); each card is erased, written, verified and given its table on its
//! own, and one that fails drops out while the others go on.

mod buffer;
mod chunks;
pub mod compose;
pub mod content;
mod decode;
mod device;
pub mod disks;
pub mod eject;
mod error;
mod faults;
mod patch;
mod ranges;
mod source;
pub mod target;
pub mod uevent;
mod unpack;
mod verify;
mod window;
mod write;
mod xz_size;

use std::path::PathBuf;
use std::time::Instant;

use indicatif::ProgressBar;

use crate::progress::Reporter;

pub use compose::{ComposeError, compose};
pub use content::Compression;
pub use device::Device;
pub use error::{CardState, FlashError, FlashFailure, StopCause};
pub use faults::FaultInjection;
pub use patch::Patch;
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

/// What a flash did to one card (the `--json` summary).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlashReport {
    /// The node whose card this is, when flashed by node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
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

/// One card of a flash: where it goes and the bytes that are its own.
#[derive(Debug, Clone, Copy)]
pub struct CardSpec<'a> {
    /// The checked target.
    pub target: &'a Target,
    /// The card's own bytes over the image (a node's composed boot partition).
    pub patch: Option<&'a Patch>,
    /// The node it becomes, for messages and the report.
    pub node: Option<&'a str>,
    /// Test fault for this card only (see [`FaultInjection::flip_byte_at`]).
    pub flip_byte_at: Option<u64>,
}

impl<'a> CardSpec<'a> {
    /// The whole image to `target`.
    pub fn plain(target: &'a Target) -> Self {
        Self {
            target,
            patch: None,
            node: None,
            flip_byte_at: None,
        }
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
    match flash_many(src, &[CardSpec::plain(target)], opts, out).pop() {
        Some(r) => r,
        None => Err(FlashFailure {
            error: FlashError::Image {
                path: src.path.clone(),
                source: std::io::Error::other("no card was flashed"),
            },
            card: CardState::Untouched,
        }),
    }
}

/// Writes `src` to every card of `cards` at once, each with its own bytes where it has
/// a [`Patch`], and verifies each: every card gets what [`flash`] does to one (erased
/// first, windows read back while the next are written, the first MiB last). One
/// result per card, in order; a card that fails leaves the others writing.
pub fn flash_many(
    src: &Source,
    cards: &[CardSpec<'_>],
    opts: &FlashOptions,
    out: &Reporter,
) -> Vec<Result<FlashReport, FlashFailure>> {
    let start = Instant::now();
    let untouched = |error| FlashFailure {
        error,
        card: CardState::Untouched,
    };
    let ranges = match plan_ranges(src, cards) {
        Ok(r) => r,
        Err(reason) => {
            return cards
                .iter()
                .map(|_| {
                    Err(untouched(FlashError::Map {
                        path: src.path.clone(),
                        reason: reason.clone(),
                    }))
                })
                .collect();
        }
    };
    let mapped: u64 = ranges.iter().map(|r| r.len).sum();
    let mut results: Vec<Option<Result<FlashReport, FlashFailure>>> =
        cards.iter().map(|_| None).collect();
    let mut devs: Vec<Option<Device>> = Vec::new();
    for (k, card) in cards.iter().enumerate() {
        match Device::open(card.target, src.image_size) {
            Ok(d) => devs.push(Some(d)),
            Err(e) => {
                results[k] = Some(Err(untouched(e)));
                devs.push(None);
            }
        }
    }
    if crate::interrupt::interrupted() {
        return cards
            .iter()
            .enumerate()
            .map(|(k, _)| match results[k].take() {
                Some(r) => r,
                None => Err(untouched(FlashError::Interrupted {
                    bytes: 0,
                    cause: StopCause::Signal,
                })),
            })
            .collect();
    }
    for (k, slot) in devs.iter_mut().enumerate() {
        let Some(dev) = slot else { continue };
        if let Err((offset, source)) = dev.erase_tables(false) {
            results[k] = Some(Err(FlashFailure {
                error: FlashError::Erase {
                    path: dev.path.clone(),
                    offset,
                    source,
                },
                card: CardState::Unknown,
            }));
            *slot = None;
        }
    }

    // One line per card, drawn together.
    let multi = indicatif::MultiProgress::new();
    let per_card = mapped * if opts.verify { 2 } else { 1 };
    let bars: Vec<ProgressBar> = cards
        .iter()
        .map(|c| {
            let bar = out.bytes(per_card, &card_label(c, "writing"));
            if bar.is_hidden() { bar } else { multi.add(bar) }
        })
        .collect();
    let live: Vec<usize> = (0..cards.len()).filter(|&k| devs[k].is_some()).collect();
    let lanes: Vec<write::Lane> = live
        .iter()
        .filter_map(|&k| {
            Some(write::Lane {
                dev: devs[k].as_ref()?,
                patch: cards[k].patch,
                flip_byte_at: cards[k].flip_byte_at.or(opts.faults.flip_byte_at),
                bar: &bars[k],
            })
        })
        .collect();
    let stop = write::Stop {
        after_bytes: opts.faults.stop_after_bytes,
    };
    let bodies = write::write_bodies(src, &ranges, &lanes, opts.verify, &stop);
    let finished: Vec<(usize, Result<FlashReport, FlashFailure>)> = std::thread::scope(|s| {
        let handles: Vec<_> = live
            .iter()
            .zip(bodies)
            .filter_map(|(&k, body)| {
                let dev = devs[k].as_ref()?;
                let (card, bar, ranges) = (&cards[k], &bars[k], &ranges);
                let fin = Finish {
                    src,
                    ranges,
                    card,
                    dev,
                    opts,
                    bar,
                    start,
                    mapped,
                };
                Some((k, s.spawn(move || fin.run(body))))
            })
            .collect();
        handles
            .into_iter()
            .map(|(k, h)| {
                let r = h.join().unwrap_or_else(|_| {
                    Err(FlashFailure {
                        error: FlashError::Image {
                            path: src.path.clone(),
                            source: std::io::Error::other("a card's writer panicked"),
                        },
                        card: CardState::Unknown,
                    })
                });
                (k, r)
            })
            .collect()
    });
    for bar in &bars {
        bar.finish_and_clear();
    }
    for (k, r) in finished {
        results[k] = Some(r);
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(FlashFailure {
                    error: FlashError::Image {
                        path: src.path.clone(),
                        source: std::io::Error::other("the card was not flashed"),
                    },
                    card: CardState::Unknown,
                })
            })
        })
        .collect()
}

/// `node device phase`, the start of a card's progress line.
fn card_label(card: &CardSpec<'_>, phase: &str) -> String {
    match card.node {
        Some(n) => format!("{n} {} {phase}", card.target.path.display()),
        None => format!("{} {phase}", card.target.path.display()),
    }
}

/// The ranges every card gets: the image's, with the cards' own ranges in their
/// patches' span (all patches of one flash share it: they are composed from one base).
fn plan_ranges(src: &Source, cards: &[CardSpec<'_>]) -> Result<Vec<SourceRange>, String> {
    let patches: Vec<&Patch> = cards.iter().filter_map(|c| c.patch).collect();
    let Some(first) = patches.first() else {
        return Ok(src.ranges.clone());
    };
    if patches.iter().any(|p| p.span != first.span) {
        return Err("the cards' own bytes lie in different spans of the image".into());
    }
    let own: Vec<(u64, u64)> = patches.iter().flat_map(|p| p.ranges.clone()).collect();
    Ok(ranges::with_span(&src.ranges, first.span, &own))
}

/// The end of one card's flash once its body is written: the table, the head's
/// read-back, the report, or the card's state on failure.
struct Finish<'a> {
    src: &'a Source,
    ranges: &'a [SourceRange],
    card: &'a CardSpec<'a>,
    dev: &'a Device,
    opts: &'a FlashOptions,
    bar: &'a ProgressBar,
    start: Instant,
    mapped: u64,
}

impl Finish<'_> {
    fn run(&self, body: Result<write::Body, FlashError>) -> Result<FlashReport, FlashFailure> {
        let (src, dev) = (self.src, self.dev);
        // The table is on the card only once `write_head` started: until then an error
        // leaves the erased card; after it, the first MiB is erased again.
        let mut head_started = false;
        let mut warnings = Vec::new();
        let result: Result<_, FlashError> = (|| {
            let body = body?;
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
            self.bar.set_message(card_label(self.card, "table"));
            let head = write::write_head(dev, &body.held, self.bar)?;
            let write_seconds = self.start.elapsed().as_secs_f64();
            let flipped = body.verified.is_some_and(|v| v.flipped);
            let flip = self.card.flip_byte_at.or(self.opts.faults.flip_byte_at);
            if let Some(offset) = flip.filter(|_| !flipped) {
                dev.flip_byte(offset).map_err(|source| FlashError::Write {
                    path: dev.path.clone(),
                    offset,
                    source,
                })?;
            }
            let mut verified = None;
            if let Some(v) = body.verified.filter(|_| self.opts.verify) {
                let head_start = Instant::now();
                let head_bytes = verify::check_head(self.ranges, dev, &body.held, self.bar)?;
                let since = v.started.unwrap_or(head_start);
                verified = Some((v.bytes + head_bytes, since.elapsed().as_secs_f64()));
            }
            Ok((body.bytes + head, write_seconds, verified))
        })();
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
            node: self.card.node.map(str::to_string),
            image: src.path.clone(),
            target: self.card.target.path.clone(),
            compression: src.compression,
            map: src.origin.clone(),
            decompressed_first: src.decompressed_first,
            image_size: src.image_size,
            mapped_bytes: self.mapped,
            bytes_written,
            bytes_verified: verified.map_or(0, |v| v.0),
            write_seconds,
            verify_seconds: verified.map_or(0.0, |v| v.1),
            seconds: self.start.elapsed().as_secs_f64(),
            verified: verified.is_some(),
            direct_io: dev.is_direct(),
            warnings,
        })
    }
}
