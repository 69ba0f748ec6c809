//! Route source fed by the registry's watch stream (snapshot, then whole-service changes).
//!
//! Healthy, enabled instances with weight above zero become endpoints of every route their
//! metadata names: `berth.routes` (comma-separated `host` or `host/path`) or Consul-style
//! `urlprefix-host/path` entries in the `tags` metadata. A route whose instances are all
//! unhealthy stays in the table without endpoints (503 `no_endpoints`, not 404). On a
//! broken stream the last table stays in service and the client reconnects with backoff,
//! resuming from the last revision it applied.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::registry::v1 as pb;
use berth_registry_client::watch;
use berth_util::config::Secret;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::metrics::RouterMetrics;
use crate::route::{EndpointSpec, LbAlgorithm, RouteEntry, RouteKey};
use crate::store::{RouteStore, SOURCE_REGISTRY};

/// Instance metadata key listing an instance's routes.
pub const META_ROUTES: &str = "berth.routes";
/// Instance metadata key choosing the balancing algorithm of its routes.
pub const META_LB: &str = "berth.lb";
/// Instance metadata key naming the backend protocol: `h2c` (HTTP/2 prior knowledge) or
/// `http1` (default).
pub const META_PROTOCOL: &str = "berth.protocol";
/// Instance metadata key holding Consul-style tags (comma-separated).
pub const META_TAGS: &str = "tags";
const URLPREFIX: &str = "urlprefix-";

#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// gRPC endpoint URL (`http://127.0.0.1:9848`).
    pub endpoint: String,
    pub namespace: String,
    pub retry_max: Duration,
    /// The registry's auth secret, sent as a bearer token when its auth is on.
    pub secret: Option<Secret>,
}

impl RegistryConfig {
    /// Accepts `host:port` or an `http(s)://` URL.
    pub fn endpoint_url(addr: &str) -> Option<String> {
        let addr = addr.trim();
        if addr.starts_with("http://") || addr.starts_with("https://") {
            return addr.parse::<http::Uri>().ok().map(|_| addr.to_string());
        }
        let (host, port) = addr.rsplit_once(':')?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return None;
        }
        Some(format!("http://{addr}"))
    }
}

/// Routes named by one instance's metadata. Invalid entries are logged and skipped.
pub fn instance_routes(meta: &HashMap<String, String>) -> Vec<RouteKey> {
    let mut out = Vec::new();
    let mut push = |raw: &str| match RouteKey::parse(raw) {
        Ok(k) if !out.contains(&k) => out.push(k),
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(route = raw, error = %e, "skipping invalid route in instance metadata")
        }
    };
    if let Some(list) = meta.get(META_ROUTES) {
        for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            push(r);
        }
    }
    if let Some(tags) = meta.get(META_TAGS) {
        for tag in tags.split(',').map(str::trim) {
            // fabio syntax: `urlprefix-host/path opt=val ...`; options are ignored.
            if let Some(rest) = tag.strip_prefix(URLPREFIX) {
                let route = rest.split_whitespace().next().unwrap_or("");
                if !route.is_empty() && !route.starts_with('/') {
                    push(route);
                }
            }
        }
    }
    out
}

fn weight(w: f64) -> Option<u32> {
    // Nacos weights are decimals (1.0 default); keep two digits of precision.
    (w > 0.0).then(|| ((w * 100.0).round() as u32).max(1))
}

/// Routes of one service: one entry per route key its instances name.
pub fn service_entries(svc: &pb::Service) -> Vec<RouteEntry> {
    let mut by_key: BTreeMap<RouteKey, RouteEntry> = BTreeMap::new();
    for inst in &svc.instances {
        let keys = instance_routes(&inst.metadata);
        if keys.is_empty() {
            continue;
        }
        let lb = inst
            .metadata
            .get(META_LB)
            .and_then(|s| LbAlgorithm::parse(s))
            .unwrap_or_default();
        let endpoint = match (inst.healthy && inst.enabled, weight(inst.weight)) {
            (true, Some(w)) => inst.ip.parse::<IpAddr>().ok().and_then(|ip| {
                let port = u16::try_from(inst.port).ok().filter(|p| *p != 0)?;
                let mut e = EndpointSpec::new(SocketAddr::new(ip, port)).with_weight(w);
                // Berth's own instances say which app and instance they are; other
                // clients' instances are named by the registry.
                e.instance_id = inst
                    .metadata
                    .get("berth.instance")
                    .cloned()
                    .or_else(|| (!inst.id.is_empty()).then(|| inst.id.clone()));
                e.app = Some(
                    inst.metadata
                        .get("berth.app")
                        .cloned()
                        .unwrap_or_else(|| svc.name.clone()),
                );
                e.http2 = inst
                    .metadata
                    .get(META_PROTOCOL)
                    .is_some_and(|p| matches!(p.as_str(), "h2c" | "http2" | "h2"));
                Some(e)
            }),
            _ => None,
        };
        for key in keys {
            let entry = by_key.entry(key.clone()).or_insert_with(|| RouteEntry {
                key,
                lb,
                endpoints: Vec::new(),
            });
            if lb != LbAlgorithm::default() {
                entry.lb = lb;
            }
            if let Some(e) = &endpoint {
                entry.endpoints.push(e.clone());
            }
        }
    }
    by_key.into_values().collect()
}

/// The registry's routes, kept per service so a change re-derives only that service, and
/// the services changed since the store last saw them.
#[derive(Debug, Default)]
pub struct RegistryRoutes {
    per_service: HashMap<String, Vec<RouteEntry>>,
    pending: Pending,
}

#[derive(Debug, Default)]
enum Pending {
    #[default]
    Nothing,
    /// These services changed (or were deleted).
    Services(HashSet<String>),
    /// A snapshot replaced everything.
    All,
}

impl RegistryRoutes {
    /// Applies one event; returns false for an event without content.
    pub fn apply(&mut self, event: pb::WatchEvent) -> bool {
        match event.kind {
            Some(pb::watch_event::Kind::Snapshot(snap)) => {
                self.per_service.clear();
                for s in snap.services {
                    self.per_service
                        .insert(service_key(&s), service_entries(&s));
                }
                self.pending = Pending::All;
                true
            }
            Some(pb::watch_event::Kind::Change(change)) => match change.service {
                Some(s) => {
                    let key = service_key(&s);
                    if change.deleted {
                        self.per_service.remove(&key);
                    } else {
                        self.per_service.insert(key.clone(), service_entries(&s));
                    }
                    match &mut self.pending {
                        Pending::All => {}
                        Pending::Services(set) => {
                            set.insert(key);
                        }
                        p @ Pending::Nothing => *p = Pending::Services(HashSet::from([key])),
                    }
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Every route of every service (the table merges keys shared by several services).
    pub fn entries(&self) -> Vec<RouteEntry> {
        self.per_service.values().flatten().cloned().collect()
    }

    /// Hands the changes since the last flush to the store: only the changed services'
    /// routes, or everything after a snapshot. Returns false when there was nothing.
    pub fn flush(&mut self, store: &RouteStore) -> bool {
        match std::mem::take(&mut self.pending) {
            Pending::Nothing => false,
            Pending::All => {
                let items = self.per_service.iter().map(|(k, v)| (k.clone(), v.clone()));
                store.set_items(SOURCE_REGISTRY, true, items);
                true
            }
            Pending::Services(set) => {
                let items = set.into_iter().map(|k| {
                    let entries = self.per_service.get(&k).cloned().unwrap_or_default();
                    (k, entries)
                });
                store.set_items(SOURCE_REGISTRY, false, items);
                true
            }
        }
    }
}

fn service_key(s: &pb::Service) -> String {
    format!("{}/{}@@{}", s.namespace, s.group, s.name)
}

/// Runs the registry watch until `stop`.
pub async fn run(
    cfg: RegistryConfig,
    store: Arc<RouteStore>,
    metrics: Arc<RouterMetrics>,
    stop: CancellationToken,
) {
    let mut services = RegistryRoutes::default();
    let mut revision = 0u64;
    let mut backoff = Duration::from_millis(100);
    // An auth refusal is reported once, not on every reconnect, until a watch opens.
    let mut refusal_reported = false;
    loop {
        let watched = tokio::select! {
            _ = stop.cancelled() => return,
            r = watch_once(&cfg, &store, &metrics, &mut services, &mut revision, &stop) => r,
        };
        metrics.registry_connected.set(0);
        match watched {
            Ok(true) => {
                backoff = Duration::from_millis(100);
                refusal_reported = false;
            }
            Ok(false) => refusal_reported = false,
            Err(WatchError::Unauthorized(why)) if !refusal_reported => {
                refusal_reported = true;
                tracing::warn!(
                    registry = %cfg.endpoint, retry_in = ?backoff,
                    "registry refused the watch: {why}; {}; serving the last known routes",
                    refusal_advice(&cfg)
                );
            }
            Err(WatchError::Unauthorized(why)) => tracing::debug!(
                registry = %cfg.endpoint, "registry refused the watch: {why}"
            ),
            Err(WatchError::Other(e)) => tracing::warn!(
                registry = %cfg.endpoint, error = %e, retry_in = ?backoff,
                "registry watch unavailable; serving the last known routes"
            ),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(cfg.retry_max);
    }
}

/// Why a watch ended: refused by the registry's auth, or anything else.
enum WatchError {
    Unauthorized(String),
    Other(String),
}

impl From<String> for WatchError {
    fn from(why: String) -> Self {
        Self::Other(why)
    }
}

impl From<&str> for WatchError {
    fn from(why: &str) -> Self {
        Self::Other(why.to_string())
    }
}

fn status_error(s: &tonic::Status) -> WatchError {
    let why = format!("{}: {}", s.code(), s.message());
    match s.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            WatchError::Unauthorized(why)
        }
        _ => WatchError::Other(why),
    }
}

/// What to do about an auth refusal, naming the setting.
fn refusal_advice(cfg: &RegistryConfig) -> &'static str {
    if cfg.secret.is_some() {
        "the secret given with registry_secret_file (--registry-secret-file, BERTH_ROUTER_REGISTRY_SECRET_FILE) is not the registry's auth secret"
    } else {
        "its auth is on: give the registry's auth secret with registry_secret_file (--registry-secret-file, BERTH_ROUTER_REGISTRY_SECRET_FILE)"
    }
}

/// One connection: returns Ok(true) if at least one event was applied.
async fn watch_once(
    cfg: &RegistryConfig,
    store: &RouteStore,
    metrics: &RouterMetrics,
    services: &mut RegistryRoutes,
    revision: &mut u64,
    stop: &CancellationToken,
) -> Result<bool, WatchError> {
    let request = pb::WatchRequest {
        namespace: cfg.namespace.clone(),
        services: Vec::new(),
        from_revision: *revision,
    };
    let token = cfg.secret.as_ref().map(Secret::expose);
    let mut stream = watch::open(&cfg.endpoint, Some(Duration::from_secs(2)), request, token)
        .await
        .map_err(|err| match err {
            // The transport's debug form names the underlying cause (refused, timed out).
            watch::OpenError::Connect(e) => WatchError::Other(format!("{e:?}")),
            watch::OpenError::Refused(s) => status_error(&s),
            other => WatchError::Other(other.to_string()),
        })?;
    metrics.registry_connected.set(1);
    tracing::info!(registry = %cfg.endpoint, from_revision = *revision, "registry watch open");
    let mut applied = false;
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok(applied),
            m = stream.message() => m,
        };
        let mut next = first;
        let mut changed = false;
        // Batch everything already received into one table swap.
        loop {
            match next {
                Ok(Some(event)) => {
                    if event.revision < *revision && !is_snapshot(&event) {
                        tracing::warn!(
                            got = event.revision,
                            have = *revision,
                            "registry sent an older revision; ignoring it"
                        );
                    } else {
                        *revision = event.revision;
                        changed |= services.apply(event);
                        metrics.registry_events.inc();
                    }
                }
                Ok(None) => {
                    services.flush(store);
                    return if applied || changed {
                        Ok(true)
                    } else {
                        Err("registry closed the watch stream".into())
                    };
                }
                Err(s) => {
                    services.flush(store);
                    return Err(status_error(&s));
                }
            }
            match stream.message().now_or_never() {
                Some(m) => next = m,
                None => break,
            }
        }
        if services.flush(store) {
            applied = true;
        }
    }
}

fn is_snapshot(e: &pb::WatchEvent) -> bool {
    matches!(e.kind, Some(pb::watch_event::Kind::Snapshot(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn instance(port: u32, healthy: bool, meta: &[(&str, &str)]) -> pb::Instance {
        pb::Instance {
            id: format!("127.0.0.1#{port}#DEFAULT#web"),
            ip: "127.0.0.1".into(),
            port,
            weight: 1.0,
            healthy,
            enabled: true,
            ephemeral: true,
            cluster: "DEFAULT".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn service(name: &str, instances: Vec<pb::Instance>) -> pb::Service {
        pb::Service {
            namespace: "public".into(),
            group: "DEFAULT_GROUP".into(),
            name: name.into(),
            metadata: Default::default(),
            instances,
            revision: 1,
        }
    }

    #[test]
    fn routes_come_from_berth_routes_and_urlprefix_tags() {
        let meta: HashMap<String, String> = [
            (META_ROUTES.to_string(), "web.example, shop.example/api".to_string()),
            (
                META_TAGS.to_string(),
                "primary,urlprefix-tags.example/x strip=/x,urlprefix-/pathonly,urlprefix-web.example"
                    .to_string(),
            ),
        ]
        .into();
        let keys: Vec<String> = instance_routes(&meta)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(
            keys,
            vec!["web.example", "shop.example/api", "tags.example/x"]
        );
    }

    #[test]
    fn only_healthy_enabled_weighted_instances_become_endpoints() {
        let r = [(META_ROUTES, "web.example")];
        let mut disabled = instance(3, true, &r);
        disabled.enabled = false;
        let mut zero = instance(4, true, &r);
        zero.weight = 0.0;
        let mut heavy = instance(5, true, &r);
        heavy.weight = 2.5;
        let e = service_entries(&service(
            "web",
            vec![
                instance(1, true, &r),
                instance(2, false, &r),
                disabled,
                zero,
                heavy,
                instance(6, true, &[]),
            ],
        ));
        assert_eq!(e.len(), 1);
        let ports: Vec<(u16, u32)> = e[0]
            .endpoints
            .iter()
            .map(|x| (x.addr.port(), x.weight))
            .collect();
        assert_eq!(ports, vec![(1, 100), (5, 250)]);
    }

    #[test]
    fn unhealthy_only_route_stays_without_endpoints() {
        let r = [(META_ROUTES, "down.example")];
        let e = service_entries(&service("down", vec![instance(1, false, &r)]));
        assert_eq!(e.len(), 1);
        assert!(e[0].endpoints.is_empty());
    }

    #[test]
    fn snapshot_replaces_and_changes_update_or_delete() {
        let r = [(META_ROUTES, "a.example")];
        let mut svcs = RegistryRoutes::default();
        let snap = pb::WatchEvent {
            revision: 5,
            kind: Some(pb::watch_event::Kind::Snapshot(pb::Snapshot {
                services: vec![service("a", vec![instance(1, true, &r)])],
            })),
        };
        assert!(svcs.apply(snap));
        let change = |deleted, inst: Vec<pb::Instance>| pb::WatchEvent {
            revision: 6,
            kind: Some(pb::watch_event::Kind::Change(pb::ServiceChange {
                service: Some(service("a", inst)),
                deleted,
            })),
        };
        svcs.apply(change(
            false,
            vec![instance(1, true, &r), instance(2, true, &r)],
        ));
        assert_eq!(svcs.entries()[0].endpoints.len(), 2);
        svcs.apply(change(true, vec![]));
        assert!(svcs.entries().is_empty());
    }

    #[test]
    fn flush_hands_only_changed_services_to_the_store() {
        let store = RouteStore::new();
        let mut svcs = RegistryRoutes::default();
        assert!(!svcs.flush(&store));
        let ra = [(META_ROUTES, "a.example")];
        let rb = [(META_ROUTES, "b.example")];
        svcs.apply(pb::WatchEvent {
            revision: 1,
            kind: Some(pb::watch_event::Kind::Snapshot(pb::Snapshot {
                services: vec![
                    service("a", vec![instance(1, true, &ra)]),
                    service("b", vec![instance(2, true, &rb)]),
                ],
            })),
        });
        assert!(svcs.flush(&store));
        assert!(!svcs.flush(&store));
        let host = |h: &str| crate::route::Host::from_request_authority(h).unwrap();
        let before = store.load_full();
        assert_eq!(before.route_count(), 2);
        let change = |deleted, inst: Vec<pb::Instance>| pb::WatchEvent {
            revision: 2,
            kind: Some(pb::watch_event::Kind::Change(pb::ServiceChange {
                service: Some(service("a", inst)),
                deleted,
            })),
        };
        svcs.apply(change(
            false,
            vec![instance(1, true, &ra), instance(3, true, &ra)],
        ));
        assert!(svcs.flush(&store));
        let t = store.load_full();
        assert_eq!(
            t.lookup(&host("a.example"), "/").unwrap().endpoints.len(),
            2
        );
        assert!(Arc::ptr_eq(
            before.lookup(&host("b.example"), "/").unwrap(),
            t.lookup(&host("b.example"), "/").unwrap()
        ));
        svcs.apply(change(true, vec![]));
        assert!(svcs.flush(&store));
        assert_eq!(store.load().route_count(), 1);
        assert!(store.load().lookup(&host("a.example"), "/").is_none());
    }

    #[test]
    fn endpoint_urls() {
        assert_eq!(
            RegistryConfig::endpoint_url("127.0.0.1:9848").as_deref(),
            Some("http://127.0.0.1:9848")
        );
        assert_eq!(
            RegistryConfig::endpoint_url("http://[::1]:9848").as_deref(),
            Some("http://[::1]:9848")
        );
        assert_eq!(RegistryConfig::endpoint_url("nope"), None);
        assert_eq!(RegistryConfig::endpoint_url("h:notaport"), None);
    }
}
