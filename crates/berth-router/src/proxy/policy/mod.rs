//! The proxy policy: every decision about one request, taken once for both codecs (the
//! general hyper engine and the HTTP/1.1 fast path). A codec parses the request, asks the
//! policy phase by phase, and writes what the policy decided in its own wire form.
//!
//! The phases, in request order (Pingora's names in brackets):
//!
//! 1. **Target** (`request_filter`, routing): the request's authority and path select a
//!    route in the live table, [`Policy::target`].
//! 2. **Admission** (`request_filter` rejections): no usable host, no route, or a route
//!    without endpoints is answered by the router itself with a [`Reject`]; so is a route
//!    whose every endpoint is at its connection limit (found in phase 3).
//! 3. **Peer** (`upstream_peer`): an endpoint not tried yet, the sticky one first, failing
//!    ones last, below its connection limit; and which protocol reaches it
//!    ([`backend_http2`]). See [`Policy::forward`].
//! 4. **Attempt and retry** (`fail_to_connect`): at most `max_attempts` endpoints; another
//!    one only when nothing reached the previous ([`BackendError::retryable`]) and the
//!    request can be sent again ([`Upstream::resendable`]).
//! 5. **Failure marking** (passive health): a failed endpoint is skipped for
//!    `failure_cooldown`; a success clears the mark.
//! 6. **Timeouts**: connect (the pools), response head (each attempt, phase 4), body idle
//!    ([`Policy::body_idle_timeout`]).
//! 7. **Response** (`response_filter`): whether the answer (re)pins a sticky session
//!    ([`restick`], [`starts_session`]).
//! 8. **Record** (`logging`): the request and response counters and the access line
//!    ([`Policy::begin`], [`Policy::answered`], [`Policy::rejected`], [`Policy::log`];
//!    what a line says is [`record`]'s).

mod attempt;
mod error;
pub mod record;
mod reject;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use attempt::{Forwarded, Upstream};
pub use error::BackendError;
pub use reject::Reject;

use super::ProxyConfig;
use super::access::{AccessRecord, AccessSink};
use crate::balance::Pool;
use crate::endpoint::Endpoint;
use crate::metrics::RouterMetrics;
use crate::route::Host;
use crate::store::RouteStore;
use record::RequestLog;

/// Cookie gorouter uses to pin a session to one instance; kept for compatibility.
pub const STICKY_COOKIE: &str = "__VCAP_ID";
/// What follows `__VCAP_ID=<instance>` in the cookie the router sets.
pub const STICKY_COOKIE_ATTRIBUTES: &str = "; Path=/; HttpOnly";
/// An incoming `X-Request-Id` longer than this is replaced by a fresh one.
pub const MAX_REQUEST_ID: usize = 200;

/// The decisions, with what they depend on: the live table, the settings, the counters
/// and the access log.
pub struct Policy {
    store: Arc<RouteStore>,
    cfg: ProxyConfig,
    metrics: Arc<RouterMetrics>,
    access: AccessSink,
}

/// Where a request goes (phase 1).
pub struct Target {
    pub host: Host,
    pub pool: Arc<Pool>,
}

impl Target {
    /// Some endpoint wants HTTP/2, which only the general engine's client speaks.
    pub fn wants_http2(&self) -> bool {
        self.pool.endpoints.iter().any(|e| e.spec.http2)
    }
}

/// A request the router answers itself (phase 2), and the host it named, if any.
pub struct Refused {
    pub reject: Reject,
    pub host: Option<Host>,
}

impl Refused {
    /// The host as the error message and the access line show it (empty when none).
    pub fn host_text(&self) -> &str {
        self.host.as_ref().map_or("", Host::as_str)
    }
}

impl Policy {
    pub fn new(store: Arc<RouteStore>, cfg: ProxyConfig, metrics: Arc<RouterMetrics>) -> Self {
        let access = if cfg.access_log {
            AccessSink::Log
        } else {
            AccessSink::Off
        };
        Policy {
            store,
            cfg,
            metrics,
            access,
        }
    }

    pub fn set_access_sink(&mut self, sink: AccessSink) {
        self.access = sink;
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    /// Phases 1 and 2: the route for a request's authority (`Host` or `:authority`, as
    /// received) and path, or the rejection when there is no usable one.
    pub fn target(&self, authority: Option<&str>, path: &str) -> Result<Target, Refused> {
        let Some(host) = authority.and_then(Host::from_request_authority) else {
            return Err(Refused {
                reject: Reject::EmptyHost,
                host: None,
            });
        };
        let pool = self.store.load().lookup(&host, path).cloned();
        match pool {
            None => Err(Refused {
                reject: Reject::UnknownRoute,
                host: Some(host),
            }),
            Some(p) if p.endpoints.is_empty() => Err(Refused {
                reject: Reject::NoEndpoints,
                host: Some(host),
            }),
            Some(pool) => Ok(Target { host, pool }),
        }
    }

    /// Phase 6: how long a response body may stall before the router gives up on it.
    pub fn body_idle_timeout(&self) -> Duration {
        self.cfg.idle_timeout
    }

    /// Phase 8: a request starts (counted); its durations are measured from the instant
    /// returned.
    pub fn begin(&self) -> Instant {
        self.metrics.requests.inc();
        Instant::now()
    }

    /// Phase 8: a backend's response head went to the client.
    pub fn answered(&self, status: u16, start: Instant) {
        self.metrics.response(status, start.elapsed());
    }

    /// Phases 2 and 8: the router answers `reject` itself; counts it and logs its line.
    /// The codec then sends [`Reject::status`] with [`Reject::message`].
    pub fn rejected(&self, reject: Reject, req: &RequestLog<'_>) {
        self.metrics.router_error(reject.reason());
        self.access.record(&req.rejected(reject));
        self.metrics
            .response(reject.status().as_u16(), req.start.elapsed());
    }

    /// Phases 2 and 8: a request head the codec could not parse is answered `status` (431
    /// when too large, else 400) and the connection closed; counts it and returns the
    /// `X-Berth-Router-Error` reason.
    pub fn malformed(&self, status: u16) -> &'static str {
        let reason = if status == 431 {
            "request_head_too_large"
        } else {
            "malformed_request"
        };
        self.metrics.requests.inc();
        self.metrics.response(status, Duration::ZERO);
        self.metrics.router_error(reason);
        reason
    }

    /// Phase 8: the access line of a backend's answer, once its body ended.
    pub fn log(&self, line: &AccessRecord<'_>) {
        self.access.record(line);
    }

    /// Phase 8: whether access lines are written at all (codecs skip building them).
    pub fn access_enabled(&self) -> bool {
        self.access.enabled()
    }

    pub fn access_sink(&self) -> &AccessSink {
        &self.access
    }
}

/// Phase 3: the protocol an endpoint is reached with. Upgrades need HTTP/1.1 whatever the
/// endpoint prefers.
pub fn backend_http2(ep: &Endpoint, upgrade: bool) -> bool {
    ep.spec.http2 && !upgrade
}

/// Phase 7: the client's sticky cookie named another instance than the one that answered,
/// so the answer pins the session anew.
pub fn restick(client_sticky: Option<&str>, ep: &Endpoint) -> bool {
    client_sticky.is_some_and(|s| s != ep.sticky_id)
}

/// Phase 7: a backend's `Set-Cookie` value starts a sticky session (it sets one of the
/// configured `sticky_cookies`), so the answer pins the session to its instance.
pub fn starts_session(set_cookie: &str, sticky_cookies: &[String]) -> bool {
    set_cookie
        .split_once('=')
        .is_some_and(|(k, _)| sticky_cookies.iter().any(|n| n == k.trim()))
}

/// An incoming `X-Request-Id` the router keeps (non-empty, at most [`MAX_REQUEST_ID`]).
pub fn keeps_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID
}
