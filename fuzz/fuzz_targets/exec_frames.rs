//! See `berth_fuzz::targets::exec_frames`: the parser and its properties live in the workspace
//! so the test suite replays this target's seeds and regressions too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::targets::exec_frames::run(data));
