use std::fmt;
use std::str::FromStr;

use berth_core::{AppSpec, VersionId};
use serde::{Deserialize, Serialize};

/// Why a version was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created,
    Updated,
    Scaled,
    Restarted,
    /// Back to an earlier version's spec; instances of that version count as current.
    RolledBack,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Scaled => "scaled",
            Change::Restarted => "restarted",
            Change::RolledBack => "rolled_back",
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Change {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "created" => Change::Created,
            "updated" => Change::Updated,
            "scaled" => Change::Scaled,
            "restarted" => Change::Restarted,
            "rolled_back" => Change::RolledBack,
            other => return Err(format!("unknown change kind {other:?}")),
        })
    }
}

/// One version of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    pub spec: AppSpec,
    pub version: VersionId,
    /// The latest version whose change needs new instances (create, update of anything
    /// but the count, restart). Instances carry it, so a scale keeps them and a restart
    /// replaces them.
    pub config_version: VersionId,
    pub change: Change,
    pub created_at_ms: u64,
}

impl AppVersion {
    /// The first version of a new app.
    pub fn first(spec: AppSpec, version: VersionId) -> Self {
        AppVersion {
            spec,
            version,
            config_version: version,
            change: Change::Created,
            created_at_ms: version.unix_ms(),
        }
    }

    /// The version that follows `self` with `spec`, made at `version`.
    pub fn next(&self, spec: AppSpec, version: VersionId, change: Change) -> Self {
        let config_version = if change == Change::Restarted || self.spec.needs_new_instances(&spec)
        {
            version
        } else {
            self.config_version
        };
        AppVersion {
            spec,
            version,
            config_version,
            change,
            created_at_ms: version.unix_ms(),
        }
    }

    /// The version that follows `self` and brings back `earlier`'s spec. It keeps
    /// `earlier`'s config version, so instances of that version still running are kept
    /// and only the missing ones are started.
    pub fn rollback_to(&self, earlier: &AppVersion, version: VersionId) -> Self {
        AppVersion {
            spec: earlier.spec.clone(),
            version,
            config_version: earlier.config_version,
            change: Change::RolledBack,
            created_at_ms: version.unix_ms(),
        }
    }
}

/// Who holds a named lease (the server leader's, for one) after an acquire attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Id of the holder; empty when nobody ever held it.
    pub holder: String,
    /// What the holder published with it (for the leader: how to reach it), as given.
    pub info: String,
    /// Time left before it expires, by the store's clock.
    pub expires_in: std::time::Duration,
    /// Whether the caller holds it now.
    pub mine: bool,
}
