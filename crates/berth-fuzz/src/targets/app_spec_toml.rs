//! App specs as operators write them (`berth apps deploy FILE.toml`): `AppSpec::from_toml`.

use berth_core::AppSpec;

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let is_table = toml::from_str::<toml::Table>(text).is_ok();
    crate::app_spec(AppSpec::from_toml(text), is_table);
}
