//! The one retry helper: an attempt repeated with exponential backoff (250 ms,
//! doubling up to a cap) until it succeeds, gives up, or its deadline passes. Every
//! wait in the agent (a default route, a synchronised clock, a server that is still
//! starting, a peer to join, a stale etcd member, node Ready) goes through [`retry`].

use std::time::{Duration, Instant};

/// First pause between two attempts.
const FIRST_DELAY: Duration = Duration::from_millis(250);

/// What one attempt decided.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// Finished: return this.
    Done(T),
    /// Give up now with this error.
    Stop(E),
    /// Try again after the next pause, cut short at `deadline` (time since the first
    /// attempt); pauses double up to `cap`.
    Again {
        /// No pause ends later than this, measured from the start.
        deadline: Duration,
        /// Longest pause.
        cap: Duration,
    },
}

/// The clock of a retry loop, handed to every attempt.
#[derive(Debug)]
pub struct Backoff {
    start: Instant,
    delay: Duration,
}

impl Backoff {
    /// Time since the first attempt started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn pause(&mut self, deadline: Duration, cap: Duration) {
        let left = deadline.saturating_sub(self.elapsed());
        std::thread::sleep(self.delay.min(left));
        self.delay = (self.delay * 2).min(cap);
    }
}

/// Runs `attempt` until it returns [`Attempt::Done`] or [`Attempt::Stop`], pausing
/// with backoff between attempts as each [`Attempt::Again`] says.
pub fn retry<T, E>(mut attempt: impl FnMut(&Backoff) -> Attempt<T, E>) -> Result<T, E> {
    let mut b = Backoff {
        start: Instant::now(),
        delay: FIRST_DELAY,
    };
    loop {
        match attempt(&b) {
            Attempt::Done(v) => return Ok(v),
            Attempt::Stop(e) => return Err(e),
            Attempt::Again { deadline, cap } => b.pause(deadline, cap),
        }
    }
}

/// Longest pause of [`wait_for`].
const WAIT_CAP: Duration = Duration::from_secs(30);

/// Waits (pauses up to 30 s) until `check` returns `Ok(Some(v))`, or `limit` elapses;
/// returns the last failure reason on timeout.
pub fn wait_for<T>(
    limit: Duration,
    mut check: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T, String> {
    let mut last = String::from("no attempt finished");
    retry(|b| {
        match check() {
            Ok(Some(v)) => return Attempt::Done(v),
            Ok(None) => {}
            Err(e) => last = e,
        }
        if b.elapsed() >= limit {
            Attempt::Stop(std::mem::take(&mut last))
        } else {
            Attempt::Again {
                deadline: limit,
                cap: WAIT_CAP,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_until_done_and_stops_at_the_deadline_with_the_last_reason() {
        let mut n = 0;
        let got = wait_for(Duration::from_secs(5), || {
            n += 1;
            if n < 3 {
                Err(format!("attempt {n}"))
            } else {
                Ok(Some(n))
            }
        });
        assert_eq!(got, Ok(3));
        let t = Instant::now();
        let got: Result<(), String> =
            wait_for(Duration::from_millis(300), || Err("still down".into()));
        assert_eq!(got, Err("still down".to_string()));
        assert!(t.elapsed() >= Duration::from_millis(300));
        let stopped: Result<(), &str> = retry(|_| Attempt::Stop("refused"));
        assert_eq!(stopped, Err("refused"));
    }
}
