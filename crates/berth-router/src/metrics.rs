//! Router counters: Prometheus families for `/metrics` plus a small latency histogram the
//! router reads itself for the percentiles of `/varz`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Upper bounds (µs) of the latency buckets used for `/varz` percentiles.
const LATENCY_BOUNDS_US: [u64; 20] = [
    100,
    250,
    500,
    1_000,
    2_000,
    4_000,
    8_000,
    16_000,
    32_000,
    64_000,
    128_000,
    256_000,
    512_000,
    1_000_000,
    2_000_000,
    4_000_000,
    8_000_000,
    16_000_000,
    32_000_000,
    u64::MAX,
];

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Debug)]
pub struct RouterMetrics {
    pub requests: Counter,
    pub responses: Family<Labels, Counter>,
    pub router_errors: Family<Labels, Counter>,
    pub bad_gateways: Counter,
    pub retries: Counter,
    pub duration: Histogram,
    pub routes: Gauge,
    pub endpoints: Gauge,
    pub nats_messages: Family<Labels, Counter>,
    pub nats_malformed: Counter,
    pub nats_connected: Gauge,
    pub nats_pruned: Counter,
    pub registry_events: Counter,
    pub registry_connected: Gauge,
    latency: [AtomicU64; LATENCY_BOUNDS_US.len()],
    /// The `responses` counters of 1xx..5xx, looked up once so a response costs one
    /// atomic add instead of a label allocation and a family lookup.
    by_class: [Counter; 5],
}

impl Default for RouterMetrics {
    fn default() -> Self {
        let responses: Family<Labels, Counter> = Family::default();
        let by_class = CLASSES.map(|c| {
            responses
                .get_or_create(&vec![("class".to_string(), c.to_string())])
                .clone()
        });
        RouterMetrics {
            requests: Counter::default(),
            responses,
            router_errors: Family::default(),
            bad_gateways: Counter::default(),
            retries: Counter::default(),
            duration: Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            routes: Gauge::default(),
            endpoints: Gauge::default(),
            nats_messages: Family::default(),
            nats_malformed: Counter::default(),
            nats_connected: Gauge::default(),
            nats_pruned: Counter::default(),
            registry_events: Counter::default(),
            registry_connected: Gauge::default(),
            latency: Default::default(),
            by_class,
        }
    }
}

impl RouterMetrics {
    pub fn register(&self, reg: &mut Registry) {
        let r = reg.sub_registry_with_prefix("berth_router");
        r.register("requests", "Requests received", self.requests.clone());
        r.register(
            "responses",
            "Responses sent, by status class",
            self.responses.clone(),
        );
        r.register(
            "errors",
            "Responses the router generated itself, by reason",
            self.router_errors.clone(),
        );
        r.register(
            "bad_gateways",
            "Requests that failed with 502 endpoint_failure",
            self.bad_gateways.clone(),
        );
        r.register(
            "retries",
            "Attempts retried on another endpoint",
            self.retries.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to response headers",
            self.duration.clone(),
        );
        r.register("routes", "Routes in the table", self.routes.clone());
        r.register(
            "endpoints",
            "Endpoints in the table",
            self.endpoints.clone(),
        );
        r.register(
            "nats_messages",
            "NATS messages received, by subject",
            self.nats_messages.clone(),
        );
        r.register(
            "nats_malformed_messages",
            "NATS messages rejected as malformed",
            self.nats_malformed.clone(),
        );
        r.register(
            "nats_connected",
            "1 while connected to NATS",
            self.nats_connected.clone(),
        );
        r.register(
            "nats_pruned_routes",
            "Endpoints pruned after their TTL",
            self.nats_pruned.clone(),
        );
        r.register(
            "registry_events",
            "Registry watch events applied",
            self.registry_events.clone(),
        );
        r.register(
            "registry_connected",
            "1 while the registry watch is open",
            self.registry_connected.clone(),
        );
    }

    pub fn response(&self, status: u16, elapsed: Duration) {
        match (status / 100)
            .checked_sub(1)
            .and_then(|i| self.by_class.get(usize::from(i)))
        {
            Some(c) => {
                c.inc();
            }
            None => {
                self.responses
                    .get_or_create(&vec![("class".to_string(), format!("{}xx", status / 100))])
                    .inc();
            }
        }
        self.duration.observe(elapsed.as_secs_f64());
        let us = elapsed.as_micros() as u64;
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len() - 1);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn router_error(&self, reason: &str) {
        self.router_errors
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
        if reason == "endpoint_failure" {
            self.bad_gateways.inc();
        }
    }

    pub fn responses_by_class(&self) -> Vec<(String, u64)> {
        CLASSES
            .iter()
            .zip(&self.by_class)
            .map(|(c, n)| (c.to_string(), n.get()))
            .collect()
    }

    /// Approximate latency percentile (upper bound of its bucket), in milliseconds.
    pub fn latency_percentile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                let b = LATENCY_BOUNDS_US[i];
                let b = if b == u64::MAX {
                    LATENCY_BOUNDS_US[i - 1] * 2
                } else {
                    b
                };
                return b as f64 / 1000.0;
            }
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_buckets() {
        let m = RouterMetrics::default();
        for _ in 0..99 {
            m.response(200, Duration::from_micros(800));
        }
        m.response(502, Duration::from_millis(30));
        assert_eq!(m.latency_percentile_ms(0.5), 1.0);
        assert_eq!(m.latency_percentile_ms(0.99), 1.0);
        assert_eq!(m.latency_percentile_ms(1.0), 32.0);
        let classes = m.responses_by_class();
        assert_eq!(classes[1], ("2xx".to_string(), 99));
        assert_eq!(classes[4], ("5xx".to_string(), 1));
    }
}
