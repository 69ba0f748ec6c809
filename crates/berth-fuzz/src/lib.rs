//! Fuzz targets for every parser that takes outside input ([`targets`]), and the
//! properties they share: what every accepted document and every refusal must satisfy,
//! beyond not panicking. A test-only crate: nothing in Berth depends on it.

pub mod targets;

use berth_core::acl::{Policy, PolicyErrors, check_policy_name};
use berth_core::{AppSpec, FieldError, SpecErrors};

/// A refusal people can act on: something is named, said and fixable.
fn assert_actionable(errors: &[FieldError], document_is_object: bool) {
    assert!(!errors.is_empty(), "a refusal without a problem");
    for e in errors {
        assert!(!e.message.is_empty(), "a problem without a message: {e:?}");
        assert!(!e.fix.is_empty(), "a problem without a fix: {e:?}");
        // Only a document that is not an object at all is refused as a whole; inside one,
        // every problem names its field (an unknown key spelt "" is named by its message).
        if document_is_object {
            assert!(
                !e.field.is_empty() || e.message == "unknown field ``",
                "a problem in an object names no field: {e:?}"
            );
        }
    }
}

/// An app spec parsed from TOML or JSON: an accepted one is valid and survives a round
/// trip through both formats unchanged; a refused one names its fields.
pub fn app_spec(parsed: Result<AppSpec, SpecErrors>, document_is_object: bool) {
    let spec = match parsed {
        Ok(spec) => spec,
        Err(errors) => return assert_actionable(&errors.0, document_is_object),
    };
    if let Err(e) = spec.validate() {
        panic!("an accepted spec fails validation: {e}\n{spec:?}");
    }
    let json = serde_json::to_string(&spec).expect("an accepted spec serialises to JSON");
    match AppSpec::from_json(&json) {
        Ok(again) => assert_eq!(again, spec, "the JSON round trip changed the spec: {json}"),
        Err(e) => panic!("an accepted spec, as JSON, is refused: {e}\n{json}"),
    }
    let toml = toml::to_string(&spec).expect("an accepted spec serialises to TOML");
    match AppSpec::from_toml(&toml) {
        Ok(again) => assert_eq!(again, spec, "the TOML round trip changed the spec:\n{toml}"),
        Err(e) => panic!("an accepted spec, as TOML, is refused: {e}\n{toml}"),
    }
}

/// Splits a fuzz input into the policy name (its first line) and the document.
pub fn policy_input(text: &str) -> (&str, &str) {
    text.split_once('\n').unwrap_or(("p", text))
}

/// A policy parsed from JSON or TOML under `name`: an accepted one carries a valid name and
/// survives a round trip through both formats; a refused one names its fields.
pub fn acl_policy(name: &str, parsed: Result<Policy, PolicyErrors>, document_is_object: bool) {
    let policy = match parsed {
        Ok(policy) => policy,
        Err(errors) => return assert_actionable(&errors.0, document_is_object),
    };
    assert_eq!(policy.name, name);
    assert!(
        check_policy_name(name).is_ok(),
        "accepted under a bad name {name:?}"
    );
    for rule in &policy.rules {
        assert!(
            !rule.capabilities.is_empty(),
            "a rule that grants nothing: {policy:?}"
        );
    }
    let json = serde_json::to_string(&policy).expect("an accepted policy serialises to JSON");
    match Policy::from_json(name, &json) {
        Ok(again) => assert_eq!(
            again, policy,
            "the JSON round trip changed the policy: {json}"
        ),
        Err(e) => panic!("an accepted policy, as JSON, is refused: {e}\n{json}"),
    }
    let toml = toml::to_string(&policy).expect("an accepted policy serialises to TOML");
    match Policy::from_toml(name, &toml) {
        Ok(again) => assert_eq!(
            again, policy,
            "the TOML round trip changed the policy:\n{toml}"
        ),
        Err(e) => panic!("an accepted policy, as TOML, is refused: {e}\n{toml}"),
    }
}

/// True when `part` is a slice of `whole` (the same bytes, not a copy).
pub fn within(whole: &[u8], part: &[u8]) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let p = part.as_ptr() as usize;
    part.is_empty() || (p >= start && p + part.len() <= end)
}
