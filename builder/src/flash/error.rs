//! How a flash fails: the error, the state it leaves the card in ([`CardState`]), and
//! what stopped it.

use std::path::{Path, PathBuf};

use super::target::Refusal;

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

/// A write (or fsync) error at `offset` of the target at `path`.
pub fn write_err(path: &Path, offset: u64, source: std::io::Error) -> FlashError {
    FlashError::Write {
        path: path.to_path_buf(),
        offset,
        source,
    }
}
