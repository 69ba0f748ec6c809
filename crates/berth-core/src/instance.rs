//! Instance states as the server reasons about them.

use serde::{Deserialize, Serialize};

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
}
