//! Fuzz target: see [`piimg_fuzz::harness::bmap`].
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    piimg_fuzz::harness::bmap(data);
});
