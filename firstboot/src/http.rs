//! HTTP probes: a tiny HTTP/1.1 client over `TcpStream` for plain `http://`, and
//! `curl` (through [`Exec`]) for `https://` until the agent pins CAs itself.

use crate::exec::Exec;
use crate::runner::Cmd;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The parts of an HTTP answer the agent looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// The `Date` header, if any.
    pub date: Option<String>,
    /// Body (lossy UTF-8).
    pub body: String,
}

/// Fetches URLs (`/ping`, `/cacerts`, a server's `Date`).
pub trait Probe {
    /// GETs `url`, giving up after `timeout`; programs run through `exec`.
    fn get(&self, exec: &Exec, url: &str, timeout: Duration) -> Result<Reply, String>;
}

/// Plain HTTP built in; HTTPS through `curl -sk` (k3s serves a self-signed CA; the CA
/// pinning replaces `-k` with a check of `/cacerts` against the token hash).
#[derive(Debug, Default)]
pub struct DefaultProbe;

impl Probe for DefaultProbe {
    fn get(&self, exec: &Exec, url: &str, timeout: Duration) -> Result<Reply, String> {
        if url.starts_with("http://") {
            return get_plain(url, timeout);
        }
        let secs = timeout.as_secs().max(1).to_string();
        let cmd = Cmd::new("curl", &["-sSk", "-i", "--max-time", &secs, url]);
        let out = exec
            .poll(&cmd)
            .map_err(|e| format!("cannot run curl: {e}"))?;
        if !out.success() {
            return Err(out.last_words());
        }
        parse_response(out.stdout.as_bytes()).ok_or_else(|| format!("{url}: not an HTTP answer"))
    }
}

/// GET over plain HTTP/1.1 with `Connection: close`.
pub fn get_plain(url: &str, timeout: Duration) -> Result<Reply, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hostport = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: piimg-firstboot\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    s.take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{addr}: {e}"))?;
    parse_response(&buf).ok_or_else(|| format!("{url}: not an HTTP answer"))
}

/// Parses a raw HTTP/1.x response (status line, headers, body).
pub fn parse_response(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = match text.find("\r\n\r\n") {
        Some(i) => (&text[..i], &text[i + 4..]),
        None => (text.as_ref(), ""),
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    if !status_line.starts_with("HTTP/") {
        return None;
    }
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let date = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("date"))
        .map(|(_, v)| v.trim().to_string());
    Some(Reply {
        status,
        date,
        body: body.to_string(),
    })
}
