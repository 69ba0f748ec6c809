//! ACL policies as `berth acl policy apply NAME FILE.toml` sends them: `Policy::from_toml`.
//! The input's first line is the policy name, the rest the file.
#![no_main]

use berth_core::acl::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, document) = berth_fuzz::policy_input(text);
    let is_table = toml::from_str::<toml::Table>(document).is_ok();
    berth_fuzz::acl_policy(name, Policy::from_toml(name, document), is_table);
});
