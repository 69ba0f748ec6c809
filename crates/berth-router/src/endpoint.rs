//! Live endpoints and their counters. Counters are keyed by backend address in a registry
//! shared by every table generation, so a table swap never resets in-flight counts (which
//! least-connections and the connection limit depend on) or passive-health state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::route::EndpointSpec;

fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_millis() -> u64 {
    // +1 so that 0 always means "never marked".
    Instant::now().duration_since(clock_base()).as_millis() as u64 + 1
}

/// Counters of one backend address, shared across table generations.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: AtomicI64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Passive health: clock millis until which the endpoint is skipped; 0 = healthy.
    failing_until: AtomicU64,
}

impl EndpointStats {
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Starts a request: counts it and holds an in-flight slot until the guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Takes an in-flight slot only if fewer than `limit` are held (0 = unlimited).
    pub fn try_begin(self: &Arc<Self>, limit: u32) -> Option<InFlight> {
        if limit == 0 {
            return Some(self.begin());
        }
        let prev = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= i64::from(limit) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(self.clone()))
    }

    /// Records a failure to reach the backend and skips it for `cooldown`.
    pub fn mark_failed(&self, cooldown: Duration) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let until = now_millis() + cooldown.as_millis() as u64;
        self.failing_until.store(until, Ordering::Relaxed);
    }

    /// A success clears passive-health state early.
    pub fn mark_ok(&self) {
        if self.failing_until.load(Ordering::Relaxed) != 0 {
            self.failing_until.store(0, Ordering::Relaxed);
        }
    }

    pub fn is_failing(&self) -> bool {
        let until = self.failing_until.load(Ordering::Relaxed);
        until != 0 && now_millis() < until
    }
}

/// An in-flight slot; releases on drop (which happens when the response body ends).
#[derive(Debug)]
pub struct InFlight(Arc<EndpointStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One endpoint of one table generation: its spec and its (shared) counters.
#[derive(Debug)]
pub struct Endpoint {
    pub spec: EndpointSpec,
    pub stats: Arc<EndpointStats>,
    /// Cached `spec.sticky_id()`, compared on every sticky request.
    pub sticky_id: String,
    /// Cached address text for the access log.
    pub addr_text: String,
}

impl Endpoint {
    pub fn addr(&self) -> SocketAddr {
        self.spec.addr
    }
}

/// Counters by backend address, shared by all table generations.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    by_addr: Mutex<HashMap<SocketAddr, Arc<EndpointStats>>>,
}

impl StatsRegistry {
    pub fn endpoint(&self, spec: EndpointSpec) -> Arc<Endpoint> {
        let stats = self
            .by_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(spec.addr)
            .or_default()
            .clone();
        let sticky_id = spec.sticky_id();
        let addr_text = spec.addr.to_string();
        Arc::new(Endpoint {
            spec,
            stats,
            sticky_id,
            addr_text,
        })
    }

    /// Forgets counters of addresses no table uses and no request holds.
    pub fn retain(&self, live: &std::collections::HashSet<SocketAddr>) {
        self.by_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|addr, stats| live.contains(addr) || Arc::strong_count(stats) > 1);
    }

    /// Forgets counters no table and no request holds any more.
    pub fn forget_unused(&self) {
        self.by_addr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, stats| Arc::strong_count(stats) > 1);
    }

    pub fn len(&self) -> usize {
        self.by_addr.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limit_is_enforced_and_released() {
        let stats = Arc::new(EndpointStats::default());
        let a = stats.try_begin(2).unwrap();
        let _b = stats.try_begin(2).unwrap();
        assert!(stats.try_begin(2).is_none());
        assert_eq!(stats.in_flight(), 2);
        drop(a);
        assert!(stats.try_begin(2).is_some());
        assert_eq!(stats.requests(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn passive_health_expires() {
        let stats = EndpointStats::default();
        assert!(!stats.is_failing());
        stats.mark_failed(Duration::from_secs(5));
        assert!(stats.is_failing());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!stats.is_failing());
        assert_eq!(stats.failures(), 1);
    }

    #[test]
    fn registry_shares_counters_by_address() {
        let reg = StatsRegistry::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e1 = reg.endpoint(EndpointSpec::new(addr));
        let _g = e1.stats.begin();
        let e2 = reg.endpoint(EndpointSpec::new(addr).with_weight(3));
        assert_eq!(e2.stats.in_flight(), 1);
        drop(e1);
        drop(e2);
        reg.retain(&Default::default());
        // The guard still holds the stats, so they survive.
        assert_eq!(reg.len(), 1);
        drop(_g);
        reg.retain(&Default::default());
        assert!(reg.is_empty());
    }
}
