//! What the agent is asked to run, validated once at the edge (from the server's
//! `StartInstance`) into typed values that are also what the agent persists.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use berth_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};

/// An instance id, safe to use as a folder name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = SpecError;

    fn try_from(id: String) -> Result<Self, SpecError> {
        let valid_chars = id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if id.is_empty() || id.len() > 128 || !valid_chars || id.starts_with('.') {
            return Err(SpecError::field(
                "instance_id",
                format!(
                    "{id:?} is not a valid instance id: use 1-128 characters from a-z, A-Z, 0-9, '-', '_' and '.', not starting with '.'"
                ),
            ));
        }
        Ok(Self(id))
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> String {
        id.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A start request the agent cannot act on; names the field and the fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("StartInstance.{field}: {problem}")]
pub struct SpecError {
    pub field: String,
    pub problem: String,
}

impl SpecError {
    pub fn field(field: &str, problem: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// How to run the program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    /// Run by `/bin/sh -c`.
    Shell(String),
    /// Executed directly, no shell.
    Argv(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Resources {
    pub cpus: f64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl From<&Resources> for pb::Resources {
    fn from(r: &Resources) -> Self {
        pb::Resources {
            cpus: r.cpus,
            mem_mib: r.mem_mib,
            disk_mib: r.disk_mib,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Http {
        path: String,
    },
    Https {
        path: String,
        ignore_tls_errors: bool,
    },
    Tcp,
    Command {
        argv: Vec<String>,
    },
}

/// One health check with every default applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    pub kind: CheckKind,
    pub port_index: usize,
    pub grace: Duration,
    pub interval: Duration,
    pub timeout: Duration,
    pub max_consecutive_failures: u32,
}

/// Defaults for fields the server leaves at zero. Faster than Marathon's 300/60/20/3
/// because rolling deploys wait on the first pass: a 2 s interval finds a healthy
/// instance within about 2 s, and three misses (6 s) confirm a failure without flapping.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_CONSECUTIVE_FAILURES: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub instance_id: InstanceId,
    pub app_id: String,
    pub app_version: u64,
    /// `None` only for an image run with its own command.
    pub command: Option<CommandLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub driver: String,
    pub env: BTreeMap<String, String>,
    pub port_count: usize,
    pub resources: Resources,
    pub health_checks: Vec<HealthCheckSpec>,
    pub routes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// More ports than any sane app needs; guards the allocator against a garbage count.
const MAX_PORTS: u32 = 64;

impl InstanceSpec {
    pub fn from_proto(start: &pb::StartInstance) -> Result<Self, SpecError> {
        let instance_id = InstanceId::try_from(start.instance_id.clone())?;
        if start.app_id.trim().is_empty() {
            return Err(SpecError::field(
                "app_id",
                "is empty: every instance belongs to an app",
            ));
        }
        let image = Some(start.image.trim().to_string()).filter(|i| !i.is_empty());
        let command = match (start.cmd.trim().is_empty(), start.args.is_empty()) {
            (false, true) => Some(CommandLine::Shell(start.cmd.clone())),
            (true, false) if !start.args[0].is_empty() => {
                Some(CommandLine::Argv(start.args.clone()))
            }
            (true, false) => {
                return Err(SpecError::field(
                    "args",
                    "the program (args[0]) is empty: name the executable to run",
                ));
            }
            (false, false) => {
                return Err(SpecError::field(
                    "cmd",
                    "both cmd and args are set: give cmd (run by /bin/sh -c) or args (no shell), not both",
                ));
            }
            // The image's own command runs.
            (true, true) if image.is_some() => None,
            (true, true) => {
                return Err(SpecError::field(
                    "cmd",
                    "neither cmd nor args is set: give the command line to run",
                ));
            }
        };
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
            .map(|(i, check)| check_from_proto(i, check, start.port_count))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            instance_id,
            app_id: start.app_id.clone(),
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
                .map(|r| Resources {
                    cpus: r.cpus,
                    mem_mib: r.mem_mib,
                    disk_mib: r.disk_mib,
                })
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
}

fn check_from_proto(
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
    let path = || {
        if check.path.is_empty() {
            "/".to_string()
        } else if check.path.starts_with('/') {
            check.path.clone()
        } else {
            format!("/{}", check.path)
        }
    };
    let kind = match check.protocol.to_ascii_lowercase().as_str() {
        "http" => {
            needs_port()?;
            CheckKind::Http { path: path() }
        }
        "https" => {
            needs_port()?;
            CheckKind::Https {
                path: path(),
                ignore_tls_errors: check.ignore_tls_errors,
            }
        }
        "tcp" => {
            needs_port()?;
            CheckKind::Tcp
        }
        "command" => {
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
        other => {
            return Err(SpecError::field(
                &field("protocol"),
                format!("{other:?} is not a check type: use http, https, tcp or command"),
            ));
        }
    };
    let secs = |value: u32, default: Duration| {
        if value == 0 {
            default
        } else {
            Duration::from_secs(u64::from(value))
        }
    };
    Ok(HealthCheckSpec {
        kind,
        port_index: check.port_index as usize,
        grace: Duration::from_secs(u64::from(check.grace_period_seconds)),
        interval: secs(check.interval_seconds, DEFAULT_CHECK_INTERVAL),
        timeout: secs(check.timeout_seconds, DEFAULT_CHECK_TIMEOUT),
        max_consecutive_failures: if check.max_consecutive_failures == 0 {
            DEFAULT_MAX_CONSECUTIVE_FAILURES
        } else {
            check.max_consecutive_failures
        },
    })
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn accepts_a_shell_command_and_applies_check_defaults() {
        let mut s = start();
        s.health_checks.push(pb::HealthCheck {
            protocol: "HTTP".into(),
            path: "healthz".into(),
            ..Default::default()
        });
        let spec = InstanceSpec::from_proto(&s).unwrap();
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
        assert_eq!(check.max_consecutive_failures, 3);
    }

    #[test]
    fn an_image_alone_runs_its_own_command_and_cmd_overrides_it() {
        let mut s = start();
        s.cmd = String::new();
        s.image = "shop-web:1.4".into();
        let spec = InstanceSpec::from_proto(&s).unwrap();
        assert_eq!(spec.command, None);
        assert_eq!(spec.image.as_deref(), Some("shop-web:1.4"));
        s.cmd = "exec ./web --fast".into();
        s.driver = "docker".into();
        let spec = InstanceSpec::from_proto(&s).unwrap();
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
            let err = InstanceSpec::from_proto(&s).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn instance_ids_round_trip_through_json() {
        let id = InstanceId::try_from("a.b-c_1".to_string()).unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<InstanceId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<InstanceId>("\"a/b\"").is_err());
    }
}
