//! The status listener: `/health` (503 once draining), `/routes` (the table with live
//! endpoint state), `/varz` (gorouter-style counters) and `/metrics` (Prometheus). Basic
//! auth guards everything but `/health` when a password is configured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_util::metrics::Registry;
use serde_json::json;
use tokio::time::Instant;

use crate::metrics::RouterMetrics;
use crate::store::RouteStore;

#[derive(Clone)]
pub struct StatusState {
    pub store: Arc<RouteStore>,
    pub metrics: Arc<RouterMetrics>,
    pub registry: Arc<Registry>,
    pub draining: Arc<AtomicBool>,
    pub started: Instant,
    pub auth: Option<(String, String)>,
    pub upstreams: Arc<crate::sources::upstreams::Upstreams>,
}

pub fn router(state: StatusState) -> axum::Router {
    let guarded = axum::Router::new()
        .route("/routes", get(routes))
        .route("/varz", get(varz))
        .route("/metrics", get(metrics))
        .merge(crate::sources::upstreams::routes(state.upstreams.clone()))
        .route_layer(middleware::from_fn_with_state(state.clone(), basic_auth));
    axum::Router::new()
        .route("/health", get(health))
        .merge(guarded)
        .with_state(state)
}

async fn basic_auth(State(s): State<StatusState>, req: Request, next: Next) -> Response {
    let Some((user, pass)) = &s.auth else {
        return next.run(req).await;
    };
    if authorized(req.headers(), user, pass) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"berth-router\"")],
        "401 Unauthorized: send the status user and password (basic auth)\n",
    )
        .into_response()
}

fn authorized(headers: &HeaderMap, user: &str, pass: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    base64_decode(encoded.trim()).is_some_and(|d| d == format!("{user}:{pass}").as_bytes())
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c)? as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

async fn health(State(s): State<StatusState>) -> Response {
    if s.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn routes(State(s): State<StatusState>) -> Response {
    let table = s.store.load_full();
    axum::Json(json!({
        "generation": table.generation(),
        "routes": table.view(),
    }))
    .into_response()
}

async fn varz(State(s): State<StatusState>) -> Response {
    let table = s.store.load_full();
    let m = &s.metrics;
    let responses: serde_json::Map<String, serde_json::Value> = m
        .responses_by_class()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    axum::Json(json!({
        "type": "Router",
        "uptime_seconds": s.started.elapsed().as_secs(),
        "draining": s.draining.load(Ordering::SeqCst),
        "requests": m.requests.get(),
        "responses": responses,
        "bad_gateways": m.bad_gateways.get(),
        "retries": m.retries.get(),
        "latency_ms": {
            "p50": m.latency_percentile_ms(0.50),
            "p90": m.latency_percentile_ms(0.90),
            "p99": m.latency_percentile_ms(0.99),
        },
        "routes": table.route_count(),
        "endpoints": table.endpoint_count(),
        "generation": table.generation(),
        "mem_bytes": resident_bytes(),
        "nats": {
            "connected": m.nats_connected.get() == 1,
            "malformed_messages": m.nats_malformed.get(),
            "pruned_routes": m.nats_pruned.get(),
        },
        "registry": {
            "connected": m.registry_connected.get() == 1,
            "events": m.registry_events.get(),
        },
    }))
    .into_response()
}

async fn metrics(State(s): State<StatusState>) -> Response {
    let table = s.store.load();
    s.metrics.routes.set(table.route_count() as i64);
    s.metrics.endpoints.set(table.endpoint_count() as i64);
    (
        [(header::CONTENT_TYPE, berth_util::metrics::CONTENT_TYPE)],
        berth_util::metrics::encode(&s.registry),
    )
        .into_response()
}

/// Resident set size from /proc (Linux); 0 elsewhere.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_checks_user_and_password() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "ops", "s3cret"));
        // "ops:s3cret"
        h.insert(
            header::AUTHORIZATION,
            "Basic b3BzOnMzY3JldA==".parse().unwrap(),
        );
        assert!(authorized(&h, "ops", "s3cret"));
        assert!(!authorized(&h, "ops", "other"));
    }
}
