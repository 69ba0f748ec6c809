//! The proxy engine: one request in, route lookup, endpoint choice with retries, one
//! streamed response out.

pub mod body;
pub mod headers;
pub mod reject;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
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
use body::{RequestBody, ResponseBody, RetryableBody};
use headers::X_REQUEST_ID;
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
        }
    }
}

/// Per-connection facts the engine needs.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub scheme: &'static str,
}

pub struct Proxy {
    store: Arc<RouteStore>,
    client: Client<HttpConnector, RequestBody>,
    cfg: ProxyConfig,
    metrics: Arc<RouterMetrics>,
}

impl Proxy {
    pub fn new(store: Arc<RouteStore>, cfg: ProxyConfig, metrics: Arc<RouterMetrics>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(1024)
            .set_host(false)
            .build(http);
        Proxy {
            store,
            client,
            cfg,
            metrics,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<ResponseBody> {
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
        conn: ConnInfo,
        start: Instant,
    ) -> Response<ResponseBody> {
        let authority = request_authority(&req);
        let request_id = headers::ensure_request_id(req.headers_mut());
        let Some(host) = authority.as_deref().and_then(Host::from_request_authority) else {
            return self.reject(Reject::EmptyHost, "", &request_id);
        };
        let authority = authority.unwrap_or_default();
        let pool: Arc<Pool> = match self.store.load().lookup(&host, req.uri().path()) {
            Some(p) => p.clone(),
            None => return self.reject(Reject::UnknownRoute, host.as_str(), &request_id),
        };
        if pool.endpoints.is_empty() {
            return self.reject(Reject::NoEndpoints, host.as_str(), &request_id);
        }

        let is_upgrade =
            req.version() == Version::HTTP_11 && headers::is_upgrade_request(req.headers());
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
        let sticky = headers::cookie(req.headers(), STICKY_COOKIE).map(str::to_string);
        let (mut parts, body) = req.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, is_upgrade);
        headers::add_forwarded(
            &mut parts.headers,
            conn.remote.ip(),
            conn.scheme,
            &authority,
        );
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, v);
        }
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".to_string());
        let body = RetryableBody::new(body);

        let max_attempts = (self.cfg.max_attempts.max(1) as usize).min(pool.endpoints.len());
        let mut tried: Vec<SocketAddr> = Vec::with_capacity(max_attempts);
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
            let uri: Uri = match format!("http://{}{}", ep.addr(), path_and_query).parse() {
                Ok(u) => u,
                Err(_) => return self.reject(Reject::EndpointFailure, host.as_str(), &request_id),
            };
            let mut breq = Request::new(body.attempt());
            *breq.method_mut() = parts.method.clone();
            *breq.uri_mut() = uri;
            *breq.version_mut() = Version::HTTP_11;
            *breq.headers_mut() = parts.headers.clone();

            let sent =
                tokio::time::timeout(self.cfg.response_header_timeout, self.client.request(breq))
                    .await;
            match sent {
                Ok(Ok(resp)) => {
                    ep.stats.mark_ok();
                    return self.respond(
                        resp,
                        &ep,
                        slot,
                        client_upgrade,
                        Responding {
                            sticky: sticky.as_deref(),
                            request_id: &request_id,
                            host: host.as_str(),
                            method: parts.method.as_str(),
                            path: &path_and_query,
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
        self.reject(reject, host.as_str(), &request_id)
    }

    fn respond(
        &self,
        resp: Response<Incoming>,
        ep: &Arc<Endpoint>,
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
            upgrade::tunnel(client, backend, slot, self.cfg.idle_timeout);
            ResponseBody::empty()
        } else {
            ResponseBody::backend(body, Some(self.cfg.idle_timeout), slot)
        };
        if self.cfg.access_log {
            let line = AccessLine {
                method: r.method.to_string(),
                host: r.host.to_string(),
                path: r.path.to_string(),
                status,
                backend: ep.addr(),
                request_id: r.request_id.to_str().unwrap_or("-").to_string(),
                start: r.start,
            };
            body = body.on_end(Box::new(move |bytes, complete| line.log(bytes, complete)));
        }
        Response::from_parts(parts, body)
    }

    fn reject(
        &self,
        reject: Reject,
        host: &str,
        request_id: &HeaderValue,
    ) -> Response<ResponseBody> {
        self.metrics.router_error(reject.reason());
        if self.cfg.access_log {
            tracing::info!(
                target: "berth_router::access",
                host, status = reject.status().as_u16(), router_error = reject.reason(),
                request_id = request_id.to_str().unwrap_or("-"), "request rejected"
            );
        }
        reject.response(host, Some(request_id))
    }
}

struct Responding<'a> {
    sticky: Option<&'a str>,
    request_id: &'a HeaderValue,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    start: Instant,
}

struct AccessLine {
    method: String,
    host: String,
    path: String,
    status: u16,
    backend: SocketAddr,
    request_id: String,
    start: Instant,
}

impl AccessLine {
    fn log(&self, bytes: u64, complete: bool) {
        tracing::info!(
            target: "berth_router::access",
            method = %self.method, host = %self.host, path = %self.path, status = self.status,
            bytes, duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            backend = %self.backend, request_id = %self.request_id, complete, "request"
        );
    }
}

/// `:authority` for HTTP/2 and absolute-form requests, else the `Host` header.
fn request_authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
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
