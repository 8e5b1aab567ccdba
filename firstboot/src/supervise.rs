//! Running a child process to completion, optionally under a deadline.
//!
//! Its output is read by two threads (and its input written by a third), so a
//! program that fills one pipe while the agent waits on another never deadlocks.
//! With a deadline the program runs in its own process group; when the deadline
//! passes before it has exited and closed its output, the whole group gets SIGTERM,
//! [`GRACE`] to end, then SIGKILL, so a script's children die with it.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a timed-out process group has between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long, after SIGKILL, the agent waits for the output pipes to close: a process
/// that left the group (`setsid`) may hold them for ever; its output is then cut.
const DRAIN: Duration = Duration::from_secs(2);

/// How often the group is checked for survivors during the grace period.
const TICK: Duration = Duration::from_millis(20);

/// What a supervised child produced.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status (`None` when it timed out or could not be waited for).
    pub status: Option<ExitStatus>,
    /// Everything it wrote to standard output (up to the kill).
    pub stdout: Vec<u8>,
    /// Everything it wrote to standard error (up to the kill).
    pub stderr: Vec<u8>,
    /// True when the deadline passed and the process group was killed.
    pub timed_out: bool,
}

enum Event {
    Exited(Option<ExitStatus>),
    Closed,
}

/// The state of one run: what has ended so far.
struct Watch {
    events: Receiver<Event>,
    status: Option<Option<ExitStatus>>,
    open_pipes: usize,
}

impl Watch {
    fn done(&self) -> bool {
        self.status.is_some() && self.open_pipes == 0
    }

    fn take(&mut self, e: Event) {
        match e {
            Event::Exited(s) => self.status = Some(s),
            Event::Closed => self.open_pipes = self.open_pipes.saturating_sub(1),
        }
    }

    /// Takes events until everything ended or `until` passed; true if everything ended.
    fn wait_until(&mut self, until: Option<Instant>) -> bool {
        while !self.done() {
            let got = match until {
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(t) => self
                    .events
                    .recv_timeout(t.saturating_duration_since(Instant::now())),
            };
            match got {
                Ok(e) => self.take(e),
                // Every sender gone: nothing more will end.
                Err(RecvTimeoutError::Disconnected) => return self.done(),
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
        true
    }
}

/// Runs `command` (its arguments and environment set) with `input` on its standard
/// input (else none) and, given a `timeout`, in its own process group killed when
/// the timeout passes.
pub fn run(
    command: &mut Command,
    input: Option<&str>,
    timeout: Option<Duration>,
) -> std::io::Result<Finished> {
    use std::os::unix::process::CommandExt;
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if timeout.is_some() {
        command.process_group(0);
    }
    let start = Instant::now();
    let mut child = command.spawn()?;
    let (tx, events) = channel();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut open_pipes = 0;
    if let Some(pipe) = child.stdout.take() {
        drain(pipe, stdout.clone(), tx.clone());
        open_pipes += 1;
    }
    if let Some(pipe) = child.stderr.take() {
        drain(pipe, stderr.clone(), tx.clone());
        open_pipes += 1;
    }
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), input) {
        let text = text.to_string();
        // A program that exits without reading all of it reports why itself.
        std::thread::spawn(move || {
            let _ = pipe.write_all(text.as_bytes());
        });
    }
    let group = child.id() as libc::pid_t;
    reap(child, tx);
    let mut watch = Watch {
        events,
        status: None,
        open_pipes,
    };
    let timed_out = !watch.wait_until(timeout.map(|t| start + t));
    if timed_out {
        end_group(group, &mut watch);
    }
    let take = |buf: &Arc<Mutex<Vec<u8>>>| buf.lock().map(|b| b.clone()).unwrap_or_default();
    Ok(Finished {
        status: if timed_out {
            None
        } else {
            watch.status.flatten()
        },
        stdout: take(&stdout),
        stderr: take(&stderr),
        timed_out,
    })
}

/// Copies `pipe` into `buf` until it closes, then says so.
fn drain(
    mut pipe: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
    tx: std::sync::mpsc::Sender<Event>,
) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if let Ok(mut b) = buf.lock() {
                        b.extend_from_slice(&chunk[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

/// Waits for `child` to exit, then says so with its status.
fn reap(mut child: Child, tx: std::sync::mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let _ = tx.send(Event::Exited(child.wait().ok()));
    });
}

/// Sends `signal` to every process of `group`; false when none is left.
fn signal(group: libc::pid_t, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
    if unsafe { libc::kill(-group, signal) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// SIGTERM to the group, up to [`GRACE`] for it to end, then SIGKILL; returns when
/// the leader was reaped, the pipes closed and no process of the group is left (or,
/// after SIGKILL, at the latest after [`GRACE`] and [`DRAIN`]).
fn end_group(group: libc::pid_t, watch: &mut Watch) {
    if signal(group, libc::SIGTERM) && !settle(group, watch, Instant::now() + GRACE) {
        signal(group, libc::SIGKILL);
        // The leader cannot outlive SIGKILL; pipes held outside the group are given up on.
        settle(group, watch, Instant::now() + GRACE + DRAIN);
    }
}

/// Waits until the run ended and `group` is empty, or until `until`; true if so.
fn settle(group: libc::pid_t, watch: &mut Watch, until: Instant) -> bool {
    loop {
        let ended = watch.wait_until(Some((Instant::now() + TICK).min(until)));
        if ended && !signal(group, 0) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        if ended {
            // The leader is gone but some of its group lives on: look again soon.
            std::thread::sleep(TICK);
        }
    }
}
