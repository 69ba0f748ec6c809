//! The proxy engine. A request's path through it: a client connection ([`conn`]) is served
//! by one of two codecs, the HTTP/1.1 fast path ([`fast`]) or the general hyper engine
//! (`general`: HTTP/2, TLS, upgrades, streamed bodies); either codec asks the one
//! [`policy`] for every decision (route, rejection, endpoint, retries, passive health,
//! timeouts, sticky sessions, access line) and reaches backends through pooled
//! connections ([`pool`]).

pub mod access;
pub mod conn;
pub mod fast;
mod general;
pub mod headers;
pub mod policy;
pub mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::metrics::RouterMetrics;
use crate::store::RouteStore;
use access::AccessSink;
use general::body::RequestBody;
use general::http1::Http1Pool;
use policy::Policy;
pub use policy::{Reject, STICKY_COOKIE};

/// Engine settings (see `RouterConfig` for the keys and defaults).
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub connect_timeout: Duration,
    pub response_header_timeout: Duration,
    pub idle_timeout: Duration,
    /// In-flight requests per backend address; 0 = unlimited.
    pub max_conns_per_backend: u32,
    pub max_attempts: u32,
    /// How long a backend that refused a connection is skipped.
    pub failure_cooldown: Duration,
    /// Response cookies that start a sticky session.
    pub sticky_cookies: Vec<String>,
    pub access_log: bool,
    /// Serve plain HTTP/1.1 connections on the fast path (see [`fast`]).
    pub http1_fast_path: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(90),
            max_conns_per_backend: 0,
            max_attempts: 3,
            failure_cooldown: Duration::from_secs(10),
            sticky_cookies: vec!["JSESSIONID".to_string()],
            access_log: true,
            http1_fast_path: true,
        }
    }
}

/// Per-connection facts the engine needs.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub scheme: &'static str,
    /// The client address as `X-Forwarded-For` text, built once per connection.
    client_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(remote: SocketAddr, scheme: &'static str) -> Self {
        let client_ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            remote,
            scheme,
            client_ip,
        }
    }
}

/// The policy and the backend clients of both codecs.
pub struct Proxy {
    policy: Policy,
    /// The general engine's HTTP/1.1 endpoints (the common case): a direct keep-alive pool.
    http1: Http1Pool,
    /// The general engine's client for endpoints that speak HTTP/2 without TLS (prior
    /// knowledge).
    client_h2: Client<HttpConnector, RequestBody>,
    /// Backend connections of the HTTP/1.1 fast path.
    raw: fast::RawPool,
}

impl Proxy {
    /// Access lines go through the process log when `cfg.access_log` is on; see
    /// [`Proxy::with_access_sink`] for a file.
    pub fn new(store: Arc<RouteStore>, cfg: ProxyConfig, metrics: Arc<RouterMetrics>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let client_h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .set_host(false)
            .http2_only(true)
            .build(http);
        let http1 = Http1Pool::new(cfg.connect_timeout, cfg.idle_timeout, 1024);
        let raw = fast::RawPool::new(cfg.connect_timeout, cfg.idle_timeout, 1024);
        Proxy {
            policy: Policy::new(store, cfg, metrics),
            http1,
            client_h2,
            raw,
        }
    }

    pub fn with_access_sink(mut self, sink: AccessSink) -> Self {
        self.policy.set_access_sink(sink);
        self
    }

    /// Idle backend connections held by the fast path (all backends).
    pub fn fast_idle_connections(&self) -> usize {
        self.raw.idle_count()
    }
}
