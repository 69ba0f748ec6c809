//! Prometheus metrics of the server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::{NodeStatus, RealState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

pub struct Metrics {
    pub reconcile_passes: Counter,
    pub commands: Family<KindLabel, Counter>,
    pub nodes: Family<StatusLabel, Gauge>,
    pub instances: Gauge,
    pub pending: Gauge,
    pub apps: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            reconcile_passes: Counter::default(),
            commands: Family::default(),
            nodes: Family::default(),
            instances: Gauge::default(),
            pending: Gauge::default(),
            apps: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("berth_server");
        r.register(
            "reconcile_passes",
            "Reconciliation passes run",
            m.reconcile_passes.clone(),
        );
        r.register(
            "commands",
            "Commands sent to agents, by kind",
            m.commands.clone(),
        );
        r.register("nodes", "Known nodes by status", m.nodes.clone());
        r.register(
            "instances",
            "Instances reported by agents",
            m.instances.clone(),
        );
        r.register(
            "pending_starts",
            "Starts ordered and not yet reported",
            m.pending.clone(),
        );
        r.register("apps", "Apps in the desired state", m.apps.clone());
        m
    }

    pub fn observe(&self, state: &RealState, apps: usize) {
        for (status, label) in [
            (NodeStatus::Ready, "ready"),
            (NodeStatus::Disconnected, "disconnected"),
            (NodeStatus::Lost, "lost"),
        ] {
            let n = state.nodes.values().filter(|n| n.status == status).count();
            self.nodes
                .get_or_create(&StatusLabel { status: label })
                .set(n as i64);
        }
        self.instances.set(state.instances().count() as i64);
        self.pending.set(state.pending.len() as i64);
        self.apps.set(apps as i64);
    }
}
