//! piimg's first-boot agent as a library: the steps the agent runs on the Pi (see
//! `agent::run`); the card contract it reads is the `piimg-contract` crate.
//!
//! Imports point one way (no circle): `cli` on top, then `agent` (the
//! run loop), `steps` (what each step does), the join policy (`ha_join`, `join_policy`,
//! `api_retry`, `peer`), the stores and doors (`state`, `status`, `progress`,
//! `secrets`, `node_fs`, `exec`, `http`, `join`), and plain helpers at the bottom.

pub mod agent;
pub mod api_retry;
pub mod block;
pub mod cli;
pub mod disk_lock;
pub mod error;
pub mod exec;
pub mod fsx;
pub mod ha_join;
pub mod http;
pub mod join;
pub mod join_policy;
pub mod log;
pub mod node_fs;
pub mod options;
pub mod peer;
pub mod progress;
pub mod retry;
pub mod runner;
pub mod secrets;
pub mod state;
pub mod status;
pub mod step_id;
pub mod steps;
pub mod supervise;
pub mod time;
