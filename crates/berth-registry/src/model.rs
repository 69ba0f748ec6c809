//! The naming model: namespace -> group -> service -> cluster -> instances.
//!
//! Values here are plain data: cloning a [`Service`] is how readers get a stable view
//! while writers go on (the core keeps each service behind an `Arc`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

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

/// A shared, immutable name. Keys are copied into every tree node a change rewrites,
/// into the change history and into the liveness table: with `Arc<str>` such a copy is
/// a reference-count increment, not an allocation.
pub type Name = Arc<str>;

/// A [`Name`] for `s`; the default namespace, group and cluster share one allocation.
pub fn name(s: &str) -> Name {
    static DEFAULTS: OnceLock<[Name; 3]> = OnceLock::new();
    let defaults = DEFAULTS.get_or_init(|| {
        [
            Name::from(DEFAULT_NAMESPACE),
            Name::from(DEFAULT_GROUP),
            Name::from(DEFAULT_CLUSTER),
        ]
    });
    match defaults.iter().find(|d| &***d == s) {
        Some(d) => d.clone(),
        None => Name::from(s),
    }
}

/// Converts the string forms callers have into a [`Name`].
pub trait IntoName {
    fn into_name(self) -> Name;
}

impl IntoName for &str {
    fn into_name(self) -> Name {
        name(self)
    }
}

impl IntoName for &String {
    fn into_name(self) -> Name {
        name(self)
    }
}

impl IntoName for String {
    fn into_name(self) -> Name {
        name(&self)
    }
}

impl IntoName for Name {
    fn into_name(self) -> Name {
        self
    }
}

impl IntoName for &Name {
    fn into_name(self) -> Name {
        self.clone()
    }
}

/// Instance metadata, shared: instances registered with equal metadata (a deployment's
/// replicas) hold one map (see `Naming::apply`), and copying an instance copies a pointer.
pub type Metadata = Arc<BTreeMap<String, String>>;

/// The empty [`Metadata`], one allocation for every instance without metadata.
pub fn no_metadata() -> Metadata {
    static EMPTY: OnceLock<Metadata> = OnceLock::new();
    EMPTY.get_or_init(Metadata::default).clone()
}

/// Identifies one service: namespace, group and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub namespace: Name,
    pub group: Name,
    pub name: Name,
}

impl ServiceKey {
    pub fn new(namespace: impl IntoName, group: impl IntoName, name: impl IntoName) -> Self {
        Self {
            namespace: namespace.into_name(),
            group: group.into_name(),
            name: name.into_name(),
        }
    }

    /// A service in the default namespace and group.
    pub fn simple(name: impl IntoName) -> Self {
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
    pub cluster: Name,
    pub ip: Name,
    pub port: u16,
}

impl InstanceKey {
    pub fn new(ip: impl IntoName, port: u16, cluster: impl IntoName) -> Self {
        Self {
            cluster: cluster.into_name(),
            ip: ip.into_name(),
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
    /// An id the client chose (a Consul service id). `None` for Nacos instances, whose id
    /// "ip#port#cluster#group@@service" is derived on output ([`Instance::id`]) instead of
    /// being stored a million times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Name>,
    pub ip: Name,
    pub port: u16,
    pub cluster: Name,
    pub weight: f64,
    pub status: HealthStatus,
    pub enabled: bool,
    pub ephemeral: bool,
    pub metadata: Metadata,
    /// Server-side check for persistent instances.
    pub check: Option<CheckSpec>,
    /// Consul's `DeregisterCriticalServiceAfter`: remove after this long critical.
    pub deregister_critical_after_ms: Option<u64>,
    /// Consul tags (empty for Nacos instances).
    pub tags: Vec<String>,
    /// The Nacos 2.x connection that registered this instance, while it holds it: the
    /// instance lives as long as that connection ([`crate::naming::Op::Release`]).
    /// `None` for instances kept by beats, checks or their registration alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Name>,
}

impl Instance {
    /// An ephemeral, healthy, enabled instance with weight 1 in `cluster`.
    /// `_service` is the service it will belong to; nothing of it is stored (the Nacos
    /// id is derived from it on output).
    pub fn new(
        _service: &ServiceKey,
        ip: impl IntoName,
        port: u16,
        cluster: impl IntoName,
    ) -> Self {
        Self {
            id: None,
            ip: ip.into_name(),
            port,
            cluster: cluster.into_name(),
            weight: 1.0,
            status: HealthStatus::Passing,
            enabled: true,
            ephemeral: true,
            metadata: no_metadata(),
            check: None,
            deregister_critical_after_ms: None,
            tags: Vec::new(),
            owner: None,
        }
    }

    pub fn key(&self) -> InstanceKey {
        InstanceKey {
            cluster: self.cluster.clone(),
            ip: self.ip.clone(),
            port: self.port,
        }
    }

    /// The id clients see: the chosen one, else Nacos's "ip#port#cluster#group@@service".
    pub fn id(&self, service: &ServiceKey) -> Cow<'_, str> {
        match &self.id {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(nacos_instance_id(
                &self.ip,
                self.port,
                &self.cluster,
                service,
            )),
        }
    }

    /// True when `id` is this instance's id (without building the derived one).
    pub fn has_id(&self, service: &ServiceKey, id: &str) -> bool {
        match &self.id {
            Some(own) => &**own == id,
            None => {
                let suffix = format!("#{}#{}#{}", self.port, self.cluster, service.grouped_name());
                id.strip_suffix(suffix.as_str()) == Some(&*self.ip)
            }
        }
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
            held_delete_after_ms: defaults.held_delete_after_ms,
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
    /// Silence before an instance a Nacos 2.x connection holds is removed, when its
    /// member stopped beating for it (the member died, or the connection moved): longer
    /// than `delete_after_ms` so the client has time to reconnect elsewhere and register
    /// again (nacos-sdk-python 3.x does so on a 30 s period), as Nacos keeps a lost
    /// member's clients for a while.
    pub held_delete_after_ms: u64,
}

impl Default for BeatTimings {
    fn default() -> Self {
        Self {
            interval_ms: 5_000,
            unhealthy_after_ms: 15_000,
            delete_after_ms: 30_000,
            held_delete_after_ms: 60_000,
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
        let mut names: Vec<String> = self
            .instances
            .values()
            .map(|i| i.cluster.to_string())
            .collect();
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
                    .filter(|i| &*i.ip == ip && i.port == port);
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
        self.instances
            .values()
            .find(|i| i.has_id(&self.key, id))
            .map(|i| &**i)
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
        assert_eq!(&*k.group, "other");
    }

    #[test]
    fn timings_follow_preserved_metadata() {
        let key = ServiceKey::simple("s");
        let mut i = Instance::new(&key, "10.0.0.1", 80, DEFAULT_CLUSTER);
        assert_eq!(i.timings(&BeatTimings::default()), BeatTimings::default());
        let m = Arc::make_mut(&mut i.metadata);
        m.insert(META_BEAT_INTERVAL.into(), "1000".into());
        m.insert(META_BEAT_TIMEOUT.into(), "3000".into());
        m.insert(META_DELETE_TIMEOUT.into(), "bogus".into());
        let t = i.timings(&BeatTimings::default());
        assert_eq!(t.interval_ms, 1000);
        assert_eq!(t.unhealthy_after_ms, 3000);
        assert_eq!(t.delete_after_ms, 30_000);
        assert_eq!(i.id(&key), "10.0.0.1#80#DEFAULT#DEFAULT_GROUP@@s");
        assert!(i.has_id(&key, "10.0.0.1#80#DEFAULT#DEFAULT_GROUP@@s"));
        assert!(!i.has_id(&key, "10.0.0.2#80#DEFAULT#DEFAULT_GROUP@@s"));
        assert!(!i.has_id(&key, "x10.0.0.1#80#DEFAULT#DEFAULT_GROUP@@s"));
        i.id = Some(name("web-1"));
        assert_eq!(i.id(&key), "web-1");
    }
}
