//! App spec parsing and validation from the outside: TOML and JSON, every error at once.

use berth_core::spec::{HealthProtocol, Placement, Ports};
use berth_core::{AppSpec, SpecErrors};

const DESIGN_EXAMPLE: &str = r#"
id = "shop/web"
cmd = "exec ./web --port $PORT"
instances = 3
cpus = 0.25
mem = 128
env = { LOG_LEVEL = "info" }
routes = ["web.shop.example", "shop.example/api"]
constraints = [["hostname", "UNIQUE"]]
[[health_checks]]
protocol = "http"
path = "/healthz"
grace_period_seconds = 10
interval_seconds = 2
timeout_seconds = 1
max_consecutive_failures = 3
[upgrade_strategy]
minimum_health_capacity = 1.0
maximum_over_capacity = 1.0
"#;

fn fields(e: &SpecErrors) -> Vec<&str> {
    e.0.iter().map(|e| e.field.as_str()).collect()
}

#[test]
fn design_example_parses_with_defaults() {
    let spec = AppSpec::from_toml(DESIGN_EXAMPLE).unwrap();
    assert_eq!(spec.id.as_str(), "shop/web");
    assert_eq!(spec.instances, 3);
    assert_eq!(spec.ports, Ports::Count(1));
    assert_eq!(spec.placement, Placement::Spread);
    assert_eq!(spec.health_checks[0].protocol, HealthProtocol::Http);
    assert_eq!(spec.backoff_seconds, 1.0);
    assert_eq!(spec.backoff_factor, 1.15);
    assert_eq!(spec.max_launch_delay_seconds, 300.0);
    assert_eq!(spec.driver(), "process");
    assert_eq!(spec.parsed_constraints().len(), 1);
}

#[test]
fn json_round_trip_is_identical() {
    let spec = AppSpec::from_toml(DESIGN_EXAMPLE).unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    assert_eq!(AppSpec::from_json(&json).unwrap(), spec);
    let direct: AppSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(direct, spec);
}

#[test]
fn reports_every_error_with_path_and_fix() {
    let bad = r#"
id = "Shop/Web"
cmd = "x"
args = ["y"]
instances = "three"
cpus = -1
mem = 0
env = { PORT = "1", "bad-name" = "x" }
routes = ["UPPER.example", "ok.example/api"]
constraints = [["hostname", "unique"], ["rack", "LIKE", "("]]
instnces = 3
backoff_factor = 0.5
[[health_checks]]
protocol = "http"
interval_seconds = 0
timeout_seconds = 5
port_index = 4
colour = "red"
[[health_checks]]
protocol = "smoke"
[upgrade_strategy]
minimum_health_capacity = 2.0
"#;
    let err = AppSpec::from_toml(bad).unwrap_err();
    let f = fields(&err);
    for expected in [
        "id",
        "cmd",
        "instances",
        "cpus",
        "mem",
        "env.PORT",
        "env.bad-name",
        "routes[0]",
        "constraints[0]",
        "constraints[1]",
        "instnces",
        "backoff_factor",
        "health_checks[0].path",
        "health_checks[0].interval_seconds",
        "health_checks[0].port_index",
        "health_checks[0].colour",
        "health_checks[1].protocol",
        "upgrade_strategy.minimum_health_capacity",
    ] {
        assert!(f.contains(&expected), "missing {expected} in {f:?}");
    }
    assert!(
        err.0
            .iter()
            .all(|e| !e.fix.is_empty() && !e.message.is_empty())
    );
    let typo = err.0.iter().find(|e| e.field == "instnces").unwrap();
    assert!(typo.fix.contains("instances"), "{typo:?}");
    // A type error is not repeated as a range error.
    assert_eq!(f.iter().filter(|x| **x == "instances").count(), 1);
}

#[test]
fn needs_something_to_run() {
    let err = AppSpec::from_json(r#"{"id": "a"}"#).unwrap_err();
    assert_eq!(fields(&err), ["cmd"]);
    assert!(AppSpec::from_json(r#"{"id": "a", "image": "x:1"}"#).is_ok());
    assert_eq!(
        AppSpec::from_json(r#"{"id": "a", "image": "x:1"}"#)
            .unwrap()
            .driver(),
        "docker"
    );
    let err = AppSpec::from_json(r#"{"id": "a", "args": []}"#).unwrap_err();
    assert_eq!(fields(&err), ["args"]);
}

#[test]
fn rejects_non_objects_and_bad_syntax() {
    assert_eq!(fields(&AppSpec::from_json("[1]").unwrap_err()), [""]);
    assert_eq!(fields(&AppSpec::from_json("{").unwrap_err()), [""]);
    let e = AppSpec::from_toml("id = \n").unwrap_err();
    assert!(e.0[0].fix.contains("line 1"), "{e}");
    let e = AppSpec::from_json(r#"{"cmd": "x"}"#).unwrap_err();
    assert_eq!(fields(&e), ["id"]);
}

#[test]
fn named_ports_and_command_checks() {
    let spec = AppSpec::from_toml(
        r#"
id = "a"
args = ["./a"]
ports = ["http", "admin"]
[[health_checks]]
protocol = "tcp"
port_index = 1
[[health_checks]]
protocol = "command"
command = ["true"]
"#,
    )
    .unwrap();
    assert_eq!(spec.ports.count(), 2);
    let err =
        AppSpec::from_toml("id = \"a\"\ncmd = \"x\"\nports = [\"http\", \"http\"]\n").unwrap_err();
    assert_eq!(fields(&err), ["ports[1]"]);
    let err =
        AppSpec::from_toml("id = \"a\"\ncmd = \"x\"\n[[health_checks]]\nprotocol = \"command\"\n")
            .unwrap_err();
    assert_eq!(fields(&err), ["health_checks[0].command"]);
}

#[test]
fn scale_only_changes_do_not_need_new_instances() {
    let a = AppSpec::from_toml(DESIGN_EXAMPLE).unwrap();
    let mut b = a.clone();
    b.instances = 7;
    assert!(!a.needs_new_instances(&b));
    b.env.insert("X".into(), "1".into());
    assert!(a.needs_new_instances(&b));
}

#[test]
fn shipped_examples_are_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    let entries = std::fs::read_dir(&root)
        .unwrap()
        .chain(std::fs::read_dir(root.join("apps")).unwrap());
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            AppSpec::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen > 0);
}
