//! App specs as the server's API takes them (`PUT /v1/apps/...`): `AppSpec::from_json`.
#![no_main]

use berth_core::AppSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let is_object = matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    );
    berth_fuzz::app_spec(AppSpec::from_json(text), is_object);
});
