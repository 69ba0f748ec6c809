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
    up: bool,
    /// Newer sorts later; pending starts are the youngest.
    age_key: (bool, i64),
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

    let mut by_app: HashMap<&str, Vec<Live>> = HashMap::new();
    for node in state
        .nodes
        .values()
        .filter(|n| n.status != NodeStatus::Lost)
    {
        for inst in node.instances.values() {
            if inst.state.is_active() && !state.stop_requested.contains_key(&inst.id) {
                by_app.entry(inst.app.as_str()).or_default().push(Live {
                    id: inst.id.clone(),
                    node: node.id.clone(),
                    version: inst.version,
                    up: inst.state.is_up(),
                    age_key: (false, inst.started_at_ms),
                });
            }
        }
    }
    for p in state.pending.values() {
        by_app.entry(p.app.as_str()).or_default().push(Live {
            id: p.id.clone(),
            node: p.node.clone(),
            version: p.version,
            up: false,
            age_key: (true, 0),
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
    let mut nodes = node_views(state, &spec_resources);
    let mut starts = Vec::new();
    for app in desired {
        let id = app.spec.id.as_str();
        let empty = Vec::new();
        let live = by_app.get(id).unwrap_or(&empty);
        let cfgv = app.config_version.0;
        let (mut current, mut old): (Vec<&Live>, Vec<&Live>) =
            live.iter().partition(|l| l.version == cfgv);
        let wanted = app.spec.instances as usize;
        let current_up = current.iter().filter(|l| l.up).count();

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
        // Old-version instances go as new ones come up, so capacity never drops.
        let keep_old = wanted.saturating_sub(current_up);
        if old.len() > keep_old {
            old.sort_by_key(|l| std::cmp::Reverse(l.age_key));
            for l in &old[..old.len() - keep_old] {
                stops.push((
                    l.id.clone(),
                    l.node.clone(),
                    id.to_string(),
                    format!("replaced by version {cfgv}"),
                ));
            }
        }
        if current.len() < wanted {
            let need = (wanted - current.len()) as u32;
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
        state.note_failure(&p.app, now);
    }
    state
        .stop_requested
        .retain(|_, at| now.duration_since(*at) < cfg.stop_retry);
}

/// How long until the app may launch again, if it must wait.
fn backoff_wait(state: &RealState, app: &AppVersion, now: Instant) -> Option<std::time::Duration> {
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
