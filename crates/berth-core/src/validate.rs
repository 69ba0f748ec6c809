//! Parsing untrusted app specs and checking them, reporting every problem at once.
//!
//! Serde stops at the first bad field; people fixing a spec want the whole list. So the
//! input is first read as a generic value, each known field is deserialized on its own
//! (a type error names its path), unknown fields are collected, and then the semantic
//! rules run over whatever parsed.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::constraint::Constraint;
use crate::id::AppId;
use crate::spec::{AppSpec, HealthCheck, HealthProtocol, UpgradeStrategy, defaults};
use crate::suggest::closest;

/// One problem in a spec: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// `health_checks[0].interval_seconds`; empty for the document as a whole.
    pub field: String,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{} (fix: {})", self.message, self.fix)
        } else {
            write!(f, "{}: {} (fix: {})", self.field, self.message, self.fix)
        }
    }
}

/// Every problem found in one spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<FieldError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the app spec has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

const TOP_FIELDS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "image",
    "driver",
    "instances",
    "cpus",
    "mem",
    "disk",
    "env",
    "ports",
    "routes",
    "labels",
    "constraints",
    "placement",
    "health_checks",
    "upgrade_strategy",
    "backoff_seconds",
    "backoff_factor",
    "max_launch_delay_seconds",
];
const HEALTH_FIELDS: &[&str] = &[
    "protocol",
    "path",
    "port_index",
    "command",
    "grace_period_seconds",
    "interval_seconds",
    "timeout_seconds",
    "max_consecutive_failures",
    "ignore_tls_errors",
];
const UPGRADE_FIELDS: &[&str] = &["minimum_health_capacity", "maximum_over_capacity"];

pub const DRIVERS: &[&str] = &["process", "docker", "sim"];
pub const MAX_INSTANCES: u32 = 10_000;
pub const MAX_PORTS: u32 = 16;

/// Environment variables the agent sets itself.
const RESERVED_ENV: &[&str] = &["PORT", "HOST"];
const RESERVED_ENV_PREFIXES: &[&str] = &["BERTH_"];

struct Collector {
    errors: Vec<FieldError>,
}

impl Collector {
    fn push(
        &mut self,
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.errors.push(FieldError {
            field: field.into(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    fn unknown_fields(&mut self, obj: &Map<String, Value>, prefix: &str, known: &[&str]) {
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            let fix = match closest(key, known) {
                Some(near) => format!("did you mean `{near}`? otherwise remove it"),
                None => format!("remove it; known fields: {}", known.join(", ")),
            };
            self.push(join(prefix, key), format!("unknown field `{key}`"), fix);
        }
    }

    /// Deserializes `obj[key]` alone; `None` when absent or wrong (error recorded).
    fn take<T: DeserializeOwned>(
        &mut self,
        obj: &Map<String, Value>,
        prefix: &str,
        key: &str,
        expected: &str,
    ) -> Option<T> {
        let value = obj.get(key)?;
        match serde_json::from_value::<T>(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(
                    join(prefix, key),
                    format!("wrong value {}: {e}", short(value)),
                    format!("use {expected}"),
                );
                None
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}...", &s[..s.floor_char_boundary(57)])
    } else {
        s
    }
}

impl AppSpec {
    /// Parses and validates a TOML spec.
    pub fn from_toml(text: &str) -> Result<AppSpec, SpecErrors> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            SpecErrors(vec![FieldError {
                field: String::new(),
                message: format!("not valid TOML: {}", e.message()),
                fix: match e.span() {
                    Some(span) => format!(
                        "fix the TOML syntax near line {}",
                        text[..span.start.min(text.len())].lines().count().max(1)
                    ),
                    None => "fix the TOML syntax".into(),
                },
            }])
        })?;
        let json = serde_json::to_value(value).map_err(|e| {
            SpecErrors(vec![FieldError {
                field: String::new(),
                message: format!("unsupported TOML value: {e}"),
                fix: "use only strings, numbers, booleans, arrays and tables".into(),
            }])
        })?;
        Self::from_value(json)
    }

    /// Parses and validates a JSON spec.
    pub fn from_json(text: &str) -> Result<AppSpec, SpecErrors> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            SpecErrors(vec![FieldError {
                field: String::new(),
                message: format!("not valid JSON: {e}"),
                fix: "send a JSON object with the app spec fields".into(),
            }])
        })?;
        Self::from_value(value)
    }

    /// Parses and validates a generic value, reporting every problem.
    pub fn from_value(value: Value) -> Result<AppSpec, SpecErrors> {
        let mut c = Collector { errors: Vec::new() };
        let Value::Object(obj) = value else {
            return Err(SpecErrors(vec![FieldError {
                field: String::new(),
                message: format!("the spec must be an object, got {}", short(&value)),
                fix: "send an object such as {\"id\": \"shop/web\", \"cmd\": \"...\"}".into(),
            }]));
        };
        c.unknown_fields(&obj, "", TOP_FIELDS);

        let id = match obj.get("id") {
            None => {
                c.push("id", "missing", "set id, e.g. id = \"shop/web\"");
                None
            }
            Some(Value::String(s)) => match AppId::parse(s) {
                Ok(id) => Some(id),
                Err(e) => {
                    c.push("id", e.message, e.fix);
                    None
                }
            },
            Some(other) => {
                c.push(
                    "id",
                    format!("wrong value {}", short(other)),
                    "use a string like \"shop/web\"",
                );
                None
            }
        };

        let mut spec = AppSpec::minimal("placeholder", "");
        spec.cmd = c.take(&obj, "", "cmd", "a shell command string");
        spec.args = c.take(&obj, "", "args", "an array of strings");
        spec.image = c.take(&obj, "", "image", "an image name string");
        spec.driver = c.take(
            &obj,
            "",
            "driver",
            "one of \"process\", \"docker\", \"sim\"",
        );
        macro_rules! field {
            ($name:ident, $expected:literal) => {
                if let Some(v) = c.take(&obj, "", stringify!($name), $expected) {
                    spec.$name = v;
                }
            };
        }
        field!(instances, "a whole number from 0 to 10000");
        field!(cpus, "a number of cores like 0.25");
        field!(mem, "a whole number of MiB like 128");
        field!(disk, "a whole number of MiB like 0");
        field!(
            env,
            "a table of string values, e.g. { LOG_LEVEL = \"info\" }"
        );
        field!(ports, "a number of ports, or an array of port names");
        field!(
            routes,
            "an array of strings like \"web.example\" or \"example/api\""
        );
        field!(labels, "a table of string values");
        field!(
            constraints,
            "an array of [field, OPERATOR, value?] arrays of strings"
        );
        field!(placement, "\"spread\" or \"binpack\"");
        field!(backoff_seconds, "a number of seconds like 1");
        field!(backoff_factor, "a number like 1.15");
        field!(max_launch_delay_seconds, "a number of seconds like 300");

        match obj.get("health_checks") {
            None => {}
            Some(Value::Array(items)) => {
                spec.health_checks = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| parse_health_check(&mut c, i, item))
                    .collect();
            }
            Some(other) => c.push(
                "health_checks",
                format!("wrong value {}", short(other)),
                "use an array of tables ([[health_checks]] in TOML)",
            ),
        }
        match obj.get("upgrade_strategy") {
            None => {}
            Some(Value::Object(o)) => {
                c.unknown_fields(o, "upgrade_strategy", UPGRADE_FIELDS);
                let mut us = UpgradeStrategy::default();
                if let Some(v) = c.take(
                    o,
                    "upgrade_strategy",
                    "minimum_health_capacity",
                    "a number from 0.0 to 1.0",
                ) {
                    us.minimum_health_capacity = v;
                }
                if let Some(v) = c.take(
                    o,
                    "upgrade_strategy",
                    "maximum_over_capacity",
                    "a number from 0.0 to 1.0",
                ) {
                    us.maximum_over_capacity = v;
                }
                spec.upgrade_strategy = us;
            }
            Some(other) => c.push(
                "upgrade_strategy",
                format!("wrong value {}", short(other)),
                "use a table ([upgrade_strategy] in TOML)",
            ),
        }

        let type_errors: Vec<String> = c.errors.iter().map(|e| e.field.clone()).collect();
        for e in check(&spec) {
            // A field that did not parse was replaced by its default: rules about it
            // would only repeat the type error.
            let shadowed = type_errors.iter().any(|t| {
                !t.is_empty()
                    && (e.field == *t
                        || e.field.starts_with(&format!("{t}."))
                        || e.field.starts_with(&format!("{t}[")))
            });
            let args_broken = e.field == "cmd" && type_errors.iter().any(|t| t == "args");
            if !shadowed && !args_broken {
                c.errors.push(e);
            }
        }
        match (id, c.errors.is_empty()) {
            (Some(id), true) => {
                spec.id = id;
                Ok(spec)
            }
            _ => Err(SpecErrors(c.errors)),
        }
    }

    /// The semantic rules, over an already typed spec.
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let errors = check(self);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SpecErrors(errors))
        }
    }
}

fn parse_health_check(c: &mut Collector, i: usize, item: &Value) -> Option<HealthCheck> {
    let prefix = format!("health_checks[{i}]");
    let Value::Object(o) = item else {
        c.push(
            prefix,
            format!("wrong value {}", short(item)),
            "use a table with protocol, path, ...",
        );
        return None;
    };
    c.unknown_fields(o, &prefix, HEALTH_FIELDS);
    let protocol = match c.take::<HealthProtocol>(
        o,
        &prefix,
        "protocol",
        "one of \"http\", \"https\", \"tcp\", \"command\"",
    ) {
        Some(p) => p,
        None => {
            if !o.contains_key("protocol") {
                c.push(
                    join(&prefix, "protocol"),
                    "missing",
                    "set protocol to \"http\", \"https\", \"tcp\" or \"command\"",
                );
            }
            HealthProtocol::Tcp
        }
    };
    let mut hc = HealthCheck {
        protocol,
        path: c.take(o, &prefix, "path", "a path string like \"/healthz\""),
        port_index: 0,
        command: c.take(o, &prefix, "command", "an array of strings (argv)"),
        grace_period_seconds: defaults::grace_period_seconds(),
        interval_seconds: defaults::interval_seconds(),
        timeout_seconds: defaults::timeout_seconds(),
        max_consecutive_failures: defaults::max_consecutive_failures(),
        ignore_tls_errors: false,
    };
    macro_rules! field {
        ($name:ident, $expected:literal) => {
            if let Some(v) = c.take(o, &prefix, stringify!($name), $expected) {
                hc.$name = v;
            }
        };
    }
    field!(port_index, "a port index (0 is PORT)");
    field!(grace_period_seconds, "a whole number of seconds");
    field!(interval_seconds, "a whole number of seconds");
    field!(timeout_seconds, "a whole number of seconds");
    field!(max_consecutive_failures, "a whole number");
    field!(ignore_tls_errors, "true or false");
    Some(hc)
}

fn check(spec: &AppSpec) -> Vec<FieldError> {
    let mut c = Collector { errors: Vec::new() };
    let has_cmd = spec.cmd.as_deref().is_some_and(|s| !s.trim().is_empty());
    match (&spec.cmd, &spec.args, &spec.image) {
        (Some(_), Some(_), _) => c.push(
            "cmd",
            "both cmd and args are set",
            "keep one: cmd runs through /bin/sh -c, args runs without a shell",
        ),
        (None, None, None) => c.push(
            "cmd",
            "nothing to run",
            "set cmd (a shell command), args (an argv array) or image (a container image)",
        ),
        _ => {}
    }
    if spec.cmd.is_some() && !has_cmd {
        c.push("cmd", "empty command", "put the command to run in cmd");
    }
    if let Some(args) = &spec.args
        && args.first().is_none_or(|a| a.is_empty())
    {
        c.push(
            "args",
            "args needs at least the program to run",
            "write e.g. args = [\"./web\", \"--port\", \"8080\"]",
        );
    }
    if spec.image.as_deref().is_some_and(|i| i.trim().is_empty()) {
        c.push(
            "image",
            "empty image name",
            "set an image such as \"shop-web:1.4\" or remove image",
        );
    }
    if let Some(d) = &spec.driver {
        if !DRIVERS.contains(&d.as_str()) {
            c.push(
                "driver",
                format!("unknown driver {d:?}"),
                "use \"process\", \"docker\" or \"sim\"",
            );
        } else if d == "docker" && spec.image.is_none() {
            c.push(
                "image",
                "the docker driver needs an image",
                "set image, or use driver = \"process\"",
            );
        }
    }
    if spec.instances > MAX_INSTANCES {
        c.push(
            "instances",
            format!("{} instances is more than {MAX_INSTANCES}", spec.instances),
            format!("use at most {MAX_INSTANCES}"),
        );
    }
    if !spec.cpus.is_finite() || spec.cpus < 0.001 || spec.cpus > 1024.0 {
        c.push(
            "cpus",
            format!("{} cpus is out of range", spec.cpus),
            "use a number of cores from 0.001 to 1024, like 0.25",
        );
    }
    if spec.mem == 0 || spec.mem > 4 * 1024 * 1024 {
        c.push(
            "mem",
            format!("{} MiB is out of range", spec.mem),
            "use a number of MiB from 1 to 4194304, like 128",
        );
    }
    if spec.disk > 64 * 1024 * 1024 {
        c.push(
            "disk",
            format!("{} MiB is out of range", spec.disk),
            "use at most 67108864 MiB",
        );
    }
    for k in spec.env.keys() {
        let valid = !k.is_empty()
            && !k.starts_with(|ch: char| ch.is_ascii_digit())
            && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        let field = format!("env.{k}");
        if !valid {
            c.push(
                field,
                "not a valid variable name",
                "use letters, digits and '_', not starting with a digit",
            );
        } else if RESERVED_ENV.contains(&k.as_str())
            || RESERVED_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
            || is_port_n(k)
        {
            c.push(
                field,
                "set by Berth for every instance",
                "remove it; PORT, PORTn, HOST and BERTH_* are provided",
            );
        }
    }
    let port_count = spec.ports.count();
    if port_count > MAX_PORTS {
        c.push(
            "ports",
            format!("{port_count} ports is too many"),
            format!("use at most {MAX_PORTS}"),
        );
    }
    if let crate::spec::Ports::Named(names) = &spec.ports {
        for (i, n) in names.iter().enumerate() {
            let valid = !n.is_empty()
                && n.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-');
            if !valid {
                c.push(
                    format!("ports[{i}]"),
                    format!("port name {n:?} is not allowed"),
                    "use lower-case letters, digits and '-'",
                );
            } else if names[..i].contains(n) {
                c.push(
                    format!("ports[{i}]"),
                    format!("port name {n:?} repeats"),
                    "give each port a distinct name",
                );
            }
        }
    }
    for (i, r) in spec.routes.iter().enumerate() {
        if let Err(msg) = check_route(r) {
            c.push(
                format!("routes[{i}]"),
                msg,
                "write a host (\"web.example\") or host/path-prefix (\"example/api\"), lower case",
            );
        }
    }
    if !spec.routes.is_empty() && port_count == 0 {
        c.push(
            "routes",
            "routes need a port to send traffic to",
            "set ports = 1 (the default) or remove routes",
        );
    }
    for k in spec.labels.keys() {
        if k.is_empty() || k.len() > 128 {
            c.push(
                "labels",
                format!("label name {k:?} is empty or too long"),
                "use a name of 1 to 128 characters",
            );
        }
    }
    for (i, parts) in spec.constraints.iter().enumerate() {
        if let Err(e) = Constraint::parse(parts) {
            c.push(format!("constraints[{i}]"), e.message, e.fix);
        }
    }
    for (i, hc) in spec.health_checks.iter().enumerate() {
        check_health(&mut c, &format!("health_checks[{i}]"), hc, port_count);
    }
    let us = &spec.upgrade_strategy;
    if !(0.0..=1.0).contains(&us.minimum_health_capacity) {
        c.push(
            "upgrade_strategy.minimum_health_capacity",
            format!("{} is out of range", us.minimum_health_capacity),
            "use a number from 0.0 to 1.0",
        );
    }
    if !(0.0..=1.0).contains(&us.maximum_over_capacity) {
        c.push(
            "upgrade_strategy.maximum_over_capacity",
            format!("{} is out of range", us.maximum_over_capacity),
            "use a number from 0.0 to 1.0",
        );
    }
    if us.minimum_health_capacity >= 1.0 && us.maximum_over_capacity <= 0.0 {
        c.push(
            "upgrade_strategy",
            "an upgrade could neither stop an old instance nor start a new one",
            "lower minimum_health_capacity or raise maximum_over_capacity",
        );
    }
    if !spec.backoff_seconds.is_finite()
        || spec.backoff_seconds <= 0.0
        || spec.backoff_seconds > 3600.0
    {
        c.push(
            "backoff_seconds",
            format!("{} is out of range", spec.backoff_seconds),
            "use a number of seconds above 0 and at most 3600, like 1",
        );
    }
    if !spec.backoff_factor.is_finite() || !(1.0..=10.0).contains(&spec.backoff_factor) {
        c.push(
            "backoff_factor",
            format!("{} is out of range", spec.backoff_factor),
            "use a number from 1.0 to 10.0, like 1.15",
        );
    }
    if !spec.max_launch_delay_seconds.is_finite()
        || spec.max_launch_delay_seconds < spec.backoff_seconds
        || spec.max_launch_delay_seconds > 86_400.0
    {
        c.push(
            "max_launch_delay_seconds",
            format!("{} is out of range", spec.max_launch_delay_seconds),
            "use at least backoff_seconds and at most 86400, like 300",
        );
    }
    c.errors
}

fn is_port_n(k: &str) -> bool {
    k.strip_prefix("PORT")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_digit()))
}

fn check_route(r: &str) -> Result<(), String> {
    let (host, path) = match r.find('/') {
        Some(i) => (&r[..i], Some(&r[i..])),
        None => (r, None),
    };
    if host.is_empty() {
        return Err(format!("route {r:?} has no host"));
    }
    let host_ok = host.split('.').all(|label| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '*')
    });
    if !host_ok {
        return Err(format!(
            "route host {host:?} is not a lower-case domain name"
        ));
    }
    if let Some(p) = path
        && (p.contains("//") || p.contains(char::is_whitespace) || p.contains(['?', '#']))
    {
        return Err(format!("route path {p:?} is not a plain path prefix"));
    }
    Ok(())
}

fn check_health(c: &mut Collector, prefix: &str, hc: &HealthCheck, port_count: u32) {
    let f = |name: &str| format!("{prefix}.{name}");
    match hc.protocol {
        HealthProtocol::Http | HealthProtocol::Https => match &hc.path {
            Some(p) if p.starts_with('/') => {}
            Some(p) => c.push(
                f("path"),
                format!("path {p:?} does not start with '/'"),
                "write e.g. path = \"/healthz\"",
            ),
            None => c.push(
                f("path"),
                "missing for an http(s) check",
                "set path, e.g. path = \"/healthz\"",
            ),
        },
        _ => {
            if hc.path.is_some() {
                c.push(
                    f("path"),
                    "path only applies to http and https checks",
                    "remove path or use protocol = \"http\"",
                );
            }
        }
    }
    if hc.protocol == HealthProtocol::Command {
        if hc
            .command
            .as_ref()
            .is_none_or(|a| a.first().is_none_or(|p| p.is_empty()))
        {
            c.push(
                f("command"),
                "missing for a command check",
                "set command = [\"program\", \"arg\", ...]",
            );
        }
    } else {
        if hc.command.is_some() {
            c.push(
                f("command"),
                "command only applies to command checks",
                "remove command or use protocol = \"command\"",
            );
        }
        if hc.port_index >= port_count {
            c.push(
                f("port_index"),
                format!(
                    "port {} does not exist: the app has {port_count} port(s)",
                    hc.port_index
                ),
                "use a port index below ports, or raise ports",
            );
        }
    }
    if hc.ignore_tls_errors && hc.protocol != HealthProtocol::Https {
        c.push(
            f("ignore_tls_errors"),
            "only applies to https checks",
            "remove it or use protocol = \"https\"",
        );
    }
    if hc.interval_seconds == 0 {
        c.push(
            f("interval_seconds"),
            "must be at least 1",
            "use e.g. interval_seconds = 2",
        );
    }
    if hc.timeout_seconds == 0 {
        c.push(
            f("timeout_seconds"),
            "must be at least 1",
            "use e.g. timeout_seconds = 1",
        );
    } else if hc.interval_seconds > 0 && hc.timeout_seconds > hc.interval_seconds {
        c.push(
            f("timeout_seconds"),
            format!(
                "timeout {} s is longer than the interval {} s",
                hc.timeout_seconds, hc.interval_seconds
            ),
            "use a timeout no longer than interval_seconds",
        );
    }
    if hc.max_consecutive_failures == 0 {
        c.push(
            f("max_consecutive_failures"),
            "must be at least 1",
            "use e.g. max_consecutive_failures = 3",
        );
    }
}
