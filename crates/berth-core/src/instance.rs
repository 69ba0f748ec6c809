//! Instance states: what agents report (starting .. failed) and what only the server
//! knows (pending: ordered, not yet reported; lost: its node went silent).

use serde::{Deserialize, Serialize};

use crate::id::InstanceId;
use crate::resources::ResourceRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Ordered by the server, not yet reported by the agent.
    Pending,
    Starting,
    Running,
    Healthy,
    Unhealthy,
    Stopping,
    Exited,
    Failed,
    /// Its node stopped reporting; the instance may still run there.
    Lost,
}

impl InstanceState {
    /// Counts toward the wanted number of instances.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Starting | Self::Running | Self::Healthy | Self::Unhealthy
        )
    }

    /// Ready to replace an older version's instance.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Running | Self::Healthy)
    }

    /// Holds resources on its node.
    pub fn holds_resources(self) -> bool {
        self.is_active() || self == Self::Stopping
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Exited | Self::Failed)
    }

    /// The lower-case name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Failed => "failed",
            Self::Lost => "lost",
        }
    }
}

/// One instance as its agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub instance_id: InstanceId,
    /// As reported: an agent may report apps the server no longer knows.
    pub app_id: String,
    pub app_version: u64,
    pub state: InstanceState,
    pub ports: Vec<u32>,
    /// 0 when nothing runs.
    pub pid: u32,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
    pub exit_code: Option<i32>,
    pub message: String,
    pub stderr_tail: String,
    /// What the instance was started with, as asked for; [`ResourceRequest::reserve`]
    /// gives what it holds on its node.
    pub resources: ResourceRequest,
}
