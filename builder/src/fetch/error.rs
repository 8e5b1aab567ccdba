//! What can go wrong while finding, downloading, verifying and caching an image.

use std::io;
use std::path::PathBuf;

/// An error of `piimg fetch` / `piimg cache`; every variant names the URL or path
/// involved and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP request could not be made or its body could not be read.
    #[error("cannot fetch {url}: {reason}")]
    Http {
        /// The URL requested.
        url: String,
        /// What the HTTP client reported.
        reason: String,
    },
    /// The server answered with an HTTP status we cannot use.
    #[error("{url}: server answered HTTP {status}{hint}")]
    Status {
        /// The URL requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// A hint for the user (may be empty).
        hint: &'static str,
    },
    /// The host does not resolve or refuses connections on a run's first attempt
    /// with nothing downloaded yet: not a blip worth seven retries.
    #[error(
        "cannot reach {url}: {reason}; not retried (the host {kind}). Check the network (DNS, proxy, firewall) and run again, or use an image you already have: `piimg build --base FILE.img`, `piimg fetch --file FILE.img.xz --sha256 HEX` to put a downloaded image into the cache, or `--offline` to build from the cache"
    )]
    Unreachable {
        /// The URL requested.
        url: String,
        /// What the HTTP client reported.
        reason: String,
        /// `does not resolve` or `refused the connection`.
        kind: &'static str,
    },
    /// Retries of a transient failure (408/429/5xx, dropped connection) ran out.
    #[error("{url}: giving up after {attempts} attempts; last error: {last} (run again to resume)")]
    RetriesExhausted {
        /// The URL requested.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The server answers every resumed request with the whole file and drops the
    /// connection before the end, so no attempt can get further than the last.
    #[error(
        "{url}: the server ignores Range requests and closed the connection {drops} times without getting further than {furthest} bytes; try another mirror, or download the file another way and use `piimg fetch --file`"
    )]
    RangeIgnored {
        /// The URL requested.
        url: String,
        /// Connections dropped after the server restarted from byte 0.
        drops: u32,
        /// The most bytes any attempt got.
        furthest: u64,
    },
    /// The OS list could not be parsed or an entry in it is unusable.
    #[error("OS list {url}: {reason}")]
    OsList {
        /// Where the list came from.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OS list has no Raspberry Pi OS Lite (64-bit) entry for the wanted release.
    #[error(
        "OS list {url} has no Raspberry Pi OS Lite (64-bit) image{wanted} (found: {found}); \
         choose another --release, or pass --url URL --sha256 HEX"
    )]
    NoLiteImage {
        /// Where the list came from.
        url: String,
        /// " for release X", or empty for `latest`.
        wanted: String,
        /// The Lite arm64 releases the list does have (or "none").
        found: String,
    },
    /// The server sent more bytes than the OS list declares.
    #[error(
        "{url}: server sent more than the {expected} bytes declared for this image \
         (partial download removed)"
    )]
    TooLong {
        /// The URL requested.
        url: String,
        /// The declared download size.
        expected: u64,
    },
    /// The downloaded file does not have the published sha256.
    #[error(
        "download of {url} failed verification: sha256 expected {expected}, actual {actual} \
         (partial download removed; run again, or check the mirror)"
    )]
    DownloadMismatch {
        /// The URL downloaded.
        url: String,
        /// The published sha256.
        expected: String,
        /// What the download hashed to.
        actual: String,
    },
    /// The decompressed image does not have the published `extract_sha256`.
    #[error(
        "image decompressed from {url} failed verification: extract_sha256 expected {expected}, \
         actual {actual} ({size} bytes) (nothing was cached)"
    )]
    ExtractMismatch {
        /// The URL downloaded.
        url: String,
        /// The published extract_sha256.
        expected: String,
        /// What the decompressed data hashed to.
        actual: String,
        /// How many bytes were decompressed.
        size: u64,
    },
    /// The .xz data is corrupt, truncated or not .xz at all.
    #[error("{url}: cannot decompress: {reason} (nothing was cached; partial download removed)")]
    Xz {
        /// The URL downloaded.
        url: String,
        /// What liblzma reported.
        reason: String,
    },
    /// The cache's file system filled up.
    #[error(
        "no space left on device while {what} {path}: the cache in {cache} needs {need} \
         (nothing was cached; partial files removed; free space or set PIIMG_CACHE to a \
         larger disk)"
    )]
    DiskFull {
        /// What was being done.
        what: &'static str,
        /// The file being written.
        path: PathBuf,
        /// The cache directory.
        cache: PathBuf,
        /// How much space the fetch needs, in words, from what is known of the sizes.
        need: String,
    },
    /// Some other I/O error on a local file.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `--offline` and the cache does not have what is needed.
    #[error(
        "offline: no cached Raspberry Pi OS Lite (64-bit) image{wanted} in {cache}; \
         run `piimg fetch{fetch_args}` while online (or set PIIMG_CACHE to a cache that has \
         one), or pass --base FILE"
    )]
    Offline {
        /// The cache directory searched.
        cache: PathBuf,
        /// " for release X" / " with sha256 X", or empty.
        wanted: String,
        /// Arguments for `piimg fetch` that would get it.
        fetch_args: String,
    },
    /// The image's `.bmap` is unusable or does not describe this image.
    #[error("bmap {url}: {reason} (nothing was cached)")]
    Bmap {
        /// Where the bmap came from.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A mapped range of the decompressed image does not have the bmap's sha256.
    #[error(
        "image decompressed from {url} does not match its bmap {bmap_url}: {range} \
         (nothing was cached; partial download removed)"
    )]
    BmapMismatch {
        /// The image URL.
        url: String,
        /// The bmap URL.
        bmap_url: String,
        /// "blocks F..=L (bytes O..E) sha256 expected X, actual Y".
        range: String,
    },
    /// A cache entry's metadata file is unreadable.
    #[error("cache entry {path} is unreadable: {reason}; remove it or run `piimg cache prune`")]
    Metadata {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cache directory cannot be determined.
    #[error("cannot find a cache directory: set PIIMG_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// A command-line value is invalid.
    #[error("{0}")]
    Invalid(String),
}

impl FetchError {
    /// An I/O error on `path`, classified as [`FetchError::DiskFull`] when the device is full.
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.into(),
            source,
        }
    }

    /// True when the failure means the downloaded bytes are useless and the partial
    /// download must go (as opposed to network trouble, where it is kept to resume).
    pub(crate) fn poisons_partial(&self) -> bool {
        matches!(
            self,
            Self::TooLong { .. }
                | Self::DownloadMismatch { .. }
                | Self::ExtractMismatch { .. }
                | Self::BmapMismatch { .. }
                | Self::Xz { .. }
                | Self::DiskFull { .. }
        )
    }
}

/// True when `err` is "no space left on device" (or a quota/size limit).
pub(crate) fn is_disk_full(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
    ) || err.kind() == io::ErrorKind::StorageFull
}
