//! The decompression half of the one-pass pipeline: a thread that takes .xz chunks
//! from the download, decodes them with liblzma's multi-threaded decoder, hashes the
//! decompressed bytes and writes every one of them (densely: a zero block of the
//! image may matter, e.g. a free FAT entry) to the cache's temp file. When a bmap is
//! known, the sha256 of each of its mapped ranges is computed as the data streams past.

use crate::digest::Sha256Digest;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use indicatif::ProgressBar;
use liblzma::stream::{Action, MtStreamBuilder, Status, Stream};
use sha2::{Digest, Sha256};

use super::FetchError;
use crate::atomic::AtomicFile;
use crate::bmap::{Bmap, byte_span};

/// Output buffer handed to liblzma per call.
const OUT_BUF: usize = 4 << 20;
/// Chunks in flight between the download and the decoder.
const QUEUE: usize = 64;

/// What the decoder produced: the (not yet committed) image and its hash.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub file: AtomicFile,
    pub sha256: String,
    pub size: u64,
    /// The first bmap range whose bytes do not match (when a bmap was given).
    pub range_mismatch: Option<RangeMismatch>,
}

/// A bmap range whose decompressed bytes hash differently than the bmap says.
#[derive(Debug, Clone)]
pub(crate) struct RangeMismatch {
    pub first: u64,
    pub last: u64,
    pub offset: u64,
    pub end: u64,
    pub expected: String,
    pub actual: String,
}

/// A running decoder thread fed through a bounded channel.
pub(crate) struct Decoder {
    tx: Option<SyncSender<Vec<u8>>>,
    handle: Option<JoinHandle<Result<Decoded, FetchError>>>,
}

/// Everything needed to (re)start a decoder.
#[derive(Clone)]
pub(crate) struct DecoderSpec {
    /// Final path of the image in the cache (the temp file goes beside it).
    pub dest: PathBuf,
    /// URL, for messages.
    pub url: String,
    /// Cache directory and space need, for the disk-full message.
    pub cache: PathBuf,
    /// What the fetch needs in the cache, as far as it is known.
    pub need: SpaceNeed,
    /// Progress bar of decompressed bytes.
    pub bar: ProgressBar,
    /// The image's block map, whose range hashes are checked while decoding.
    pub bmap: Option<Arc<Bmap>>,
}

/// The space a fetch needs in the cache: the download plus the decompressed image.
/// The OS list gives both sizes; a direct URL gives the download's size only with
/// its response (`Content-Length`), recorded here when it arrives.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpaceNeed {
    download: Arc<std::sync::atomic::AtomicU64>,
    extract: Option<u64>,
}

impl SpaceNeed {
    /// A need of `download` and `extract` bytes (each `None` when not known yet).
    pub fn new(download: Option<u64>, extract: Option<u64>) -> Self {
        Self {
            download: Arc::new(std::sync::atomic::AtomicU64::new(download.unwrap_or(0))),
            extract,
        }
    }

    /// Records the download's size once the server said it.
    pub fn set_download(&self, bytes: u64) {
        self.download
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// The need in words, e.g. "about 2969 MiB free (a 431 MiB download and a 2538
    /// MiB image)".
    pub fn describe(&self) -> String {
        let mib = |b: u64| b.div_ceil(1 << 20);
        let dl = self.download.load(std::sync::atomic::Ordering::Relaxed);
        match (dl, self.extract) {
            (0, Some(x)) => format!(
                "more than {} MiB free (the {} MiB image, plus the download, whose size \
                 the server did not give)",
                mib(x),
                mib(x)
            ),
            (d, Some(x)) => format!(
                "about {} MiB free (a {} MiB download and a {} MiB image)",
                mib(d + x),
                mib(d),
                mib(x)
            ),
            (0, None) => "room for the download and the decompressed image (the server \
                          gave neither size; a Raspberry Pi OS Lite image needs about 3 GiB)"
                .to_string(),
            (d, None) => format!(
                "more than {} MiB free (the {} MiB download, plus the decompressed image, \
                 whose size only the end of the .xz says; Raspberry Pi OS Lite needs about \
                 3 GiB)",
                mib(d),
                mib(d)
            ),
        }
    }
}

impl Decoder {
    /// Creates the temp output and starts the decoder thread.
    pub(crate) fn start(spec: &DecoderSpec) -> Result<Self, FetchError> {
        let file = AtomicFile::create(&spec.dest, 0o644).map_err(|e| io_err(spec, e))?;
        let stream = new_stream(&spec.url)?;
        let (tx, rx) = sync_channel(QUEUE);
        let spec2 = spec.clone();
        spec.bar.set_position(0);
        let handle = std::thread::Builder::new()
            .name("piimg-xz".into())
            .spawn(move || run(stream, rx, file, &spec2))
            .map_err(|e| FetchError::io("starting the decoder thread for", &spec.dest, e))?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Passes one chunk of .xz data on; fails with the decoder's error if it stopped.
    pub(crate) fn feed(&mut self, chunk: Vec<u8>) -> Result<(), FetchError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).is_ok(),
            None => false,
        };
        if sent { Ok(()) } else { Err(self.join_error()) }
    }

    /// Ends the input and waits for the result.
    pub(crate) fn finish(mut self) -> Result<Decoded, FetchError> {
        self.tx = None;
        self.join()
    }

    fn join(&mut self) -> Result<Decoded, FetchError> {
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(FetchError::Invalid("decoder thread panicked".into())),
            None => Err(FetchError::Invalid("decoder already finished".into())),
        }
    }

    fn join_error(&mut self) -> FetchError {
        self.tx = None;
        match self.join() {
            Err(e) => e,
            Ok(_) => FetchError::Invalid("decoder stopped early".into()),
        }
    }
}

impl Decoder {
    /// Stops the decoder without a result: closes its input so the thread ends and
    /// its temp file is removed, and waits so a next attempt does not race it.
    pub(crate) fn abandon(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// liblzma's multi-threaded decoder: blocks of a multi-block .xz (as `xz -T0`
/// writes them) are decoded in parallel, one thread per core. Shared by `fetch` and
/// `flash`.
pub(crate) fn mt_xz_decoder() -> Result<Stream, liblzma::stream::Error> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    MtStreamBuilder::new()
        .threads(threads)
        // Use threads as long as they need no more than 1 GiB in total (xz -T0 uses
        // a quarter of RAM); never refuse to decode for memory reasons.
        .memlimit_threading(1 << 30)
        .memlimit_stop(u64::MAX)
        .timeout_ms(0)
        .decoder()
}

fn new_stream(url: &str) -> Result<Stream, FetchError> {
    mt_xz_decoder().map_err(|e| FetchError::Xz {
        url: url.to_string(),
        reason: format!("cannot start the xz decoder: {e}"),
    })
}

fn run(
    mut stream: Stream,
    rx: Receiver<Vec<u8>>,
    mut file: AtomicFile,
    spec: &DecoderSpec,
) -> Result<Decoded, FetchError> {
    let mut sink = Sink {
        hasher: Sha256::new(),
        pos: 0,
        file: file.file(),
        bar: &spec.bar,
        ranges: spec.bmap.as_deref().map(RangeHasher::new),
    };
    let mut out = Vec::with_capacity(OUT_BUF);
    let mut ended = false;
    for chunk in rx {
        let mut input = &chunk[..];
        while !input.is_empty() {
            if ended {
                return Err(xz_err(
                    spec,
                    "unexpected data after the end of the .xz stream",
                ));
            }
            out.clear();
            let before = stream.total_in();
            let status = stream
                .process_vec(input, &mut out, Action::Run)
                .map_err(|e| xz_err(spec, &describe(e)))?;
            input = &input[(stream.total_in() - before) as usize..];
            sink.write(&out).map_err(|e| io_err(spec, e))?;
            if status == Status::StreamEnd {
                ended = true;
            }
        }
    }
    while !ended {
        out.clear();
        let status = stream
            .process_vec(&[], &mut out, Action::Finish)
            .map_err(|e| xz_err(spec, &describe(e)))?;
        sink.write(&out).map_err(|e| io_err(spec, e))?;
        match status {
            Status::StreamEnd => ended = true,
            _ if out.is_empty() => {
                return Err(xz_err(
                    spec,
                    "the .xz data is truncated (ends before the stream does)",
                ));
            }
            _ => {}
        }
    }
    let size = sink.pos;
    let sha256 = hex::encode(sink.hasher.finalize());
    let range_mismatch = sink.ranges.and_then(RangeHasher::finish);
    spec.bar.set_length(size);
    spec.bar.finish_and_clear();
    Ok(Decoded {
        file,
        sha256,
        size,
        range_mismatch,
    })
}

/// Hashes everything and writes all of it (no holes: see the module doc).
struct Sink<'a> {
    hasher: Sha256,
    /// Bytes decompressed so far (the logical end of the image).
    pos: u64,
    file: &'a mut File,
    bar: &'a ProgressBar,
    ranges: Option<RangeHasher>,
}

impl Sink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.hasher.update(data);
        if let Some(r) = &mut self.ranges {
            r.update(self.pos, data);
        }
        self.file.write_all(data)?;
        self.pos += data.len() as u64;
        self.bar.set_position(self.pos);
        Ok(())
    }
}

/// Hashes the bmap's mapped ranges (sorted, disjoint) as the image streams past.
struct RangeHasher {
    /// `(first, last, offset, end, expected)` of each range, in order.
    spans: Vec<(u64, u64, u64, u64, Sha256Digest)>,
    /// Index of the range being hashed.
    next: usize,
    hasher: Sha256,
    mismatch: Option<RangeMismatch>,
}

impl RangeHasher {
    fn new(bmap: &Bmap) -> Self {
        let spans = bmap
            .ranges
            .iter()
            .map(|r| {
                let (off, len) = byte_span(r.first, r.last, bmap.block_size, bmap.image_size);
                (r.first, r.last, off, off + len, r.sha256)
            })
            .collect();
        Self {
            spans,
            next: 0,
            hasher: Sha256::new(),
            mismatch: None,
        }
    }

    /// Feeds `data`, which sits at image offset `pos`.
    fn update(&mut self, pos: u64, data: &[u8]) {
        let data_end = pos + data.len() as u64;
        while self.mismatch.is_none() {
            let Some(&(_, _, off, end, _)) = self.spans.get(self.next) else {
                return;
            };
            if off >= data_end {
                return;
            }
            let from = off.max(pos);
            let to = end.min(data_end);
            if from < to {
                self.hasher
                    .update(&data[(from - pos) as usize..(to - pos) as usize]);
            }
            if end > data_end {
                return;
            }
            self.close();
        }
    }

    /// Finishes the current range and compares it with the bmap.
    fn close(&mut self) {
        let (first, last, offset, end, expected) = self.spans[self.next];
        let actual = Sha256Digest::finish(std::mem::take(&mut self.hasher));
        if actual != expected {
            self.mismatch = Some(RangeMismatch {
                first,
                last,
                offset,
                end,
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        self.next += 1;
    }

    /// The first mismatching range; a range the image ended inside counts as one.
    fn finish(mut self) -> Option<RangeMismatch> {
        if self.mismatch.is_none() && self.next < self.spans.len() {
            self.close();
            if self.mismatch.is_none() {
                self.mismatch = self.spans.get(self.next - 1).map(|s| RangeMismatch {
                    first: s.0,
                    last: s.1,
                    offset: s.2,
                    end: s.3,
                    expected: s.4.to_string(),
                    actual: "(image ended inside the range)".into(),
                });
            }
        }
        self.mismatch
    }
}

fn describe(e: liblzma::stream::Error) -> String {
    use liblzma::stream::Error as E;
    match e {
        E::Data => "the .xz data is corrupt".into(),
        E::Format => "not .xz data (wrong magic bytes)".into(),
        E::Options => "the .xz stream uses unsupported options".into(),
        E::Mem | E::MemLimit => "out of memory while decoding".into(),
        other => format!("xz decoder error: {other}"),
    }
}

fn xz_err(spec: &DecoderSpec, reason: &str) -> FetchError {
    FetchError::Xz {
        url: spec.url.clone(),
        reason: reason.to_string(),
    }
}

fn io_err(spec: &DecoderSpec, e: std::io::Error) -> FetchError {
    if super::error::is_disk_full(&e) {
        FetchError::DiskFull {
            what: "writing the decompressed image",
            path: spec.dest.clone(),
            cache: spec.cache.clone(),
            need: spec.need.describe(),
        }
    } else {
        FetchError::io("writing the decompressed image", &spec.dest, e)
    }
}
