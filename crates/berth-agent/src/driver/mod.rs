//! Drivers start, stop and re-adopt the programs behind instances. The supervisor only
//! speaks this trait; a node may offer several drivers ([`Drivers`]).

mod docker;
mod exec;
mod logs;
mod process;
mod set;
mod sim;

pub use docker::{DockerApi, DockerDriver, DockerError, ENGINE_FAILURE};
pub use exec::{ExecChild, ExecCommand, Resize, STDERR, STDOUT, StreamNo};
pub use logs::{LogFiles, LogRotator, log_tail, numbered};
pub use process::ProcessDriver;
pub use set::Drivers;
pub use sim::SimDriver;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use berth_core::launch::CommandLine;
use berth_core::{InstanceId, ResourceRequest};

/// Everything a driver needs to launch one instance.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub instance_id: InstanceId,
    /// What to run; `None` only with an image (the image's own command).
    pub command: Option<CommandLine>,
    /// The container image, for container drivers.
    pub image: Option<String>,
    /// The complete environment of the program (nothing else is inherited).
    pub env: BTreeMap<String, String>,
    /// Labels a container carries (instance, app, version, node), to find it by.
    pub labels: BTreeMap<String, String>,
    /// Limits, where the driver enforces them (containers).
    pub resources: ResourceRequest,
    pub work_dir: PathBuf,
    pub logs: LogFiles,
}

/// What the agent persists to find a running program again after it restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverHandle {
    pub driver: String,
    pub pid: u32,
    /// Start time of `pid` in clock ticks since boot; with `boot_id` it tells our process
    /// from a later one that got the same pid.
    pub start_ticks: u64,
    pub boot_id: String,
    /// The container, for container drivers (whose pid alone identifies nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRef>,
}

/// A container by name, with the log files its output is copied into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    pub name: String,
    pub logs: LogFiles,
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// It ended while the agent was not its parent (re-adopted), so the status is lost.
    Unknown,
}

impl Exit {
    pub fn success(&self) -> bool {
        matches!(self, Exit::Code(0))
    }

    pub fn code(&self) -> Option<i32> {
        match self {
            Exit::Code(code) => Some(*code),
            // The shell convention, so one number tells both cases apart.
            Exit::Signal(signal) => Some(128 + signal),
            Exit::Unknown => None,
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => {
                let name = nix::sys::signal::Signal::try_from(*signal)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| format!("signal {signal}"));
                write!(f, "killed by {name}")
            }
            Exit::Unknown => write!(
                f,
                "ended; exit status unknown (re-adopted after an agent restart, so not the agent's child)"
            ),
        }
    }
}

/// A running program: its handle and a future that resolves when it ends.
pub struct Running {
    pub handle: DriverHandle,
    pub exit: BoxFuture<'static, Exit>,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot prepare {what} {path}: {source}")]
    Prepare {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot start {program:?}: {source} (check that the program exists, is executable and is on PATH)"
    )]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot signal process group {pgid}: {source}")]
    Signal { pgid: u32, source: nix::Error },
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Engine(String),
}

pub trait Driver: Send + Sync + 'static {
    /// The name servers select the driver by (`StartInstance.driver`).
    fn name(&self) -> &'static str;

    /// Launches the program; returns once it runs (or could not be started).
    fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError>;

    /// Finds a program started before an agent restart. `None` when it no longer runs.
    fn adopt(&self, handle: &DriverHandle) -> Option<Running>;

    /// Asks the program to stop, and forces it after `grace`. Resolves once it is gone.
    fn stop(
        &self,
        handle: &DriverHandle,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), DriverError>>;

    /// Runs a command health check inside the instance, for drivers that isolate it (a
    /// container has its own file system). `None`: the check runs on the host, beside
    /// the instance, as for processes.
    fn exec_check(
        &self,
        _handle: &DriverHandle,
        _argv: &[String],
        _env: &BTreeMap<String, String>,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        None
    }

    /// Starts `cmd` inside the running instance `handle` names (`berth exec`).
    fn exec(
        &self,
        _handle: &DriverHandle,
        _cmd: &ExecCommand,
    ) -> BoxFuture<'static, Result<ExecChild, DriverError>> {
        let name = self.name();
        Box::pin(async move {
            Err(DriverError::Spec(format!(
                "the {name} driver cannot run commands inside its instances"
            )))
        })
    }
}
