//! The naming model: namespace -> group -> service -> cluster -> instances.
//!
//! Values here are plain data: cloning a [`Service`] is how readers get a stable view
//! while writers go on (the core keeps each service behind an `Arc`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Nacos's default namespace id.
pub const DEFAULT_NAMESPACE: &str = "public";
/// Nacos's default group.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// Nacos's default cluster.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";
/// Separator Nacos uses between group and service name in a "grouped" name.
pub const GROUP_SEPARATOR: &str = "@@";

/// Metadata keys (milliseconds) that override the beat timings of one instance.
pub const META_BEAT_INTERVAL: &str = "preserved.heart.beat.interval";
pub const META_BEAT_TIMEOUT: &str = "preserved.heart.beat.timeout";
pub const META_DELETE_TIMEOUT: &str = "preserved.ip.delete.timeout";

/// Identifies one service: namespace, group and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub namespace: String,
    pub group: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(
        namespace: impl Into<String>,
        group: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            group: group.into(),
            name: name.into(),
        }
    }

    /// A service in the default namespace and group.
    pub fn simple(name: impl Into<String>) -> Self {
        Self::new(DEFAULT_NAMESPACE, DEFAULT_GROUP, name)
    }

    /// Parses "group@@name" or "name" (group from `default_group`).
    pub fn parse_grouped(namespace: &str, grouped: &str, default_group: &str) -> Self {
        match grouped.split_once(GROUP_SEPARATOR) {
            Some((group, name)) => Self::new(namespace, group, name),
            None => Self::new(namespace, default_group, grouped),
        }
    }

    /// "group@@name", the form Nacos clients see.
    pub fn grouped_name(&self) -> String {
        format!("{}{GROUP_SEPARATOR}{}", self.group, self.name)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@@{}", self.namespace, self.group, self.name)
    }
}

/// Identifies one instance inside a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InstanceKey {
    pub cluster: String,
    pub ip: String,
    pub port: u16,
}

impl InstanceKey {
    pub fn new(ip: impl Into<String>, port: u16, cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            ip: ip.into(),
            port,
        }
    }
}

/// Health as the registry tracks it. Consul distinguishes warning from passing; for
/// Nacos both are "healthy".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Passing,
    Warning,
    Critical,
}

impl HealthStatus {
    pub fn from_healthy(healthy: bool) -> Self {
        if healthy {
            Self::Passing
        } else {
            Self::Critical
        }
    }

    pub fn is_healthy(self) -> bool {
        self != Self::Critical
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// How the server learns a non-ephemeral instance's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CheckSpec {
    /// Connect to the instance's ip:port.
    Tcp,
    /// Connect to another address (Consul `TCP: "host:port"`).
    TcpAddr { addr: String },
    /// GET `url` (or http://ip:port`path`); 2xx is passing.
    Http { path: String },
    /// The client reports status itself; no report within `ttl_ms` is critical.
    Ttl { ttl_ms: u64 },
    /// Health is whatever the client set.
    None,
}

/// Settings of one cluster of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Server-side check for the cluster's persistent instances.
    pub check: CheckSpec,
    pub metadata: BTreeMap<String, String>,
}

/// One registered instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Stable id: Nacos's "ip#port#cluster#group@@service", or a Consul service id.
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub cluster: String,
    pub weight: f64,
    pub status: HealthStatus,
    pub enabled: bool,
    pub ephemeral: bool,
    pub metadata: BTreeMap<String, String>,
    /// Server-side check for persistent instances.
    pub check: Option<CheckSpec>,
    /// Consul's `DeregisterCriticalServiceAfter`: remove after this long critical.
    pub deregister_critical_after_ms: Option<u64>,
    /// Consul tags (empty for Nacos instances).
    pub tags: Vec<String>,
}

impl Instance {
    /// An ephemeral, healthy, enabled instance with weight 1 in `cluster`.
    pub fn new(service: &ServiceKey, ip: impl Into<String>, port: u16, cluster: &str) -> Self {
        let ip = ip.into();
        let id = nacos_instance_id(&ip, port, cluster, service);
        Self {
            id,
            ip,
            port,
            cluster: cluster.to_string(),
            weight: 1.0,
            status: HealthStatus::Passing,
            enabled: true,
            ephemeral: true,
            metadata: BTreeMap::new(),
            check: None,
            deregister_critical_after_ms: None,
            tags: Vec::new(),
        }
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey::new(self.ip.clone(), self.port, self.cluster.clone())
    }

    pub fn healthy(&self) -> bool {
        self.status.is_healthy()
    }

    /// Beat timings from the preserved metadata keys, or the defaults.
    pub fn timings(&self, defaults: &BeatTimings) -> BeatTimings {
        let ms = |key: &str, default: u64| {
            self.metadata
                .get(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        BeatTimings {
            interval_ms: ms(META_BEAT_INTERVAL, defaults.interval_ms),
            unhealthy_after_ms: ms(META_BEAT_TIMEOUT, defaults.unhealthy_after_ms),
            delete_after_ms: ms(META_DELETE_TIMEOUT, defaults.delete_after_ms),
        }
    }
}

/// Builds the instance id Nacos builds: "ip#port#cluster#group@@service".
pub fn nacos_instance_id(ip: &str, port: u16, cluster: &str, service: &ServiceKey) -> String {
    format!("{ip}#{port}#{cluster}#{}", service.grouped_name())
}

/// How often an ephemeral instance beats and when silence makes it unhealthy, then gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BeatTimings {
    pub interval_ms: u64,
    pub unhealthy_after_ms: u64,
    pub delete_after_ms: u64,
}

impl Default for BeatTimings {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            unhealthy_after_ms: 15_000,
            delete_after_ms: 30_000,
        }
    }
}

/// A service and all its instances at one revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub key: ServiceKey,
    pub metadata: BTreeMap<String, String>,
    pub protect_threshold: f32,
    /// Selector as given by the client (Nacos `selector` JSON), kept verbatim.
    pub selector: Option<String>,
    /// Per-cluster settings (Nacos `/cluster`): the check persistent instances get.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// A persistent map: cloning a service to change it copies O(log n) nodes, so the
    /// change history and readers share structure instead of holding full copies. Values
    /// are `Arc`s so that copying a node copies pointers, not 64 instances' strings.
    pub instances: imbl::OrdMap<InstanceKey, Arc<Instance>>,
    /// Global revision of this service's last change.
    pub revision: u64,
}

impl Service {
    pub fn new(key: ServiceKey) -> Self {
        Self {
            key,
            metadata: BTreeMap::new(),
            protect_threshold: 0.0,
            selector: None,
            clusters: BTreeMap::new(),
            instances: imbl::OrdMap::new(),
            revision: 0,
        }
    }

    pub fn cluster_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.instances.values().map(|i| i.cluster.clone()).collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn healthy_count(&self) -> usize {
        self.instances.values().filter(|i| i.healthy()).count()
    }

    /// Finds an instance by ip:port; `cluster` None matches any cluster when only one
    /// holds that address (clients often omit the cluster on deregister and beat).
    pub fn find(&self, ip: &str, port: u16, cluster: Option<&str>) -> Option<&Instance> {
        match cluster {
            Some(c) => self
                .instances
                .get(&InstanceKey::new(ip, port, c))
                .map(|i| &**i),
            None => {
                if let Some(i) = self
                    .instances
                    .get(&InstanceKey::new(ip, port, DEFAULT_CLUSTER))
                {
                    return Some(&**i);
                }
                let mut it = self
                    .instances
                    .values()
                    .filter(|i| i.ip == ip && i.port == port);
                let first = it.next();
                if it.next().is_some() {
                    None
                } else {
                    first.map(|i| &**i)
                }
            }
        }
    }

    pub fn find_by_id(&self, id: &str) -> Option<&Instance> {
        self.instances.values().find(|i| i.id == id).map(|i| &**i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_names_round_trip() {
        let k = ServiceKey::parse_grouped("public", "g1@@svc", DEFAULT_GROUP);
        assert_eq!(k, ServiceKey::new("public", "g1", "svc"));
        assert_eq!(k.grouped_name(), "g1@@svc");
        let k = ServiceKey::parse_grouped("public", "svc", "other");
        assert_eq!(k.group, "other");
    }

    #[test]
    fn timings_follow_preserved_metadata() {
        let key = ServiceKey::simple("s");
        let mut i = Instance::new(&key, "10.0.0.1", 80, DEFAULT_CLUSTER);
        assert_eq!(i.timings(&BeatTimings::default()), BeatTimings::default());
        i.metadata.insert(META_BEAT_INTERVAL.into(), "1000".into());
        i.metadata.insert(META_BEAT_TIMEOUT.into(), "3000".into());
        i.metadata
            .insert(META_DELETE_TIMEOUT.into(), "bogus".into());
        let t = i.timings(&BeatTimings::default());
        assert_eq!(t.interval_ms, 1000);
        assert_eq!(t.unhealthy_after_ms, 3000);
        assert_eq!(t.delete_after_ms, 30_000);
        assert_eq!(i.id, "10.0.0.1#80#DEFAULT#DEFAULT_GROUP@@s");
    }
}
