//! `StartInstance`: the server's order to run one instance, and the agent's validated
//! reading of it.

use berth_core::launch::{
    CheckKind, CommandLine, HealthCheckSpec, InstanceSpec, MAX_PORTS, SpecError, check_path,
};
use berth_core::spec::{HealthCheck, HealthProtocol};
use berth_core::{AppId, AppSpec, InstanceId};
use berth_proto::agent::v1 as pb;

use crate::status::{request_from_pb, request_to_pb};

/// The order to start instance `inst` of `spec` at `config_version` (the app version
/// whose change last needed new instances). Fields the spec leaves out are sent empty or
/// zero; the agent applies the defaults.
pub fn start_message(spec: &AppSpec, config_version: u64, inst: &InstanceId) -> pb::StartInstance {
    let s = spec;
    pb::StartInstance {
        instance_id: inst.to_string(),
        app_id: s.id.to_string(),
        app_version: config_version,
        cmd: s.cmd.clone().unwrap_or_default(),
        args: s.args.clone().unwrap_or_default(),
        image: s.image.clone().unwrap_or_default(),
        driver: s.driver().to_string(),
        env: s.env.clone().into_iter().collect(),
        port_count: s.ports.count(),
        resources: Some(request_to_pb(&s.resource_request())),
        health_checks: s.health_checks.iter().map(health_check_to_pb).collect(),
        routes: s.routes.clone(),
        labels: s.labels.clone().into_iter().collect(),
    }
}

/// A spec's health check, as sent.
pub fn health_check_to_pb(h: &HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        protocol: h.protocol.as_str().to_string(),
        path: h.path.clone().unwrap_or_default(),
        port_index: h.port_index,
        command: h.command.clone().unwrap_or_default(),
        grace_period_seconds: h.grace_period_seconds,
        interval_seconds: h.interval_seconds,
        timeout_seconds: h.timeout_seconds,
        max_consecutive_failures: h.max_consecutive_failures,
        ignore_tls_errors: h.ignore_tls_errors,
    }
}

/// Validates a start order once, at the agent's edge, into the typed spec the agent runs
/// and persists.
pub fn launch_from_pb(start: &pb::StartInstance) -> Result<InstanceSpec, SpecError> {
    let instance_id = InstanceId::parse(start.instance_id.clone())
        .map_err(|e| SpecError::field("instance_id", format!("{}: {}", e.message, e.fix)))?;
    if start.app_id.trim().is_empty() {
        return Err(SpecError::field(
            "app_id",
            "is empty: every instance belongs to an app",
        ));
    }
    let app_id = AppId::parse(&start.app_id)
        .map_err(|e| SpecError::field("app_id", format!("{}: {}", e.message, e.fix)))?;
    let image = Some(start.image.trim().to_string()).filter(|i| !i.is_empty());
    let command = CommandLine::choose(&start.cmd, &start.args, image.is_some())?;
    // Empty: whatever driver the node runs (docker when there is an image).
    let driver = start.driver.clone();
    match (driver.as_str(), &image) {
        ("docker", None) => {
            return Err(SpecError::field(
                "image",
                "the docker driver needs an image: set image, or use the process driver",
            ));
        }
        ("process", Some(image)) => {
            return Err(SpecError::field(
                "image",
                format!(
                    "{image:?} is a container image, and the process driver runs programs: use the docker driver, or give cmd or args without an image"
                ),
            ));
        }
        _ => {}
    }
    if start.port_count > MAX_PORTS {
        return Err(SpecError::field(
            "port_count",
            format!(
                "{} ports asked for; at most {MAX_PORTS} per instance",
                start.port_count
            ),
        ));
    }
    for key in start.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(SpecError::field(
                "env",
                format!("{key:?} is not a valid environment variable name"),
            ));
        }
    }
    let health_checks = start
        .health_checks
        .iter()
        .enumerate()
        .map(|(i, check)| check_from_pb(i, check, start.port_count))
        .collect::<Result<_, _>>()?;
    Ok(InstanceSpec {
        instance_id,
        app_id,
        app_version: start.app_version,
        command,
        image,
        driver,
        env: start
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        port_count: start.port_count as usize,
        resources: start
            .resources
            .as_ref()
            .map(request_from_pb)
            .unwrap_or_default(),
        health_checks,
        routes: start.routes.clone(),
        labels: start
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

/// One sent check, with the defaults applied.
pub fn check_from_pb(
    index: usize,
    check: &pb::HealthCheck,
    port_count: u32,
) -> Result<HealthCheckSpec, SpecError> {
    let field = |name: &str| format!("health_checks[{index}].{name}");
    let needs_port = || {
        if check.port_index >= port_count {
            Err(SpecError::field(
                &field("port_index"),
                format!(
                    "port {} does not exist: the instance has {port_count} port(s); raise ports or use an index below it",
                    check.port_index
                ),
            ))
        } else {
            Ok(())
        }
    };
    let kind = match HealthProtocol::parse(&check.protocol) {
        Some(HealthProtocol::Http) => {
            needs_port()?;
            CheckKind::Http {
                path: check_path(&check.path),
            }
        }
        Some(HealthProtocol::Https) => {
            needs_port()?;
            CheckKind::Https {
                path: check_path(&check.path),
                ignore_tls_errors: check.ignore_tls_errors,
            }
        }
        Some(HealthProtocol::Tcp) => {
            needs_port()?;
            CheckKind::Tcp
        }
        Some(HealthProtocol::Command) => {
            if check
                .command
                .first()
                .is_none_or(|program| program.is_empty())
            {
                return Err(SpecError::field(
                    &field("command"),
                    "is empty: give the argv of a program that exits 0 when healthy (for a shell line: [\"/bin/sh\", \"-c\", \"...\"])",
                ));
            }
            CheckKind::Command {
                argv: check.command.clone(),
            }
        }
        None => {
            return Err(SpecError::field(
                &field("protocol"),
                format!(
                    "{:?} is not a check type: use http, https, tcp or command",
                    check.protocol.to_ascii_lowercase()
                ),
            ));
        }
    };
    Ok(HealthCheckSpec::with_defaults(
        kind,
        check.port_index,
        check.grace_period_seconds,
        check.interval_seconds,
        check.timeout_seconds,
        check.max_consecutive_failures,
    ))
}

/// A resolved check as sent (every default spelled out).
pub fn check_spec_to_pb(check: &HealthCheckSpec) -> pb::HealthCheck {
    let (path, command, ignore_tls_errors) = match &check.kind {
        CheckKind::Http { path } => (path.clone(), Vec::new(), false),
        CheckKind::Https {
            path,
            ignore_tls_errors,
        } => (path.clone(), Vec::new(), *ignore_tls_errors),
        CheckKind::Tcp => (String::new(), Vec::new(), false),
        CheckKind::Command { argv } => (String::new(), argv.clone(), false),
    };
    pb::HealthCheck {
        protocol: check.kind.protocol().as_str().to_string(),
        path,
        port_index: check.port_index as u32,
        command,
        grace_period_seconds: check.grace.as_secs() as u32,
        interval_seconds: check.interval.as_secs() as u32,
        timeout_seconds: check.timeout.as_secs() as u32,
        max_consecutive_failures: check.max_consecutive_failures,
        ignore_tls_errors,
    }
}

/// A launch spec as a start order; [`launch_from_pb`] reads it back unchanged.
pub fn launch_to_pb(spec: &InstanceSpec) -> pb::StartInstance {
    let (cmd, args) = match &spec.command {
        Some(CommandLine::Shell(line)) => (line.clone(), Vec::new()),
        Some(CommandLine::Argv(argv)) => (String::new(), argv.clone()),
        None => (String::new(), Vec::new()),
    };
    pb::StartInstance {
        instance_id: spec.instance_id.to_string(),
        app_id: spec.app_id.to_string(),
        app_version: spec.app_version,
        cmd,
        args,
        image: spec.image.clone().unwrap_or_default(),
        driver: spec.driver.clone(),
        env: spec.env.clone().into_iter().collect(),
        port_count: spec.port_count as u32,
        resources: Some(request_to_pb(&spec.resources)),
        health_checks: spec.health_checks.iter().map(check_spec_to_pb).collect(),
        routes: spec.routes.clone(),
        labels: spec.labels.clone().into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use berth_core::launch::{DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT};
    use berth_core::spec::Ports;

    use super::*;

    fn start() -> pb::StartInstance {
        pb::StartInstance {
            instance_id: "web-1".into(),
            app_id: "shop/web".into(),
            app_version: 3,
            cmd: "exec ./web".into(),
            port_count: 1,
            ..Default::default()
        }
    }

    /// A spec using every field the start order carries.
    fn full_spec() -> AppSpec {
        let mut spec = AppSpec::minimal("shop/web", "exec ./web --port $PORT");
        spec.cpus = 2.007;
        spec.mem = 256;
        spec.disk = 10;
        spec.env.insert("LOG_LEVEL".into(), "debug".into());
        spec.ports = Ports::Named(vec!["http".into(), "admin".into()]);
        spec.routes = vec!["shop.example".into(), "example/api".into()];
        spec.labels.insert("team".into(), "shop".into());
        spec.health_checks = vec![
            HealthCheck {
                protocol: HealthProtocol::Http,
                path: Some("/healthz".into()),
                port_index: 0,
                command: None,
                grace_period_seconds: 30,
                interval_seconds: 2,
                timeout_seconds: 1,
                max_consecutive_failures: 3,
                ignore_tls_errors: false,
            },
            HealthCheck {
                protocol: HealthProtocol::Https,
                path: Some("/ready".into()),
                port_index: 1,
                command: None,
                grace_period_seconds: 5,
                interval_seconds: 10,
                timeout_seconds: 4,
                max_consecutive_failures: 2,
                ignore_tls_errors: true,
            },
            HealthCheck {
                protocol: HealthProtocol::Command,
                path: None,
                port_index: 0,
                command: Some(vec!["/bin/true".into()]),
                grace_period_seconds: 0,
                interval_seconds: 2,
                timeout_seconds: 1,
                max_consecutive_failures: 3,
                ignore_tls_errors: false,
            },
        ];
        spec
    }

    #[test]
    fn start_messages_carry_the_spec_as_written() {
        let spec = full_spec();
        let inst = InstanceId::generate(&spec.id, 0x1f);
        let msg = start_message(&spec, 7, &inst);
        // Spelled out as the server has always built it.
        let expected = pb::StartInstance {
            instance_id: "shop-web.1f".into(),
            app_id: "shop/web".into(),
            app_version: 7,
            cmd: "exec ./web --port $PORT".into(),
            args: Vec::new(),
            image: String::new(),
            driver: "process".into(),
            env: [("LOG_LEVEL".to_string(), "debug".to_string())].into(),
            port_count: 2,
            resources: Some(pb::Resources {
                cpus: 2.007,
                mem_mib: 256,
                disk_mib: 10,
            }),
            health_checks: vec![
                pb::HealthCheck {
                    protocol: "http".into(),
                    path: "/healthz".into(),
                    port_index: 0,
                    command: Vec::new(),
                    grace_period_seconds: 30,
                    interval_seconds: 2,
                    timeout_seconds: 1,
                    max_consecutive_failures: 3,
                    ignore_tls_errors: false,
                },
                pb::HealthCheck {
                    protocol: "https".into(),
                    path: "/ready".into(),
                    port_index: 1,
                    command: Vec::new(),
                    grace_period_seconds: 5,
                    interval_seconds: 10,
                    timeout_seconds: 4,
                    max_consecutive_failures: 2,
                    ignore_tls_errors: true,
                },
                pb::HealthCheck {
                    protocol: "command".into(),
                    path: String::new(),
                    port_index: 0,
                    command: vec!["/bin/true".into()],
                    grace_period_seconds: 0,
                    interval_seconds: 2,
                    timeout_seconds: 1,
                    max_consecutive_failures: 3,
                    ignore_tls_errors: false,
                },
            ],
            routes: vec!["shop.example".into(), "example/api".into()],
            labels: [("team".to_string(), "shop".to_string())].into(),
        };
        assert_eq!(msg, expected);
        // Same bytes (the maps hold one entry each, so their order is fixed).
        use prost::Message;
        assert_eq!(msg.encode_to_vec(), expected.encode_to_vec());
    }

    #[test]
    fn images_and_args_are_sent_as_given() {
        let mut spec = full_spec();
        spec.cmd = None;
        spec.args = Some(vec!["./web".into(), "--fast".into()]);
        spec.image = Some("shop-web:1.4".into());
        let msg = start_message(&spec, 1, &InstanceId::new("i"));
        assert_eq!(msg.cmd, "");
        assert_eq!(msg.args, vec!["./web".to_string(), "--fast".to_string()]);
        assert_eq!(msg.image, "shop-web:1.4");
        assert_eq!(msg.driver, "docker", "an image runs on docker by default");
    }

    #[test]
    fn a_start_order_round_trips_through_the_launch_spec() {
        let spec = full_spec();
        let msg = start_message(&spec, 7, &InstanceId::generate(&spec.id, 1));
        let launch = launch_from_pb(&msg).unwrap();
        assert_eq!(launch.resources, spec.resource_request(), "cpus unrounded");
        assert_eq!(launch.health_checks[1].timeout, Duration::from_secs(4));
        let again = launch_to_pb(&launch);
        assert_eq!(again, msg, "every field of this spec is already resolved");
        assert_eq!(launch_from_pb(&again).unwrap(), launch);

        let mut argv = launch.clone();
        argv.command = Some(CommandLine::Argv(vec!["./web".into(), "a b".into()]));
        argv.image = Some("shop-web:1.4".into());
        argv.driver = "docker".into();
        assert_eq!(launch_from_pb(&launch_to_pb(&argv)).unwrap(), argv);
        argv.command = None;
        assert_eq!(launch_from_pb(&launch_to_pb(&argv)).unwrap(), argv);
    }

    #[test]
    fn accepts_a_shell_command_and_applies_check_defaults() {
        let mut s = start();
        s.health_checks.push(pb::HealthCheck {
            protocol: "HTTP".into(),
            path: "healthz".into(),
            ..Default::default()
        });
        let spec = launch_from_pb(&s).unwrap();
        assert_eq!(spec.command, Some(CommandLine::Shell("exec ./web".into())));
        assert_eq!(spec.driver, "", "no driver asked for: the node's own");
        let check = &spec.health_checks[0];
        assert_eq!(
            check.kind,
            CheckKind::Http {
                path: "/healthz".into()
            }
        );
        assert_eq!(check.interval, DEFAULT_CHECK_INTERVAL);
        assert_eq!(check.timeout, DEFAULT_CHECK_TIMEOUT);
        assert_eq!(check.max_consecutive_failures, 3);
    }

    #[test]
    fn an_image_alone_runs_its_own_command_and_cmd_overrides_it() {
        let mut s = start();
        s.cmd = String::new();
        s.image = "shop-web:1.4".into();
        let spec = launch_from_pb(&s).unwrap();
        assert_eq!(spec.command, None);
        assert_eq!(spec.image.as_deref(), Some("shop-web:1.4"));
        s.cmd = "exec ./web --fast".into();
        s.driver = "docker".into();
        let spec = launch_from_pb(&s).unwrap();
        assert_eq!(
            spec.command,
            Some(CommandLine::Shell("exec ./web --fast".into()))
        );
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        type Mutate = fn(&mut pb::StartInstance);
        let cases: Vec<(Mutate, &str)> = vec![
            (|s| s.instance_id = "../etc".into(), "instance_id"),
            (|s| s.instance_id = String::new(), "instance_id"),
            (|s| s.app_id = String::new(), "app_id"),
            (|s| s.args = vec!["x".into()], "both cmd and args"),
            (|s| s.cmd = String::new(), "neither cmd nor args"),
            (
                |s| {
                    s.cmd = String::new();
                    s.image = "shop-web:1.4".into();
                    s.driver = "process".into();
                },
                "StartInstance.image",
            ),
            (
                |s| s.driver = "docker".into(),
                "docker driver needs an image",
            ),
            (
                |s| {
                    s.cmd = String::new();
                    s.args = vec![String::new()];
                },
                "args[0]",
            ),
            (|s| s.port_count = 1000, "port_count"),
            (
                |s| {
                    s.env.insert("A=B".into(), "x".into());
                },
                "env",
            ),
            (
                |s| {
                    s.health_checks.push(pb::HealthCheck {
                        protocol: "grpc".into(),
                        ..Default::default()
                    })
                },
                "health_checks[0].protocol",
            ),
            (
                |s| {
                    s.health_checks.push(pb::HealthCheck {
                        protocol: "tcp".into(),
                        port_index: 1,
                        ..Default::default()
                    })
                },
                "health_checks[0].port_index",
            ),
            (
                |s| {
                    s.health_checks.push(pb::HealthCheck {
                        protocol: "command".into(),
                        ..Default::default()
                    })
                },
                "health_checks[0].command",
            ),
        ];
        for (mutate, expected) in cases {
            let mut s = start();
            mutate(&mut s);
            let err = launch_from_pb(&s).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn error_texts_are_the_agents() {
        let mut s = start();
        s.instance_id = "../etc".into();
        assert_eq!(
            launch_from_pb(&s).unwrap_err().to_string(),
            "StartInstance.instance_id: \"../etc\" is not a valid instance id: use 1-128 characters from a-z, A-Z, 0-9, '-', '_' and '.', not starting with '.'"
        );
        let mut s = start();
        s.health_checks.push(pb::HealthCheck {
            protocol: "GRPC".into(),
            ..Default::default()
        });
        assert_eq!(
            launch_from_pb(&s).unwrap_err().to_string(),
            "StartInstance.health_checks[0].protocol: \"grpc\" is not a check type: use http, https, tcp or command"
        );
    }
}
