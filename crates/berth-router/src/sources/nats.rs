//! gorouter-compatible route source over NATS.
//!
//! Route emitters publish `router.register` / `router.unregister` with gorouter's JSON and
//! re-publish live routes periodically; a route not refreshed within its stale threshold
//! is pruned. Pruning pauses while NATS is unreachable (the emitters cannot refresh, but
//! the backends are probably fine), and every timer restarts on reconnect. The router
//! announces itself on `router.start` at connect and after every reconnect, and answers
//! `router.greet` requests with the same payload.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::RouterMetrics;
use crate::route::{EndpointSpec, LbAlgorithm, RouteEntry, RouteKey};
use crate::store::{RouteStore, SOURCE_NATS};

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub urls: Vec<String>,
    /// TTL of a route whose message names no `stale_threshold_in_seconds`.
    pub prune_threshold: Duration,
    pub prune_interval: Duration,
    /// Advertised in `router.start`: how often emitters should re-register.
    pub minimum_register_interval: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: Vec::new(),
            prune_threshold: Duration::from_secs(120),
            prune_interval: Duration::from_secs(30),
            minimum_register_interval: Duration::from_secs(20),
        }
    }
}

/// gorouter's `RegistryMessage`, field for field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryMessage {
    pub host: String,
    pub port: u16,
    pub tls_port: u16,
    pub uris: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub app: String,
    pub stale_threshold_in_seconds: i64,
    pub route_service_url: String,
    pub private_instance_id: String,
    pub private_instance_index: String,
    pub server_cert_domain_san: String,
    pub isolation_segment: String,
    pub endpoint_updated_at_ns: i64,
    pub options: RegistryMessageOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryMessageOptions {
    pub loadbalancing: String,
}

/// gorouter's `RouterStart` (`router.start` and `router.greet` replies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterStart {
    pub id: String,
    pub hosts: Vec<String>,
    #[serde(rename = "minimumRegisterIntervalInSeconds")]
    pub minimum_register_interval_in_seconds: u64,
    #[serde(rename = "pruneThresholdInSeconds")]
    pub prune_threshold_in_seconds: u64,
}

/// Why a message was rejected; logged with the payload and counted.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MessageError {
    #[error("not gorouter registry JSON: {0}")]
    Json(String),
    #[error("`host` {0:?} is not an IP address; send the instance's IP")]
    Host(String),
    #[error("`port` is missing or 0 (only `tls_port` given; TLS to backends is not supported)")]
    Port,
    #[error("`uris` is empty; list at least one route")]
    NoUris,
    #[error("`route_service_url` must be https (gorouter rule), got {0:?}")]
    RouteService(String),
    #[error("`options.loadbalancing` {0:?} is unknown; use round-robin or least-connection")]
    Lb(String),
}

/// One validated registration: the endpoint and the routes it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub keys: Vec<RouteKey>,
    pub endpoint: EndpointSpec,
    pub lb: Option<LbAlgorithm>,
    pub ttl: Option<Duration>,
}

impl RegistryMessage {
    pub fn parse(data: &[u8]) -> Result<Registration, MessageError> {
        let msg: RegistryMessage =
            serde_json::from_slice(data).map_err(|e| MessageError::Json(e.to_string()))?;
        msg.validate()
    }

    fn validate(self) -> Result<Registration, MessageError> {
        if !self.route_service_url.is_empty() && !self.route_service_url.starts_with("https") {
            return Err(MessageError::RouteService(self.route_service_url));
        }
        let ip: IpAddr = match self.host.as_str() {
            "localhost" => IpAddr::from([127, 0, 0, 1]),
            h => h
                .parse()
                .map_err(|_| MessageError::Host(self.host.clone()))?,
        };
        if self.port == 0 {
            return Err(MessageError::Port);
        }
        let keys: Vec<RouteKey> = self
            .uris
            .iter()
            .filter_map(|u| match RouteKey::parse(u) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(uri = %u, error = %e, "skipping invalid uri in NATS message");
                    None
                }
            })
            .collect();
        if keys.is_empty() {
            return Err(MessageError::NoUris);
        }
        let lb = match self.options.loadbalancing.as_str() {
            "" => None,
            s => Some(LbAlgorithm::parse(s).ok_or_else(|| MessageError::Lb(s.to_string()))?),
        };
        let mut endpoint = EndpointSpec::new(SocketAddr::new(ip, self.port));
        if !self.private_instance_id.is_empty() {
            endpoint.instance_id = Some(self.private_instance_id.clone());
        }
        if !self.app.is_empty() {
            endpoint.app = Some(self.app.clone());
        }
        endpoint.tags = self.tags;
        if !self.private_instance_index.is_empty() {
            endpoint
                .tags
                .insert("instance_index".into(), self.private_instance_index);
        }
        let ttl = (self.stale_threshold_in_seconds > 0)
            .then(|| Duration::from_secs(self.stale_threshold_in_seconds as u64));
        Ok(Registration {
            keys,
            endpoint,
            lb,
            ttl,
        })
    }
}

struct Live {
    endpoint: EndpointSpec,
    lb: Option<LbAlgorithm>,
    ttl: Duration,
    seen: Instant,
}

/// The NATS-fed routes with their freshness. Pure: time is passed in.
pub struct NatsRoutes {
    routes: HashMap<(RouteKey, SocketAddr), Live>,
    default_ttl: Duration,
}

impl NatsRoutes {
    pub fn new(default_ttl: Duration) -> Self {
        NatsRoutes {
            routes: HashMap::new(),
            default_ttl,
        }
    }

    /// Seeds from cached entries; they live one TTL unless refreshed.
    pub fn seed(&mut self, entries: Vec<RouteEntry>, now: Instant) {
        for e in entries {
            for ep in e.endpoints {
                self.routes.insert(
                    (e.key.clone(), ep.addr),
                    Live {
                        endpoint: ep,
                        lb: Some(e.lb),
                        ttl: self.default_ttl,
                        seen: now,
                    },
                );
            }
        }
    }

    /// Returns true when the table changed (not just a refresh).
    pub fn register(&mut self, r: Registration, now: Instant) -> bool {
        let mut changed = false;
        let ttl = r.ttl.unwrap_or(self.default_ttl).min(self.default_ttl);
        for key in r.keys {
            let addr = r.endpoint.addr;
            match self.routes.get_mut(&(key.clone(), addr)) {
                Some(live) => {
                    live.seen = now;
                    live.ttl = ttl;
                    if live.endpoint != r.endpoint || live.lb != r.lb {
                        live.endpoint = r.endpoint.clone();
                        live.lb = r.lb;
                        changed = true;
                    }
                }
                None => {
                    self.routes.insert(
                        (key, addr),
                        Live {
                            endpoint: r.endpoint.clone(),
                            lb: r.lb,
                            ttl,
                            seen: now,
                        },
                    );
                    changed = true;
                }
            }
        }
        changed
    }

    pub fn unregister(&mut self, r: &Registration) -> bool {
        let mut changed = false;
        for key in &r.keys {
            changed |= self
                .routes
                .remove(&(key.clone(), r.endpoint.addr))
                .is_some();
        }
        changed
    }

    /// Drops routes not refreshed within their TTL; returns how many.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.routes.len();
        self.routes
            .retain(|_, l| now.saturating_duration_since(l.seen) < l.ttl);
        before - self.routes.len()
    }

    /// After a reconnect every emitter gets a fresh chance to re-register.
    pub fn refresh_all(&mut self, now: Instant) {
        for l in self.routes.values_mut() {
            l.seen = now;
        }
    }

    pub fn entries(&self) -> Vec<RouteEntry> {
        let mut by_key: BTreeMap<&RouteKey, RouteEntry> = BTreeMap::new();
        for ((key, _), live) in &self.routes {
            let e = by_key.entry(key).or_insert_with(|| RouteEntry {
                key: key.clone(),
                lb: LbAlgorithm::default(),
                endpoints: Vec::new(),
            });
            if let Some(lb) = live.lb {
                e.lb = lb;
            }
            e.endpoints.push(live.endpoint.clone());
        }
        by_key.into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Runs the NATS source until `stop`.
pub async fn run(
    cfg: NatsConfig,
    store: Arc<RouteStore>,
    metrics: Arc<RouterMetrics>,
    advertise: IpAddr,
    stop: CancellationToken,
) {
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let options = async_nats::ConnectOptions::new()
        .name("berth-router")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(6)).min(2_000))
        })
        .event_callback(move |event| {
            let tx = events_tx.clone();
            async move {
                let _ = tx.send(event);
            }
        });
    let client = match options.connect(cfg.urls.as_slice()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(urls = ?cfg.urls, error = %e, "NATS source disabled: bad NATS URL; fix --nats");
            return;
        }
    };
    let subscribe = |subject: &'static str| {
        let client = client.clone();
        async move { client.subscribe(subject).await }
    };
    let (mut routes_sub, mut greet_sub) =
        match tokio::try_join!(subscribe("router.*"), subscribe("router.greet")) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe on NATS; NATS source disabled");
                return;
            }
        };
    let start = RouterStart {
        id: format!("0-{}", uuid_like()),
        hosts: vec![advertise.to_string()],
        minimum_register_interval_in_seconds: cfg.minimum_register_interval.as_secs(),
        prune_threshold_in_seconds: cfg.prune_threshold.as_secs(),
    };
    let start_payload: bytes::Bytes = serde_json::to_vec(&start).unwrap_or_default().into();
    let mut state = NatsRoutes::new(cfg.prune_threshold);
    state.seed(store.source(SOURCE_NATS), Instant::now());
    let mut connected = false;
    let mut prune = tokio::time::interval(cfg.prune_interval);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            event = events.recv() => match event {
                Some(async_nats::Event::Connected) => {
                    tracing::info!("connected to NATS; announcing router.start");
                    connected = true;
                    metrics.nats_connected.set(1);
                    state.refresh_all(Instant::now());
                    if let Err(e) = client.publish("router.start", start_payload.clone()).await {
                        tracing::warn!(error = %e, "cannot publish router.start");
                    }
                }
                Some(async_nats::Event::Disconnected) => {
                    tracing::warn!("NATS unreachable; route pruning suspended");
                    connected = false;
                    metrics.nats_connected.set(0);
                }
                Some(other) => tracing::debug!(event = %other, "NATS event"),
                None => {}
            },
            Some(msg) = greet_sub.next() => {
                if let Some(reply) = msg.reply
                    && let Err(e) = client.publish(reply, start_payload.clone()).await
                {
                    tracing::warn!(error = %e, "cannot answer router.greet");
                }
            }
            Some(msg) = routes_sub.next() => {
                dirty |= handle(&mut state, &metrics, &msg);
                // Batch: apply everything already queued before one table swap.
                for _ in 0..10_000 {
                    match routes_sub.next().now_or_never() {
                        Some(Some(m)) => dirty |= handle(&mut state, &metrics, &m),
                        _ => break,
                    }
                }
            }
            _ = prune.tick() => {
                if connected {
                    let pruned = state.prune(Instant::now());
                    if pruned > 0 {
                        tracing::info!(pruned, "pruned stale NATS routes");
                        metrics.nats_pruned.inc_by(pruned as u64);
                        dirty = true;
                    }
                }
            }
        }
        if dirty {
            store.set_source(SOURCE_NATS, state.entries());
            dirty = false;
        }
    }
    metrics.nats_connected.set(0);
}

fn handle(state: &mut NatsRoutes, metrics: &RouterMetrics, msg: &async_nats::Message) -> bool {
    let subject = msg.subject.as_str();
    if subject != "router.register" && subject != "router.unregister" {
        return false;
    }
    metrics
        .nats_messages
        .get_or_create(&vec![("subject".to_string(), subject.to_string())])
        .inc();
    match RegistryMessage::parse(&msg.payload) {
        Ok(reg) if subject == "router.register" => state.register(reg, Instant::now()),
        Ok(reg) => state.unregister(&reg),
        Err(e) => {
            metrics.nats_malformed.inc();
            tracing::warn!(
                subject, error = %e, payload = %String::from_utf8_lossy(&msg.payload),
                "ignoring malformed NATS message"
            );
            false
        }
    }
}

fn uuid_like() -> String {
    let b: [u8; 16] = rand::random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOROUTER_EXAMPLE: &str = r#"{"host": "127.0.0.1", "port": 4567,
        "uris": ["my_first_url.vcap.me", "my_second_url.vcap.me/path"],
        "tags": {"another_key": "another_value"}, "app": "some_app_guid",
        "private_instance_id": "some_app_instance_id", "private_instance_index": "2",
        "stale_threshold_in_seconds": 30, "options": {"loadbalancing": "least-connection"}}"#;

    #[test]
    fn parses_gorouter_registration() {
        let r = RegistryMessage::parse(GOROUTER_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(r.keys.len(), 2);
        assert_eq!(r.keys[1].to_string(), "my_second_url.vcap.me/path");
        assert_eq!(r.endpoint.addr, "127.0.0.1:4567".parse().unwrap());
        assert_eq!(
            r.endpoint.instance_id.as_deref(),
            Some("some_app_instance_id")
        );
        assert_eq!(r.endpoint.app.as_deref(), Some("some_app_guid"));
        assert_eq!(r.endpoint.tags["another_key"], "another_value");
        assert_eq!(r.endpoint.tags["instance_index"], "2");
        assert_eq!(r.lb, Some(LbAlgorithm::LeastConnection));
        assert_eq!(r.ttl, Some(Duration::from_secs(30)));
    }

    #[test]
    fn rejects_malformed_messages_with_reasons() {
        let cases = [
            ("not json", "not gorouter registry JSON"),
            (r#"{"host":"web","port":1,"uris":["a.b"]}"#, "not an IP"),
            (r#"{"host":"127.0.0.1","uris":["a.b"]}"#, "port"),
            (r#"{"host":"127.0.0.1","port":1,"uris":[]}"#, "uris"),
            (
                r#"{"host":"127.0.0.1","port":1,"uris":["a.b"],"private_instance_index":3}"#,
                "not gorouter registry JSON",
            ),
            (
                r#"{"host":"127.0.0.1","port":1,"uris":["a.b"],"route_service_url":"http://x"}"#,
                "https",
            ),
            (
                r#"{"host":"127.0.0.1","port":1,"uris":["a.b"],"options":{"loadbalancing":"x"}}"#,
                "loadbalancing",
            ),
        ];
        for (payload, want) in cases {
            let e = RegistryMessage::parse(payload.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{payload}: {e}");
        }
    }

    #[test]
    fn start_message_uses_gorouter_names() {
        let s = RouterStart {
            id: "0-x".into(),
            hosts: vec!["127.0.0.1".into()],
            minimum_register_interval_in_seconds: 20,
            prune_threshold_in_seconds: 120,
        };
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["minimumRegisterIntervalInSeconds"], 20);
        assert_eq!(v["pruneThresholdInSeconds"], 120);
        assert_eq!(v["hosts"][0], "127.0.0.1");
    }

    fn reg(port: u16, uri: &str) -> Registration {
        let payload = format!(r#"{{"host":"127.0.0.1","port":{port},"uris":["{uri}"]}}"#);
        RegistryMessage::parse(payload.as_bytes()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn routes_expire_unless_refreshed() {
        let mut s = NatsRoutes::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(s.register(reg(1, "a.example"), t0));
        assert!(s.register(reg(2, "a.example"), t0));
        assert!(!s.register(reg(1, "a.example"), t0 + Duration::from_secs(8)));
        assert_eq!(s.prune(t0 + Duration::from_secs(11)), 1);
        assert_eq!(s.entries()[0].endpoints.len(), 1);
        s.refresh_all(t0 + Duration::from_secs(30));
        assert_eq!(s.prune(t0 + Duration::from_secs(35)), 0);
        assert!(s.unregister(&reg(1, "a.example")));
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn message_ttl_is_capped_by_the_router_threshold() {
        let mut s = NatsRoutes::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let mut r = reg(1, "a.example");
        r.ttl = Some(Duration::from_secs(2));
        s.register(r.clone(), t0);
        assert_eq!(s.prune(t0 + Duration::from_secs(3)), 1);
        r.ttl = Some(Duration::from_secs(500));
        s.register(r, t0);
        assert_eq!(s.prune(t0 + Duration::from_secs(11)), 1);
    }
}
