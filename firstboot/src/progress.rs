//! Progress of a long step (e.g. waiting for a peer), reported in the log and on the
//! card's status, so a pulled card says what the node was waiting for and why.

use crate::state::State;
use crate::status::{StatusCard, write_status};
use crate::step_id::StepId;
use piimg_contract::StepResult;

/// Reports progress of one running step.
#[derive(Debug, Clone, Copy)]
pub struct Progress<'a> {
    /// Where the status goes.
    pub card: StatusCard<'a>,
    /// The state as the step started (what the status lists besides the message).
    pub state: &'a State,
    /// The running step.
    pub step: StepId,
}

impl Progress<'_> {
    /// Logs `msg` and puts it on the card as the running step's message.
    pub fn report(&self, msg: &str) {
        crate::log::info(&format!("step {}: {msg}", self.step));
        write_status(
            &self.card,
            self.state,
            self.step.name(),
            StepResult::Running,
            msg,
        );
    }
}
