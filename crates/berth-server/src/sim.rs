//! A simulated cluster for benchmarks: real reconciler passes and the real scheduler over
//! in-memory nodes whose "driver" starts every ordered instance at once. Nothing touches
//! the network, so the figures measure placement and bookkeeping alone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_core::instance::InstanceState;
use berth_core::{AppSpec, NodeId, Resources, VersionId};
use berth_store::AppVersion;
use tokio::time::Instant;

use crate::reconcile::apply;
use crate::reconcile::plan::{PlanConfig, PlanInput, plan};
use crate::state::{Instance, Node, NodeStatus, RealState};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimSpec {
    pub nodes: usize,
    pub apps: usize,
    pub instances_per_app: u32,
    pub node_cpus: f64,
    pub node_mem_mib: u64,
    pub app_cpus: f64,
    pub app_mem_mib: u64,
    /// `[["hostname", "MAX_PER", "n"]]`-style constraints for every app.
    pub constraints: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct SimReport {
    pub placed: usize,
    pub wanted: usize,
    pub passes: usize,
    pub elapsed: Duration,
    /// Why the last unplaced app could not be placed, if any.
    pub why: Option<String>,
}

impl SimReport {
    pub fn per_second(&self) -> f64 {
        self.placed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Builds the cluster, then runs reconciler passes until every instance runs or a pass
/// places nothing.
pub fn run(spec: &SimSpec) -> SimReport {
    let mut state = RealState::default();
    // Every node counts as connected; the simulated driver reads the starts straight
    // from the plan.
    let mut connected = BTreeSet::new();
    for i in 0..spec.nodes {
        let id = NodeId::new(format!("node-{i:05}"));
        state.nodes.insert(
            id.clone(),
            Node {
                id: id.clone(),
                hostname: id.to_string(),
                address: "127.0.0.1".into(),
                status_url: String::new(),
                labels: BTreeMap::from([("rack".to_string(), format!("r{}", i % 20))]),
                drivers: vec!["sim".into()],
                agent_version: "sim".into(),
                total: Resources::new(spec.node_cpus, spec.node_mem_mib, 100_000),
                used_reported: Resources::default(),
                load1: 0.0,
                status: NodeStatus::Ready,
                joined_at_ms: 0,
                instances: BTreeMap::new(),
                last_seen: Instant::now() + Duration::from_secs(3600),
            },
        );
        connected.insert(id);
    }
    let desired: Vec<AppVersion> = (0..spec.apps)
        .map(|a| {
            let mut s = AppSpec::minimal(&format!("bench/app-{a}"), "sim");
            s.driver = Some("sim".into());
            s.instances = spec.instances_per_app;
            s.cpus = spec.app_cpus;
            s.mem = spec.app_mem_mib;
            s.constraints = spec.constraints.clone();
            AppVersion::first(s, VersionId(1_000 + a as u64))
        })
        .collect();
    let cfg = PlanConfig {
        launch_timeout: Duration::from_secs(3600),
        stop_retry: Duration::from_secs(3600),
        drain_ms: 0,
        grace_ms: 0,
    };
    let wanted = spec.apps * spec.instances_per_app as usize;
    let started = Instant::now();
    let mut placed = 0;
    let mut passes = 0;
    loop {
        passes += 1;
        let now = Instant::now();
        let first_seq = state.next_instance_seq();
        let p = plan(
            &PlanInput {
                desired: &desired,
                state: &state,
                connected: &connected,
                now,
                now_ms: 0,
                first_seq,
            },
            &cfg,
        );
        apply::record(&mut state, &p, now);
        let mut started_now = 0;
        for s in p.starts {
            let id = s.instance;
            state.pending.remove(&id);
            let node = state
                .nodes
                .get_mut(&s.node)
                .expect("placed on a known node");
            node.instances.insert(
                id.clone(),
                Instance {
                    id,
                    app: s.app.spec.id.to_string(),
                    version: s.app.config_version.0,
                    state: InstanceState::Running,
                    node: s.node.clone(),
                    ports: Vec::new(),
                    pid: 0,
                    started_at_ms: 0,
                    updated_at_ms: 0,
                    exit_code: None,
                    message: String::new(),
                    stderr_tail: String::new(),
                    resources: Resources::new(spec.app_cpus, spec.app_mem_mib, 0),
                },
            );
            started_now += 1;
        }
        placed += started_now;
        if placed >= wanted || started_now == 0 {
            break;
        }
    }
    let why = state.apps.values().find_map(|h| h.why.clone());
    SimReport {
        placed,
        wanted,
        passes,
        elapsed: started.elapsed(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_everything_that_fits_and_explains_the_rest() {
        let spec = SimSpec {
            nodes: 10,
            apps: 5,
            instances_per_app: 10,
            node_cpus: 4.0,
            node_mem_mib: 1024,
            app_cpus: 0.1,
            app_mem_mib: 100,
            constraints: vec![vec!["hostname".into(), "MAX_PER".into(), "2".into()]],
        };
        let r = run(&spec);
        assert_eq!(r.placed, 50);
        assert!(r.why.is_none());
        // 10 nodes x 10 instances of 100 MiB: the 101st cannot fit.
        let r = run(&SimSpec {
            apps: 11,
            instances_per_app: 10,
            constraints: vec![],
            ..spec
        });
        assert_eq!(r.placed, 100);
        assert!(r.why.unwrap().contains("MiB memory free"));
    }
}
