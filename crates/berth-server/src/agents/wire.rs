//! The agent protocol's protobuf messages <-> the server's own types, in one place.
//!
//! Everything past the agent session speaks berth-core and real-state types only: what an
//! agent sends is decoded here ([`hello`], [`heartbeat`], [`instance`]), what the server
//! orders is encoded here ([`start`], [`stop`], [`welcome`]). What the agent reads and
//! writes too (instance states, resources, statuses, the start message) is mapped once in
//! `berth-wire`; this module adds only what is the server's own (real-state records, the
//! session's hello and heartbeat, welcome and stop orders).

use berth_core::{InstanceId, NodeId, Resources};
use berth_proto::agent::v1 as pb;
use berth_store::AppVersion;

use crate::state::{Heartbeat, Hello, Instance};

/// An absent resources field reads as nothing.
fn resources_or_default(r: Option<&pb::Resources>) -> Resources {
    r.map(berth_wire::resources_from_pb).unwrap_or_default()
}

/// An instance as `node` reports it.
pub fn instance(node: &NodeId, s: &pb::InstanceStatus) -> Instance {
    let s = berth_wire::status_from_pb(s);
    Instance {
        id: s.instance_id,
        app: s.app_id,
        version: s.app_version,
        state: s.state,
        node: node.clone(),
        ports: s.ports,
        pid: s.pid,
        started_at_ms: s.started_at_ms,
        updated_at_ms: s.updated_at_ms,
        exit_code: s.exit_code,
        message: s.message,
        stderr_tail: s.stderr_tail,
        resources: s.resources.reserve(),
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
    berth_wire::start_message(&app.spec, app.config_version.0, inst)
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
