//! The agent protocol's protobuf messages <-> the server's own types, in one place.
//!
//! Everything past the agent session speaks berth-core and real-state types only: what an
//! agent sends is decoded here ([`hello`], [`heartbeat`], [`instance`]), what the server
//! orders is encoded here ([`start`], [`stop`], [`welcome`]). Free functions, so the parts
//! the agent needs too (instance states, resources, the start message) can move into a
//! shared crate as they are.

use berth_core::instance::InstanceState;
use berth_core::{InstanceId, NodeId, Resources};
use berth_proto::agent::v1 as pb;
use berth_store::AppVersion;

use crate::state::{Heartbeat, Hello, Instance};

pub fn instance_state(s: pb::InstanceState) -> InstanceState {
    use pb::InstanceState as P;
    match s {
        P::Unspecified | P::Starting => InstanceState::Starting,
        P::Running => InstanceState::Running,
        P::Healthy => InstanceState::Healthy,
        P::Unhealthy => InstanceState::Unhealthy,
        P::Stopping => InstanceState::Stopping,
        P::Exited => InstanceState::Exited,
        P::Failed => InstanceState::Failed,
    }
}

pub fn resources(r: &pb::Resources) -> Resources {
    Resources::new(r.cpus, r.mem_mib, r.disk_mib)
}

/// An absent resources field reads as nothing.
fn resources_or_default(r: Option<&pb::Resources>) -> Resources {
    r.map(resources).unwrap_or_default()
}

/// An instance as `node` reports it.
pub fn instance(node: &NodeId, s: &pb::InstanceStatus) -> Instance {
    Instance {
        id: InstanceId::new(s.instance_id.clone()),
        app: s.app_id.clone(),
        version: s.app_version,
        state: instance_state(s.state()),
        node: node.clone(),
        ports: s.ports.clone(),
        pid: s.pid,
        started_at_ms: s.started_at_ms,
        updated_at_ms: s.updated_at_ms,
        exit_code: s.exit_code,
        message: s.message.clone(),
        stderr_tail: s.stderr_tail.clone(),
        resources: resources_or_default(s.resources.as_ref()),
    }
}

fn instances(node: &NodeId, list: &[pb::InstanceStatus]) -> Vec<Instance> {
    list.iter().map(|s| instance(node, s)).collect()
}

/// A hello already checked by [`super::check_hello`].
pub fn hello(h: &pb::Hello) -> Hello {
    let node = NodeId::new(h.node_id.clone());
    Hello {
        instances: instances(&node, &h.instances),
        node,
        hostname: h.hostname.clone(),
        address: h.address.clone(),
        status_url: h.status_url.clone(),
        labels: h.labels.clone().into_iter().collect(),
        drivers: h.drivers.clone(),
        agent_version: h.version.clone(),
        total: resources_or_default(h.total.as_ref()),
    }
}

pub fn heartbeat(node: &NodeId, hb: &pb::Heartbeat) -> Heartbeat {
    Heartbeat {
        used: resources_or_default(hb.used.as_ref()),
        load1: hb.load1,
        instances: instances(node, &hb.instances),
    }
}

pub fn welcome(server_id: &str, heartbeat_interval: std::time::Duration) -> pb::ServerMessage {
    pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Welcome(pb::Welcome {
            server_id: server_id.to_string(),
            heartbeat_interval_ms: heartbeat_interval.as_millis() as u32,
        })),
    }
}

/// The order to start `inst` as a copy of `app`.
pub fn start(app: &AppVersion, inst: &InstanceId) -> pb::ServerMessage {
    pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Start(start_instance(app, inst))),
    }
}

pub fn start_instance(app: &AppVersion, inst: &InstanceId) -> pb::StartInstance {
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

/// The order to stop `inst`: out of the registry, `drain_ms` to finish requests, then
/// `grace_ms` between the polite and the hard signal.
pub fn stop(inst: &InstanceId, drain_ms: u32, grace_ms: u32, reason: &str) -> pb::ServerMessage {
    pb::ServerMessage {
        kind: Some(pb::server_message::Kind::Stop(pb::StopInstance {
            instance_id: inst.to_string(),
            drain_ms,
            grace_ms,
            reason: reason.to_string(),
        })),
    }
}
