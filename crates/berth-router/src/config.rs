//! The router's one typed configuration, built from the shared config layers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_util::config::{ConfigError, Layers};

use crate::proxy::ProxyConfig;
use crate::sources::nats::NatsConfig;
use crate::sources::registry::RegistryConfig;
use crate::tls::CertPair;

/// Every setting of `berth router`. Keys (TOML file, `BERTH_ROUTER_<KEY>`, `--<key>` with
/// `-` for `_`) and defaults:
///
/// | key | default | meaning |
/// |---|---|---|
/// | `listen` | 127.0.0.1:8080 | HTTP entry (HTTP/1.1 and h2c) |
/// | `status_listen` | 127.0.0.1:8082 | `/health`, `/routes`, `/varz`, `/metrics` |
/// | `status_user`, `status_password` (or `status_password_file`) | none | basic auth on the status listener except `/health` |
/// | `tls_listen` | none | HTTPS entry (needs `tls_cert_files` and `tls_key_files`) |
/// | `tls_cert_files`, `tls_key_files` | none | comma-separated PEM files, pairwise; SNI picks the pair |
/// | `tls_reload_interval` | 5s | how often certificate files are checked for changes (SIGHUP also reloads) |
/// | `registry` | none | registry gRPC address (`host:port` or `http://host:port`) to watch |
/// | `registry_secret` (or `registry_secret_file`) | none | the registry's auth secret, sent with the watch when its auth is on |
/// | `registry_namespace` | public | namespace watched |
/// | `registry_retry_max` | 5s | longest reconnect backoff |
/// | `nats` | none | comma-separated NATS URLs for gorouter-style `router.register` |
/// | `nats_prune_threshold` | 120s | route TTL when a message names none |
/// | `nats_prune_interval` | 30s | how often stale routes are pruned |
/// | `nats_minimum_register_interval` | 20s | advertised in `router.start` |
/// | `route_cache` | none | file holding the last table, for cold starts without sources |
/// | `upstreams_file` | none | file keeping the upstreams managed over `/v1/upstreams` (dyups-style API) across restarts |
/// | `connect_timeout` | 5s | backend TCP connect |
/// | `response_header_timeout` | 60s | backend response headers |
/// | `idle_timeout` | 90s | backend body silence and pooled connection idle time |
/// | `header_read_timeout` | 30s | client request headers |
/// | `max_conns_per_backend` | 0 (unlimited) | in-flight requests per backend address |
/// | `max_attempts` | 3 | attempts per request (retries only on refused/timed-out connects) |
/// | `failure_cooldown` | 10s | how long a backend that failed is skipped |
/// | `sticky_session_cookies` | JSESSIONID | response cookies that start a `__VCAP_ID` session |
/// | `access_log` | true | one line per request (status, bytes, duration, backend, request id) |
/// | `http1_fast_path` | true | serve plain HTTP/1.1 on the fast path (false: always the general hyper engine) |
/// | `access_log_file` | none | write those lines to this file (appended) instead of the process log |
/// | `drain_wait` | 0s | after SIGTERM: time `/health` reports 503 before the listener closes |
/// | `drain_timeout` | 10s | after that: longest wait for in-flight requests |
/// | `workers` | 0 (the cores the process may run on) | proxy threads; 1 runs everything on one thread |
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    pub status_listen: SocketAddr,
    pub status_auth: Option<(String, String)>,
    pub tls_listen: Option<SocketAddr>,
    pub tls_certs: Vec<CertPair>,
    pub tls_reload_interval: Duration,
    pub registry: Option<RegistryConfig>,
    pub nats: Option<NatsConfig>,
    pub route_cache: Option<PathBuf>,
    pub upstreams_file: Option<PathBuf>,
    pub proxy: ProxyConfig,
    pub access_log_file: Option<PathBuf>,
    pub header_read_timeout: Duration,
    pub drain_wait: Duration,
    pub drain_timeout: Duration,
    /// Runtime worker threads; 0 = the cores this process may run on (see
    /// [`RouterConfig::worker_threads`]).
    pub workers: usize,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl RouterConfig {
    pub fn from_layers(layers: &mut Layers) -> Result<Self, ConfigError> {
        let d = ProxyConfig::default();
        let proxy = ProxyConfig {
            connect_timeout: layers.get_or("connect_timeout", d.connect_timeout)?,
            response_header_timeout: layers
                .get_or("response_header_timeout", d.response_header_timeout)?,
            idle_timeout: layers.get_or("idle_timeout", d.idle_timeout)?,
            max_conns_per_backend: layers.get_or("max_conns_per_backend", 0u32)?,
            max_attempts: layers.get_or("max_attempts", d.max_attempts)?,
            failure_cooldown: layers.get_or("failure_cooldown", d.failure_cooldown)?,
            sticky_cookies: layers.get_or("sticky_session_cookies", d.sticky_cookies)?,
            access_log: layers.get_or("access_log", true)?,
            http1_fast_path: layers.get_or("http1_fast_path", d.http1_fast_path)?,
        };
        if proxy.max_attempts == 0 {
            return Err(invalid(
                "max_attempts",
                "0",
                "an attempt count of at least 1 (3 is the default)",
            ));
        }
        let status_user: Option<String> = layers.get("status_user")?;
        let status_password = layers.secret("status_password")?;
        let status_auth = match (status_user, status_password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, Some(p)) => Some(("admin".to_string(), p)),
            (Some(u), None) => {
                return Err(ConfigError::Missing {
                    key: "status_password".into(),
                    hint: format!(
                        "status_user is {u:?} but no password is set; set status_password or \
                         status_password_file"
                    ),
                });
            }
            (None, None) => None,
        };
        let certs: Vec<PathBuf> = layers.get_or("tls_cert_files", Vec::new())?;
        let keys: Vec<PathBuf> = layers.get_or("tls_key_files", Vec::new())?;
        if certs.len() != keys.len() {
            return Err(invalid(
                "tls_key_files",
                &format!("{} files", keys.len()),
                &format!("one key file per certificate file ({} given)", certs.len()),
            ));
        }
        let tls_listen: Option<SocketAddr> = layers.get("tls_listen")?;
        if tls_listen.is_some() && certs.is_empty() {
            return Err(ConfigError::Missing {
                key: "tls_cert_files".into(),
                hint: "tls_listen is set; give tls_cert_files and tls_key_files (PEM)".into(),
            });
        }
        let registry = match layers.get::<String>("registry")? {
            Some(addr) => Some(RegistryConfig {
                endpoint: RegistryConfig::endpoint_url(&addr).ok_or_else(|| {
                    invalid("registry", &addr, "a gRPC address like 127.0.0.1:9848")
                })?,
                namespace: layers.get_or("registry_namespace", "public".to_string())?,
                retry_max: layers.get_or("registry_retry_max", Duration::from_secs(5))?,
                secret: layers
                    .secret("registry_secret")?
                    .map(berth_util::config::Secret::new),
            }),
            None => None,
        };
        let nats_urls: Vec<String> = layers.get_or("nats", Vec::new())?;
        let nd = NatsConfig::default();
        let nats = (!nats_urls.is_empty())
            .then(|| -> Result<NatsConfig, ConfigError> {
                Ok(NatsConfig {
                    urls: nats_urls,
                    prune_threshold: layers.get_or("nats_prune_threshold", nd.prune_threshold)?,
                    prune_interval: layers.get_or("nats_prune_interval", nd.prune_interval)?,
                    minimum_register_interval: layers.get_or(
                        "nats_minimum_register_interval",
                        nd.minimum_register_interval,
                    )?,
                })
            })
            .transpose()?;
        let config = RouterConfig {
            listen: layers.get_or("listen", loopback(8080))?,
            status_listen: layers.get_or("status_listen", loopback(8082))?,
            status_auth,
            tls_listen,
            tls_certs: certs
                .into_iter()
                .zip(keys)
                .map(|(cert, key)| CertPair { cert, key })
                .collect(),
            tls_reload_interval: layers.get_or("tls_reload_interval", Duration::from_secs(5))?,
            registry,
            nats,
            route_cache: layers.get("route_cache")?,
            upstreams_file: layers.get("upstreams_file")?,
            proxy,
            access_log_file: layers.get("access_log_file")?,
            header_read_timeout: layers.get_or("header_read_timeout", Duration::from_secs(30))?,
            drain_wait: layers.get_or("drain_wait", Duration::ZERO)?,
            drain_timeout: layers.get_or("drain_timeout", Duration::from_secs(10))?,
            workers: layers.get_or("workers", 0usize)?,
        };
        layers.finish()?;
        Ok(config)
    }

    /// Loopback ephemeral ports, short timeouts, the route cache in `dir`, no sources.
    pub fn for_test(dir: &Path) -> Self {
        RouterConfig {
            listen: loopback(0),
            status_listen: loopback(0),
            status_auth: None,
            tls_listen: None,
            tls_certs: Vec::new(),
            tls_reload_interval: Duration::from_millis(100),
            registry: None,
            nats: None,
            route_cache: Some(dir.join("routes.json")),
            upstreams_file: Some(dir.join("upstreams.json")),
            proxy: ProxyConfig {
                connect_timeout: Duration::from_millis(500),
                response_header_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(5),
                failure_cooldown: Duration::from_secs(5),
                // Tests opt in; a stdout log would interleave with test output.
                access_log: false,
                ..ProxyConfig::default()
            },
            access_log_file: None,
            header_read_timeout: Duration::from_secs(5),
            drain_wait: Duration::ZERO,
            drain_timeout: Duration::from_secs(2),
            workers: 0,
        }
    }

    /// The worker threads to run: `workers`, or when 0 the cores this process may run on
    /// (its scheduler affinity and cgroup quota, so `taskset -c 1` means one).
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// The runtime the router runs on. One worker gets a current-thread runtime: the
    /// accept loop, every connection and the I/O driver share one thread, so a request
    /// never wakes another thread (a multi-thread runtime with one worker still hands
    /// work between the worker and the driver through its shared queues).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        match self.worker_threads() {
            1 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build(),
        }
    }
}

fn invalid(key: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        origin: berth_util::config::Origin::Default,
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_util::config::MapSource;

    fn build(pairs: &[(&str, &str)]) -> Result<RouterConfig, ConfigError> {
        let env = MapSource::new(Vec::<(String, String)>::new());
        let flags = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut layers = Layers::new("router", None, &env, flags)?;
        RouterConfig::from_layers(&mut layers)
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = build(&[]).unwrap();
        assert_eq!(c.listen, loopback(8080));
        assert_eq!(c.status_listen, loopback(8082));
        assert!(c.nats.is_none() && c.registry.is_none());
        assert_eq!(c.proxy.max_attempts, 3);
        assert_eq!(c.workers, 0);
        assert!(c.worker_threads() >= 1);
    }

    #[test]
    fn workers_set_the_runtime_threads() {
        let c = build(&[("workers", "1")]).unwrap();
        assert_eq!(c.worker_threads(), 1);
        let rt = c.runtime().unwrap();
        assert_eq!(rt.metrics().num_workers(), 1);
        let c = build(&[("workers", "3")]).unwrap();
        assert_eq!(c.runtime().unwrap().metrics().num_workers(), 3);
        let e = build(&[("workers", "many")]).unwrap_err().to_string();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn flags_configure_sources() {
        let c = build(&[
            ("nats", "nats://127.0.0.1:4222"),
            ("nats_prune_threshold", "2s"),
            ("registry", "127.0.0.1:9848"),
            ("route_cache", "/tmp/x.json"),
        ])
        .unwrap();
        let n = c.nats.unwrap();
        assert_eq!(n.prune_threshold, Duration::from_secs(2));
        assert_eq!(n.prune_interval, Duration::from_secs(30));
        assert_eq!(c.registry.unwrap().endpoint, "http://127.0.0.1:9848");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = build(&[("listen", "nope")]).unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = build(&[("max_attempts", "0")]).unwrap_err().to_string();
        assert!(e.contains("max_attempts"), "{e}");
        let e = build(&[("tls_listen", "127.0.0.1:0")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls_cert_files"), "{e}");
        let e = build(&[("status_user", "ops")]).unwrap_err().to_string();
        assert!(e.contains("status_password"), "{e}");
    }
}
