//! The persisted state machine ([`STATE_FILE`](piimg_contract::STATE_FILE)): which
//! steps are done, what was decided, and each step's latest outcome.

use crate::join::Join;
use piimg_contract::StepRecord;
use serde::{Deserialize, Serialize};

/// Version of the state file layout.
pub const STATE_VERSION: u32 = 1;

/// Everything the agent remembers across reboots and power cuts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Layout version ([`STATE_VERSION`]).
    pub version: u32,
    /// Names of finished steps, in the order they finished.
    pub done: Vec<String>,
    /// The join decision, once made (kept so a resumed run does not change its mind).
    pub join: Option<Join>,
    /// Unix time of the first run.
    pub started_at: u64,
    /// Latest outcome per step, in first-run order (one entry per step).
    pub records: Vec<StepRecord>,
    /// True once every step is done.
    pub complete: bool,
}

impl State {
    /// A fresh state started at `now`.
    pub fn new(now: u64) -> Self {
        State {
            version: STATE_VERSION,
            started_at: now,
            ..State::default()
        }
    }

    /// True if `step` finished.
    pub fn is_done(&self, step: &str) -> bool {
        self.done.iter().any(|s| s == step)
    }

    /// Marks `step` finished (once).
    pub fn mark_done(&mut self, step: &str) {
        if !self.is_done(step) {
            self.done.push(step.to_string());
        }
    }

    /// Records the latest outcome of a step, replacing an earlier one.
    pub fn record(&mut self, rec: StepRecord) {
        match self.records.iter_mut().find(|r| r.name == rec.name) {
            Some(old) => *old = rec,
            None => self.records.push(rec),
        }
    }
}
