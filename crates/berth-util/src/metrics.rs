//! Prometheus metrics: every role keeps one [`Registry`] and serves it on `/metrics`.

use std::sync::Arc;

pub use prometheus_client;
pub use prometheus_client::registry::Registry;

/// The OpenMetrics text format, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// An axum router answering `GET /metrics`; merge it into a role's HTTP router.
pub fn route<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> axum::Router<S> {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    encode(&registry),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn counters_are_encoded() {
        let mut registry = Registry::with_prefix("berth_test");
        let counter: Counter = Counter::default();
        registry.register("requests", "Requests served", counter.clone());
        counter.inc_by(3);
        let text = encode(&registry);
        assert!(text.contains("berth_test_requests_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
