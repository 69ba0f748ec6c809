//! Deployments: the record of one change that affects running instances (a new version,
//! a restart, a scale, a rollback), with its steps, state and progress.
//!
//! The reconciler does the moving; a deployment watches it, says what happened step by
//! step, and decides the outcome: done, failed (deadline or crash loop), rolled back.
//! Times are Unix milliseconds passed in by the caller, so the record survives a restart
//! of the server that tracks it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::AppId;
use crate::version::VersionId;

/// `d-<version>`: the app version the deployment moves to, which is unique.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeploymentId(String);

impl DeploymentId {
    pub fn for_version(version: VersionId) -> Self {
        DeploymentId(format!("d-{version}"))
    }

    /// Accepts `d-<digits>`; anything else cannot name a deployment.
    pub fn parse(raw: &str) -> Option<Self> {
        let digits = raw.strip_prefix("d-")?;
        (!digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| DeploymentId(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentKind {
    Create,
    Update,
    Scale,
    Restart,
    /// Back to an earlier version, asked for by a person.
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Running,
    /// The change failed or was cancelled; the previous version is coming back.
    RollingBack,
    Succeeded,
    /// Failed and not rolled back (no previous version, rollback disabled, or the
    /// rollback itself missed its deadline).
    Failed,
    RolledBack,
    /// Stopped where it stood: by `force`, by a newer forced change, or by deleting the
    /// app. Nothing is rolled back.
    Cancelled,
}

impl DeploymentState {
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::RollingBack)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::RollingBack => "rolling_back",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One app version a deployment moves between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub version: VersionId,
    /// The version instances carry (see the store's `AppVersion::config_version`).
    pub config_version: VersionId,
    pub instances: u32,
}

/// Where the roll stands, counted on every reconciler pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub wanted: u32,
    /// Target-version instances ready for traffic (healthy, or running without checks).
    pub ready: u32,
    /// Target-version instances ordered, starting or up.
    pub active: u32,
    /// Instances still to leave: other versions, and surplus ones, until they exited.
    pub leaving: u32,
}

impl Progress {
    pub fn done(&self) -> bool {
        self.ready >= self.wanted && self.active == self.wanted && self.leaving == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub at_ms: u64,
    pub message: String,
}

/// Steps kept per deployment; a crash-looping roll could otherwise grow without bound.
pub const MAX_STEPS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: DeploymentId,
    pub app: AppId,
    pub kind: DeploymentKind,
    pub state: DeploymentState,
    /// The app's version before the change; `None` for a new app.
    pub from: Option<Target>,
    pub to: Target,
    /// On failure, return to `from`.
    pub rollback_on_failure: bool,
    /// How long each phase (the roll, then a rollback) may take.
    pub timeout_ms: u64,
    pub deadline_ms: u64,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    pub progress: Progress,
    pub steps: Vec<Step>,
    /// Why it failed, was rolled back or cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Deployment {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: AppId,
        kind: DeploymentKind,
        from: Option<Target>,
        to: Target,
        rollback_on_failure: bool,
        timeout_ms: u64,
        now_ms: u64,
    ) -> Self {
        let mut d = Deployment {
            id: DeploymentId::for_version(to.version),
            app,
            kind,
            state: DeploymentState::Running,
            from,
            progress: Progress {
                wanted: to.instances,
                ..Progress::default()
            },
            to,
            rollback_on_failure,
            timeout_ms,
            deadline_ms: now_ms.saturating_add(timeout_ms),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            finished_at_ms: None,
            steps: Vec::new(),
            reason: None,
        };
        let what = match &d.from {
            Some(from) if from.config_version == d.to.config_version => format!(
                "{} instance(s) -> {} of version {}",
                from.instances, d.to.instances, d.to.config_version
            ),
            Some(from) => format!(
                "version {} -> {} ({} instance(s))",
                from.config_version, d.to.config_version, d.to.instances
            ),
            None => format!(
                "{} instance(s) of version {}",
                d.to.instances, d.to.config_version
            ),
        };
        d.step(
            now_ms,
            format!("{:?} started: {what}", d.kind).to_lowercase(),
        );
        d
    }

    /// The version instances must end on: `to`, or `from` while rolling back.
    pub fn target(&self) -> &Target {
        match (&self.state, &self.from) {
            (DeploymentState::RollingBack | DeploymentState::RolledBack, Some(from)) => from,
            _ => &self.to,
        }
    }

    pub fn step(&mut self, now_ms: u64, message: impl Into<String>) {
        if self.steps.len() >= MAX_STEPS {
            // Keep the first step (what the deployment is) and the latest ones.
            self.steps.remove(1);
        }
        self.steps.push(Step {
            at_ms: now_ms,
            message: message.into(),
        });
        self.updated_at_ms = now_ms;
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.state.is_active() && now_ms >= self.deadline_ms
    }

    /// Ends the deployment in `state` (not active) with `reason`.
    pub fn finish(&mut self, state: DeploymentState, now_ms: u64, reason: Option<String>) {
        debug_assert!(!state.is_active());
        self.state = state;
        self.finished_at_ms = Some(now_ms);
        let message = match &reason {
            Some(r) => format!("{state}: {r}"),
            None => state.to_string(),
        };
        self.reason = reason.or(self.reason.take());
        self.step(now_ms, message);
    }

    /// Turns back to `from` with a fresh deadline. `false` when there is nothing to
    /// return to.
    pub fn start_rollback(&mut self, now_ms: u64, reason: String) -> bool {
        let Some(from) = &self.from else {
            return false;
        };
        let message = format!(
            "rolling back to version {} ({} instance(s)): {reason}",
            from.config_version, from.instances
        );
        self.state = DeploymentState::RollingBack;
        self.progress.wanted = from.instances;
        self.deadline_ms = now_ms.saturating_add(self.timeout_ms);
        self.reason = Some(reason);
        self.step(now_ms, message);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(v: u64, n: u32) -> Target {
        Target {
            version: VersionId(v),
            config_version: VersionId(v),
            instances: n,
        }
    }

    #[test]
    fn ids_round_trip_and_reject_garbage() {
        let id = DeploymentId::for_version(VersionId(1234));
        assert_eq!(id.as_str(), "d-1234");
        assert_eq!(DeploymentId::parse("d-1234"), Some(id));
        for bad in ["", "d-", "1234", "d-12a", "d-../x", "D-1"] {
            assert_eq!(DeploymentId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn lifecycle_rollback_switches_target_and_deadline() {
        let app = AppId::parse("a").unwrap();
        let mut d = Deployment::new(
            app,
            DeploymentKind::Update,
            Some(target(1, 3)),
            target(2, 3),
            true,
            1_000,
            10_000,
        );
        assert_eq!(d.state, DeploymentState::Running);
        assert_eq!(d.target().config_version, VersionId(2));
        assert!(
            d.steps[0].message.contains("version 1 -> 2"),
            "{:?}",
            d.steps
        );
        assert!(!d.expired(10_999));
        assert!(d.expired(11_000));
        assert!(d.start_rollback(11_000, "deadline".into()));
        assert_eq!(d.state, DeploymentState::RollingBack);
        assert_eq!(d.target().config_version, VersionId(1));
        assert!(!d.expired(11_500));
        d.finish(DeploymentState::RolledBack, 11_600, None);
        assert!(!d.state.is_active());
        assert_eq!(d.reason.as_deref(), Some("deadline"));
        assert_eq!(d.finished_at_ms, Some(11_600));
    }

    #[test]
    fn a_new_app_has_nothing_to_roll_back_to() {
        let mut d = Deployment::new(
            AppId::parse("a").unwrap(),
            DeploymentKind::Create,
            None,
            target(2, 1),
            true,
            1_000,
            0,
        );
        assert!(!d.start_rollback(5, "x".into()));
        assert_eq!(d.state, DeploymentState::Running);
    }

    #[test]
    fn steps_are_bounded_and_keep_the_first() {
        let mut d = Deployment::new(
            AppId::parse("a").unwrap(),
            DeploymentKind::Restart,
            Some(target(1, 1)),
            target(2, 1),
            true,
            1_000,
            0,
        );
        for i in 0..(MAX_STEPS * 2) {
            d.step(i as u64, format!("s{i}"));
        }
        assert_eq!(d.steps.len(), MAX_STEPS);
        assert!(d.steps[0].message.starts_with("restart started"));
        assert_eq!(
            d.steps.last().unwrap().message,
            format!("s{}", MAX_STEPS * 2 - 1)
        );
    }

    #[test]
    fn progress_is_done_only_when_old_ones_left() {
        let mut p = Progress {
            wanted: 3,
            ready: 3,
            active: 3,
            leaving: 1,
        };
        assert!(!p.done());
        p.leaving = 0;
        assert!(p.done());
        p.active = 4;
        assert!(!p.done(), "a surplus instance must go first");
    }
}
