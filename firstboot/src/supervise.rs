//! Running a child process to completion, optionally under a deadline.
//!
//! Its output is read by two threads (and its input written by a third), so a
//! program that fills one pipe while the agent waits on another never deadlocks.
//! With a deadline the program runs in its own process group; when the deadline
//! passes before it has exited and closed its output, the whole group gets SIGTERM,
//! [`GRACE`] to end, then SIGKILL, so a script's children die with it.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a timed-out process group has between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// How long, once the group is gone, the agent waits for the output pipes to close: a
/// process that left the group (`setsid`) may hold them for ever; its output is cut.
const DRAIN: Duration = Duration::from_secs(2);

/// How often an exit is looked for where no event announces it: the leader's, once
/// its pipes closed, under a deadline; the group's survivors after SIGTERM.
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

/// The state of one run: the child and which of its pipes are still open.
struct Watch {
    child: Child,
    /// One message per output pipe that reached its end.
    closed: Receiver<()>,
    open_pipes: usize,
    /// `Some` once the child was reaped (its status, `None` if waiting failed).
    exit: Option<Option<ExitStatus>>,
}

impl Watch {
    /// Reaps the child if it has exited; true once it has.
    fn exited(&mut self) -> bool {
        if self.exit.is_none() {
            match self.child.try_wait() {
                Ok(None) => {}
                Ok(Some(s)) => self.exit = Some(Some(s)),
                Err(_) => self.exit = Some(None),
            }
        }
        self.exit.is_some()
    }

    /// Waits until the child exited and closed its output, or until `until`
    /// passed; true if it did. Pipes are waited for on a channel; the exit, once
    /// the pipes are closed, by `wait` (no deadline) or every [`TICK`].
    fn wait_until(&mut self, until: Option<Instant>) -> bool {
        while self.open_pipes > 0 {
            let got = match until {
                None => self
                    .closed
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(t) => self
                    .closed
                    .recv_timeout(t.saturating_duration_since(Instant::now())),
            };
            match got {
                Ok(()) => self.open_pipes -= 1,
                // Every reader gone: no pipe is read any more.
                Err(RecvTimeoutError::Disconnected) => self.open_pipes = 0,
                Err(RecvTimeoutError::Timeout) => {
                    // Reap an exited leader anyway: a zombie would keep its group alive.
                    self.exited();
                    return false;
                }
            }
        }
        let Some(t) = until else {
            if self.exit.is_none() {
                self.exit = Some(self.child.wait().ok());
            }
            return true;
        };
        // The pipes close a moment before the exit is visible: look again soon, then
        // less often.
        let mut pause = Duration::from_millis(1);
        loop {
            if self.exited() {
                return true;
            }
            let now = Instant::now();
            if now >= t {
                return false;
            }
            std::thread::sleep(pause.min(t - now));
            pause = (pause * 2).min(TICK);
        }
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
    let (tx, closed) = channel();
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let mut open_pipes = 0;
    let mut started = Ok(());
    if let Some(pipe) = child.stdout.take() {
        started = started.and_then(|_| drain(pipe, stdout.clone(), tx.clone()));
        open_pipes += 1;
    }
    if let Some(pipe) = child.stderr.take() {
        started = started.and_then(|_| drain(pipe, stderr.clone(), tx.clone()));
        open_pipes += 1;
    }
    if let (Some(mut pipe), Some(text)) = (child.stdin.take(), input) {
        let text = text.to_string();
        started = started.and_then(|_| {
            std::thread::Builder::new()
                .name("cmd-stdin".into())
                // A program that exits without reading all of it reports why itself.
                .spawn(move || drop(pipe.write_all(text.as_bytes())))
                .map(drop)
        });
    }
    drop(tx);
    if let Err(e) = started {
        // No thread to read its output: the program must not run unwatched.
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    let group = child.id() as libc::pid_t;
    let mut watch = Watch {
        child,
        closed,
        open_pipes,
        exit: None,
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
            watch.exit.flatten()
        },
        stdout: take(&stdout),
        stderr: take(&stderr),
        timed_out,
    })
}

/// Copies `pipe` into `buf` on a thread of its own until it closes, then says so.
fn drain(
    mut pipe: impl Read + Send + 'static,
    buf: Arc<Mutex<Vec<u8>>>,
    closed: Sender<()>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cmd-output".into())
        .spawn(move || {
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
            let _ = closed.send(());
        })
        .map(drop)
}

/// Sends `signal` to every process of `group`; false when none is left.
fn signal(group: libc::pid_t, signal: libc::c_int) -> bool {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is shared.
    if unsafe { libc::kill(-group, signal) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// SIGTERM to the group, up to [`GRACE`] for it to end, then SIGKILL; returns once
/// no process of the group is left (after SIGKILL at the latest after another
/// [`GRACE`]: a process stuck in the kernel cannot be waited for).
fn end_group(group: libc::pid_t, watch: &mut Watch) {
    if signal(group, libc::SIGTERM) && !settle(group, watch, Instant::now() + GRACE) {
        signal(group, libc::SIGKILL);
        settle(group, watch, Instant::now() + GRACE);
    }
}

/// Waits until `group` is empty (its leader reaped) or until `until`; true if it
/// is. Output pipes still open then are held by a process outside the group
/// (`setsid`): they get [`DRAIN`] to close, then are given up on.
fn settle(group: libc::pid_t, watch: &mut Watch, until: Instant) -> bool {
    loop {
        let ended = watch.wait_until(Some((Instant::now() + TICK).min(until)));
        if !signal(group, 0) {
            if !ended {
                watch.wait_until(Some(Instant::now() + DRAIN));
            }
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
