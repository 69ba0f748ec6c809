//! Follows one deployment through real state: counts where the roll stands, turns what
//! changed since the last pass into steps, and says when it is done or has failed.
//! Pure over the real state, so a pass can run it under the state lock.

use std::collections::{HashMap, HashSet};

use berth_core::InstanceId;
use berth_core::deployment::{Deployment, DeploymentState, Progress};
use berth_core::instance::InstanceState;
use berth_store::AppVersion;

use crate::state::{NodeStatus, RealState};

/// Failures in a row of the new version's instances after which a deployment fails
/// without waiting for its deadline: a crash-looping version will not get better.
pub const CRASH_LOOP_FAILURES: u32 = 3;

/// Without health checks, an instance counts as ready once it has stayed up this long:
/// "running" alone would pass a program that exits at once, and the deployment would
/// succeed before the crash loop shows.
pub const MIN_UP_WITHOUT_CHECKS_MS: u64 = 1_000;

/// A deployment being followed, with what was already said about each instance.
pub struct Tracked {
    pub d: Deployment,
    seen: HashMap<InstanceId, Seen>,
    /// False for a deployment loaded after a restart: the first pass only learns what
    /// exists, so steps said before the restart are not said twice.
    primed: bool,
    /// The app's failure count when following began.
    base_failures: Option<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// When it was first seen up (running or healthy) without interruption.
    up_since: Option<u64>,
    alive: bool,
    ready: bool,
    leaving: bool,
    gone: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Done,
    Fail(String),
    /// The app no longer exists.
    Cancel(String),
}

impl Tracked {
    pub fn new(d: Deployment, failures_now: u32) -> Self {
        Tracked {
            d,
            seen: HashMap::new(),
            primed: true,
            base_failures: Some(failures_now),
        }
    }

    pub fn loaded(d: Deployment) -> Self {
        Tracked {
            d,
            seen: HashMap::new(),
            primed: false,
            base_failures: None,
        }
    }

    /// A rollback starts counting failures afresh.
    pub fn reset_failures(&mut self, failures_now: u32) {
        self.base_failures = Some(failures_now);
    }

    /// One look at real state. Adds steps and progress to `self.d`; returns the verdict
    /// and the new steps' messages.
    pub fn evaluate(
        &mut self,
        app: Option<&AppVersion>,
        state: &RealState,
        now_ms: u64,
    ) -> (Verdict, Vec<String>) {
        let Some(app) = app else {
            return (Verdict::Cancel("the app no longer exists".into()), vec![]);
        };
        let target = self.d.target().clone();
        if app.config_version != target.config_version {
            // The change that moves the app to the target is not visible yet.
            return (Verdict::Continue, vec![]);
        }
        let id = app.spec.id.as_str();
        let cfgv = target.config_version.0;
        let checked = !app.spec.health_checks.is_empty();
        let mut p = Progress {
            wanted: target.instances,
            ..Progress::default()
        };
        // Said in this order, whatever order instances are met in.
        let mut started: Vec<String> = Vec::new();
        let mut newly_ready: Vec<String> = Vec::new();
        let mut said: Vec<String> = Vec::new();
        let mut present: HashSet<&InstanceId> = HashSet::new();
        let nodes = state
            .nodes
            .values()
            .filter(|n| n.status != NodeStatus::Lost);
        for inst in nodes.flat_map(|n| n.instances.values()) {
            if inst.app != id {
                continue;
            }
            present.insert(&inst.id);
            let seen = self.seen.entry(inst.id.clone()).or_default();
            let requested = state.stop_requested.contains_key(&inst.id);
            let is_target = inst.version == cfgv;
            if is_target && inst.state.is_active() && !requested {
                if !seen.alive {
                    seen.alive = true;
                    started.push(format!(
                        "starting new instance {} on {}",
                        inst.id, inst.node
                    ));
                }
                p.active += 1;
                if inst.state.is_up() {
                    seen.up_since.get_or_insert(now_ms);
                } else {
                    seen.up_since = None;
                }
                let ready = if checked {
                    inst.state == InstanceState::Healthy
                } else {
                    seen.up_since
                        .is_some_and(|t| now_ms >= t + MIN_UP_WITHOUT_CHECKS_MS)
                };
                if ready {
                    p.ready += 1;
                    if !seen.ready {
                        seen.ready = true;
                        newly_ready.push(format!("{} on {}", inst.id, inst.node));
                    }
                }
            } else if inst.state.is_terminal() {
                if seen.alive && !seen.gone && (seen.leaving || !is_target) {
                    seen.gone = true;
                    // The agent's message usually says "stopped: ..." already.
                    let how = if inst.message.is_empty() {
                        "stopped".to_string()
                    } else if inst.message.starts_with("stopped") {
                        inst.message.clone()
                    } else {
                        format!("stopped: {}", inst.message)
                    };
                    said.push(format!(
                        "instance {} (version {}) {how}",
                        inst.id, inst.version
                    ));
                } else if is_target
                    && !requested
                    && !seen.gone
                    && inst.state == InstanceState::Failed
                    && inst.started_at_ms.max(0) as u64 >= self.d.created_at_ms
                {
                    seen.gone = true;
                    let tail = inst.stderr_tail.lines().last().unwrap_or("");
                    said.push(format!(
                        "new instance {} failed: {}{}",
                        inst.id,
                        inst.message,
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!(" (stderr: {tail})")
                        }
                    ));
                }
            } else if inst.state != InstanceState::Lost {
                seen.alive = true;
                let stopping = requested || inst.state == InstanceState::Stopping;
                if !is_target || stopping {
                    p.leaving += 1;
                }
                if stopping && !seen.leaving {
                    seen.leaving = true;
                    said.push(format!(
                        "draining instance {} (version {}) on {}: out of the registry, stopped after the drain period",
                        inst.id, inst.version, inst.node
                    ));
                }
            }
        }
        for pending in state.pending.values() {
            if pending.app == id && pending.version == cfgv {
                p.active += 1;
                let seen = self.seen.entry(pending.id.clone()).or_default();
                if !seen.alive {
                    seen.alive = true;
                    started.push(format!(
                        "starting new instance {} on {}",
                        pending.id, pending.node
                    ));
                }
                present.insert(&pending.id);
            }
        }
        for (inst, seen) in self.seen.iter_mut() {
            if seen.alive && !seen.gone && !present.contains(inst) {
                seen.gone = true;
                said.push(format!("instance {inst} is gone"));
            }
        }
        let before = p.ready as usize - newly_ready.len();
        let ready_steps = newly_ready.into_iter().enumerate().map(|(i, what)| {
            format!(
                "new instance {what} is {} ({}/{} ready)",
                if checked { "healthy" } else { "running" },
                before + i + 1,
                p.wanted
            )
        });
        let mut said: Vec<String> = started.into_iter().chain(ready_steps).chain(said).collect();

        let failures = state.apps.get(id).map(|h| h.failures).unwrap_or(0);
        let base = *self.base_failures.get_or_insert(failures);
        if !self.primed {
            self.primed = true;
            said.clear();
        }
        // A server that restarted meets instances again that it had already reported
        // (its first look may come before their agent reconnects): never say it twice.
        said.retain(|message| !self.d.steps.iter().any(|step| &step.message == message));
        self.d.progress = p.clone();
        for message in &said {
            self.d.step(now_ms, message.clone());
        }

        let verdict = if p.done() {
            Verdict::Done
        } else if self.d.state == DeploymentState::Running
            && failures.saturating_sub(base) >= CRASH_LOOP_FAILURES
        {
            let last = state
                .apps
                .get(id)
                .and_then(|h| h.last_failure_info.as_ref())
                .map(|f| {
                    let tail = f.stderr_tail.trim();
                    if tail.is_empty() {
                        format!("; last: {}", f.message)
                    } else {
                        format!("; last: {} (stderr: {tail})", f.message)
                    }
                })
                .unwrap_or_default();
            Verdict::Fail(format!(
                "new instances keep failing ({} failures in a row){last}",
                failures - base
            ))
        } else if self.d.expired(now_ms) {
            Verdict::Fail(format!(
                "not done within {} s: {}/{} ready, {} instance(s) still to stop",
                self.d.timeout_ms / 1000,
                p.ready,
                p.wanted,
                p.leaving
            ))
        } else {
            Verdict::Continue
        };
        (verdict, said)
    }
}

#[cfg(test)]
mod tests;
