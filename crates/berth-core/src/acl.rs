//! Access control: capabilities, policy documents and the question "may this token do
//! CAPABILITY on this app / node?".
//!
//! Owns: [`Capability`], [`Rule`], [`Policy`] (parsed from untrusted JSON or TOML,
//! reporting every problem with the field it is in, like app specs), the name patterns
//! rules use (`*`, `demo/*`, an exact id) and [`Authority`], the union of a token's
//! policies that every API request is checked against. The built-in policy
//! [`MANAGEMENT`] grants everything and cannot be stored or redefined. Pure: tokens,
//! secrets and storage live in the server and the store.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::suggest::closest;
use crate::validate::FieldError;

/// The reserved policy that grants every capability everywhere, ACL management included.
pub const MANAGEMENT: &str = "management";

/// What a token may do. Serialized as written in policies (`node-write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// See apps, instances, deployments, events (on apps) or nodes (on nodes).
    Read,
    /// Create, update, scale, restart, remove, roll back; promote or cancel deployments.
    Deploy,
    /// Read instance logs.
    Logs,
    /// Run live diagnostics.
    Diagnose,
    /// Run commands inside instances.
    Exec,
    /// Drain nodes, change their eligibility.
    NodeWrite,
    /// ACLs, audit, debug views and metrics: only the built-in `management` policy.
    Management,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Read,
        Capability::Deploy,
        Capability::Logs,
        Capability::Diagnose,
        Capability::Exec,
        Capability::NodeWrite,
        Capability::Management,
    ];
    /// The capabilities an `apps` rule may grant.
    pub const ON_APPS: [Capability; 5] = [
        Capability::Read,
        Capability::Deploy,
        Capability::Logs,
        Capability::Diagnose,
        Capability::Exec,
    ];
    /// The capabilities a `nodes` rule may grant.
    pub const ON_NODES: [Capability; 2] = [Capability::Read, Capability::NodeWrite];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::Deploy => "deploy",
            Capability::Logs => "logs",
            Capability::Diagnose => "diagnose",
            Capability::Exec => "exec",
            Capability::NodeWrite => "node-write",
            Capability::Management => "management",
        }
    }

    pub fn parse(raw: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == raw)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name pattern: `*` (everything), `PREFIX*` (ids starting with PREFIX, e.g. `demo/*`)
/// or an exact id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern, or why it is not one (as the fix to show).
    pub fn parse(raw: &str) -> Result<Pattern, String> {
        if raw.is_empty() {
            return Err(
                "an empty pattern matches nothing; use `*`, `demo/*` or an exact id".into(),
            );
        }
        if raw.len() > 256 {
            return Err("patterns are at most 256 characters".into());
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '?' | '[' | ']'))
        {
            return Err(format!(
                "{bad:?} is not allowed in a pattern; use `*`, `demo/*` or an exact id"
            ));
        }
        // Only a final `*` is a wildcard (sliced by char, not byte: ids may be non-ASCII).
        if raw.strip_suffix('*').unwrap_or(raw).contains('*') {
            return Err(
                "`*` may only end a pattern (`*`, `demo/*`); list several rules for other shapes"
                    .into(),
            );
        }
        Ok(Pattern(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }
}

/// What a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Apps(Pattern),
    Nodes(Pattern),
}

/// One rule: capabilities on the apps or nodes a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    #[serde(flatten)]
    pub scope: Scope,
    pub capabilities: Vec<Capability>,
}

/// A named set of rules, as stored and as `PUT /v1/acl/policy/NAME` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub name: String,
    pub description: String,
    pub rules: Vec<Rule>,
}

/// Every problem found in one policy document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<FieldError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the policy has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

fn problem(
    field: impl Into<String>,
    message: impl Into<String>,
    fix: impl Into<String>,
) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
        fix: fix.into(),
    }
}

/// Checks a policy name: 1 to 64 of `A-Z a-z 0-9 - _ .`, and not the reserved
/// `management`.
pub fn check_policy_name(name: &str) -> Result<(), FieldError> {
    if name == MANAGEMENT {
        return Err(problem(
            "name",
            "`management` is the built-in policy and cannot be redefined or removed",
            "pick another name; attach `management` to a token to grant everything",
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(problem(
            "name",
            format!("{name:?} is not a policy name"),
            "use 1 to 64 letters, digits, `-`, `_` or `.`, like `demo-readers`",
        ))
    }
}

const TOP_FIELDS: &[&str] = &["name", "description", "rules"];
const RULE_FIELDS: &[&str] = &["apps", "nodes", "capabilities"];

fn unknown(errors: &mut Vec<FieldError>, obj: &Map<String, Value>, prefix: &str, known: &[&str]) {
    for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
        let fix = match closest(key, known) {
            Some(near) => format!("did you mean `{near}`? otherwise remove it"),
            None => format!("remove it; known fields: {}", known.join(", ")),
        };
        let field = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        errors.push(problem(field, format!("unknown field `{key}`"), fix));
    }
}

impl Policy {
    /// Parses and validates a JSON policy document for the policy `name`.
    pub fn from_json(name: &str, text: &str) -> Result<Policy, PolicyErrors> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            PolicyErrors(vec![problem(
                "",
                format!("not valid JSON: {e}"),
                "send an object like {\"rules\":[{\"apps\":\"demo/*\",\"capabilities\":[\"read\"]}]}",
            )])
        })?;
        Self::from_value(name, value)
    }

    /// Parses and validates a TOML policy document (the same fields as JSON).
    pub fn from_toml(name: &str, text: &str) -> Result<Policy, PolicyErrors> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            PolicyErrors(vec![problem(
                "",
                format!("not valid TOML: {}", e.message()),
                "write [[rules]] tables with apps = \"demo/*\" and capabilities = [\"read\"]",
            )])
        })?;
        let json = serde_json::to_value(value).map_err(|e| {
            PolicyErrors(vec![problem(
                "",
                format!("unsupported TOML value: {e}"),
                "use only strings, arrays and tables",
            )])
        })?;
        Self::from_value(name, json)
    }

    /// Parses and validates a generic value, reporting every problem at once.
    pub fn from_value(name: &str, value: Value) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();
        if let Err(e) = check_policy_name(name) {
            errors.push(e);
        }
        let Value::Object(obj) = value else {
            errors.push(problem(
                "",
                "a policy must be an object",
                "send {\"description\":\"...\",\"rules\":[...]}",
            ));
            return Err(PolicyErrors(errors));
        };
        unknown(&mut errors, &obj, "", TOP_FIELDS);
        match obj.get("name") {
            None => {}
            Some(Value::String(n)) if n == name => {}
            Some(other) => errors.push(problem(
                "name",
                format!("{other} differs from the policy name {name:?} in the request"),
                "leave name out, or make it equal to the name in the URL",
            )),
        }
        let description = match obj.get("description") {
            None => String::new(),
            Some(Value::String(d)) if d.len() <= 1024 => d.clone(),
            Some(Value::String(_)) => {
                errors.push(problem(
                    "description",
                    "longer than 1024 characters",
                    "shorten it",
                ));
                String::new()
            }
            Some(other) => {
                errors.push(problem(
                    "description",
                    format!("wrong value {other}"),
                    "use a string",
                ));
                String::new()
            }
        };
        let mut rules = Vec::new();
        match obj.get("rules") {
            None => errors.push(problem(
                "rules",
                "missing",
                "add rules, e.g. \"rules\":[{\"apps\":\"demo/*\",\"capabilities\":[\"read\"]}]",
            )),
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some(rule) = parse_rule(&mut errors, &format!("rules[{i}]"), item) {
                        rules.push(rule);
                    }
                }
            }
            Some(other) => errors.push(problem(
                "rules",
                format!("wrong value {other}"),
                "use an array of rules",
            )),
        }
        if errors.is_empty() {
            Ok(Policy {
                name: name.to_string(),
                description,
                rules,
            })
        } else {
            Err(PolicyErrors(errors))
        }
    }
}

fn parse_rule(errors: &mut Vec<FieldError>, at: &str, item: &Value) -> Option<Rule> {
    let Value::Object(obj) = item else {
        errors.push(problem(
            at,
            "a rule must be an object",
            "use {\"apps\":\"demo/*\",\"capabilities\":[\"read\"]}",
        ));
        return None;
    };
    let before = errors.len();
    unknown(errors, obj, at, RULE_FIELDS);
    let pattern = |errors: &mut Vec<FieldError>, key: &str| -> Option<Pattern> {
        match obj.get(key)? {
            Value::String(raw) => match Pattern::parse(raw) {
                Ok(p) => Some(p),
                Err(fix) => {
                    errors.push(problem(
                        format!("{at}.{key}"),
                        format!("bad pattern {raw:?}"),
                        fix,
                    ));
                    None
                }
            },
            other => {
                errors.push(problem(
                    format!("{at}.{key}"),
                    format!("wrong value {other}"),
                    "use a pattern string: `*`, `demo/*` or an exact id",
                ));
                None
            }
        }
    };
    let scope = match (obj.contains_key("apps"), obj.contains_key("nodes")) {
        (true, true) => {
            errors.push(problem(
                at,
                "a rule has both apps and nodes",
                "split it into one rule for apps and one for nodes",
            ));
            None
        }
        (false, false) => {
            errors.push(problem(
                at,
                "a rule names neither apps nor nodes",
                "add \"apps\":\"PATTERN\" or \"nodes\":\"PATTERN\"",
            ));
            None
        }
        (true, false) => pattern(errors, "apps").map(Scope::Apps),
        (false, true) => pattern(errors, "nodes").map(Scope::Nodes),
    };
    let allowed: &[Capability] = match obj.contains_key("nodes") {
        true => &Capability::ON_NODES,
        false => &Capability::ON_APPS,
    };
    let names = |caps: &[Capability]| {
        caps.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut capabilities = Vec::new();
    let field = format!("{at}.capabilities");
    match obj.get("capabilities") {
        None => errors.push(problem(
            &field,
            "missing",
            format!("list what the rule grants, from: {}", names(allowed)),
        )),
        Some(Value::Array(items)) if items.is_empty() => errors.push(problem(
            &field,
            "empty: the rule grants nothing",
            format!("list at least one of: {}", names(allowed)),
        )),
        Some(Value::Array(items)) => {
            for (j, c) in items.iter().enumerate() {
                let at_c = format!("{field}[{j}]");
                let parsed = c.as_str().and_then(Capability::parse);
                match parsed {
                    Some(Capability::Management) => errors.push(problem(
                        at_c,
                        "management cannot be granted by a rule",
                        "attach the built-in `management` policy to the token instead",
                    )),
                    Some(cap) if allowed.contains(&cap) => {
                        if !capabilities.contains(&cap) {
                            capabilities.push(cap);
                        }
                    }
                    Some(cap) => errors.push(problem(
                        at_c,
                        format!(
                            "{cap} does not apply to {}",
                            if allowed.len() == 2 { "nodes" } else { "apps" }
                        ),
                        format!("use one of: {}", names(allowed)),
                    )),
                    None => {
                        let known: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
                        let fix = match c.as_str().and_then(|s| closest(s, &known)) {
                            Some(near) => format!(
                                "did you mean `{near}`? capabilities here: {}",
                                known.join(", ")
                            ),
                            None => format!("use one of: {}", known.join(", ")),
                        };
                        errors.push(problem(at_c, format!("unknown capability {c}"), fix));
                    }
                }
            }
        }
        Some(other) => errors.push(problem(
            &field,
            format!("wrong value {other}"),
            "use an array of capability names, like [\"read\"]",
        )),
    }
    if errors.len() > before {
        return None;
    }
    Some(Rule {
        scope: scope?,
        capabilities,
    })
}

/// What a request acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    App(&'a str),
    Node(&'a str),
    /// Nothing named: ACLs, audit, debug views, metrics.
    Global,
}

/// Which kind of thing a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Apps,
    Nodes,
}

/// Who is asking and what they may do: the union of a token's policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The token's name and accessor id, for messages (never its secret).
    pub name: String,
    pub accessor: String,
    management: bool,
    rules: Vec<Rule>,
}

impl Authority {
    /// Everything allowed: a server without ACLs, or a management token.
    pub fn unrestricted(name: impl Into<String>, accessor: impl Into<String>) -> Self {
        Authority {
            name: name.into(),
            accessor: accessor.into(),
            management: true,
            rules: Vec::new(),
        }
    }

    /// A token's authority: `policies` are the stored ones it names (names that no longer
    /// exist grant nothing); `management` when it names the built-in policy.
    pub fn new(
        name: impl Into<String>,
        accessor: impl Into<String>,
        management: bool,
        policies: &[Policy],
    ) -> Self {
        Authority {
            name: name.into(),
            accessor: accessor.into(),
            management,
            rules: policies
                .iter()
                .flat_map(|p| p.rules.iter().cloned())
                .collect(),
        }
    }

    pub fn is_management(&self) -> bool {
        self.management
    }

    pub fn allows(&self, cap: Capability, target: Target<'_>) -> bool {
        if self.management {
            return true;
        }
        if cap == Capability::Management {
            return false;
        }
        match target {
            Target::Global => false,
            Target::App(id) => self.rules.iter().any(|r| {
                matches!(&r.scope, Scope::Apps(p) if p.matches(id)) && r.capabilities.contains(&cap)
            }),
            Target::Node(id) => self.rules.iter().any(|r| {
                matches!(&r.scope, Scope::Nodes(p) if p.matches(id))
                    && r.capabilities.contains(&cap)
            }),
        }
    }

    /// Whether `cap` is granted on at least one app (or node): a list shows something.
    pub fn allows_some(&self, cap: Capability, kind: Kind) -> bool {
        self.management
            || self.rules.iter().any(|r| {
                r.capabilities.contains(&cap)
                    && matches!(
                        (&r.scope, kind),
                        (Scope::Apps(_), Kind::Apps) | (Scope::Nodes(_), Kind::Nodes)
                    )
            })
    }

    /// Why `cap` on `target` is refused, for the 403 answer.
    pub fn denial(&self, cap: Capability, target: Target<'_>) -> String {
        let who = format!("token {} (accessor {})", self.name, self.accessor);
        match target {
            Target::App(id) => format!("{who} lacks the {cap} capability on app {id}"),
            Target::Node(id) => format!("{who} lacks the {cap} capability on node {id}"),
            Target::Global => format!("{who} lacks the management capability"),
        }
    }

    /// Why a list of `kind` is refused: `cap` is granted nowhere.
    pub fn denial_some(&self, cap: Capability, kind: Kind) -> String {
        let what = match kind {
            Kind::Apps => "any app",
            Kind::Nodes => "any node",
        };
        format!(
            "token {} (accessor {}) lacks the {cap} capability on {what}",
            self.name, self.accessor
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Policy {
        Policy::from_json("p", json).unwrap()
    }

    fn fields(e: PolicyErrors) -> Vec<String> {
        e.0.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn patterns_match_everything_a_prefix_or_one_id() {
        let all = Pattern::parse("*").unwrap();
        let demo = Pattern::parse("demo/*").unwrap();
        let exact = Pattern::parse("demo/web").unwrap();
        assert!(all.matches("anything/at-all"));
        assert!(demo.matches("demo/web") && demo.matches("demo/a/b"));
        assert!(!demo.matches("demo") && !demo.matches("prod/web"));
        assert!(exact.matches("demo/web") && !exact.matches("demo/web2"));
        for bad in ["", "de*mo/*", "a b", "**x", "a?"] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_and_toml_give_the_same_policy() {
        let json = policy(
            r#"{"description":"readers","rules":[{"apps":"demo/*","capabilities":["read","logs"]},{"nodes":"*","capabilities":["node-write"]}]}"#,
        );
        let toml = Policy::from_toml(
            "p",
            "description = \"readers\"\n[[rules]]\napps = \"demo/*\"\ncapabilities = [\"read\", \"logs\"]\n[[rules]]\nnodes = \"*\"\ncapabilities = [\"node-write\"]\n",
        )
        .unwrap();
        assert_eq!(json, toml);
        assert_eq!(json.rules.len(), 2);
        assert_eq!(
            serde_json::to_value(&json).unwrap()["rules"][1],
            serde_json::json!({"nodes":"*","capabilities":["node-write"]})
        );
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let e = Policy::from_json(
            "p",
            r#"{"rulez":[],"rules":[{"apps":"x*y","capabilities":["red"]},{"apps":"*","nodes":"*","capabilities":["read"]},{"nodes":"*","capabilities":["deploy"]},{"apps":"*","capabilities":["management"],"extra":1}]}"#,
        )
        .unwrap_err();
        let f = fields(e.clone());
        for want in [
            "rulez",
            "rules[0].apps",
            "rules[0].capabilities[0]",
            "rules[1]",
            "rules[2].capabilities[0]",
            "rules[3].extra",
            "rules[3].capabilities[0]",
        ] {
            assert!(f.contains(&want.to_string()), "{want} missing from {f:?}");
        }
        assert!(e.to_string().contains("did you mean `rules`"), "{e}");
        assert!(e.to_string().contains("did you mean `read`"), "{e}");
    }

    #[test]
    fn names_are_checked_and_management_is_reserved() {
        assert!(Policy::from_json("management", r#"{"rules":[]}"#).is_err());
        assert!(Policy::from_json("bad name", r#"{"rules":[]}"#).is_err());
        assert!(Policy::from_json("ok", r#"{"name":"other","rules":[]}"#).is_err());
        assert!(Policy::from_json("ok", r#"{"name":"ok","rules":[]}"#).is_ok());
        assert_eq!(
            fields(Policy::from_json("ok", r#"{}"#).unwrap_err()),
            ["rules"]
        );
        assert!(Policy::from_toml("ok", "rules = [").is_err());
    }

    #[test]
    fn authority_is_the_union_of_policies() {
        let readers = policy(r#"{"rules":[{"apps":"demo/*","capabilities":["read"]}]}"#);
        let ops = policy(
            r#"{"rules":[{"apps":"demo/web","capabilities":["deploy"]},{"nodes":"n*","capabilities":["node-write"]}]}"#,
        );
        let a = Authority::new("t", "acc", false, &[readers, ops]);
        assert!(a.allows(Capability::Read, Target::App("demo/x")));
        assert!(!a.allows(Capability::Read, Target::App("prod/x")));
        assert!(a.allows(Capability::Deploy, Target::App("demo/web")));
        assert!(!a.allows(Capability::Deploy, Target::App("demo/x")));
        assert!(a.allows(Capability::NodeWrite, Target::Node("n1")));
        assert!(!a.allows(Capability::Read, Target::Node("n1")));
        assert!(!a.allows(Capability::Read, Target::Global));
        assert!(!a.allows(Capability::Management, Target::Global));
        assert!(a.allows_some(Capability::Read, Kind::Apps));
        assert!(!a.allows_some(Capability::Read, Kind::Nodes));
        assert_eq!(
            a.denial(Capability::Deploy, Target::App("demo/x")),
            "token t (accessor acc) lacks the deploy capability on app demo/x"
        );
        assert_eq!(
            a.denial(Capability::Management, Target::Global),
            "token t (accessor acc) lacks the management capability"
        );
        let none = Authority::new("n", "acc", false, &[]);
        for cap in Capability::ALL {
            assert!(!none.allows(cap, Target::App("a")));
            assert!(!none.allows_some(cap, Kind::Apps));
        }
        let root = Authority::unrestricted("root", "acc");
        for cap in Capability::ALL {
            assert!(root.allows(cap, Target::Global) && root.allows(cap, Target::Node("x")));
        }
    }

    #[test]
    fn capabilities_round_trip_their_names() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Some(cap));
            assert_eq!(serde_json::to_value(cap).unwrap(), cap.as_str());
        }
    }
}

/// The policy parser takes outside input (the ACL API and `berth acl policy apply`): no
/// document, however malformed, may panic it, and whatever it refuses names a field.
#[cfg(test)]
mod parser_properties {
    use proptest::prelude::*;

    use super::*;

    /// Documents near the real shape: known and unknown keys, good and bad values.
    fn document() -> impl Strategy<Value = String> {
        // Rule keys; a document's own `rules` is never repeated (JSON keeps the last).
        let key = prop::sample::select(vec![
            "apps",
            "nodes",
            "capabilities",
            "description",
            "name",
            "appz",
        ]);
        let value = prop::sample::select(vec![
            r#""demo/*""#,
            r#""*""#,
            r#""""#,
            r#""a/*/b""#,
            r#"["read","deploy"]"#,
            r#"["reed"]"#,
            r#"[]"#,
            "7",
            "null",
            r#"{"x":1}"#,
        ]);
        let rule = prop::collection::vec((key.clone(), value.clone()), 0..4).prop_map(|kv| {
            let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
            format!("{{{}}}", body.join(","))
        });
        (prop::collection::vec(rule, 0..4), key, value)
            .prop_map(|(rules, k, v)| format!(r#"{{"rules":[{}],{k:?}:{v}}}"#, rules.join(",")))
    }

    #[test]
    fn a_pattern_ending_in_a_multibyte_character_is_judged_not_sliced() {
        assert!(Pattern::parse("é").is_ok());
        assert!(Pattern::parse("dé*").is_ok());
        assert!(Pattern::parse("*é").is_err());
    }

    proptest! {
        #[test]
        fn any_text_is_parsed_or_refused_with_a_field(text in ".{0,200}") {
            for parsed in [Policy::from_json("p", &text), Policy::from_toml("p", &text)] {
                if let Err(e) = parsed {
                    prop_assert!(!e.0.is_empty());
                    prop_assert!(e.0.iter().all(|f| !f.message.is_empty() && !f.fix.is_empty()));
                }
            }
            let _ = Pattern::parse(&text);
            let _ = check_policy_name(&text);
        }

        #[test]
        fn near_miss_documents_are_parsed_or_refused_with_a_field(text in document()) {
            match Policy::from_json("p", &text) {
                Ok(_) => prop_assert!(!text.contains("appz"), "an unknown field passed: {text}"),
                Err(e) => {
                    prop_assert!(e.0.iter().all(|f| !f.message.is_empty() && !f.fix.is_empty()));
                    if text.contains("appz") {
                        prop_assert!(e.0.iter().any(|f| f.field.ends_with("appz")), "{e:?}");
                    }
                }
            }
        }
    }
}
