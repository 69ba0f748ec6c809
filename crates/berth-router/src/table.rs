//! The immutable route table one generation serves: host and longest path prefix to a
//! route's [`Pool`] (balancing within a route is `balance`'s). A table is built once from
//! every source's entries and then only read; updates build a new table and swap it in
//! (see `store`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::balance::Pool;
use crate::endpoint::{Endpoint, StatsRegistry};
use crate::route::{EndpointSpec, Host, LbAlgorithm, RouteEntry, RouteKey};

/// The pool of one merged route: `previous`'s when nothing about the route changed (its
/// round-robin position is kept), else a new one.
fn pool_for(
    previous: Option<&RouteTable>,
    key: &RouteKey,
    lb: LbAlgorithm,
    mut eps: Vec<&EndpointSpec>,
    stats: &StatsRegistry,
) -> Arc<Pool> {
    eps.sort_by_key(|e| e.addr);
    let unchanged = previous
        .and_then(|t| t.hosts.get(key.host.as_str()))
        .and_then(|pools| pools.iter().find(|p| p.key == *key))
        .filter(|p| {
            p.lb == lb
                && p.endpoints.len() == eps.len()
                && p.endpoints.iter().zip(&eps).all(|(a, b)| a.spec == **b)
        });
    if let Some(pool) = unchanged {
        return pool.clone();
    }
    let eps: Vec<Arc<Endpoint>> = eps
        .into_iter()
        .map(|spec| stats.endpoint(spec.clone()))
        .collect();
    Arc::new(Pool::new(key.clone(), lb, eps))
}

/// The shared name of a host, reusing `previous`'s allocation when it has the host.
fn host_name(previous: Option<&RouteTable>, host: &str) -> Arc<str> {
    previous
        .and_then(|t| t.hosts.get_key_value(host))
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| Arc::from(host))
}

fn sort_pools(pools: &mut [Arc<Pool>]) {
    pools.sort_by_key(|p| std::cmp::Reverse(p.key.path.as_str().len()));
}

/// The routes of one host, longest path prefix first.
type HostRoutes = Arc<Vec<Arc<Pool>>>;

/// Entries sharing a key, merged: the last non-default balancing algorithm, and endpoints
/// unioned by address (the last one wins).
type Merged<'a> = HashMap<&'a RouteKey, (LbAlgorithm, Vec<&'a EndpointSpec>)>;

/// One merged route: key, balancing algorithm, endpoints.
type MergedRoute<'a> = (&'a RouteKey, LbAlgorithm, Vec<&'a EndpointSpec>);

fn merge<'a>(
    entries: impl IntoIterator<Item = &'a RouteEntry>,
    wanted: impl Fn(&RouteKey) -> bool,
) -> Merged<'a> {
    // Borrowed keys, hash maps and short vectors: this runs on every swap, so each key
    // and endpoint is cloned at most once, and only for routes that changed.
    let mut merged: Merged<'a> = HashMap::new();
    for entry in entries {
        if !wanted(&entry.key) {
            continue;
        }
        let slot = merged.entry(&entry.key).or_default();
        if entry.lb != LbAlgorithm::default() {
            slot.0 = entry.lb;
        }
        for ep in &entry.endpoints {
            match slot.1.iter_mut().find(|e| e.addr == ep.addr) {
                Some(existing) => *existing = ep,
                None => slot.1.push(ep),
            }
        }
    }
    merged
}

/// An immutable table: host -> routes ordered by longest path prefix first. Host routes
/// are shared between generations, so a new generation that changes a few routes copies
/// reference counts, not routes.
#[derive(Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<Arc<str>, HostRoutes>,
    generation: u64,
    routes: usize,
    endpoints: usize,
}

impl RouteTable {
    /// Merges entries (several may share a key: their endpoints are unioned by address,
    /// the last one wins) into a table.
    pub fn build<'a>(
        entries: impl IntoIterator<Item = &'a RouteEntry>,
        stats: &StatsRegistry,
        generation: u64,
    ) -> Self {
        Self::rebuild(entries, stats, generation, None)
    }

    /// Like [`RouteTable::build`], reusing `previous`'s pools whose route is unchanged, so
    /// a swap costs little for routes nobody touched (and their round-robin position is
    /// kept).
    pub fn rebuild<'a>(
        entries: impl IntoIterator<Item = &'a RouteEntry>,
        stats: &StatsRegistry,
        generation: u64,
        previous: Option<&RouteTable>,
    ) -> Self {
        let merged = merge(entries, |_| true);
        let mut hosts: HashMap<Arc<str>, Vec<Arc<Pool>>> = HashMap::new();
        let mut endpoints = 0;
        let routes = merged.len();
        for (key, (lb, eps)) in merged {
            endpoints += eps.len();
            let pool = pool_for(previous, key, lb, eps, stats);
            match hosts.get_mut(key.host.as_str()) {
                Some(list) => list.push(pool),
                None => {
                    let name = host_name(previous, key.host.as_str());
                    hosts.insert(name, vec![pool]);
                }
            }
        }
        let hosts = hosts
            .into_iter()
            .map(|(h, mut pools)| {
                sort_pools(&mut pools);
                (h, Arc::new(pools))
            })
            .collect();
        stats.forget_unused();
        RouteTable {
            hosts,
            generation,
            routes,
            endpoints,
        }
    }

    /// A new generation where only the routes in `keys` are recomputed from `entries`
    /// (every entry of every source; those with other keys are skipped). Work is
    /// proportional to the changed routes plus one pass over the entries and one copy of
    /// the host index, not to rebuilding every route.
    pub fn patch<'a>(
        &self,
        keys: &HashSet<RouteKey>,
        entries: impl IntoIterator<Item = &'a RouteEntry>,
        stats: &StatsRegistry,
        generation: u64,
    ) -> Self {
        let merged = merge(entries, |k| keys.contains(k));
        let mut by_host: HashMap<&str, Vec<MergedRoute<'_>>> = HashMap::new();
        for k in keys {
            by_host.entry(k.host.as_str()).or_default();
        }
        for (key, (lb, eps)) in merged {
            by_host
                .entry(key.host.as_str())
                .or_default()
                .push((key, lb, eps));
        }
        let mut hosts = self.hosts.clone();
        let mut routes = self.routes;
        let mut endpoints = self.endpoints;
        for (host, fresh) in by_host {
            let mut pools: Vec<Arc<Pool>> = Vec::new();
            if let Some(old) = self.hosts.get(host) {
                for p in old.iter() {
                    if keys.contains(&p.key) {
                        routes -= 1;
                        endpoints -= p.endpoints.len();
                    } else {
                        pools.push(p.clone());
                    }
                }
            }
            for (key, lb, eps) in fresh {
                routes += 1;
                endpoints += eps.len();
                pools.push(pool_for(Some(self), key, lb, eps, stats));
            }
            if pools.is_empty() {
                hosts.remove(host);
            } else {
                sort_pools(&mut pools);
                hosts.insert(host_name(Some(self), host), Arc::new(pools));
            }
        }
        stats.forget_unused();
        RouteTable {
            hosts,
            generation,
            routes,
            endpoints,
        }
    }

    /// Finds the route for a request: exact host first, then wildcards one label at a
    /// time; within a host the longest matching path prefix.
    pub fn lookup(&self, host: &Host, path: &str) -> Option<&Arc<Pool>> {
        let in_host = |h: &str| self.hosts.get(h)?.iter().find(|p| p.key.path.matches(path));
        // The exact host without building candidate strings; wildcards only on a miss.
        in_host(host.as_str()).or_else(|| {
            host.lookup_candidates()
                .skip(1)
                .find_map(|candidate| in_host(&candidate))
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn route_count(&self) -> usize {
        self.routes
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints
    }

    /// Every route with its endpoints and their live counters, sorted by route.
    pub fn view(&self) -> Vec<RouteView> {
        let mut out: Vec<RouteView> = self
            .hosts
            .values()
            .flat_map(|pools| pools.iter())
            .map(|p| RouteView {
                route: p.key.to_string(),
                lb: p.lb,
                endpoints: p
                    .endpoints
                    .iter()
                    .map(|e| EndpointView {
                        addr: e.addr(),
                        weight: e.spec.weight,
                        instance_id: e.spec.instance_id.clone(),
                        app: e.spec.app.clone(),
                        in_flight: e.stats.in_flight(),
                        requests: e.stats.requests(),
                        failures: e.stats.failures(),
                        failing: e.stats.is_failing(),
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.route.cmp(&b.route));
        out
    }
}

/// JSON shape of `/routes`.
#[derive(Debug, Serialize)]
pub struct RouteView {
    pub route: String,
    pub lb: LbAlgorithm,
    pub endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub addr: SocketAddr,
    pub weight: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub in_flight: i64,
    pub requests: u64,
    pub failures: u64,
    pub failing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn entry(route: &str, ports: &[u16]) -> RouteEntry {
        RouteEntry {
            key: RouteKey::parse(route).unwrap(),
            lb: LbAlgorithm::RoundRobin,
            endpoints: ports.iter().map(|p| EndpointSpec::new(addr(*p))).collect(),
        }
    }

    fn host(s: &str) -> Host {
        Host::from_request_authority(s).unwrap()
    }

    #[test]
    fn exact_host_beats_wildcard_and_longest_prefix_wins() {
        let stats = StatsRegistry::default();
        let t = RouteTable::build(
            &[
                entry("*.example.com", &[1]),
                entry("*.b.example.com", &[2]),
                entry("a.b.example.com", &[3]),
                entry("a.b.example.com/api", &[4]),
                entry("a.b.example.com/api/v2", &[5]),
            ],
            &stats,
            1,
        );
        let port = |h: &str, p: &str| t.lookup(&host(h), p).map(|p| p.endpoints[0].addr().port());
        assert_eq!(port("a.b.example.com", "/"), Some(3));
        assert_eq!(port("A.B.Example.com:80", "/api/x"), Some(4));
        assert_eq!(port("a.b.example.com", "/api/v2/z"), Some(5));
        assert_eq!(port("a.b.example.com", "/apiv2"), Some(3));
        assert_eq!(port("x.b.example.com", "/"), Some(2));
        assert_eq!(port("x.y.example.com", "/"), Some(1));
        assert_eq!(port("example.com", "/"), None);
        assert_eq!(port("other.org", "/"), None);
    }

    #[test]
    fn path_only_routes_fall_through_to_wildcard() {
        let stats = StatsRegistry::default();
        let t = RouteTable::build(
            &[
                entry("a.example.com/api", &[1]),
                entry("*.example.com", &[2]),
            ],
            &stats,
            1,
        );
        let p = t.lookup(&host("a.example.com"), "/web").unwrap();
        assert_eq!(p.endpoints[0].addr().port(), 2);
    }

    #[test]
    fn entries_with_same_key_merge_endpoints() {
        let stats = StatsRegistry::default();
        let t = RouteTable::build(
            &[entry("w.example", &[1, 2]), entry("w.example", &[2, 3])],
            &stats,
            1,
        );
        assert_eq!(t.route_count(), 1);
        assert_eq!(t.endpoint_count(), 3);
    }

    #[test]
    fn counters_survive_a_rebuild() {
        let stats = StatsRegistry::default();
        let t1 = RouteTable::build(&[entry("w.example", &[1])], &stats, 1);
        let guard = t1.lookup(&host("w.example"), "/").unwrap().endpoints[0]
            .stats
            .begin();
        let t2 = RouteTable::build(&[entry("w.example", &[1, 2])], &stats, 2);
        let t3 = RouteTable::rebuild(
            &[entry("w.example", &[1, 2]), entry("x.example", &[3])],
            &stats,
            3,
            Some(&t2),
        );
        // Unchanged routes keep their pool; new ones get theirs.
        assert!(Arc::ptr_eq(
            t2.lookup(&host("w.example"), "/").unwrap(),
            t3.lookup(&host("w.example"), "/").unwrap()
        ));
        assert_eq!(t3.route_count(), 2);
        drop(t1);
        let pool = t2.lookup(&host("w.example"), "/").unwrap();
        let e1 = pool.endpoints.iter().find(|e| e.addr() == addr(1)).unwrap();
        assert_eq!(e1.stats.in_flight(), 1);
        assert_eq!(e1.stats.requests(), 1);
        drop(guard);
        assert_eq!(e1.stats.in_flight(), 0);
    }

    #[test]
    fn patch_recomputes_changed_routes_like_a_full_build() {
        let stats = StatsRegistry::default();
        let a = entry("a.example", &[1]);
        let bx = entry("b.example/x", &[2]);
        let b = entry("b.example", &[3]);
        let t1 = RouteTable::build(&[a.clone(), bx.clone(), b.clone()], &stats, 1);
        // b.example/x gains an endpoint, a.example goes away, c.example is new.
        let bx2 = entry("b.example/x", &[2, 4]);
        let c = entry("c.example", &[5]);
        let keys: HashSet<RouteKey> = [a.key.clone(), bx.key.clone(), c.key.clone()].into();
        let now = [bx2, b, c];
        let t2 = t1.patch(&keys, &now, &stats, 2);
        let full = RouteTable::build(&now, &stats, 3);
        assert_eq!(t2.generation(), 2);
        assert_eq!(t2.route_count(), full.route_count());
        assert_eq!(t2.endpoint_count(), full.endpoint_count());
        let shape = |t: &RouteTable| -> Vec<(String, Vec<SocketAddr>)> {
            t.view()
                .into_iter()
                .map(|r| (r.route, r.endpoints.iter().map(|e| e.addr).collect()))
                .collect()
        };
        assert_eq!(shape(&t2), shape(&full));
        assert!(t2.lookup(&host("a.example"), "/").is_none());
        assert_eq!(
            t2.lookup(&host("b.example"), "/x/y")
                .unwrap()
                .endpoints
                .len(),
            2
        );
        // The untouched route keeps its pool (and its balancing position).
        assert!(Arc::ptr_eq(
            t1.lookup(&host("b.example"), "/").unwrap(),
            t2.lookup(&host("b.example"), "/").unwrap()
        ));
        // The old generation is unchanged for readers still holding it.
        assert_eq!(t1.route_count(), 3);
        assert!(t1.lookup(&host("a.example"), "/").is_some());
    }

    #[test]
    fn view_lists_routes_sorted() {
        let stats = StatsRegistry::default();
        let t = RouteTable::build(
            &[entry("b.example", &[2]), entry("a.example/x", &[1])],
            &stats,
            7,
        );
        let v = t.view();
        assert_eq!(v[0].route, "a.example/x");
        assert_eq!(v[1].route, "b.example");
        assert_eq!(t.generation(), 7);
    }
}
