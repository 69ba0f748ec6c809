//! The cluster as operators see it: `GET /v1/cluster` (and Nacos's
//! `/nacos/v1/ns/operator/servers`) as JSON, the member list for Consul's
//! `/v1/status/peers`, and Prometheus lines for `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_util::metrics::Registry as PromRegistry;
use berth_util::metrics::prometheus_client::metrics::counter::Counter;
use berth_util::metrics::prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Cluster, ownership};
use crate::model::{DEFAULT_GROUP, DEFAULT_NAMESPACE, ServiceKey};

/// Ids of the members in the ownership view (this one included once loaded).
pub fn peer_ids(c: &Cluster) -> Vec<String> {
    let mut ids = c.members.view().to_vec();
    if !ids.iter().any(|i| i == c.id()) {
        ids.push(c.id().to_string());
        ids.sort();
    }
    ids
}

#[derive(Debug, Deserialize)]
struct OwnerQuery {
    /// "name" or "group@@name": also report this service's owner.
    service: Option<String>,
    #[serde(rename = "namespaceId")]
    namespace: Option<String>,
}

/// The whole picture as JSON.
pub fn describe(c: &Cluster, service: Option<&ServiceKey>) -> Value {
    let view = c.members.view();
    let (_, services) = c.registry.snapshot();
    let mut owned = std::collections::HashMap::<String, u64>::new();
    // One checksum of everything held (anti-entropy's per-service checksums added up):
    // two members with the same value hold the same services.
    let mut checksum = 0u64;
    let mut instances = 0usize;
    for s in &services {
        checksum = checksum.wrapping_add(c.checksums.checksum(s));
        instances += s.instances.len();
        if let Some(o) = ownership::owner(&s.key, &view) {
            *owned.entry(o.to_string()).or_default() += 1;
        }
    }
    let now = Instant::now();
    let mut members = vec![json!({
        "id": c.id(),
        "address": c.id(),
        "self": true,
        "state": if c.is_loaded() { "healthy" } else { "loading" },
        "loaded": c.is_loaded(),
        "ownedServices": owned.get(c.id()).copied().unwrap_or(0),
    })];
    for e in c.members.others() {
        let s = e.state().clone();
        let (pending, oldest_ms) = e.queue.backlog();
        let handoff =
            s.id.as_deref()
                .map(|id| c.handoff.backlog(id))
                .unwrap_or_default();
        let state = match (s.healthy, s.loaded, s.id.is_some()) {
            (true, true, _) => "healthy",
            (true, false, _) => "loading",
            (false, _, true) => "down",
            (false, _, false) => "unknown",
        };
        members.push(json!({
            "id": s.id,
            "address": e.peer.dial,
            "self": false,
            "state": state,
            "loaded": s.loaded,
            "missedHeartbeats": s.failures,
            "lastHeartbeatMsAgo": s.last_ok.map(|t| now.saturating_duration_since(t).as_millis() as u64),
            "ownedServices": s.id.as_ref().and_then(|id| owned.get(id)).copied().unwrap_or(0),
            "replicationPending": pending,
            "replicationLagMs": oldest_ms.max(s.lag_ms),
            "lastBatchLagMs": s.lag_ms,
            "replicationFailures": s.replicate_failures,
            "syncFailures": s.sync_failures,
            "handoffWaiting": handoff.waiting,
            "handoffOldestMs": handoff.oldest_ms,
        }));
    }
    let st = &c.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut v = json!({
        "self": c.id(),
        "loaded": c.is_loaded(),
        "incarnation": c.incarnation,
        "view": view.as_ref(),
        "members": members,
        "services": services.len(),
        "instances": instances,
        "checksum": format!("{checksum:016x}"),
        "stats": {
            "forwardedOut": load(&st.forwarded_out),
            "forwardFailures": load(&st.forward_failures),
            "forwardedIn": load(&st.forwarded_in),
            "forwardedAgain": load(&st.forwarded_again),
            "forwardsRemembered": c.once.remembered(),
            "handoffWaiting": c.handoff.depth(),
            "handoffQueued": load(&st.handoff_queued),
            "handoffRetries": load(&st.handoff_retries),
            "handoffDelivered": load(&st.handoff_delivered),
            "handoffRerouted": load(&st.handoff_rerouted),
            "handoffAppliedHere": load(&st.handoff_local),
            "handoffRefused": load(&st.handoff_refused),
            "handoffDropped": load(&st.handoff_dropped),
            "deltasSent": load(&st.deltas_sent),
            "deltasApplied": load(&st.deltas_applied),
            "deltaGaps": load(&st.delta_gaps),
            "replicatedSent": load(&st.replicated_sent),
            "replicateFailures": load(&st.replicate_failures),
            "replicatedApplied": load(&st.replicated_applied),
            "replicatedIgnored": load(&st.replicated_ignored),
            "syncRounds": load(&st.sync_rounds),
            "syncRepaired": load(&st.sync_repaired),
            "syncDropped": load(&st.sync_dropped),
            "syncFailures": load(&st.sync_failures),
            "snapshotsServed": load(&st.snapshots_served),
            "membershipChanges": load(&st.membership_changes),
            "replicationLagMsLast": load(&st.lag_ms_last),
            "replicationLagMsMax": load(&st.lag_ms_max),
        },
    });
    if let Some(key) = service {
        v["owner"] = json!(ownership::owner(key, &view));
        v["service"] = json!(key.to_string());
    }
    v
}

async fn cluster_json(State(c): State<Arc<Cluster>>, Query(q): Query<OwnerQuery>) -> Response {
    if q.service.as_deref().is_some_and(|s| s.trim().is_empty()) {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "parameter 'service' is empty; pass a service name (or group@@name) or leave it out\n",
        )
            .into_response();
    }
    let key = q.service.as_deref().map(|s| {
        ServiceKey::parse_grouped(
            q.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
            s,
            DEFAULT_GROUP,
        )
    });
    axum::Json(describe(&c, key.as_ref())).into_response()
}

/// Nacos's server list shape.
async fn nacos_servers(State(c): State<Arc<Cluster>>) -> Response {
    let d = describe(&c, None);
    let servers: Vec<Value> = d["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| {
                    let address = m["id"].as_str().or(m["address"].as_str()).unwrap_or("");
                    let (ip, port) = address.rsplit_once(':').unwrap_or((address, "0"));
                    json!({
                        "ip": ip,
                        "port": port.parse::<u16>().unwrap_or(0),
                        "address": address,
                        "state": if m["state"] == "healthy" { "UP" } else { "DOWN" },
                        "extendInfo": m,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    axum::Json(json!({ "servers": servers })).into_response()
}

pub fn routes(c: Arc<Cluster>) -> Router {
    Router::new()
        .route("/v1/cluster", get(cluster_json))
        .route("/nacos/v1/ns/operator/servers", get(nacos_servers))
        .with_state(c)
}

fn gauge(reg: &mut PromRegistry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    reg.register(name, help, g);
}

fn counter(reg: &mut PromRegistry, name: &str, help: &str, v: &AtomicU64) {
    let c: Counter = Counter::default();
    c.inc_by(v.load(Ordering::Relaxed));
    reg.register(name, help, c);
}

/// Adds the cluster's metrics to a scrape.
pub fn metrics(c: &Cluster, reg: &mut PromRegistry) {
    let view = c.members.view();
    let (_, services) = c.registry.snapshot();
    let owned = services
        .iter()
        .filter(|s| ownership::owner(&s.key, &view) == Some(c.id()))
        .count();
    let (mut pending, mut lag) = (0usize, 0u64);
    for e in c.members.others() {
        let (p, oldest) = e.queue.backlog();
        pending += p;
        lag = lag.max(oldest);
    }
    gauge(
        reg,
        "cluster_loaded",
        "1 once this member loaded its start-up snapshot",
        u64::from(c.is_loaded()),
    );
    gauge(
        reg,
        "cluster_members",
        "Members in the ownership view",
        view.len() as u64,
    );
    gauge(
        reg,
        "cluster_owned_services",
        "Services this member owns",
        owned as u64,
    );
    gauge(
        reg,
        "cluster_replication_pending",
        "Service states waiting to be replicated (all peers)",
        pending as u64,
    );
    gauge(
        reg,
        "cluster_replication_lag_ms",
        "Age of the oldest state waiting to be replicated",
        lag,
    );
    let st = &c.stats;
    gauge(
        reg,
        "cluster_replication_last_batch_lag_ms",
        "Apply-to-ack time of the last replicated batch",
        st.lag_ms_last.load(Ordering::Relaxed),
    );
    counter(
        reg,
        "cluster_replication_lag_ms_sum",
        "Sum of apply-to-ack times of replicated batches",
        &st.lag_ms_sum,
    );
    counter(
        reg,
        "cluster_replication_batches",
        "Replicated batches acknowledged",
        &st.lag_count,
    );
    counter(
        reg,
        "cluster_replicated_sent",
        "Changed services replicated to peers (deltas and whole states)",
        &st.replicated_sent,
    );
    counter(
        reg,
        "cluster_replicate_failures",
        "Replication sends that failed (retried)",
        &st.replicate_failures,
    );
    counter(
        reg,
        "cluster_replicated_applied",
        "Replicated states applied here",
        &st.replicated_applied,
    );
    counter(
        reg,
        "cluster_replicated_ignored",
        "Replicated states ignored (owned here or older)",
        &st.replicated_ignored,
    );
    counter(
        reg,
        "cluster_forwarded_out",
        "Writes forwarded to their owner",
        &st.forwarded_out,
    );
    counter(
        reg,
        "cluster_forward_failures",
        "Forwards the owner did not acknowledge in time (handed off)",
        &st.forward_failures,
    );
    counter(
        reg,
        "cluster_forwarded_again",
        "Copies of forwarded writes received again (answered, not applied twice)",
        &st.forwarded_again,
    );
    gauge(
        reg,
        "cluster_handoff_depth",
        "Writes waiting in the hand-off queues for their owner",
        c.handoff.depth() as u64,
    );
    counter(
        reg,
        "cluster_handoff_queued",
        "Writes that went into a hand-off queue",
        &st.handoff_queued,
    );
    counter(
        reg,
        "cluster_handoff_retries",
        "Hand-off sends the owner did not acknowledge (retried)",
        &st.handoff_retries,
    );
    counter(
        reg,
        "cluster_handoff_delivered",
        "Handed-off writes the owner acknowledged",
        &st.handoff_delivered,
    );
    counter(
        reg,
        "cluster_handoff_rerouted",
        "Handed-off writes moved to a new owner",
        &st.handoff_rerouted,
    );
    counter(
        reg,
        "cluster_handoff_applied_here",
        "Handed-off writes applied here after this member became the owner",
        &st.handoff_local,
    );
    counter(
        reg,
        "cluster_handoff_refused",
        "Writes refused because the hand-off queues were full",
        &st.handoff_refused,
    );
    counter(
        reg,
        "cluster_handoff_dropped",
        "Handed-off writes the owner refused outright (dropped)",
        &st.handoff_dropped,
    );
    counter(
        reg,
        "cluster_deltas_sent",
        "Per-instance deltas replicated to peers",
        &st.deltas_sent,
    );
    counter(
        reg,
        "cluster_deltas_applied",
        "Replicated deltas applied here",
        &st.deltas_applied,
    );
    counter(
        reg,
        "cluster_delta_gaps",
        "Replicated deltas whose base this member lacked (whole service asked for)",
        &st.delta_gaps,
    );
    counter(
        reg,
        "cluster_forwarded_in",
        "Writes other members forwarded here",
        &st.forwarded_in,
    );
    counter(
        reg,
        "cluster_sync_rounds",
        "Anti-entropy rounds sent",
        &st.sync_rounds,
    );
    counter(
        reg,
        "cluster_sync_repaired",
        "Services repaired by anti-entropy",
        &st.sync_repaired,
    );
    counter(
        reg,
        "cluster_sync_dropped",
        "Services dropped because their owner no longer has them",
        &st.sync_dropped,
    );
    counter(
        reg,
        "cluster_sync_failures",
        "Anti-entropy exchanges that failed",
        &st.sync_failures,
    );
    counter(
        reg,
        "cluster_membership_changes",
        "Changes of the ownership view",
        &st.membership_changes,
    );
}
