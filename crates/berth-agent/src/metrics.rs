//! The agent's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
pub struct AgentMetrics {
    pub instance_starts: Counter,
    pub instance_exits: Family<Labels, Counter>,
    pub instances: Family<Labels, Gauge>,
    pub health_checks: Family<Labels, Counter>,
    pub registry_calls: Family<Labels, Counter>,
    pub server_connected: Gauge,
    pub server_sessions: Counter,
    pub server_connect_failures: Counter,
}

impl AgentMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "berth_agent_instance_starts",
            "Instances started by this agent",
            self.instance_starts.clone(),
        );
        registry.register(
            "berth_agent_instance_exits",
            "Instance exits by outcome (stopped, exited, failed, lost)",
            self.instance_exits.clone(),
        );
        registry.register(
            "berth_agent_instances",
            "Instances known to this agent by state",
            self.instances.clone(),
        );
        registry.register(
            "berth_agent_health_checks",
            "Health probes by protocol and result",
            self.health_checks.clone(),
        );
        registry.register(
            "berth_agent_registry_calls",
            "Calls to the service registry by operation and result",
            self.registry_calls.clone(),
        );
        registry.register(
            "berth_agent_server_connected",
            "1 while a session with a server is open",
            self.server_connected.clone(),
        );
        registry.register(
            "berth_agent_server_sessions",
            "Sessions opened with a server (each one after a Welcome)",
            self.server_sessions.clone(),
        );
        registry.register(
            "berth_agent_server_connect_failures",
            "Failed attempts to open a session with a server",
            self.server_connect_failures.clone(),
        );
    }

    pub fn exit(&self, outcome: &'static str) {
        self.instance_exits
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn check(&self, protocol: &'static str, ok: bool) {
        let result = if ok { "pass" } else { "fail" };
        self.health_checks
            .get_or_create(&vec![
                ("protocol", protocol.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn registry_call(&self, op: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.registry_calls
            .get_or_create(&vec![
                ("op", op.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }
}
