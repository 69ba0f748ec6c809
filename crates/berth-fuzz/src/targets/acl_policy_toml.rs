//! ACL policies as `berth acl policy apply NAME FILE.toml` sends them: `Policy::from_toml`.
//! The input's first line is the policy name, the rest the file.

use berth_core::acl::Policy;

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, document) = crate::policy_input(text);
    let is_table = toml::from_str::<toml::Table>(document).is_ok();
    crate::acl_policy(name, Policy::from_toml(name, document), is_table);
}
