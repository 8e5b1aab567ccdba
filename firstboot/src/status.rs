//! The agent's progress report on the card ([`STATUS_SLOTS_FILE`]): [`write_status`] is
//! the one function that puts it there.

use crate::state::State;
use crate::time::{now, rfc3339};
use piimg_contract::status_slots::{self, STATUS_SLOTS_FILE};
use piimg_contract::{AgentStatus, CONTRACT_VERSION, StepResult};
use std::path::Path;

/// Where the status goes and whose it is.
#[derive(Debug, Clone, Copy)]
pub struct StatusCard<'a> {
    /// The boot partition's root.
    pub boot: &'a Path,
    /// The node's name (from the card).
    pub node_name: &'a str,
    /// `--dry-run`: nothing is written.
    pub dry: bool,
}

/// Writes the card status (not under `--dry-run`; a card that cannot be written only warns).
pub fn write_status(
    card: &StatusCard,
    state: &State,
    step: &str,
    result: StepResult,
    message: &str,
) {
    if card.dry {
        return;
    }
    let status = AgentStatus {
        contract_version: CONTRACT_VERSION,
        node_name: card.node_name.to_string(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        step: step.into(),
        result,
        message: message.into(),
        complete: state.complete,
        started_at: rfc3339(state.started_at),
        updated_at: rfc3339(now()),
        steps: state.records.clone(),
    };
    // The card may be missing or read-only; the journal still has everything.
    // In place into the slots the builder preallocated: a power cut cannot lose it.
    if let Err(e) = status_slots::write_status(&card.boot.join(STATUS_SLOTS_FILE), &status) {
        crate::log::warn(&format!("cannot write card {STATUS_SLOTS_FILE}: {e}"));
    }
}
