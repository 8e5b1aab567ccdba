//! The download half of the one-pass pipeline: stream the `.img.xz` into the
//! partial file, the download hasher and the decoder at the same time; resume
//! with Range requests after a dropped connection or an earlier interrupted run.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use super::FetchError;
use super::decompress::{Decoder, DecoderSpec};
use super::http::{Answer, Failure, Http};
use crate::progress::Reporter;

/// Read size from the network and from a partial file.
const CHUNK: usize = 256 << 10;

/// What the download produced.
pub(crate) struct Downloaded {
    /// sha256 of the whole `.img.xz`.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Bytes reused from an earlier run's partial file.
    pub resumed_from: u64,
    /// The decoder, fed with every byte; finish it for the image.
    pub decoder: Decoder,
}

/// One download job.
pub(crate) struct Job<'a> {
    pub http: &'a Http,
    pub url: &'a str,
    pub expected_size: Option<u64>,
    pub partial: &'a Path,
    pub spec: &'a DecoderSpec,
    pub bar: &'a ProgressBar,
    pub out: &'a Reporter,
}

/// The state of one pass over the data: hasher and decoder have seen `fed` bytes,
/// which equals the partial file's length once the prefix was fed.
struct Pass {
    hasher: Sha256,
    decoder: Decoder,
    fed: u64,
}

impl Pass {
    fn new(spec: &DecoderSpec) -> Result<Self, FetchError> {
        Ok(Self {
            hasher: Sha256::new(),
            decoder: Decoder::start(spec)?,
            fed: 0,
        })
    }

    /// Forgets everything fed so far (the server made us start over). The old
    /// decoder's temp file is removed before the new one is created.
    fn reset(&mut self, spec: &DecoderSpec) -> Result<(), FetchError> {
        self.decoder.abandon();
        self.decoder = Decoder::start(spec)?;
        self.hasher = Sha256::new();
        self.fed = 0;
        Ok(())
    }

    fn feed(&mut self, chunk: Vec<u8>) -> Result<(), FetchError> {
        self.hasher.update(&chunk);
        self.fed += chunk.len() as u64;
        self.decoder.feed(chunk)
    }
}

/// Downloads `job.url`, resuming from `job.partial` when it holds a prefix.
pub(crate) fn download(job: &Job) -> Result<Downloaded, FetchError> {
    let partial = job.partial;
    let perr = |what, e| partial_err(job, what, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(partial)
        .map_err(|e| perr("opening", e))?;
    let mut on_disk = file
        .seek(SeekFrom::End(0))
        .map_err(|e| perr("reading", e))?;
    if job.expected_size.is_some_and(|n| on_disk > n) {
        on_disk = restart(&mut file).map_err(|e| perr("truncating", e))?;
    }
    let mut pass = Pass::new(job.spec)?;
    let mut resumed_from = 0;
    let mut budget = RetryBudget::new();
    loop {
        // A complete partial from an earlier run: nothing left to request.
        if on_disk > 0 && pass.fed == 0 && job.expected_size == Some(on_disk) {
            feed_prefix(&file, on_disk, &mut pass, job)?;
            resumed_from = on_disk;
            break;
        }
        if pass.fed > 0 && job.expected_size == Some(pass.fed) {
            break;
        }
        let resp = match job.http.get(job.url, on_disk, job.expected_size) {
            Ok(Answer::Full(resp)) => {
                if on_disk > 0 || pass.fed > 0 {
                    budget.range_ignored += 1;
                }
                if on_disk > 0 {
                    job.out.info(format!(
                        "{}: server ignored the Range request; starting over",
                        job.url
                    ));
                    on_disk = restart(&mut file).map_err(|e| perr("truncating", e))?;
                    resumed_from = 0;
                }
                if pass.fed > 0 {
                    pass.reset(job.spec)?;
                }
                job.bar.set_position(0);
                resp
            }
            Ok(Answer::Partial(resp)) => {
                if pass.fed == 0 {
                    feed_prefix(&file, on_disk, &mut pass, job)?;
                    resumed_from = on_disk;
                    job.out
                        .info(format!("resuming {} at {} MiB", job.url, on_disk >> 20));
                }
                resp
            }
            Ok(Answer::BadRange(why)) => {
                // Start over with a plain GET.
                job.out.warn(format!("{}: {why}; starting over", job.url));
                on_disk = restart(&mut file).map_err(|e| perr("truncating", e))?;
                resumed_from = 0;
                if pass.fed > 0 {
                    pass.reset(job.spec)?;
                }
                budget.fail(job, why)?;
                continue;
            }
            Err(Failure::Fatal(e)) => return Err(e),
            // Nothing downloaded, in this run or before: an unknown host or a
            // refused connection is not a blip.
            Err(Failure::Unreachable { reason, kind })
                if budget.failures == 0 && on_disk == 0 && pass.fed == 0 =>
            {
                // The empty partial file this run opened is of no use to the next.
                drop(file);
                let _ = std::fs::remove_file(partial);
                return Err(FetchError::Unreachable {
                    url: job.url.to_string(),
                    reason,
                    kind,
                });
            }
            Err(Failure::Transient(last) | Failure::Unreachable { reason: last, .. }) => {
                budget.fail(job, last)?;
                continue;
            }
        };
        match stream_body(resp, &mut file, &mut on_disk, &mut pass, job)? {
            BodyEnd::Complete => break,
            BodyEnd::Dropped(last) => budget.fail(job, last)?,
            BodyEnd::Progress(last) => {
                budget.progress(pass.fed);
                budget.fail(job, last)?;
            }
        }
    }
    let sha256 = hex::encode(pass.hasher.finalize());
    Ok(Downloaded {
        sha256,
        size: pass.fed,
        resumed_from,
        decoder: pass.decoder,
    })
}

/// The retry budget of one download: `failures` counts attempts that got no further
/// than any before them, so only real progress (bytes past the furthest point
/// reached) renews it, and failures may go on for at most the stall window since
/// that progress. A server that ignores Range and drops every connection restarts
/// at byte 0 each time and never renews it: the budget ends the loop.
struct RetryBudget {
    failures: u32,
    furthest: u64,
    range_ignored: u32,
    window: std::time::Instant,
}

impl RetryBudget {
    fn new() -> Self {
        Self {
            failures: 0,
            furthest: 0,
            range_ignored: 0,
            window: std::time::Instant::now(),
        }
    }

    /// An attempt ended having fed `fed` bytes in all.
    fn progress(&mut self, fed: u64) {
        if fed > self.furthest {
            self.furthest = fed;
            self.failures = 0;
            self.window = std::time::Instant::now();
        }
    }

    /// Counts a failure: waits before the next attempt, or gives up naming why.
    fn fail(&mut self, job: &Job, last: String) -> Result<(), FetchError> {
        self.failures += 1;
        let net = &job.http.net;
        if self.failures > net.retries || self.window.elapsed() > net.stall_window {
            return Err(if self.range_ignored > 0 {
                FetchError::RangeIgnored {
                    url: job.url.to_string(),
                    drops: self.range_ignored,
                    furthest: self.furthest,
                }
            } else {
                FetchError::RetriesExhausted {
                    url: job.url.to_string(),
                    attempts: self.failures,
                    last,
                }
            });
        }
        job.out.warn(format!("{}: {last}; retrying", job.url));
        std::thread::sleep(net.backoff_for(self.failures));
        Ok(())
    }
}

enum BodyEnd {
    /// The body ended and the file is complete (as far as we can tell).
    Complete,
    /// The connection failed before any data arrived.
    Dropped(String),
    /// The connection failed after some data arrived.
    Progress(String),
}

fn stream_body(
    mut resp: reqwest::blocking::Response,
    file: &mut File,
    on_disk: &mut u64,
    pass: &mut Pass,
    job: &Job,
) -> Result<BodyEnd, FetchError> {
    let start = *on_disk;
    if job.expected_size.is_none()
        && let Some(n) = resp.content_length()
    {
        job.bar.set_length(start + n);
        job.spec.need.set_download(start + n);
    }
    loop {
        interrupted(job.partial, "the partial download resumes on the next run")?;
        let mut buf = vec![0u8; CHUNK];
        let (n, err) = read_some(&mut resp, &mut buf);
        if n > 0 {
            buf.truncate(n);
            if let Some(want) = job.expected_size
                && *on_disk + n as u64 > want
            {
                return Err(FetchError::TooLong {
                    url: job.url.to_string(),
                    expected: want,
                });
            }
            file.write_all(&buf)
                .map_err(|e| partial_err(job, "writing", e))?;
            *on_disk += n as u64;
            job.bar.set_position(*on_disk);
            pass.feed(buf)?;
        }
        let last = match err {
            Some(e) => format!("connection lost: {}", super::http::chain(&e)),
            None if n > 0 => continue,
            None => match job.expected_size {
                Some(want) if *on_disk < want => {
                    format!("body ended early at byte {} of {want}", *on_disk)
                }
                _ => return Ok(BodyEnd::Complete),
            },
        };
        return Ok(if *on_disk > start {
            BodyEnd::Progress(last)
        } else {
            BodyEnd::Dropped(last)
        });
    }
}

/// `Err` once Ctrl-C/SIGTERM arrived (when `piimg fetch` installed the handler of
/// [`crate::interrupt`]): the caller's temp files are dropped, removed; a
/// partial download stays for the next run to resume.
fn interrupted(path: &Path, then: &str) -> Result<(), FetchError> {
    if crate::interrupt::interrupted() {
        let e = std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            format!("interrupted; {then}"),
        );
        return Err(FetchError::io("stopping", path, e));
    }
    Ok(())
}

/// Reads until `buf` holds a good-sized chunk, the body ends, or an error occurs
/// (returned beside the bytes that did arrive).
fn read_some(r: &mut impl Read, buf: &mut [u8]) -> (usize, Option<std::io::Error>) {
    let mut got = 0;
    while got < CHUNK / 4 {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

/// Feeds a local `.img.xz` (already downloaded by other means) through the same
/// pipeline: one read, hashed and decoded as it streams.
pub(crate) fn read_local(
    path: &Path,
    spec: &DecoderSpec,
    bar: &ProgressBar,
) -> Result<Downloaded, FetchError> {
    let file = File::open(path).map_err(|e| FetchError::io("opening", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| FetchError::io("reading", path, e))?
        .len();
    bar.set_length(len);
    let mut pass = Pass::new(spec)?;
    let mut off = 0;
    while off < len {
        interrupted(path, "nothing was cached")?;
        let n = CHUNK.min((len - off) as usize);
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, off)
            .map_err(|e| FetchError::io("reading", path, e))?;
        off += n as u64;
        bar.set_position(off);
        pass.feed(buf)?;
    }
    Ok(Downloaded {
        sha256: hex::encode(pass.hasher.finalize()),
        size: len,
        resumed_from: 0,
        decoder: pass.decoder,
    })
}

/// Hashes and decodes the partial file's first `len` bytes (the one unavoidable
/// second read of data downloaded by an earlier run).
fn feed_prefix(file: &File, len: u64, pass: &mut Pass, job: &Job) -> Result<(), FetchError> {
    let mut off = 0;
    while off < len {
        let n = CHUNK.min((len - off) as usize);
        let mut buf = vec![0u8; n];
        file.read_exact_at(&mut buf, off)
            .map_err(|e| partial_err(job, "reading", e))?;
        off += n as u64;
        pass.feed(buf)?;
    }
    job.bar.set_position(len);
    Ok(())
}

fn restart(file: &mut File) -> std::io::Result<u64> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))
}

fn partial_err(job: &Job, what: &'static str, e: std::io::Error) -> FetchError {
    if super::error::is_disk_full(&e) {
        FetchError::DiskFull {
            what: "writing the download",
            path: job.partial.to_path_buf(),
            cache: job.spec.cache.clone(),
            need: job.spec.need.describe(),
        }
    } else {
        FetchError::io(what, job.partial, e)
    }
}
