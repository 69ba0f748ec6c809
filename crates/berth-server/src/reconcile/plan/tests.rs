//! `plan` as a function: real state and desired versions in, decisions out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_core::instance::InstanceState;
use berth_core::spec::UpgradeStrategy;
use berth_core::{AppSpec, InstanceId, NodeId, Resources, VersionId};
use berth_store::AppVersion;
use tokio::time::Instant;

use super::*;
use crate::state::{Instance, Node, NodeStatus, Pending, RealState};

const FIRST_SEQ: u64 = 0x100;
const NOW_MS: u64 = 1_700_000_000_000;

fn cfg() -> PlanConfig {
    PlanConfig {
        launch_timeout: Duration::from_secs(60),
        stop_retry: Duration::from_secs(30),
        drain_ms: 5,
        grace_ms: 7,
    }
}

/// A cluster and the time; `now` lies an hour after `t0`, so tests can place
/// things in the past.
struct World {
    state: RealState,
    connected: BTreeSet<NodeId>,
    t0: Instant,
    now: Instant,
}

impl World {
    fn new(nodes: usize) -> Self {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(3600);
        let mut w = World {
            state: RealState::default(),
            connected: BTreeSet::new(),
            t0,
            now,
        };
        for i in 0..nodes {
            w.add_node(&format!("n{i}"), true);
        }
        w
    }

    fn add_node(&mut self, id: &str, connected: bool) {
        let id = NodeId::new(id);
        self.state.nodes.insert(
            id.clone(),
            Node {
                id: id.clone(),
                hostname: id.to_string(),
                address: "127.0.0.1".into(),
                status_url: String::new(),
                labels: BTreeMap::new(),
                drivers: vec!["process".into()],
                agent_version: "test".into(),
                total: Resources::new(8.0, 8192, 10_000),
                used_reported: Resources::default(),
                load1: 0.0,
                status: NodeStatus::Ready,
                joined_at_ms: 0,
                instances: BTreeMap::new(),
                last_seen: self.now,
            },
        );
        if connected {
            self.connected.insert(id);
        }
    }

    fn run(&mut self, node: &str, id: &str, app: &str, version: u64, state: InstanceState) {
        self.run_since(node, id, app, version, state, 0);
    }

    fn run_since(
        &mut self,
        node: &str,
        id: &str,
        app: &str,
        version: u64,
        state: InstanceState,
        started_at_ms: i64,
    ) {
        let node = NodeId::new(node);
        let inst = Instance {
            id: InstanceId::new(id),
            app: app.into(),
            version,
            state,
            node: node.clone(),
            ports: Vec::new(),
            pid: 1,
            started_at_ms,
            updated_at_ms: started_at_ms,
            exit_code: None,
            message: "checks failed".into(),
            stderr_tail: String::new(),
            resources: Resources::new(0.1, 64, 0),
        };
        self.state
            .nodes
            .get_mut(&node)
            .expect("known node")
            .instances
            .insert(inst.id.clone(), inst);
    }

    fn pending(&mut self, node: &str, id: &str, app: &str, version: u64, ordered_at: Instant) {
        let id = InstanceId::new(id);
        self.state.pending.insert(
            id.clone(),
            Pending {
                id,
                app: app.into(),
                version,
                node: NodeId::new(node),
                resources: Resources::new(0.1, 64, 0),
                ordered_at,
            },
        );
    }

    fn plan<'d>(&self, desired: &'d [AppVersion]) -> Plan<'d> {
        plan(
            &PlanInput {
                desired,
                state: &self.state,
                connected: &self.connected,
                now: self.now,
                now_ms: NOW_MS,
                first_seq: FIRST_SEQ,
            },
            &cfg(),
        )
    }
}

fn app(id: &str, instances: u32, version: u64) -> AppVersion {
    let mut spec = AppSpec::minimal(id, "sleep");
    spec.instances = instances;
    spec.cpus = 0.1;
    spec.mem = 64;
    AppVersion::first(spec, VersionId(version))
}

fn kinds(p: &Plan<'_>) -> Vec<EventKind> {
    p.notes.iter().map(|n| n.kind).collect()
}

fn stopped<'p>(p: &'p Plan<'_>) -> Vec<(&'p str, &'p str)> {
    p.stops
        .iter()
        .map(|s| (s.instance.as_str(), s.reason.as_str()))
        .collect()
}

#[test]
fn scale_up_places_starts_with_fresh_ids_on_connected_nodes() {
    let mut w = World::new(2);
    w.add_node("offline", false);
    let desired = [app("web", 3, 10)];
    let p = w.plan(&desired);
    assert_eq!(p.starts.len(), 3);
    let ids: Vec<&str> = p.starts.iter().map(|s| s.instance.as_str()).collect();
    assert_eq!(ids, ["web.100", "web.101", "web.102"]);
    assert_eq!(p.next_seq, FIRST_SEQ + 3);
    assert!(p.starts.iter().all(|s| s.node.as_str() != "offline"));
    assert_eq!(kinds(&p), [EventKind::InstanceStartOrdered; 3]);
    assert_eq!(
        p.placements,
        [Placement {
            app: "web".into(),
            why: None
        }]
    );
    assert!(p.stops.is_empty() && p.failures.is_empty());
    // The same inputs give the same plan.
    let again = w.plan(&desired);
    let nodes = |p: &Plan<'_>| p.starts.iter().map(|s| s.node.clone()).collect::<Vec<_>>();
    assert_eq!(nodes(&p), nodes(&again));
}

#[test]
fn no_connected_node_means_a_placement_verdict_said_once() {
    let mut w = World::new(0);
    w.add_node("offline", false);
    let desired = [app("web", 1, 10)];
    let p = w.plan(&desired);
    assert!(p.starts.is_empty());
    let why = p.placements[0].why.clone().expect("a reason");
    assert!(
        why.starts_with("1 of 1 instance(s) cannot be placed"),
        "{why}"
    );
    assert_eq!(kinds(&p), [EventKind::PlacementFailed]);
    // Already said: the verdict stands, nothing is said again.
    w.state.apps.entry("web".into()).or_default().why = Some(why);
    let p = w.plan(&desired);
    assert!(p.notes.is_empty());
    assert!(p.placements[0].why.is_some());
}

#[test]
fn surplus_stops_the_youngest() {
    let mut w = World::new(1);
    w.run_since("n0", "web.1", "web", 10, InstanceState::Running, 100);
    w.run_since("n0", "web.2", "web", 10, InstanceState::Running, 200);
    w.run_since("n0", "web.3", "web", 10, InstanceState::Running, 150);
    let desired = [app("web", 1, 10)];
    let p = w.plan(&desired);
    assert_eq!(
        stopped(&p),
        [
            ("web.2", "surplus: 1 wanted"),
            ("web.3", "surplus: 1 wanted")
        ]
    );
    assert!(p.starts.is_empty());
    assert_eq!(p.settled, ["web"]);
    let s = &p.stops[0];
    assert_eq!((s.drain_ms, s.grace_ms, s.node.as_str()), (5, 7, "n0"));
}

#[test]
fn a_deleted_app_stops_everything_it_has_pending_included() {
    let mut w = World::new(1);
    w.run("n0", "old.1", "old", 1, InstanceState::Healthy);
    let t0 = w.t0 + Duration::from_secs(3590);
    w.pending("n0", "old.2", "old", 1, t0);
    let p = w.plan(&[]);
    assert_eq!(
        stopped(&p),
        [("old.1", "app deleted"), ("old.2", "app deleted")]
    );
    assert_eq!(kinds(&p), [EventKind::InstanceStopOrdered; 2]);
}

#[test]
fn an_unhealthy_instance_is_replaced_and_counted_as_a_failure() {
    let mut w = World::new(1);
    w.run("n0", "web.1", "web", 10, InstanceState::Unhealthy);
    let desired = [app("web", 1, 10)];
    let p = w.plan(&desired);
    assert_eq!(
        stopped(&p),
        [("web.1", "unhealthy, replacing it: checks failed")]
    );
    assert_eq!(p.failures.len(), 1);
    let info = p.failures[0].info.as_ref().expect("what it said");
    assert_eq!(info.message, "unhealthy: checks failed");
    assert_eq!(info.at_ms, NOW_MS);
    // The failure counts at once: the replacement waits out the backoff.
    assert!(p.starts.is_empty());
    assert_eq!(p.delays_announced, [("web".to_string(), 1)]);
    assert_eq!(
        kinds(&p),
        [EventKind::LaunchDelayed, EventKind::InstanceStopOrdered]
    );
}

#[test]
fn backoff_delays_a_launch_and_announces_it_once() {
    let mut w = World::new(1);
    let now = w.now;
    let health = w.state.apps.entry("web".into()).or_default();
    health.failures = 2;
    health.last_failure = Some(now);
    let desired = [app("web", 1, 10)];
    let p = w.plan(&desired);
    assert!(p.starts.is_empty());
    assert_eq!(kinds(&p), [EventKind::LaunchDelayed]);
    assert!(p.notes[0].message.contains("failed 2 time(s) in a row"));
    assert_eq!(p.delays_announced, [("web".to_string(), 2)]);
    w.state.apps.get_mut("web").unwrap().announced_delay = 2;
    let p = w.plan(&desired);
    assert!(p.starts.is_empty() && p.notes.is_empty());
    // Once the delay has passed, the launch goes ahead.
    w.now += Duration::from_secs(60);
    let p = w.plan(&desired);
    assert_eq!(p.starts.len(), 1);
}

#[test]
fn a_pending_start_counts_so_nothing_is_ordered_twice() {
    let mut w = World::new(2);
    w.run("n0", "web.1", "web", 10, InstanceState::Running);
    let recent = w.now - Duration::from_secs(1);
    w.pending("n1", "web.2", "web", 10, recent);
    let desired = [app("web", 2, 10)];
    let p = w.plan(&desired);
    assert!(p.starts.is_empty() && p.stops.is_empty() && p.notes.is_empty());
}

#[test]
fn a_start_never_reported_times_out_as_a_failure() {
    let mut w = World::new(1);
    let long_ago = w.t0;
    w.pending("n0", "web.1", "web", 10, long_ago);
    let desired = [app("web", 1, 10)];
    let p = w.plan(&desired);
    assert_eq!(p.timed_out, [InstanceId::new("web.1")]);
    assert_eq!(
        p.failures,
        [Failure {
            app: "web".into(),
            info: None
        }]
    );
    assert_eq!(
        kinds(&p),
        [EventKind::LaunchTimeout, EventKind::LaunchDelayed]
    );
    assert!(p.notes[0].message.contains("within 60 s"));
    assert!(p.starts.is_empty());
}

#[test]
fn a_stop_never_confirmed_is_ordered_again() {
    let mut w = World::new(1);
    w.run("n0", "old.1", "old", 1, InstanceState::Running);
    w.run("n0", "old.2", "old", 1, InstanceState::Running);
    let (long_ago, recent) = (w.t0, w.now - Duration::from_secs(1));
    w.state
        .stop_requested
        .insert(InstanceId::new("old.1"), long_ago);
    w.state
        .stop_requested
        .insert(InstanceId::new("old.2"), recent);
    let p = w.plan(&[]);
    assert_eq!(p.rearmed, [InstanceId::new("old.1")]);
    assert_eq!(stopped(&p), [("old.1", "app deleted")]);
}

#[test]
fn a_rolling_upgrade_starts_new_then_stops_old_as_new_come_up() {
    let mut w = World::new(2);
    w.run_since("n0", "web.1", "web", 1, InstanceState::Running, 100);
    w.run_since("n1", "web.2", "web", 1, InstanceState::Running, 200);
    let desired = [app("web", 2, 2)];
    let p = w.plan(&desired);
    assert_eq!(p.starts.len(), 2);
    assert!(p.stops.is_empty());
    // Both new instances run (no health checks: running counts): the old ones go.
    w.run("n0", "web.3", "web", 2, InstanceState::Running);
    w.run("n1", "web.4", "web", 2, InstanceState::Running);
    let p = w.plan(&desired);
    assert!(p.starts.is_empty());
    assert_eq!(
        stopped(&p),
        [
            ("web.2", "replaced by version 2"),
            ("web.1", "replaced by version 2")
        ]
    );
}

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
