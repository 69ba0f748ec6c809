//! What the agent registers for an instance in the service registry (the calls
//! themselves are `berth-registry-client`'s Nacos client).
//!
//! One entry per instance with a port: the app's registry service
//! ([`names::app_service`]), the instance's first port, and Berth's metadata (app,
//! instance, version, node, routes) that the router reads.

use std::collections::BTreeMap;

use berth_core::launch::InstanceSpec;
pub use berth_registry_client::nacos::{
    BEAT_INTERVAL, BeatOutcome, Credentials, NacosClient, Registration, RegistryError,
};
use berth_registry_client::names;

/// The registration of an instance; `None` when it has no port, so nothing could be
/// routed to it.
pub fn registration(
    spec: &InstanceSpec,
    ports: &[u16],
    ip: &str,
    node_id: &str,
) -> Option<Registration> {
    let port = *ports.first()?;
    let mut metadata = BTreeMap::new();
    metadata.insert("berth.app".to_string(), spec.app_id.to_string());
    metadata.insert("berth.instance".to_string(), spec.instance_id.to_string());
    metadata.insert("berth.version".to_string(), spec.app_version.to_string());
    metadata.insert("berth.node".to_string(), node_id.to_string());
    metadata.insert("berth.routes".to_string(), spec.routes.join(","));
    Some(Registration {
        service: names::app_service(spec.app_id.as_str()),
        ip: ip.to_string(),
        port,
        metadata,
    })
}
