//! ACL policies as `PUT /v1/acl/policy/NAME` takes them: `Policy::from_json`. The input's
//! first line is the policy name (from the URL), the rest the body.

use berth_core::acl::Policy;

/// One input: parsed, and what came out checked against what must hold.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, document) = crate::policy_input(text);
    let is_object = matches!(
        serde_json::from_str::<serde_json::Value>(document),
        Ok(serde_json::Value::Object(_))
    );
    crate::acl_policy(name, Policy::from_json(name, document), is_object);
}
