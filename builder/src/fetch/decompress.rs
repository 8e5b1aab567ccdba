//! The decompression half of the one-pass pipeline: a thread that takes .xz chunks
//! from the download, decodes them with liblzma's multi-threaded decoder, hashes the
//! decompressed bytes and writes them sparsely (all-zero blocks become holes) to the
//! cache's temp file.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use indicatif::ProgressBar;
use liblzma::stream::{Action, MtStreamBuilder, Status, Stream};
use sha2::{Digest, Sha256};

use super::FetchError;
use crate::atomic::AtomicFile;

/// Output buffer handed to liblzma per call.
const OUT_BUF: usize = 4 << 20;
/// Granularity of hole detection.
const HOLE_BLOCK: usize = 64 << 10;
/// Chunks in flight between the download and the decoder.
const QUEUE: usize = 64;

/// What the decoder produced: the (not yet committed) image and its hash.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub file: AtomicFile,
    pub sha256: String,
    pub size: u64,
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
    /// Cache directory and rough space need, for the disk-full message.
    pub cache: PathBuf,
    pub need_mib: u64,
    /// Progress bar of decompressed bytes.
    pub bar: ProgressBar,
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
/// writes them) are decoded in parallel, one thread per core.
fn new_stream(url: &str) -> Result<Stream, FetchError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    MtStreamBuilder::new()
        .threads(threads)
        // Use threads as long as they need no more than 1 GiB in total (xz -T0 uses
        // a quarter of RAM); never refuse to decode for memory reasons.
        .memlimit_threading(1 << 30)
        .memlimit_stop(u64::MAX)
        .timeout_ms(0)
        .decoder()
        .map_err(|e| FetchError::Xz {
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
        cursor: 0,
        file: file.file(),
        bar: &spec.bar,
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
    // Holes at the end need the length set explicitly.
    file.file().set_len(size).map_err(|e| io_err(spec, e))?;
    spec.bar.set_length(size);
    spec.bar.finish();
    Ok(Decoded { file, sha256, size })
}

/// Hashes everything and writes it, seeking over all-zero blocks.
struct Sink<'a> {
    hasher: Sha256,
    /// Bytes decompressed so far (the logical end of the image).
    pos: u64,
    /// Where the file's cursor is.
    cursor: u64,
    file: &'a mut File,
    bar: &'a ProgressBar,
}

impl Sink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.hasher.update(data);
        let mut run_start: Option<usize> = None;
        let mut i = 0;
        while i < data.len() {
            // Blocks aligned to absolute offsets so holes line up with the file system's.
            let abs = self.pos + i as u64;
            let len = (HOLE_BLOCK - (abs % HOLE_BLOCK as u64) as usize).min(data.len() - i);
            if is_zero(&data[i..i + len]) {
                if let Some(s) = run_start.take() {
                    self.put(self.pos + s as u64, &data[s..i])?;
                }
            } else if run_start.is_none() {
                run_start = Some(i);
            }
            i += len;
        }
        if let Some(s) = run_start {
            self.put(self.pos + s as u64, &data[s..])?;
        }
        self.pos += data.len() as u64;
        self.bar.set_position(self.pos);
        Ok(())
    }

    fn put(&mut self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        if self.cursor != at {
            self.file.seek(SeekFrom::Start(at))?;
        }
        self.file.write_all(bytes)?;
        self.cursor = at + bytes.len() as u64;
        Ok(())
    }
}

/// True when every byte of `b` is zero (OR-reduces 64 bytes at a time so it vectorises).
fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(64);
    for c in &mut chunks {
        if c.iter().fold(0u8, |acc, &x| acc | x) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
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
            need_mib: spec.need_mib,
        }
    } else {
        FetchError::io("writing the decompressed image", &spec.dest, e)
    }
}
