//! App specs as the server's API takes them (`PUT /v1/apps/...`): `AppSpec::from_json`.

use berth_core::AppSpec;

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let is_object = matches!(
        serde_json::from_str::<serde_json::Value>(text),
        Ok(serde_json::Value::Object(_))
    );
    crate::app_spec(AppSpec::from_json(text), is_object);
}
