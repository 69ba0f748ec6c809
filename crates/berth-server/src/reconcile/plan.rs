//! One reconciliation pass: desired versions vs real instances -> commands.
//!
//! Runs under the real-state lock and records what it ordered (pending starts, requested
//! stops) there, so the next pass never orders the same thing twice.

use std::collections::{HashMap, HashSet};

use berth_core::instance::InstanceState;
use berth_core::scheduler::{self, NodeView};
use berth_core::{AppId, InstanceId, NodeId};
use berth_proto::agent::v1 as pb;
use berth_store::AppVersion;
use tokio::time::Instant;

use crate::events::{EventBus, NewEvent};
use crate::state::{NodeStatus, Pending, RealState};

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

/// A command for one node.
#[derive(Debug)]
pub struct Command {
    pub node: NodeId,
    pub message: pb::ServerMessage,
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

pub fn plan(
    desired: &[AppVersion],
    state: &mut RealState,
    now: Instant,
    cfg: &PlanConfig,
    events: &EventBus,
) -> Vec<Command> {
    let mut commands = Vec::new();
    expire(state, now, cfg, events);

    // Owned keys: the pass changes `state` (failures) while it walks this map.
    let mut by_app: HashMap<String, Vec<Live>> = HashMap::new();
    for node in state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Lost)
    {
        for inst in node.instances.values() {
            if inst.state.is_active() && !state.stop_requested.contains_key(&inst.id) {
                by_app.entry(inst.app.clone()).or_default().push(Live {
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
    for p in state.pending.values() {
        by_app.entry(p.app.clone()).or_default().push(Live {
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
        if !known.contains(app.as_str()) {
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
    let mut nodes = node_views(state, &spec_resources);
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
            let at = crate::clock::unix_ms();
            state.note_failure(
                id,
                now,
                Some(crate::state::LastFailure {
                    instance: l.id.to_string(),
                    at_ms: at,
                    exit_code: None,
                    message: format!("unhealthy: {}", l.message),
                    stderr_tail: String::new(),
                }),
            );
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
            // Nothing to place: an earlier "cannot be placed" no longer applies.
            if let Some(health) = state.apps.get_mut(id) {
                health.why = None;
            }
        }
        if step.start > 0 {
            let need = step.start as u32;
            if let Some(wait) = backoff_wait(state, app, now) {
                let health = state.apps.entry(id.to_string()).or_default();
                if health.announced_delay != health.failures {
                    health.announced_delay = health.failures;
                    events.emit(
                        "launch_delayed",
                        NewEvent::app(id),
                        format!(
                            "{id} failed {} time(s) in a row; next launch in {:.1} s",
                            health.failures,
                            wait.as_secs_f64()
                        ),
                    );
                }
                continue;
            }
            starts.push((app, need));
        }
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
            let inst_id = new_instance_id(&app.spec.id, state);
            events.emit(
                "instance_start_ordered",
                NewEvent::app(id).with_node(&node).with_instance(&inst_id),
                format!(
                    "start {inst_id} of {id} version {} on {node}",
                    app.config_version
                ),
            );
            state.pending.insert(
                inst_id.clone(),
                Pending {
                    id: inst_id.clone(),
                    app: id.to_string(),
                    version: app.config_version.0,
                    node: node.clone(),
                    resources: app.spec.resources(),
                    ordered_at: now,
                },
            );
            commands.push(Command {
                node,
                message: pb::ServerMessage {
                    kind: Some(pb::server_message::Kind::Start(start_message(
                        app, &inst_id,
                    ))),
                },
            });
        }
        let health = state.apps.entry(id.to_string()).or_default();
        match outcome.why {
            Some(why) => {
                let why = format!(
                    "{} of {need} instance(s) cannot be placed: {why}",
                    outcome.unplaced
                );
                if health.why.as_deref() != Some(&why) {
                    events.emit(
                        "placement_failed",
                        NewEvent::app(id),
                        format!("{id}: {why}"),
                    );
                }
                health.why = Some(why);
            }
            None => health.why = None,
        }
    }

    for (inst, node, app, reason) in stops {
        events.emit(
            "instance_stop_ordered",
            NewEvent::app(&app).with_node(&node).with_instance(&inst),
            format!("stop {inst} of {app} on {node}: {reason}"),
        );
        state.pending.remove(&inst);
        state.stop_requested.insert(inst.clone(), now);
        commands.push(Command {
            node,
            message: pb::ServerMessage {
                kind: Some(pb::server_message::Kind::Stop(pb::StopInstance {
                    instance_id: inst.to_string(),
                    drain_ms: cfg.drain_ms,
                    grace_ms: cfg.grace_ms,
                    reason,
                })),
            },
        });
    }
    commands
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

/// Gives up on starts never reported and re-arms stops never confirmed.
fn expire(state: &mut RealState, now: Instant, cfg: &PlanConfig, events: &EventBus) {
    let expired: Vec<Pending> = state
        .pending
        .values()
        .filter(|p| now.duration_since(p.ordered_at) >= cfg.launch_timeout)
        .cloned()
        .collect();
    for p in expired {
        state.pending.remove(&p.id);
        events.emit(
            "launch_timeout",
            NewEvent::app(&p.app)
                .with_node(&p.node)
                .with_instance(&p.id),
            format!(
                "node {} did not report {} within {} s of the start order",
                p.node,
                p.id,
                cfg.launch_timeout.as_secs()
            ),
        );
        state.note_failure(&p.app, now, None);
    }
    state
        .stop_requested
        .retain(|_, at| now.duration_since(*at) < cfg.stop_retry);
}

/// How long until the app may launch again, if it must wait.
pub(crate) fn backoff_wait(
    state: &RealState,
    app: &AppVersion,
    now: Instant,
) -> Option<std::time::Duration> {
    let health = state.apps.get(app.spec.id.as_str())?;
    let last = health.last_failure?;
    let ready_at = last + app.spec.backoff().delay(health.failures);
    (ready_at > now).then(|| ready_at - now)
}

/// `spec_resources` stands in for instances whose agent reported no resources, so a
/// terse agent cannot make the scheduler over-commit its node.
fn node_views(
    state: &RealState,
    spec_resources: &HashMap<&str, berth_core::Resources>,
) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = state
        .nodes
        .values()
        .filter(|n| n.status == NodeStatus::Ready && n.tx.is_some())
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
                    && !state.stop_requested.contains_key(&inst.id)
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
    for p in state.pending.values() {
        if let Some(v) = views.iter_mut().find(|v| v.id == p.node) {
            v.used = v.used + p.resources;
            if let Ok(app) = AppId::parse(&p.app) {
                *v.app_counts.entry(app).or_insert(0) += 1;
            }
        }
    }
    views
}

fn new_instance_id(app: &AppId, state: &mut RealState) -> InstanceId {
    InstanceId::generate(app, state.next_instance_seq())
}

pub fn start_message(app: &AppVersion, inst: &InstanceId) -> pb::StartInstance {
    let s = &app.spec;
    pb::StartInstance {
        instance_id: inst.to_string(),
        app_id: s.id.to_string(),
        app_version: app.config_version.0,
        cmd: s.cmd.clone().unwrap_or_default(),
        args: s.args.clone().unwrap_or_default(),
        image: s.image.clone().unwrap_or_default(),
        driver: s.driver().to_string(),
        env: s.env.clone().into_iter().collect(),
        port_count: s.ports.count(),
        resources: Some(pb::Resources {
            cpus: s.cpus,
            mem_mib: s.mem,
            disk_mib: s.disk,
        }),
        health_checks: s
            .health_checks
            .iter()
            .map(|h| pb::HealthCheck {
                protocol: format!("{:?}", h.protocol).to_lowercase(),
                path: h.path.clone().unwrap_or_default(),
                port_index: h.port_index,
                command: h.command.clone().unwrap_or_default(),
                grace_period_seconds: h.grace_period_seconds,
                interval_seconds: h.interval_seconds,
                timeout_seconds: h.timeout_seconds,
                max_consecutive_failures: h.max_consecutive_failures,
                ignore_tls_errors: h.ignore_tls_errors,
            })
            .collect(),
        routes: s.routes.clone(),
        labels: s.labels.clone().into_iter().collect(),
    }
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
mod tests {
    use berth_core::spec::UpgradeStrategy;

    use super::{Step, rollout};

    fn strategy(min: f64, over: f64) -> UpgradeStrategy {
        UpgradeStrategy {
            minimum_health_capacity: min,
            maximum_over_capacity: over,
        }
    }

    #[test]
    fn default_strategy_starts_all_then_stops_old_as_new_come_up() {
        let s = strategy(1.0, 1.0);
        assert_eq!(
            rollout(3, 0, 0, 3, 3, &s),
            Step {
                start: 3,
                stop_old: 0
            }
        );
        assert_eq!(
            rollout(3, 3, 1, 3, 3, &s),
            Step {
                start: 0,
                stop_old: 1
            }
        );
        assert_eq!(
            rollout(3, 3, 3, 2, 2, &s),
            Step {
                start: 0,
                stop_old: 2
            }
        );
    }

    #[test]
    fn no_overcapacity_stops_before_starting() {
        let s = strategy(0.5, 0.0);
        assert_eq!(
            rollout(4, 0, 0, 4, 4, &s),
            Step {
                start: 2,
                stop_old: 2
            }
        );
        assert_eq!(
            rollout(4, 2, 0, 2, 2, &s),
            Step {
                start: 0,
                stop_old: 0
            }
        );
        assert_eq!(
            rollout(4, 2, 2, 2, 2, &s),
            Step {
                start: 2,
                stop_old: 2
            }
        );
    }

    #[test]
    fn limited_overcapacity_starts_in_batches() {
        let s = strategy(1.0, 0.5);
        assert_eq!(
            rollout(4, 0, 0, 4, 4, &s),
            Step {
                start: 2,
                stop_old: 0
            }
        );
        // Two new up: two old go, which makes room for the last two new.
        assert_eq!(
            rollout(4, 2, 2, 4, 4, &s),
            Step {
                start: 2,
                stop_old: 2
            }
        );
    }

    #[test]
    fn old_instances_that_are_down_go_first_and_plain_scaling_is_untouched() {
        let s = strategy(1.0, 1.0);
        assert_eq!(
            rollout(2, 0, 0, 2, 0, &s),
            Step {
                start: 2,
                stop_old: 2
            }
        );
        assert_eq!(
            rollout(5, 2, 2, 0, 0, &s),
            Step {
                start: 3,
                stop_old: 0
            }
        );
    }
}
