//! A real HTTP/1.1 server on 127.0.0.1 for fetch tests: serves in-memory files,
//! honours `Range: bytes=N-`, logs every request, and injects faults on demand.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A fault for one request to a path (consumed in order, one per request).
#[derive(Debug, Clone)]
#[allow(dead_code)]
pub enum Fault {
    /// Answer with this status and a short body.
    Status(u16),
    /// Send the headers (full Content-Length) and this many body bytes, then close.
    CloseAfter(usize),
    /// Answer 200 with the whole file even if a Range was asked for.
    IgnoreRange,
    /// Answer a Range request with 206 but a Content-Range starting at 0.
    WrongContentRange,
    /// Answer 200 with the whole file even if a Range was asked for, and close the
    /// connection after this many body bytes.
    IgnoreRangeCloseAfter(usize),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    faults: HashMap<String, VecDeque<Fault>>,
    log: Vec<Request>,
    /// Sleep this long after every 64 KiB of body (to make transfers slow).
    throttle: Option<Duration>,
}

/// The running server (threads end with the test process).
#[derive(Clone)]
pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
}

#[allow(dead_code)]
impl Server {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        Self { base, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn put(&self, path: &str, data: Vec<u8>) {
        self.state.lock().unwrap().files.insert(path.into(), data);
    }

    pub fn fault(&self, path: &str, fault: Fault) {
        let mut st = self.state.lock().unwrap();
        st.faults.entry(path.into()).or_default().push_back(fault);
    }

    pub fn throttle(&self, d: Duration) {
        self.state.lock().unwrap().throttle = Some(d);
    }

    pub fn requests(&self, path: &str) -> Vec<Request> {
        let st = self.state.lock().unwrap();
        st.log.iter().filter(|r| r.path == path).cloned().collect()
    }
}

fn serve(conn: TcpStream, st: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    let (file, fault, throttle) = {
        let mut st = st.lock().unwrap();
        st.log.push(Request {
            path: path.clone(),
            range: range.clone(),
        });
        let fault = st.faults.get_mut(&path).and_then(VecDeque::pop_front);
        (st.files.get(&path).cloned(), fault, st.throttle)
    };
    let mut out = conn;
    if let Some(Fault::Status(code)) = fault {
        return respond(&mut out, code, &[], b"injected failure\n", None, None);
    }
    let Some(data) = file else {
        return respond(&mut out, 404, &[], b"not found\n", None, None);
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let len = data.len();
    let close_after = match fault {
        Some(Fault::CloseAfter(n) | Fault::IgnoreRangeCloseAfter(n)) => Some(n),
        _ => None,
    };
    match (start, &fault) {
        (Some(s), None | Some(Fault::CloseAfter(_))) if s >= len => {
            let h = [format!("Content-Range: bytes */{len}")];
            respond(&mut out, 416, &h, b"", None, None)
        }
        (Some(s), None | Some(Fault::CloseAfter(_))) => {
            let h = [format!("Content-Range: bytes {s}-{}/{len}", len - 1)];
            respond(&mut out, 206, &h, &data[s..], close_after, throttle)
        }
        (Some(s), Some(Fault::WrongContentRange)) => {
            let h = [format!("Content-Range: bytes 0-{}/{len}", len - s - 1)];
            respond(&mut out, 206, &h, &data[s..], None, throttle)
        }
        _ => respond(&mut out, 200, &[], &data, close_after, throttle),
    }
}

fn respond(
    out: &mut TcpStream,
    code: u16,
    headers: &[String],
    body: &[u8],
    close_after: Option<usize>,
    throttle: Option<Duration>,
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\nConnection: close\r\nAccept-Ranges: bytes\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    let send = close_after.unwrap_or(body.len()).min(body.len());
    for chunk in body[..send].chunks(64 << 10) {
        out.write_all(chunk)?;
        if let Some(d) = throttle {
            std::thread::sleep(d);
        }
    }
    out.flush()?;
    if close_after.is_some() {
        let _ = out.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}
