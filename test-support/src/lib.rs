//! Test helpers shared by piimg's crates (a dev-dependency only): test cards
//! ([`node`]), a Raspberry Pi OS-shaped root tree with a card on its boot partition
//! that runs an agent binary ([`fixture`], [`vintage`]), and STAND-INS for the
//! servers a node talks to ([`standin`]). Nothing here is or runs real k3s.
//!
//! It depends on the card contract only, so the agent's tests do not pull in the
//! builder and the builder's do not pull in the agent.

pub mod files;
pub mod fixture;
pub mod net;
pub mod node;
pub mod standin;
pub mod vintage;

pub use fixture::{Fixture, card_status};
pub use node::*;

/// A finished process's stderr as text (for assertion messages).
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
