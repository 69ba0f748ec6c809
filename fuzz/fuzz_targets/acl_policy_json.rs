//! ACL policies as `PUT /v1/acl/policy/NAME` takes them: `Policy::from_json`. The input's
//! first line is the policy name (from the URL), the rest the body.
#![no_main]

use berth_core::acl::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, document) = berth_fuzz::policy_input(text);
    let is_object = matches!(
        serde_json::from_str::<serde_json::Value>(document),
        Ok(serde_json::Value::Object(_))
    );
    berth_fuzz::acl_policy(name, Policy::from_json(name, document), is_object);
});
