//! The HTTP side: a blocking rustls client with connect and read timeouts, range
//! requests, and the retry policy (backoff on 408/429/5xx and dropped connections).

use std::io::Read;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, RANGE};

use super::FetchError;

/// Network settings of a fetch.
#[derive(Debug, Clone)]
pub struct NetOptions {
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for each read (a stalled transfer fails after this long without data).
    pub read_timeout: Duration,
    /// How many times a transient failure is retried before giving up
    /// (the count restarts only when an attempt gets further than any before it).
    pub retries: u32,
    /// Wait before the first retry; doubles each time up to 30 s.
    pub backoff: Duration,
    /// How long failures may go on without the download getting further than it
    /// ever got: past it the next failure ends the download, whatever `retries`
    /// says. Real progress opens a new window (bounded: progress is bounded by the
    /// file's size).
    pub stall_window: Duration,
}

impl Default for NetOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            retries: 6,
            backoff: Duration::from_millis(500),
            stall_window: Duration::from_secs(15 * 60),
        }
    }
}

impl NetOptions {
    /// The wait before retry number `n` (1-based).
    pub(crate) fn backoff_for(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(10);
        self.backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(30))
    }
}

/// A failure classified for the retry loop.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying: 408/429/5xx, connection refused/reset/closed, timeout.
    Transient(String),
    /// Retrying will not help.
    Fatal(FetchError),
    /// The host does not resolve or refuses the connection: fatal on a run's first
    /// attempt with nothing downloaded ([`Failure::first_attempt`]), transient after.
    Unreachable {
        /// What the client reported.
        reason: String,
        /// `does not resolve` or `refused the connection`.
        kind: &'static str,
    },
}

impl Failure {
    /// How an [`Failure::Unreachable`] on a first attempt with nothing downloaded
    /// ends the run; every other failure is returned as it is.
    pub(crate) fn first_attempt(self, url: &str) -> Result<Failure, FetchError> {
        match self {
            Failure::Unreachable { reason, kind } => Err(FetchError::Unreachable {
                url: url.to_string(),
                reason,
                kind,
            }),
            other => Ok(other),
        }
    }
}

/// What a (range) request returned.
pub(crate) enum Answer {
    /// 200: the whole file from byte 0.
    Full(Response),
    /// 206 with a Content-Range that starts where we asked.
    Partial(Response),
    /// 206 whose Content-Range does not match the request, or 416.
    BadRange(String),
}

/// A blocking HTTP client.
pub(crate) struct Http {
    client: Client,
    pub(crate) net: NetOptions,
}

impl Http {
    /// Builds the client (rustls, timeouts, no transparent decompression).
    pub(crate) fn new(net: &NetOptions) -> Result<Self, FetchError> {
        let client = Client::builder()
            .user_agent(concat!("piimg/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(net.connect_timeout)
            .timeout(net.read_timeout)
            .build()
            .map_err(|e| FetchError::Http {
                url: String::new(),
                reason: format!("cannot set up the HTTP client: {e}"),
            })?;
        Ok(Self {
            client,
            net: net.clone(),
        })
    }

    /// GETs `url` from byte `start` (a Range request when `start > 0`).
    pub(crate) fn get(&self, url: &str, start: u64, total: Option<u64>) -> Result<Answer, Failure> {
        let mut req = self.client.get(url);
        if start > 0 {
            req = req.header(RANGE, format!("bytes={start}-"));
        }
        let resp = req.send().map_err(|e| classify_reqwest(url, &e))?;
        let status = resp.status();
        match status {
            StatusCode::OK => Ok(Answer::Full(resp)),
            StatusCode::PARTIAL_CONTENT if start > 0 => {
                let cr = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if content_range_matches(&cr, start, total) {
                    Ok(Answer::Partial(resp))
                } else {
                    Ok(Answer::BadRange(format!(
                        "asked for bytes {start}- but got Content-Range {cr:?}"
                    )))
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE if start > 0 => Ok(Answer::BadRange(format!(
                "server refused Range bytes={start}- (416)"
            ))),
            s if is_transient(s) => Err(Failure::Transient(format!("HTTP {}", s.as_u16()))),
            s => Err(Failure::Fatal(FetchError::Status {
                url: url.to_string(),
                status: s.as_u16(),
                hint: hint(s),
            })),
        }
    }

    /// GETs a small document (the OS list) with retries, at most `limit` bytes.
    pub(crate) fn get_small(&self, url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let mut attempt = 0;
        let started = std::time::Instant::now();
        loop {
            attempt += 1;
            let result = match self.get(url, 0, None) {
                Ok(Answer::Full(resp)) => {
                    let mut body = Vec::new();
                    match resp.take(limit + 1).read_to_end(&mut body) {
                        Ok(_) if body.len() as u64 > limit => {
                            return Err(FetchError::OsList {
                                url: url.to_string(),
                                reason: format!("larger than {limit} bytes; is this an OS list?"),
                            });
                        }
                        Ok(_) => return Ok(body),
                        Err(e) => Failure::Transient(format!("reading the body: {e}")),
                    }
                }
                Ok(_) => Failure::Transient("unexpected partial answer".into()),
                Err(f) if attempt == 1 => f.first_attempt(url)?,
                Err(Failure::Unreachable { reason, .. }) => Failure::Transient(reason),
                Err(f) => f,
            };
            match result {
                Failure::Fatal(e) => return Err(e),
                Failure::Transient(last)
                    if attempt > self.net.retries || started.elapsed() > self.net.stall_window =>
                {
                    return Err(FetchError::RetriesExhausted {
                        url: url.to_string(),
                        attempts: attempt,
                        last,
                    });
                }
                Failure::Transient(_) | Failure::Unreachable { .. } => {
                    std::thread::sleep(self.net.backoff_for(attempt))
                }
            }
        }
    }
}

/// Statuses worth retrying: 408, 429 and every 5xx.
fn is_transient(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

fn hint(s: StatusCode) -> &'static str {
    match s.as_u16() {
        404 | 410 => " (not found: the OS list may be stale; check --os-list / --url)",
        401 | 403 => " (access denied)",
        _ => "",
    }
}

/// Network-level errors (reset, timeout, closed early) are transient; a name that
/// does not resolve or a refused connection is [`Failure::Unreachable`]; malformed
/// URLs and the like are fatal.
fn classify_reqwest(url: &str, e: &reqwest::Error) -> Failure {
    if e.is_builder() {
        return Failure::Fatal(FetchError::Http {
            url: url.to_string(),
            reason: format!("invalid URL: {}", chain(e)),
        });
    }
    if e.is_connect() {
        if let Some(kind) = unreachable_kind(e) {
            return Failure::Unreachable {
                reason: chain(e),
                kind,
            };
        }
    }
    Failure::Transient(chain(e))
}

/// `does not resolve` when a connect error comes from name resolution (hyper-util's
/// resolver reports `dns error`), `refused the connection` for ECONNREFUSED.
fn unreachable_kind(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some("refused the connection");
            }
        }
        if c.to_string().starts_with("dns error") {
            return Some("does not resolve");
        }
        cur = c.source();
    }
    None
}

/// An error and its sources, "a: b: c".
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// True when `cr` is `bytes START-END/TOTAL` with START == `start`, END == TOTAL-1
/// and TOTAL == `total` when known.
pub(crate) fn content_range_matches(cr: &str, start: u64, total: Option<u64>) -> bool {
    let Some(rest) = cr.trim().strip_prefix("bytes ") else {
        return false;
    };
    let Some((range, len)) = rest.split_once('/') else {
        return false;
    };
    let Some((a, b)) = range.split_once('-') else {
        return false;
    };
    let (Ok(a), Ok(b)) = (a.trim().parse::<u64>(), b.trim().parse::<u64>()) else {
        return false;
    };
    let len_ok = match (len.trim().parse::<u64>(), total) {
        (Ok(l), Some(t)) => l == t && b + 1 == l,
        (Ok(l), None) => b + 1 == l,
        (Err(_), None) => len.trim() == "*",
        (Err(_), Some(_)) => false,
    };
    a == start && b >= a && len_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_must_match_request() {
        assert!(content_range_matches("bytes 100-999/1000", 100, Some(1000)));
        assert!(content_range_matches("bytes 100-999/1000", 100, None));
        assert!(!content_range_matches("bytes 0-999/1000", 100, Some(1000)));
        assert!(!content_range_matches(
            "bytes 100-999/2000",
            100,
            Some(2000)
        ));
        assert!(!content_range_matches("bytes 100-999/1000", 100, Some(999)));
        assert!(!content_range_matches("", 100, None));
        assert!(!content_range_matches("bytes 100-99/1000", 100, None));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let n = NetOptions {
            backoff: Duration::from_secs(1),
            ..NetOptions::default()
        };
        assert_eq!(n.backoff_for(1), Duration::from_secs(1));
        assert_eq!(n.backoff_for(3), Duration::from_secs(4));
        assert_eq!(n.backoff_for(9), Duration::from_secs(30));
    }
}
