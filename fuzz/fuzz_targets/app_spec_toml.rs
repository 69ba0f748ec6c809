//! See `berth_fuzz::targets::app_spec_toml`: the parser and its properties live in the workspace
//! so the test suite replays this target's seeds and regressions too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::targets::app_spec_toml::run(data));
