//! Read-only views of real state, the event stream and service endpoints.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::ApiError;
use super::auth::Caller;
use crate::context::Ctx;
use crate::events::Event;
use crate::leader::Leadership;
use berth_core::acl::Capability::Read;
use berth_core::acl::Target;

type Params = Query<HashMap<String, String>>;

pub async fn instances(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> Json<Value> {
    let state = ctx.lock_state();
    let app = q.get("app");
    let node = q.get("node");
    let list: Vec<_> = state
        .instances()
        .filter(|i| caller.may_read_app(&i.app))
        .filter(|i| app.is_none_or(|a| &i.app == a))
        .filter(|i| node.is_none_or(|n| i.node.as_str() == n))
        .collect();
    let pending: Vec<_> = state
        .pending
        .values()
        .filter(|p| caller.may_read_app(&p.app))
        .filter(|p| app.is_none_or(|a| &p.app == a))
        .filter(|p| node.is_none_or(|n| p.node.as_str() == n))
        .collect();
    Json(json!({ "instances": list, "pending": pending }))
}

pub async fn nodes(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let state = ctx.lock_state();
    let nodes: Vec<Value> = state
        .nodes
        .values()
        .filter(|n| caller.allows(Read, Target::Node(n.id.as_str())))
        .map(|n| {
            let allocated = n
                .instances
                .values()
                .filter(|i| i.state.holds_resources())
                .fold(berth_core::Resources::default(), |acc, i| acc + i.resources);
            json!({
                "id": n.id,
                "hostname": n.hostname,
                "address": n.address,
                "status_url": n.status_url,
                "status": n.status,
                "labels": n.labels,
                "drivers": n.drivers,
                "agent_version": n.agent_version,
                "total": n.total,
                "allocated": allocated,
                "used_reported": n.used_reported,
                "load1": n.load1,
                "instances": n.instances.len(),
                "joined_at_ms": n.joined_at_ms,
                "last_seen_ms_ago": n.last_seen.elapsed().as_millis() as u64,
            })
        })
        .collect();
    Json(json!({ "nodes": nodes }))
}

pub async fn info(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let c = &ctx.config;
    // The reconciler of a new leader first waits for agents to report.
    let reconciling = match ctx.leadership() {
        Leadership::Leader { since, .. } => since.elapsed() >= c.startup_grace,
        _ => false,
    };
    Json(json!({
        "role": "server",
        "server_id": ctx.server_id,
        "version": env!("CARGO_PKG_VERSION"),
        "started_at_ms": ctx.started_ms,
        "registry": c.registry,
        "data_dir": c.data_dir,
        "reconciler": if reconciling { "active" } else { "waiting_for_agents" },
        "heartbeat_interval_ms": c.heartbeat_interval.as_millis() as u64,
        "node_ttl_ms": c.node_ttl.as_millis() as u64,
    }))
}

/// `GET /v1/leader`: whether this server leads, and otherwise who does. Answered by every
/// server (never redirected), for operators and load balancers.
pub async fn leader(State(ctx): State<Arc<Ctx>>) -> Json<Value> {
    let view = match ctx.leadership() {
        Leadership::Leader { since, .. } => json!({
            "role": "leader",
            "server_id": ctx.server_id,
            "leader": { "server_id": ctx.server_id },
            "leading_for_ms": since.elapsed().as_millis() as u64,
        }),
        Leadership::Standby { leader } => json!({
            "role": "standby",
            "server_id": ctx.server_id,
            "leader": leader,
        }),
        Leadership::Unknown { reason } => json!({
            "role": "unknown",
            "server_id": ctx.server_id,
            "leader": null,
            "reason": reason,
        }),
    };
    Json(view)
}

/// `GET /v1/events?types=a,b&app=X&replay=N[&named=false]`: Server-Sent Events, one JSON
/// event each, its `event:` field the type; with `named=false` the field is left out, so
/// a browser's `EventSource.onmessage` sees every type (the web UI reads the stream with
/// `fetch`, so it can send its token, and parses it the same way).
pub async fn events(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let types: Option<Vec<String>> = q.get("types").map(|t| {
        t.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    let app = q.get("app").cloned();
    let keep = move |e: &Event| {
        types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == e.kind.as_str()))
            && app.as_ref().is_none_or(|a| e.app.as_ref() == Some(a))
            && visible(&caller, e)
    };
    let replay_n = q
        .get("replay")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    // Subscribe before reading the ring so nothing falls between the two.
    let rx = ctx.events.subscribe();
    let replay = ctx.events.recent(replay_n, &keep);
    let last_replayed = replay.last().map(|e| e.id).unwrap_or(0);
    let named = q.get("named").is_none_or(|n| n != "false");
    let to_sse = move |e: &Event| {
        let event = SseEvent::default()
            .id(e.id.to_string())
            .data(serde_json::to_string(e).unwrap_or_default());
        if named {
            event.event(e.kind.as_str())
        } else {
            event
        }
    };
    let head = tokio_stream::iter(replay.iter().map(to_sse).map(Ok).collect::<Vec<_>>());
    let live = BroadcastStream::new(rx).filter_map(move |r| match r {
        Ok(e) if e.id > last_replayed && keep(&e) => Some(Ok(to_sse(&e))),
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(SseEvent::default()
            .event("lagged")
            .data(format!("{{\"missed\": {n}}}")))),
    });
    let cancel = ctx.cancel.clone();
    let stream = futures::StreamExt::take_until(head.chain(live), cancel.cancelled_owned());
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

pub async fn recent_events(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> Json<Value> {
    let limit = q.get("limit").and_then(|n| n.parse().ok()).unwrap_or(100);
    let app = q.get("app").cloned();
    let events = ctx.events.recent(limit, |e| {
        app.as_ref().is_none_or(|a| e.app.as_ref() == Some(a)) && visible(&caller, e)
    });
    Json(json!({ "events": events }))
}

/// Whether the caller may see an event: an app's events need read on the app, a node's
/// on the node; the rest (leadership) any caller that may read something.
fn visible(caller: &Caller, e: &Event) -> bool {
    match (&e.app, &e.node) {
        (Some(app), _) => caller.may_read_app(app),
        (None, Some(node)) => caller.allows(Read, Target::Node(node)),
        (None, None) => true,
    }
}

/// The in-memory real state, as the reconciler sees it.
pub async fn debug_state(State(ctx): State<Arc<Ctx>>) -> Response {
    let state = ctx.lock_state();
    match serde_json::to_value(&*state) {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &ctx.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {}; see docs/API.md (endpoints live under /v1)",
        uri.path()
    ))
}
