//! The app spec: what an operator asks Berth to run. TOML for people, the same fields in
//! JSON on the API. Parse untrusted input with [`AppSpec::from_toml`] or
//! [`AppSpec::from_json`], which report every problem at once (see [`crate::validate`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::constraint::Constraint;
use crate::id::AppId;
use crate::resources::{ResourceRequest, Resources};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub id: AppId,
    /// Run by `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// Run directly, no shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Container image, for the docker driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `process` (default), `docker` (default when `image` is set) or `sim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default = "defaults::instances")]
    pub instances: u32,
    #[serde(default = "defaults::cpus")]
    pub cpus: f64,
    /// MiB.
    #[serde(default = "defaults::mem")]
    pub mem: u64,
    /// MiB.
    #[serde(default)]
    pub disk: u64,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Ports,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub placement: Placement,
    #[serde(default)]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default = "defaults::backoff_seconds")]
    pub backoff_seconds: f64,
    #[serde(default = "defaults::backoff_factor")]
    pub backoff_factor: f64,
    #[serde(default = "defaults::max_launch_delay_seconds")]
    pub max_launch_delay_seconds: f64,
}

/// Host ports an instance needs: a count, or names (their number is the count; the first
/// is `PORT`/`PORT0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ports {
    Count(u32),
    Named(Vec<String>),
}

impl Default for Ports {
    fn default() -> Self {
        Ports::Count(1)
    }
}

impl Ports {
    pub fn count(&self) -> u32 {
        match self {
            Ports::Count(n) => *n,
            Ports::Named(names) => names.len() as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Fewest instances of the app per node, then most free resources.
    #[default]
    Spread,
    /// Fill the fullest node that still fits.
    Binpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    Command,
}

impl HealthProtocol {
    /// The lower-case name, as in specs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Tcp => "tcp",
            Self::Command => "command",
        }
    }

    /// A name in any case; `None` for anything but the four check types.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            "tcp" => Some(Self::Tcp),
            "command" => Some(Self::Command),
            _ => None,
        }
    }
}

/// Health check defaults, for fields a spec leaves out (and, on the wire, leaves at zero).
/// Why these and not Marathon's 300/60/20/3: docs/SERVER.md, "Health check defaults"; in
/// short, rolling deploys wait on the first pass, so a 2 s interval finds a healthy
/// instance within about 2 s, and three misses (6 s) confirm a failure without flapping.
pub const DEFAULT_GRACE_PERIOD_SECONDS: u32 = 30;
pub const DEFAULT_INTERVAL_SECONDS: u32 = 2;
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 1;
pub const DEFAULT_MAX_CONSECUTIVE_FAILURES: u32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    /// http and https only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Index into the instance's ports; 0 is `PORT`.
    #[serde(default)]
    pub port_index: u32,
    /// command only: argv run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default = "defaults::grace_period_seconds")]
    pub grace_period_seconds: u32,
    #[serde(default = "defaults::interval_seconds")]
    pub interval_seconds: u32,
    #[serde(default = "defaults::timeout_seconds")]
    pub timeout_seconds: u32,
    #[serde(default = "defaults::max_consecutive_failures")]
    pub max_consecutive_failures: u32,
    #[serde(default)]
    pub ignore_tls_errors: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeStrategy {
    /// Share of `instances` that must stay healthy during an upgrade (0.0..=1.0).
    #[serde(default = "defaults::one")]
    pub minimum_health_capacity: f64,
    /// Share of `instances` that may run on top during an upgrade (0.0..=1.0).
    #[serde(default = "defaults::one")]
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        Self {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

pub(crate) mod defaults {
    pub fn instances() -> u32 {
        1
    }
    pub fn cpus() -> f64 {
        0.1
    }
    pub fn mem() -> u64 {
        64
    }
    pub fn backoff_seconds() -> f64 {
        1.0
    }
    pub fn backoff_factor() -> f64 {
        1.15
    }
    pub fn max_launch_delay_seconds() -> f64 {
        300.0
    }
    pub fn grace_period_seconds() -> u32 {
        super::DEFAULT_GRACE_PERIOD_SECONDS
    }
    pub fn interval_seconds() -> u32 {
        super::DEFAULT_INTERVAL_SECONDS
    }
    pub fn timeout_seconds() -> u32 {
        super::DEFAULT_TIMEOUT_SECONDS
    }
    pub fn max_consecutive_failures() -> u32 {
        super::DEFAULT_MAX_CONSECUTIVE_FAILURES
    }
    pub fn one() -> f64 {
        1.0
    }
}

impl AppSpec {
    /// A minimal valid spec, for tests and examples.
    pub fn minimal(id: &str, cmd: &str) -> AppSpec {
        AppSpec {
            id: AppId::parse(id).expect("valid app id"),
            cmd: Some(cmd.to_string()),
            args: None,
            image: None,
            driver: None,
            instances: defaults::instances(),
            cpus: defaults::cpus(),
            mem: defaults::mem(),
            disk: 0,
            env: BTreeMap::new(),
            ports: Ports::default(),
            routes: Vec::new(),
            labels: BTreeMap::new(),
            constraints: Vec::new(),
            placement: Placement::default(),
            health_checks: Vec::new(),
            upgrade_strategy: UpgradeStrategy::default(),
            backoff_seconds: defaults::backoff_seconds(),
            backoff_factor: defaults::backoff_factor(),
            max_launch_delay_seconds: defaults::max_launch_delay_seconds(),
        }
    }

    pub fn resources(&self) -> Resources {
        self.resource_request().reserve()
    }

    /// The resources as written, for whoever must echo them unrounded.
    pub fn resource_request(&self) -> ResourceRequest {
        ResourceRequest {
            cpus: self.cpus,
            mem_mib: self.mem,
            disk_mib: self.disk,
        }
    }

    /// The driver that runs this app.
    pub fn driver(&self) -> &str {
        match (&self.driver, &self.image) {
            (Some(d), _) => d,
            (None, Some(_)) => "docker",
            (None, None) => "process",
        }
    }

    /// Parsed constraints; a validated spec always parses.
    pub fn parsed_constraints(&self) -> Vec<Constraint> {
        self.constraints
            .iter()
            .filter_map(|c| Constraint::parse(c).ok())
            .collect()
    }

    pub fn backoff(&self) -> Backoff {
        Backoff {
            base_seconds: self.backoff_seconds,
            factor: self.backoff_factor,
            max_seconds: self.max_launch_delay_seconds,
        }
    }

    /// True when going from `self` to `new` needs new instances (anything but the
    /// instance count changed).
    pub fn needs_new_instances(&self, new: &AppSpec) -> bool {
        let mut a = self.clone();
        a.instances = new.instances;
        &a != new
    }
}
