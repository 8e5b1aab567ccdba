//! Verify windows: the chunks past the first MiB grouped by [`WINDOW`]-sized spans of
//! the target, and a tracker that tells the read-back when a window is fully written,
//! so a window is verified while the next ones are being written.

use std::sync::{Condvar, Mutex};

use super::chunks::{Chunk, HEAD};

/// Span of the target verified as one unit (a multiple of the chunk size).
pub const WINDOW: u64 = 64 << 20;

/// One window: plan chunks `first..end`, target bytes `start..stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First plan index.
    pub first: usize,
    /// One past the last plan index.
    pub end: usize,
    /// First target byte of the span (never inside the first MiB).
    pub start: u64,
    /// One past the last target byte of the span.
    pub stop: u64,
}

/// Windows of `plan` (chunks in the first MiB excluded: they are written last) and,
/// for every plan index, the window it belongs to.
pub fn windows(plan: &[Chunk]) -> (Vec<Window>, Vec<Option<usize>>) {
    let mut out: Vec<Window> = Vec::new();
    let mut of = vec![None; plan.len()];
    for (i, c) in plan.iter().enumerate() {
        if c.offset < HEAD {
            continue;
        }
        let id = c.offset / WINDOW;
        match out.last_mut() {
            Some(w) if w.stop == (id + 1) * WINDOW => w.end = i + 1,
            _ => out.push(Window {
                first: i,
                end: i + 1,
                start: (id * WINDOW).max(HEAD),
                stop: (id + 1) * WINDOW,
            }),
        }
        of[i] = Some(out.len() - 1);
    }
    (out, of)
}

#[derive(Debug)]
struct State {
    done: Vec<usize>,
    aborted: bool,
}

/// Counts written chunks per window; the read-back waits on it.
#[derive(Debug)]
pub struct Tracker {
    need: Vec<usize>,
    state: Mutex<State>,
    cv: Condvar,
}

impl Tracker {
    /// A tracker for `windows`, nothing written yet.
    pub fn new(windows: &[Window]) -> Self {
        Self {
            need: windows.iter().map(|w| w.end - w.first).collect(),
            state: Mutex::new(State {
                done: vec![0; windows.len()],
                aborted: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Records that one chunk of window `w` is written.
    pub fn chunk_written(&self, w: usize) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = s.done.get_mut(w) {
            *d += 1;
            if *d >= self.need[w] {
                self.cv.notify_all();
            }
        }
    }

    /// Wakes every waiter for good: the flash stopped.
    pub fn abort(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.aborted = true;
        self.cv.notify_all();
    }

    /// Blocks until every chunk of window `w` is written (true) or the flash stopped
    /// (false).
    pub fn wait(&self, w: usize) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if s.done.get(w).is_some_and(|&d| d >= self.need[w]) {
                return true;
            }
            if s.aborted || w >= s.done.len() {
                return false;
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunks::plan;
    use super::super::source::SourceRange;
    use super::*;

    fn r(offset: u64, len: u64) -> SourceRange {
        SourceRange {
            offset,
            len,
            sha256: None,
        }
    }

    #[test]
    fn windows_skip_the_head_and_split_at_window_boundaries() {
        let mib = 1u64 << 20;
        let p = plan(&[r(0, 9 * mib), r(62 * mib, 4 * mib), r(200 * mib, mib)]);
        let (w, of) = windows(&p);
        assert_eq!(of[0], None, "first MiB is not in a window");
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].start, w[0].stop), (mib, 64 * mib));
        assert_eq!((w[1].start, w[1].stop), (64 * mib, 128 * mib));
        assert_eq!((w[2].start, w[2].stop), (192 * mib, 256 * mib));
        for (k, win) in w.iter().enumerate() {
            for i in win.first..win.end {
                assert_eq!(of[i], Some(k));
                assert!(p[i].offset >= win.start && p[i].offset + p[i].len <= win.stop);
            }
        }
        assert_eq!(w[2].end, p.len());
    }

    #[test]
    fn tracker_waits_for_all_chunks_or_abort() {
        let w = [Window {
            first: 0,
            end: 2,
            start: 0,
            stop: WINDOW,
        }];
        let t = Tracker::new(&w);
        std::thread::scope(|s| {
            let h = s.spawn(|| t.wait(0));
            t.chunk_written(0);
            t.chunk_written(0);
            assert!(h.join().unwrap());
        });
        let t = Tracker::new(&w);
        std::thread::scope(|s| {
            let h = s.spawn(|| t.wait(0));
            t.chunk_written(0);
            t.abort();
            assert!(!h.join().unwrap());
        });
    }
}
