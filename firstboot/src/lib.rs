//! piimg's first-boot agent as a library: the card contract shared with the builder,
//! and (in later modules) the steps the agent runs on the Pi.

pub mod contract;
