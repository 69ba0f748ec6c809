//! Load balancing within one route: a route's endpoints (a [`Pool`]), smooth weighted
//! round-robin or least-connections over them, sticky sessions, and passive health
//! (endpoints marked failing are tried last).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::endpoint::Endpoint;
use crate::route::{LbAlgorithm, RouteKey};

/// Largest weighted round-robin schedule; weights are scaled down beyond it so a route
/// with extreme weights still costs bounded memory.
const MAX_SCHEDULE: u64 = 4096;

/// One route's endpoints and its balancing state.
#[derive(Debug)]
pub struct Pool {
    pub key: RouteKey,
    pub lb: LbAlgorithm,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Smooth weighted round-robin order of endpoint indices.
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(key: RouteKey, lb: LbAlgorithm, endpoints: Vec<Arc<Endpoint>>) -> Self {
        let weights: Vec<u64> = endpoints
            .iter()
            .map(|e| u64::from(e.spec.weight.max(1)))
            .collect();
        let schedule = smooth_wrr_schedule(&weights);
        // Start each generation at a random point so a table swap does not send the next
        // request of every route to its first endpoint.
        let start = if schedule.is_empty() {
            0
        } else {
            rand::random_range(0..schedule.len())
        };
        Pool {
            key,
            lb,
            endpoints,
            schedule,
            next: AtomicUsize::new(start),
        }
    }

    /// Picks an endpoint not in `exclude`. A `sticky` id selects its endpoint when that one
    /// is usable. Endpoints marked failing by passive health are skipped unless every
    /// remaining endpoint is failing (a likely-failing try beats a certain 503).
    pub fn pick(&self, exclude: &[SocketAddr], sticky: Option<&str>) -> Option<Arc<Endpoint>> {
        if let Some(id) = sticky
            && let Some(e) = self.endpoints.iter().find(|e| e.sticky_id == id)
            && !exclude.contains(&e.addr())
            && !e.stats.is_failing()
        {
            return Some(e.clone());
        }
        let usable = |e: &Endpoint, allow_failing: bool| {
            !exclude.contains(&e.addr()) && (allow_failing || !e.stats.is_failing())
        };
        self.pick_with(|e| usable(e, false))
            .or_else(|| self.pick_with(|e| usable(e, true)))
    }

    fn pick_with(&self, ok: impl Fn(&Endpoint) -> bool) -> Option<Arc<Endpoint>> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        match self.lb {
            LbAlgorithm::RoundRobin => {
                let len = self.schedule.len();
                for _ in 0..len {
                    let i = self.schedule[self.next.fetch_add(1, Ordering::Relaxed) % len];
                    let e = &self.endpoints[i as usize];
                    if ok(e) {
                        return Some(e.clone());
                    }
                }
                None
            }
            LbAlgorithm::LeastConnection => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| &self.endpoints[(start + k) % n])
                    .filter(|e| ok(e))
                    .min_by_key(|e| e.stats.in_flight())
                    .cloned()
            }
        }
    }
}

/// Nginx's smooth weighted round-robin, unrolled into a fixed schedule so picking is one
/// atomic increment.
fn smooth_wrr_schedule(weights: &[u64]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().copied().fold(0, gcd);
    let mut w: Vec<u64> = weights.iter().map(|x| x / g).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        for x in &mut w {
            *x = (*x * MAX_SCHEDULE / total).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    use crate::endpoint::StatsRegistry;
    use crate::route::EndpointSpec;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn pool(stats: &StatsRegistry, lb: LbAlgorithm, specs: Vec<EndpointSpec>) -> Pool {
        let endpoints = specs.into_iter().map(|s| stats.endpoint(s)).collect();
        Pool::new(RouteKey::parse("w.example").unwrap(), lb, endpoints)
    }

    fn specs(ports: &[u16]) -> Vec<EndpointSpec> {
        ports.iter().map(|p| EndpointSpec::new(addr(*p))).collect()
    }

    #[test]
    fn weighted_round_robin_follows_weights_smoothly() {
        assert_eq!(smooth_wrr_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_wrr_schedule(&[2, 2]), vec![0, 1]);
        assert!(smooth_wrr_schedule(&[1_000_000, 1]).len() <= MAX_SCHEDULE as usize + 1);
        let stats = StatsRegistry::default();
        let mut eps = specs(&[1, 2]);
        eps[0].weight = 3;
        let pool = pool(&stats, LbAlgorithm::RoundRobin, eps);
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts
                .entry(pool.pick(&[], None).unwrap().addr().port())
                .or_insert(0) += 1;
        }
        assert_eq!(counts[&1], 300);
        assert_eq!(counts[&2], 100);
    }

    #[test]
    fn least_connection_prefers_idle_endpoint() {
        let stats = StatsRegistry::default();
        let pool = pool(&stats, LbAlgorithm::LeastConnection, specs(&[1, 2, 3]));
        let _g1 = pool.endpoints[0].stats.begin();
        let _g2 = pool.endpoints[2].stats.begin();
        for _ in 0..10 {
            assert_eq!(pool.pick(&[], None).unwrap().addr().port(), 2);
        }
    }

    #[test]
    fn pick_skips_excluded_and_failing_but_falls_back_when_all_fail() {
        let stats = StatsRegistry::default();
        let pool = pool(&stats, LbAlgorithm::RoundRobin, specs(&[1, 2]));
        for _ in 0..10 {
            assert_eq!(pool.pick(&[addr(1)], None).unwrap().addr(), addr(2));
        }
        pool.endpoints[1].stats.mark_failed(Duration::from_secs(60));
        for _ in 0..10 {
            assert_eq!(pool.pick(&[], None).unwrap().addr(), addr(1));
        }
        // Only a failing endpoint remains: it is still tried.
        assert_eq!(pool.pick(&[addr(1)], None).unwrap().addr(), addr(2));
        assert!(pool.pick(&[addr(1), addr(2)], None).is_none());
    }

    #[test]
    fn sticky_id_selects_its_endpoint() {
        let stats = StatsRegistry::default();
        let mut eps = specs(&[1, 2, 3]);
        eps[2].instance_id = Some("inst-3".into());
        let pool = pool(&stats, LbAlgorithm::RoundRobin, eps);
        for _ in 0..10 {
            assert_eq!(pool.pick(&[], Some("inst-3")).unwrap().addr(), addr(3));
            assert_eq!(pool.pick(&[], Some("127.0.0.1:1")).unwrap().addr(), addr(1));
        }
        // Unknown id: normal balancing.
        assert!(pool.pick(&[], Some("gone")).is_some());
    }
}
