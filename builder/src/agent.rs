//! The first-boot agent binary, embedded at build time (see `builder/build.rs`).

/// The static aarch64 `piimg-firstboot` executable that every card carries.
pub static AGENT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/piimg-firstboot"));
