//! The proxy engine: one request in, route lookup, endpoint choice with retries, one
//! streamed response out.

pub mod access;
pub mod body;
pub mod fast;
pub mod headers;
mod idle;
pub mod pool;
pub mod reject;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::metrics::RouterMetrics;
use crate::route::Host;
use crate::store::RouteStore;
use crate::table::Pool;
use access::{AccessLine, AccessRecord, AccessSink};
use body::{RequestBody, ResponseBody, RetryableBody};
use headers::X_REQUEST_ID;
use pool::{Checkin, Http1Pool};
pub use reject::Reject;

/// Cookie gorouter uses to pin a session to one instance; kept for compatibility.
pub const STICKY_COOKIE: &str = "__VCAP_ID";

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

pub struct Proxy {
    store: Arc<RouteStore>,
    /// HTTP/1.1 endpoints (the common case): a direct keep-alive pool.
    http1: Http1Pool,
    /// For endpoints that speak HTTP/2 without TLS (prior knowledge).
    client_h2: Client<HttpConnector, RequestBody>,
    /// Backend connections of the HTTP/1.1 fast path.
    raw: fast::RawPool,
    cfg: ProxyConfig,
    access: AccessSink,
    metrics: Arc<RouterMetrics>,
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
        let access = if cfg.access_log {
            AccessSink::Log
        } else {
            AccessSink::Off
        };
        Proxy {
            store,
            http1,
            client_h2,
            raw,
            access,
            cfg,
            metrics,
        }
    }

    pub fn with_access_sink(mut self, sink: AccessSink) -> Self {
        self.access = sink;
        self
    }

    /// True when plain HTTP/1.1 connections start on the fast path.
    pub fn fast_path(&self) -> bool {
        self.cfg.http1_fast_path
    }

    /// Idle backend connections held by the fast path (all backends).
    pub fn fast_idle_connections(&self) -> usize {
        self.raw.idle_count()
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<ResponseBody> {
        let start = Instant::now();
        self.metrics.requests.inc();
        let resp = self.route(req, conn, start).await;
        self.metrics
            .response(resp.status().as_u16(), start.elapsed());
        resp
    }

    async fn route(
        &self,
        mut req: Request<Incoming>,
        conn: &ConnInfo,
        start: Instant,
    ) -> Response<ResponseBody> {
        let authority = request_authority(&req);
        let request_id = headers::ensure_request_id(req.headers_mut());
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut rejecting = Rejecting {
            method: req.method().as_str(),
            host: "",
            path: path_and_query.as_str(),
            request_id: &request_id,
            start,
        };
        let host = authority
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .and_then(Host::from_request_authority);
        let (Some(host), Some(authority)) = (host, authority) else {
            return self.reject(Reject::EmptyHost, rejecting);
        };
        rejecting.host = host.as_str();
        let pool: Arc<Pool> = match self.store.load().lookup(&host, req.uri().path()) {
            Some(p) => p.clone(),
            None => return self.reject(Reject::UnknownRoute, rejecting),
        };
        if pool.endpoints.is_empty() {
            return self.reject(Reject::NoEndpoints, rejecting);
        }
        let method = req.method().clone();

        let is_upgrade =
            req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
        let sticky = headers::cookie(req.headers(), STICKY_COOKIE).map(str::to_string);
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, is_upgrade);
        headers::add_forwarded(&mut parts.headers, &conn.client_ip, conn.scheme, &authority);
        parts.headers.insert(header::HOST, authority);
        let body = RetryableBody::new(body);
        let rejecting = Rejecting {
            method: method.as_str(),
            host: host.as_str(),
            path: path_and_query.as_str(),
            request_id: &request_id,
            start,
        };

        let max_attempts = (self.cfg.max_attempts.max(1) as usize).min(pool.endpoints.len());
        let mut tried: smallvec::SmallVec<[SocketAddr; 4]> = smallvec::SmallVec::new();
        let mut attempts = 0;
        while attempts < max_attempts {
            let Some(ep) = pool.pick(&tried, sticky.as_deref()) else {
                break;
            };
            tried.push(ep.addr());
            let Some(slot) = ep.stats.try_begin(self.cfg.max_conns_per_backend) else {
                continue;
            };
            attempts += 1;
            if attempts > 1 {
                self.metrics.retries.inc();
            }
            let mut breq = Request::new(body.attempt());
            *breq.method_mut() = method.clone();
            // The last possible attempt takes the headers; earlier ones copy them.
            *breq.headers_mut() = if attempts == max_attempts {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            // Upgrades need HTTP/1.1 whatever the endpoint prefers.
            let h2 = ep.spec.http2 && !is_upgrade;
            let sent = if h2 {
                let uri: Uri = match format!("http://{}{}", ep.addr(), path_and_query).parse() {
                    Ok(u) => u,
                    Err(_) => return self.reject(Reject::EndpointFailure, rejecting),
                };
                *breq.uri_mut() = uri;
                *breq.version_mut() = Version::HTTP_2;
                let fut = self.client_h2.request(breq);
                tokio::time::timeout(self.cfg.response_header_timeout, fut)
                    .await
                    .map(|r| r.map(|resp| (resp, None)).map_err(BackendError::H2))
            } else {
                *breq.uri_mut() = Uri::from(path_and_query.clone());
                *breq.version_mut() = Version::HTTP_11;
                let fut = self.http1.send(ep.addr(), breq);
                tokio::time::timeout(self.cfg.response_header_timeout, fut)
                    .await
                    .map(|r| r.map(|(resp, c)| (resp, Some(c))).map_err(BackendError::H1))
            };
            match sent {
                Ok(Ok((resp, checkin))) => {
                    ep.stats.mark_ok();
                    return self.respond(
                        resp,
                        checkin,
                        ep,
                        slot,
                        client_upgrade,
                        Responding {
                            sticky: sticky.as_deref(),
                            request_id,
                            host,
                            method,
                            path: path_and_query,
                            start,
                        },
                    );
                }
                Ok(Err(e)) => {
                    let retryable = e.is_connect() && body.untouched();
                    ep.stats.mark_failed(self.cfg.failure_cooldown);
                    tracing::warn!(
                        backend = %ep.addr(), route = %pool.key, request_id = ?request_id,
                        retryable, error = %error_chain(&e), "backend request failed"
                    );
                    if !retryable {
                        break;
                    }
                }
                Err(_) => {
                    ep.stats.mark_failed(self.cfg.failure_cooldown);
                    tracing::warn!(
                        backend = %ep.addr(), route = %pool.key, request_id = ?request_id,
                        timeout = ?self.cfg.response_header_timeout,
                        "backend sent no response headers in time"
                    );
                    break;
                }
            }
        }
        let reject = if attempts == 0 {
            Reject::ConnectionLimit
        } else {
            Reject::EndpointFailure
        };
        self.reject(reject, rejecting)
    }

    fn respond(
        &self,
        resp: Response<Incoming>,
        checkin: Option<Checkin>,
        ep: Arc<Endpoint>,
        slot: crate::endpoint::InFlight,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        r: Responding<'_>,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = resp.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
        let backend_upgrade = if switching {
            // Re-assemble just to extract the backend side of the upgrade.
            let mut tmp = Response::from_parts(parts, ());
            let up = hyper::upgrade::on(&mut tmp);
            parts = tmp.into_parts().0;
            Some(up)
        } else {
            None
        };
        headers::strip_hop_by_hop(&mut parts.headers, switching);
        parts.headers.insert(&X_REQUEST_ID, r.request_id.clone());
        let restick = r.sticky.is_some_and(|s| s != ep.sticky_id);
        if restick || headers::sets_cookie(&parts.headers, &self.cfg.sticky_cookies) {
            let cookie = format!("{STICKY_COOKIE}={}; Path=/; HttpOnly", ep.sticky_id);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                parts.headers.append(header::SET_COOKIE, v);
            }
        }
        let status = parts.status.as_u16();
        let mut body = if let (Some(client), Some(backend)) = (client_upgrade, backend_upgrade) {
            // The connection now belongs to the tunnel; it never goes back to the pool.
            drop(checkin);
            upgrade::tunnel(client, backend, slot, self.cfg.idle_timeout);
            ResponseBody::empty()
        } else {
            // A 101 the client did not ask for cannot be reused either.
            let checkin = checkin.filter(|_| !switching);
            ResponseBody::backend(body, Some(self.cfg.idle_timeout), slot, checkin)
        };
        if self.access.enabled() {
            body = body.with_access(AccessLine {
                sink: self.access.clone(),
                method: r.method,
                host: r.host,
                path: r.path,
                status,
                backend: ep,
                request_id: r.request_id,
                start: r.start,
            });
        }
        Response::from_parts(parts, body)
    }

    fn reject(&self, reject: Reject, r: Rejecting<'_>) -> Response<ResponseBody> {
        self.metrics.router_error(reject.reason());
        self.access.record(&AccessRecord {
            method: r.method,
            host: r.host,
            path: r.path,
            status: reject.status().as_u16(),
            bytes: 0,
            duration: r.start.elapsed(),
            backend: None,
            request_id: r.request_id.to_str().unwrap_or("-"),
            router_error: Some(reject.reason()),
            complete: true,
        });
        reject.response(r.host, Some(r.request_id))
    }
}

/// A failed backend exchange, from either client.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error(transparent)]
    H1(pool::SendError),
    #[error(transparent)]
    H2(hyper_util::client::legacy::Error),
}

impl BackendError {
    fn is_connect(&self) -> bool {
        match self {
            BackendError::H1(e) => e.is_connect(),
            BackendError::H2(e) => e.is_connect(),
        }
    }
}

struct Responding<'a> {
    sticky: Option<&'a str>,
    request_id: HeaderValue,
    host: Host,
    method: Method,
    path: PathAndQuery,
    start: Instant,
}

#[derive(Clone, Copy)]
struct Rejecting<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    request_id: &'a HeaderValue,
    start: Instant,
}

/// `:authority` for HTTP/2 and absolute-form requests, else the `Host` header (a cheap
/// clone of the received value).
fn request_authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).ok();
    }
    let v = req.headers().get(header::HOST)?;
    let text = v.to_str().ok()?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        None
    } else if trimmed.len() == text.len() {
        Some(v.clone())
    } else {
        HeaderValue::from_str(trimmed).ok()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
