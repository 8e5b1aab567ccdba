//! Fuzz target: see [`piimg_fuzz::harness::contract`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    piimg_fuzz::harness::contract(data);
});
