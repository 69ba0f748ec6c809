//! What one instance runs, with every default applied: the launch spec the server orders
//! an agent to start (`StartInstance` on the wire, decoded by `berth-wire`) and that the
//! agent persists beside the instance.
//!
//! Owns the rules of a launch that do not depend on the wire: how a command line is
//! chosen from cmd, args and an image, and how a health check's zero fields take the
//! defaults of [`crate::spec`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{AppId, InstanceId};
use crate::resources::ResourceRequest;
use crate::spec::{
    DEFAULT_INTERVAL_SECONDS, DEFAULT_MAX_CONSECUTIVE_FAILURES, DEFAULT_TIMEOUT_SECONDS,
    HealthProtocol,
};

/// More ports than any sane app needs; guards the agent's allocator against a garbage
/// count.
pub const MAX_PORTS: u32 = 64;

/// Defaults for the check fields a launch leaves at zero (the spec's defaults).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(DEFAULT_INTERVAL_SECONDS as u64);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(DEFAULT_TIMEOUT_SECONDS as u64);

/// A launch that cannot be acted on; names the field and the fix.
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

impl CommandLine {
    /// The command line of a launch: `cmd` (blank: none) or `args` (empty: none), never
    /// both; neither only with an image, whose own command then runs (`Ok(None)`).
    pub fn choose(cmd: &str, args: &[String], has_image: bool) -> Result<Option<Self>, SpecError> {
        match (cmd.trim().is_empty(), args.is_empty()) {
            (false, true) => Ok(Some(CommandLine::Shell(cmd.to_string()))),
            (true, false) if !args[0].is_empty() => Ok(Some(CommandLine::Argv(args.to_vec()))),
            (true, false) => Err(SpecError::field(
                "args",
                "the program (args[0]) is empty: name the executable to run",
            )),
            (false, false) => Err(SpecError::field(
                "cmd",
                "both cmd and args are set: give cmd (run by /bin/sh -c) or args (no shell), not both",
            )),
            (true, true) if has_image => Ok(None),
            (true, true) => Err(SpecError::field(
                "cmd",
                "neither cmd nor args is set: give the command line to run",
            )),
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

impl CheckKind {
    pub fn protocol(&self) -> HealthProtocol {
        match self {
            CheckKind::Http { .. } => HealthProtocol::Http,
            CheckKind::Https { .. } => HealthProtocol::Https,
            CheckKind::Tcp => HealthProtocol::Tcp,
            CheckKind::Command { .. } => HealthProtocol::Command,
        }
    }
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

impl HealthCheckSpec {
    /// A check from its wire fields, where zero means "the default" (except the grace
    /// period, where zero is no grace).
    pub fn with_defaults(
        kind: CheckKind,
        port_index: u32,
        grace_period_seconds: u32,
        interval_seconds: u32,
        timeout_seconds: u32,
        max_consecutive_failures: u32,
    ) -> Self {
        let secs = |value: u32, default: Duration| {
            if value == 0 {
                default
            } else {
                Duration::from_secs(u64::from(value))
            }
        };
        Self {
            kind,
            port_index: port_index as usize,
            grace: Duration::from_secs(u64::from(grace_period_seconds)),
            interval: secs(interval_seconds, DEFAULT_CHECK_INTERVAL),
            timeout: secs(timeout_seconds, DEFAULT_CHECK_TIMEOUT),
            max_consecutive_failures: if max_consecutive_failures == 0 {
                DEFAULT_MAX_CONSECUTIVE_FAILURES
            } else {
                max_consecutive_failures
            },
        }
    }
}

/// An http(s) check's path, always absolute: `""` -> `/`, `healthz` -> `/healthz`.
pub fn check_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// One instance to run. Its serde form is the agent's instance record: keep it stable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub instance_id: InstanceId,
    pub app_id: AppId,
    pub app_version: u64,
    /// `None` only for an image run with its own command.
    pub command: Option<CommandLine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Empty: whatever driver the node runs (docker when there is an image).
    pub driver: String,
    pub env: BTreeMap<String, String>,
    pub port_count: usize,
    pub resources: ResourceRequest,
    pub health_checks: Vec<HealthCheckSpec>,
    pub routes: Vec<String>,
    pub labels: BTreeMap<String, String>,
}
