//! App specs as operators write them (`berth apps deploy FILE.toml`): `AppSpec::from_toml`.
#![no_main]

use berth_core::AppSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let is_table = toml::from_str::<toml::Table>(text).is_ok();
    berth_fuzz::app_spec(AppSpec::from_toml(text), is_table);
});
