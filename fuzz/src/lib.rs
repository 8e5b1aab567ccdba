//! The fuzz targets' bodies, shared with the regression test of the piimg crate
//! (`builder/tests/fuzz_regressions.rs` includes [`harness`] by path), so a saved
//! input replays the exact calls the fuzzer made, under plain `cargo test`.

pub mod harness;
