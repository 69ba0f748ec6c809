//! One reconciliation pass, computed: desired versions vs real instances -> a [`Plan`].
//!
//! [`plan`] is a pure function of its inputs (desired state, a read-only look at real
//! state, the connected nodes, the time, its settings): it changes nothing and sends
//! nothing. The applier (`reconcile::apply`) records what the plan ordered (pending
//! starts, requested stops) in real state, so the next pass never orders the same thing
//! twice, emits its notes and sends its commands.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use berth_core::instance::InstanceState;
use berth_core::scheduler::{self, NodeView};
use berth_core::{AppId, InstanceId, NodeId};
use berth_store::AppVersion;
use tokio::time::Instant;

use crate::events::{EventKind, NewEvent, Note};
use crate::state::{AppHealth, LastFailure, NodeStatus, Pending, RealState};

/// Timing knobs of a pass.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// A start not reported by its agent within this time is given up (counts as a failure).
    pub launch_timeout: std::time::Duration,
    /// A stop not confirmed within this time is sent again.
    pub stop_retry: std::time::Duration,
    pub drain_ms: u32,
    pub grace_ms: u32,
}

/// What a pass looks at. The plan borrows from `desired` (`'d`) only, so real state is
/// free to change again once the plan is made.
pub struct PlanInput<'d, 's> {
    pub desired: &'d [AppVersion],
    pub state: &'s RealState,
    /// Nodes with an open agent session: only they can take new instances.
    pub connected: &'s BTreeSet<NodeId>,
    pub now: Instant,
    /// Wall-clock time, for the failure records people read.
    pub now_ms: u64,
    /// The number the first new instance id takes (`RealState::next_instance_seq`).
    /// Ids are given here, not by the applier, so a plan is complete (its events name
    /// the instances) and the same inputs always give the same plan.
    pub first_seq: u64,
}

/// What a pass decided. Everything in it is carried out by the applier, in this order:
/// state first (timeouts, re-armed stops, failures, verdicts), then notes, then commands.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// Starts never reported within the launch timeout: forgotten (their failures are
    /// in `failures`).
    pub timed_out: Vec<InstanceId>,
    /// Stops never confirmed within the retry time: forgotten, so they can be ordered
    /// again.
    pub rearmed: Vec<InstanceId>,
    /// Failures to count, in order.
    pub failures: Vec<Failure>,
    pub starts: Vec<Start<'a>>,
    pub stops: Vec<Stop>,
    /// The scheduler's verdict for each app it placed instances of this pass.
    pub placements: Vec<Placement>,
    /// Apps with nothing to place: an earlier "cannot be placed" no longer applies.
    pub settled: Vec<String>,
    /// Apps whose launch delay was announced, with the failure count it was said at.
    pub delays_announced: Vec<(String, u32)>,
    /// Events to emit, in order.
    pub notes: Vec<Note>,
    /// The first instance sequence number this plan left unused.
    pub next_seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub app: String,
    /// What the failed instance said, when there is one to tell about.
    pub info: Option<LastFailure>,
}

/// A new instance of `app` (its current config version) placed on `node`.
#[derive(Debug, Clone)]
pub struct Start<'a> {
    pub app: &'a AppVersion,
    pub instance: InstanceId,
    pub node: NodeId,
}

impl Start<'_> {
    /// The start as real state remembers it until the agent reports it.
    pub fn pending(&self, ordered_at: Instant) -> Pending {
        Pending {
            id: self.instance.clone(),
            app: self.app.spec.id.to_string(),
            version: self.app.config_version.0,
            node: self.node.clone(),
            resources: self.app.spec.resources(),
            ordered_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub instance: InstanceId,
    pub node: NodeId,
    pub app: String,
    pub reason: String,
    pub drain_ms: u32,
    pub grace_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub app: String,
    /// Why some instances could not be placed; `None` when all were.
    pub why: Option<String>,
}

/// An instance as the planner counts it.
struct Live {
    id: InstanceId,
    node: NodeId,
    version: u64,
    state: InstanceState,
    /// Newer sorts later; pending starts are the youngest.
    age_key: (bool, i64),
    /// The agent's last word, for the reason of a replacement.
    message: String,
}

/// The apps' launch health as this pass sees it: what real state holds plus the
/// failures the pass itself counts (they delay the replacements it orders).
struct Health<'a> {
    base: &'a HashMap<String, AppHealth>,
    changed: HashMap<String, AppHealth>,
}

impl Health<'_> {
    fn get(&self, app: &str) -> Option<&AppHealth> {
        self.changed.get(app).or_else(|| self.base.get(app))
    }

    fn note_failure(&mut self, app: &str, now: Instant, info: Option<LastFailure>) {
        let base = self.base;
        self.changed
            .entry(app.to_string())
            .or_insert_with(|| base.get(app).cloned().unwrap_or_default())
            .note_failure(now, info);
    }
}

pub fn plan<'d>(input: &PlanInput<'d, '_>, cfg: &PlanConfig) -> Plan<'d> {
    let PlanInput {
        desired,
        state,
        connected,
        now,
        now_ms,
        first_seq,
    } = *input;
    let mut out = Plan {
        next_seq: first_seq,
        ..Plan::default()
    };
    let mut health = Health {
        base: &state.apps,
        changed: HashMap::new(),
    };

    // Starts never reported are given up; stops never confirmed are re-armed. What is
    // left is what this pass counts on.
    let mut pending: Vec<&Pending> = state.pending.values().collect();
    pending.sort_by(|a, b| a.id.cmp(&b.id));
    let (expired, pending): (Vec<&Pending>, Vec<&Pending>) = pending
        .into_iter()
        .partition(|p| now.duration_since(p.ordered_at) >= cfg.launch_timeout);
    for p in expired {
        out.timed_out.push(p.id.clone());
        out.notes.push(Note {
            kind: EventKind::LaunchTimeout,
            about: NewEvent::app(&p.app)
                .with_node(&p.node)
                .with_instance(&p.id),
            message: format!(
                "node {} did not report {} within {} s of the start order",
                p.node,
                p.id,
                cfg.launch_timeout.as_secs()
            ),
        });
        out.failures.push(Failure {
            app: p.app.clone(),
            info: None,
        });
        health.note_failure(&p.app, now, None);
    }
    let mut rearmed: Vec<InstanceId> = state
        .stop_requested
        .iter()
        .filter(|(_, at)| now.duration_since(**at) >= cfg.stop_retry)
        .map(|(id, _)| id.clone())
        .collect();
    rearmed.sort();
    out.rearmed = rearmed;
    let stop_requested = |id: &InstanceId| {
        state
            .stop_requested
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < cfg.stop_retry)
    };

    let mut by_app: BTreeMap<&str, Vec<Live>> = BTreeMap::new();
    for node in state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Lost)
    {
        for inst in node.instances.values() {
            if inst.state.is_active() && !stop_requested(&inst.id) {
                by_app.entry(inst.app.as_str()).or_default().push(Live {
                    id: inst.id.clone(),
                    node: node.id.clone(),
                    version: inst.version,
                    state: inst.state,
                    age_key: (false, inst.started_at_ms),
                    message: inst.message.clone(),
                });
            }
        }
    }
    for p in &pending {
        by_app.entry(p.app.as_str()).or_default().push(Live {
            id: p.id.clone(),
            node: p.node.clone(),
            version: p.version,
            state: InstanceState::Pending,
            age_key: (true, 0),
            message: String::new(),
        });
    }

    let mut stops: Vec<(InstanceId, NodeId, String, String)> = Vec::new();
    let known: HashSet<&str> = desired.iter().map(|a| a.spec.id.as_str()).collect();
    for (app, live) in &by_app {
        if !known.contains(app) {
            for l in live {
                stops.push((
                    l.id.clone(),
                    l.node.clone(),
                    app.to_string(),
                    "app deleted".into(),
                ));
            }
        }
    }

    let spec_resources: HashMap<&str, berth_core::Resources> = desired
        .iter()
        .map(|a| (a.spec.id.as_str(), a.spec.resources()))
        .collect();
    let mut nodes = node_views(state, connected, &pending, &stop_requested, &spec_resources);
    let mut starts = Vec::new();
    for app in desired {
        let id = app.spec.id.as_str();
        let empty = Vec::new();
        let live = by_app.get(id).unwrap_or(&empty);
        let cfgv = app.config_version.0;
        let (current, mut old): (Vec<&Live>, Vec<&Live>) =
            live.iter().partition(|l| l.version == cfgv);
        // An instance the agent found unhealthy (its checks failed
        // max_consecutive_failures times) is replaced: it counts as a failure, so the
        // replacement waits out the app's backoff.
        let (unhealthy, mut current): (Vec<&Live>, Vec<&Live>) = current
            .into_iter()
            .partition(|l| l.state == InstanceState::Unhealthy);
        for l in unhealthy {
            let info = LastFailure {
                instance: l.id.to_string(),
                at_ms: now_ms,
                exit_code: None,
                message: format!("unhealthy: {}", l.message),
                stderr_tail: String::new(),
            };
            health.note_failure(id, now, Some(info.clone()));
            out.failures.push(Failure {
                app: id.to_string(),
                info: Some(info),
            });
            stops.push((
                l.id.clone(),
                l.node.clone(),
                id.to_string(),
                format!("unhealthy, replacing it: {}", l.message),
            ));
        }
        let wanted = app.spec.instances as usize;
        // With health checks a new instance counts once healthy; old ones count while
        // they run, whatever checks their version had.
        let checked = !app.spec.health_checks.is_empty();
        let current_up = current
            .iter()
            .filter(|l| l.state == InstanceState::Healthy || (!checked && l.state.is_up()))
            .count();
        let old_up = old.iter().filter(|l| l.state.is_up()).count();

        if current.len() > wanted {
            current.sort_by_key(|l| std::cmp::Reverse(l.age_key));
            for l in &current[..current.len() - wanted] {
                stops.push((
                    l.id.clone(),
                    l.node.clone(),
                    id.to_string(),
                    format!("surplus: {wanted} wanted"),
                ));
            }
        }
        let step = rollout(
            wanted,
            current.len().min(wanted),
            current_up,
            old.len(),
            old_up,
            &app.spec.upgrade_strategy,
        );
        if step.stop_old > 0 {
            // Old instances that are not up go first, then the youngest.
            old.sort_by_key(|l| (l.state.is_up(), std::cmp::Reverse(l.age_key)));
            for l in &old[..step.stop_old] {
                stops.push((
                    l.id.clone(),
                    l.node.clone(),
                    id.to_string(),
                    format!("replaced by version {cfgv}"),
                ));
            }
        }
        if step.start == 0 {
            out.settled.push(id.to_string());
            continue;
        }
        if let Some(wait) = backoff_wait_for(health.get(id), app, now) {
            // `backoff_wait_for` found the app's health, so it is there.
            let failures = health.get(id).map(|h| h.failures).unwrap_or(0);
            let announced = health.get(id).map(|h| h.announced_delay).unwrap_or(0);
            if announced != failures {
                out.delays_announced.push((id.to_string(), failures));
                out.notes.push(Note {
                    kind: EventKind::LaunchDelayed,
                    about: NewEvent::app(id),
                    message: format!(
                        "{id} failed {failures} time(s) in a row; next launch in {:.1} s",
                        wait.as_secs_f64()
                    ),
                });
            }
            continue;
        }
        starts.push((app, step.start as u32));
    }

    for (app, need) in starts {
        let id = app.spec.id.as_str();
        let constraints = app.spec.parsed_constraints();
        let req = scheduler::Request {
            app: &app.spec.id,
            resources: app.spec.resources(),
            driver: app.spec.driver(),
            constraints: &constraints,
            placement: app.spec.placement,
            count: need,
        };
        let outcome = scheduler::place(&mut nodes, &req);
        for node in outcome.placed {
            let instance = InstanceId::generate(&app.spec.id, out.next_seq);
            out.next_seq += 1;
            out.notes.push(Note {
                kind: EventKind::InstanceStartOrdered,
                about: NewEvent::app(id).with_node(&node).with_instance(&instance),
                message: format!(
                    "start {instance} of {id} version {} on {node}",
                    app.config_version
                ),
            });
            out.starts.push(Start {
                app,
                instance,
                node,
            });
        }
        let why = outcome.why.map(|why| {
            format!(
                "{} of {need} instance(s) cannot be placed: {why}",
                outcome.unplaced
            )
        });
        if let Some(why) = &why {
            let said = state.apps.get(id).and_then(|h| h.why.as_deref());
            if said != Some(why.as_str()) {
                out.notes.push(Note {
                    kind: EventKind::PlacementFailed,
                    about: NewEvent::app(id),
                    message: format!("{id}: {why}"),
                });
            }
        }
        out.placements.push(Placement {
            app: id.to_string(),
            why,
        });
    }

    for (instance, node, app, reason) in stops {
        out.notes.push(Note {
            kind: EventKind::InstanceStopOrdered,
            about: NewEvent::app(&app)
                .with_node(&node)
                .with_instance(&instance),
            message: format!("stop {instance} of {app} on {node}: {reason}"),
        });
        out.stops.push(Stop {
            instance,
            node,
            app,
            reason,
            drain_ms: cfg.drain_ms,
            grace_ms: cfg.grace_ms,
        });
    }
    out
}

/// One pass of a rollout from old-version instances to current ones.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    pub start: usize,
    pub stop_old: usize,
}

/// How many current instances to start and old ones to stop, keeping at least
/// `minimum_health_capacity x wanted` instances up and at most
/// `(1 + maximum_over_capacity) x wanted` instances in all. Without old instances this is
/// plain "start what is missing".
pub fn rollout(
    wanted: usize,
    current: usize,
    current_up: usize,
    old: usize,
    old_up: usize,
    strategy: &berth_core::spec::UpgradeStrategy,
) -> Step {
    let need = wanted.saturating_sub(current);
    if old == 0 {
        return Step {
            start: need,
            stop_old: 0,
        };
    }
    let min_up = (wanted as f64 * strategy.minimum_health_capacity).ceil() as usize;
    let max_total = wanted + (wanted as f64 * strategy.maximum_over_capacity).floor() as usize;
    // Old instances that are not up serve nobody: they go at once. Up ones go while
    // enough instances stay up.
    let stop_up = old_up.min((current_up + old_up).saturating_sub(min_up));
    let stop_old = (old - old_up) + stop_up;
    let start = need.min(max_total.saturating_sub(current + old - stop_old));
    Step { start, stop_old }
}

/// How long until the app may launch again, if it must wait.
pub(crate) fn backoff_wait(
    state: &RealState,
    app: &AppVersion,
    now: Instant,
) -> Option<std::time::Duration> {
    backoff_wait_for(state.apps.get(app.spec.id.as_str()), app, now)
}

fn backoff_wait_for(
    health: Option<&AppHealth>,
    app: &AppVersion,
    now: Instant,
) -> Option<std::time::Duration> {
    let health = health?;
    let last = health.last_failure?;
    let ready_at = last + app.spec.backoff().delay(health.failures);
    (ready_at > now).then(|| ready_at - now)
}

/// The scheduler's view of the nodes that can take instances: ready and connected.
/// `spec_resources` stands in for instances whose agent reported no resources, so a
/// terse agent cannot make the scheduler over-commit its node; `pending` starts hold
/// their resources already.
fn node_views(
    state: &RealState,
    connected: &BTreeSet<NodeId>,
    pending: &[&Pending],
    stop_requested: &impl Fn(&InstanceId) -> bool,
    spec_resources: &HashMap<&str, berth_core::Resources>,
) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready && connected.contains(&n.id))
        .map(|n| {
            let mut used = berth_core::Resources::default();
            let mut app_counts: HashMap<AppId, u32> = HashMap::new();
            for inst in n.instances.values() {
                if inst.state.holds_resources() {
                    let reported = inst.resources;
                    used = used
                        + if reported == berth_core::Resources::default() {
                            spec_resources
                                .get(inst.app.as_str())
                                .copied()
                                .unwrap_or_default()
                        } else {
                            reported
                        };
                }
                if inst.state.is_active()
                    && !stop_requested(&inst.id)
                    && let Ok(app) = AppId::parse(&inst.app)
                {
                    *app_counts.entry(app).or_insert(0) += 1;
                }
            }
            NodeView {
                id: n.id.clone(),
                hostname: n.hostname.clone(),
                labels: n.labels.clone(),
                drivers: n.drivers.clone(),
                total: n.total,
                used,
                app_counts,
            }
        })
        .collect();
    for p in pending {
        if let Some(v) = views.iter_mut().find(|v| v.id == p.node) {
            v.used = v.used + p.resources;
            if let Ok(app) = AppId::parse(&p.app) {
                *v.app_counts.entry(app).or_insert(0) += 1;
            }
        }
    }
    views
}

/// Instances of an app in a state people care about, for status lines.
pub fn count_up(state: &RealState, app: &str, version: u64) -> (usize, usize) {
    let mut up = 0;
    let mut active = 0;
    for inst in state.instances() {
        if inst.app == app && inst.version == version && inst.state != InstanceState::Lost {
            if inst.state.is_up() {
                up += 1;
            }
            if inst.state.is_active() && !state.stop_requested.contains_key(&inst.id) {
                active += 1;
            }
        }
    }
    active += state
        .pending
        .values()
        .filter(|p| p.app == app && p.version == version)
        .count();
    (up, active)
}

#[cfg(test)]
mod tests;
