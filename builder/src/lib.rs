//! piimg: turn the official Raspberry Pi OS Lite (arm64) image into ready-to-flash,
//! per-node SD card images for a highly available k3s cluster.
//!
//! Data flows one way: profile → plan → card → image.

pub mod agent;
pub mod atomic;
pub mod bmap;
pub mod build;
pub mod card;
pub mod cluster;
pub mod date;
pub mod digest;
pub mod error_text;
pub mod fetch;
pub mod flash;
pub mod image;
pub mod inputs;
pub mod interrupt;
pub mod manifest;
pub mod output;
pub mod pki;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod sparse;
pub mod storage;
pub mod upstream;
