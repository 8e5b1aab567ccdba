//! Verify windows: the chunks past the first MiB grouped into windows of at most
//! [`Budget::chunks`] chunks within one [`Budget::span`]-sized span of the target, and
//! a tracker that tells the read-back when a window is fully written, so a window is
//! verified while the next ones are being written. A window's written buffers are kept
//! until it is compared, so the window size bounds the memory verification holds.

use std::sync::{Condvar, Mutex};

use super::chunks::{CHUNK, Chunk, HEAD};

/// Largest span of the target verified as one unit.
pub const WINDOW: u64 = 64 << 20;

/// Most memory kept for written-but-not-yet-verified buffers: two windows.
pub const RETAIN_MAX: u64 = 2 * WINDOW;

/// How big windows are, from the memory that may be kept for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most chunks (each a [`CHUNK`]-sized buffer) in one window.
    pub chunks: usize,
}

impl Budget {
    /// Windows whose two in-flight copies fit in `retain` bytes (at least one chunk,
    /// at most [`WINDOW`]).
    pub fn for_memory(retain: u64) -> Self {
        let chunks = (retain.min(RETAIN_MAX) / 2 / CHUNK).max(1);
        Self {
            chunks: chunks as usize,
        }
    }

    /// [`RETAIN_MAX`], or a quarter of the memory available now when that is less.
    pub fn from_system() -> Self {
        let avail = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemAvailable:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(RETAIN_MAX, |kib| kib * 1024 / 4);
        Self::for_memory(avail)
    }

    /// Span of the target one window stays within.
    pub fn span(&self) -> u64 {
        self.chunks as u64 * CHUNK
    }
}

/// One window: plan chunks `first..end`, target bytes `start..stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First plan index.
    pub first: usize,
    /// One past the last plan index.
    pub end: usize,
    /// First target byte written in the window (never inside the first MiB).
    pub start: u64,
    /// One past the last target byte written in the window.
    pub stop: u64,
}

/// Windows of `plan` (chunks in the first MiB excluded: they are written last) and,
/// for every plan index, the window it belongs to. A window never crosses a
/// `budget.span()` boundary and never holds more than `budget.chunks` chunks (many
/// small ranges make many small chunks).
pub fn windows(plan: &[Chunk], budget: Budget) -> (Vec<Window>, Vec<Option<usize>>) {
    let span = budget.span();
    let mut out: Vec<Window> = Vec::new();
    let mut of = vec![None; plan.len()];
    for (i, c) in plan.iter().enumerate() {
        if c.offset < HEAD {
            continue;
        }
        let id = c.offset / span;
        match out.last_mut() {
            Some(w) if (w.stop - 1) / span == id && w.end - w.first < budget.chunks => {
                w.end = i + 1;
                w.stop = c.offset + c.len;
            }
            _ => out.push(Window {
                first: i,
                end: i + 1,
                start: c.offset,
                stop: c.offset + c.len,
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
        let (w, of) = windows(&p, Budget::for_memory(RETAIN_MAX));
        assert_eq!(of[0], None, "first MiB is not in a window");
        assert_eq!(w.len(), 3);
        assert_eq!((w[0].start, w[0].stop), (mib, 64 * mib));
        assert_eq!((w[1].start, w[1].stop), (64 * mib, 66 * mib));
        assert_eq!((w[2].start, w[2].stop), (200 * mib, 201 * mib));
        for (k, win) in w.iter().enumerate() {
            for i in win.first..win.end {
                assert_eq!(of[i], Some(k));
                assert!(p[i].offset >= win.start && p[i].offset + p[i].len <= win.stop);
            }
        }
        assert_eq!(w[2].end, p.len());
    }

    #[test]
    fn windows_hold_at_most_the_budgeted_chunks() {
        let mib = 1u64 << 20;
        // 40 one-MiB ranges with gaps: many small chunks in one 64 MiB span.
        let ranges: Vec<_> = (0..40).map(|k| r(HEAD + k * 1536 * 1024, mib)).collect();
        let p = plan(&ranges);
        let budget = Budget::for_memory(RETAIN_MAX);
        assert_eq!(budget.chunks, 16);
        let (w, _) = windows(&p, budget);
        assert!(w.len() >= 3, "{w:?}");
        assert!(w.iter().all(|w| w.end - w.first <= budget.chunks));
        assert_eq!(w.last().unwrap().end, p.len());
        // Little memory: windows shrink, down to one chunk.
        assert_eq!(Budget::for_memory(32 * mib).chunks, 4);
        assert_eq!(Budget::for_memory(mib).chunks, 1);
        let one = Budget::for_memory(0);
        let (w, _) = windows(&p, one);
        assert_eq!(w.len(), p.len(), "one chunk per window");
    }

    #[test]
    fn tracker_waits_for_all_chunks_or_abort() {
        let w = [Window {
            first: 0,
            end: 2,
            start: HEAD,
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
