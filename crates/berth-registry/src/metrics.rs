//! `/metrics`: Prometheus text built at scrape time from the core's and push's counters,
//! so the hot paths only bump atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use berth_util::metrics::prometheus_client::metrics::counter::Counter;
use berth_util::metrics::prometheus_client::metrics::gauge::Gauge;
use berth_util::metrics::{CONTENT_TYPE, Registry as PromRegistry, encode};

use crate::http::AppState;

fn counter(reg: &mut PromRegistry, name: &str, help: &str, v: &AtomicU64) {
    let c: Counter = Counter::default();
    c.inc_by(v.load(Ordering::Relaxed));
    reg.register(name, help, c);
}

fn gauge(reg: &mut PromRegistry, name: &str, help: &str, v: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    reg.register(name, help, g);
}

/// Renders every registry metric.
pub fn render(
    s: &AppState,
    watchers: &Arc<AtomicU64>,
    nacos: &crate::nacos_grpc::NacosGrpc,
) -> String {
    let mut reg = PromRegistry::with_prefix("berth_registry");
    let (services, instances, healthy) = s.registry.counts();
    gauge(&mut reg, "services", "Services known", services as u64);
    gauge(
        &mut reg,
        "instances",
        "Instances registered",
        instances as u64,
    );
    gauge(
        &mut reg,
        "healthy_instances",
        "Instances currently healthy",
        healthy as u64,
    );
    gauge(
        &mut reg,
        "revision",
        "Global naming revision",
        s.registry.revision(),
    );
    gauge(
        &mut reg,
        "push_subscribers",
        "UDP push subscriptions (service, client)",
        s.push.len() as u64,
    );
    gauge(
        &mut reg,
        "watch_streams",
        "Open native watch streams",
        watchers.load(Ordering::Relaxed),
    );
    let core = s.registry.stats();
    counter(
        &mut reg,
        "beats",
        "Beats and TTL check updates received",
        &core.beats,
    );
    counter(&mut reg, "ops", "Naming operations applied", &core.ops);
    counter(
        &mut reg,
        "expired",
        "Instances removed for lack of beats",
        &core.expired,
    );
    counter(
        &mut reg,
        "persist_failures",
        "Failed writes of the stored state",
        &core.persist_failures,
    );
    let push = &s.push.stats;
    counter(
        &mut reg,
        "pushes",
        "UDP push packets sent (retries included)",
        &push.sent,
    );
    counter(
        &mut reg,
        "pushes_acked",
        "UDP pushes acknowledged",
        &push.acked,
    );
    counter(
        &mut reg,
        "pushes_failed",
        "Changes never acknowledged after every attempt",
        &push.failed,
    );
    counter(
        &mut reg,
        "push_subscribers_dropped",
        "Subscribers dropped (silent or not acking)",
        &push.dropped,
    );
    counter(
        &mut reg,
        "push_latency_microseconds_sum",
        "Sum of send-to-ack latency",
        &push.latency_us_sum,
    );
    counter(
        &mut reg,
        "push_latency_count",
        "Acknowledged pushes measured",
        &push.latency_count,
    );
    configs(&mut reg, s.configs.stats());
    if let Some(c) = &s.cluster {
        crate::cluster::view::metrics(c, &mut reg);
    }
    nacos_metrics(nacos, &mut reg);
    encode(&reg)
}

/// The Nacos 2.x connections: how many, what they follow, what was pushed to them.
fn nacos_metrics(nacos: &crate::nacos_grpc::NacosGrpc, reg: &mut PromRegistry) {
    let stats = nacos.stats();
    gauge(
        reg,
        "nacos_connections",
        "Nacos 2.x gRPC connections held",
        nacos.connection_count() as u64,
    );
    gauge(
        reg,
        "nacos_subscriptions",
        "Service subscriptions of gRPC connections",
        nacos.subscription_count() as u64,
    );
    gauge(
        reg,
        "config_grpc_listeners",
        "Configs listened to by gRPC connections",
        nacos.config_listener_count() as u64,
    );
    counter(
        reg,
        "nacos_requests",
        "Nacos gRPC requests answered",
        &stats.requests,
    );
    counter(
        reg,
        "nacos_pushes",
        "Service pushes acknowledged",
        &stats.pushes,
    );
    counter(
        reg,
        "nacos_pushes_failed",
        "Service pushes never acknowledged",
        &stats.pushes_failed,
    );
    counter(
        reg,
        "nacos_push_latency_microseconds_sum",
        "Sum of service push render-to-ack latency",
        &stats.push_latency_us_sum,
    );
    counter(
        reg,
        "nacos_connections_closed",
        "Nacos gRPC connections closed",
        &stats.connections_closed,
    );
    counter(
        reg,
        "config_grpc_publishes",
        "Configs published over gRPC",
        &stats.config_publishes,
    );
    counter(
        reg,
        "config_pushes",
        "Config change notifications acknowledged",
        &stats.config_pushes,
    );
    counter(
        reg,
        "config_pushes_failed",
        "Config change notifications not acknowledged",
        &stats.config_pushes_failed,
    );
    counter(
        reg,
        "config_push_latency_microseconds_sum",
        "Sum of config change notification send-to-ack latency",
        &stats.config_push_latency_us_sum,
    );
}

/// The config center's: the count is the last one [`ConfigCenter::refresh_count`] took
/// (left out while the config center is unavailable).
///
/// [`ConfigCenter::refresh_count`]: crate::config_center::ConfigCenter::refresh_count
fn configs(reg: &mut PromRegistry, stats: &crate::config_center::stats::ConfigStats) {
    if let Some(n) = stats.configs() {
        gauge(reg, "configs", "Configs stored", n);
    }
    gauge(
        reg,
        "config_listeners",
        "HTTP long-polls waiting for a config change",
        stats.listeners.load(Ordering::Relaxed),
    );
    counter(
        reg,
        "config_publishes",
        "Config publishes committed here (rollbacks included)",
        &stats.publishes,
    );
    counter(
        reg,
        "config_listener_wakeups",
        "Long-poll answers naming changed configs",
        &stats.listener_wakeups,
    );
}

#[derive(Clone)]
struct MetricsState {
    app: AppState,
    watchers: Arc<AtomicU64>,
    nacos: crate::nacos_grpc::NacosGrpc,
}

pub fn route(
    app: AppState,
    watchers: Arc<AtomicU64>,
    nacos: crate::nacos_grpc::NacosGrpc,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(|State(m): State<MetricsState>| async move {
                // Recounted only when the store changed; a failure keeps the last count.
                if let Err(err) = m.app.configs.refresh_count().await
                    && m.app.configs.available()
                {
                    tracing::debug!(%err, "cannot count the configs for /metrics");
                }
                (
                    [(header::CONTENT_TYPE, CONTENT_TYPE)],
                    render(&m.app, &m.watchers, &m.nacos),
                )
                    .into_response()
            }),
        )
        .with_state(MetricsState {
            app,
            watchers,
            nacos,
        })
}
