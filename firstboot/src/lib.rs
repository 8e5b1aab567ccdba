//! piimg's first-boot agent as a library: the steps the agent runs on the Pi (see
//! `agent::run`); the card contract it reads is the `piimg-contract` crate.

pub mod agent;
pub mod api_retry;
pub mod cli;
pub mod ctx;
pub mod error;
pub mod fsx;
pub mod http;
pub mod join;
pub mod log;
pub mod peer;
pub mod runner;
pub mod state;
pub mod steps;
pub mod time;
