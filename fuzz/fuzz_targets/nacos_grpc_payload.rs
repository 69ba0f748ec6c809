//! See `berth_fuzz::targets::nacos_grpc_payload`: the parser and its properties live in the
//! workspace so the test suite replays this target's seeds and regressions too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| berth_fuzz::targets::nacos_grpc_payload::run(data));
