//! The live table: readers load it without locks (arc-swap); writers replace one source's
//! whole contribution and swap a freshly built table in. Each source batches its own
//! changes, so one swap covers many messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::endpoint::StatsRegistry;
use crate::route::RouteEntry;
use crate::table::RouteTable;

/// Name of the slot an in-process caller's routes live in (see [`RouteStore::set_source`]).
pub const SOURCE_STATIC: &str = "static";
pub const SOURCE_NATS: &str = "nats";
pub const SOURCE_REGISTRY: &str = "registry";

/// Every source's entries, by source name.
pub type SourceMap = BTreeMap<String, Vec<RouteEntry>>;

#[derive(Debug)]
pub struct RouteStore {
    current: ArcSwap<RouteTable>,
    stats: StatsRegistry,
    sources: Mutex<(u64, SourceMap)>,
    changed: watch::Sender<u64>,
}

impl Default for RouteStore {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteStore {
    pub fn new() -> Self {
        RouteStore {
            current: ArcSwap::from_pointee(RouteTable::default()),
            stats: StatsRegistry::default(),
            sources: Mutex::new((0, SourceMap::new())),
            changed: watch::channel(0).0,
        }
    }

    /// The table to serve a request from. Lock-free.
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    /// Replaces everything `source` contributes and swaps in the rebuilt table. Returns
    /// the new generation.
    pub fn set_source(&self, source: &str, entries: Vec<RouteEntry>) -> u64 {
        self.update(|sources| {
            if entries.is_empty() {
                sources.remove(source);
            } else {
                sources.insert(source.to_string(), entries);
            }
        })
    }

    /// Replaces several sources at once (one swap), e.g. when seeding from the cache.
    pub fn update(&self, change: impl FnOnce(&mut SourceMap)) -> u64 {
        // Writers serialise on this lock; readers never touch it.
        let mut guard = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let (generation, sources) = &mut *guard;
        change(sources);
        *generation += 1;
        let table = RouteTable::build(
            sources.values().flatten().cloned(),
            &self.stats,
            *generation,
        );
        self.current.store(Arc::new(table));
        let generation = *generation;
        self.changed.send_replace(generation);
        generation
    }

    /// A copy of one source's entries.
    pub fn source(&self, source: &str) -> Vec<RouteEntry> {
        let guard = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.get(source).cloned().unwrap_or_default()
    }

    /// A copy of every source's entries with the generation they produced.
    pub fn sources(&self) -> (u64, SourceMap) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Notified with the generation after every swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{EndpointSpec, Host, LbAlgorithm, RouteKey};

    fn entry(route: &str, port: u16) -> RouteEntry {
        RouteEntry {
            key: RouteKey::parse(route).unwrap(),
            lb: LbAlgorithm::default(),
            endpoints: vec![EndpointSpec::new(([127, 0, 0, 1], port).into())],
        }
    }

    #[test]
    fn sources_are_merged_and_replaced_independently() {
        let store = RouteStore::new();
        let rx = store.subscribe();
        store.set_source("a", vec![entry("x.example", 1)]);
        store.set_source("b", vec![entry("x.example", 2), entry("y.example", 3)]);
        let t = store.load_full();
        assert_eq!(t.route_count(), 2);
        assert_eq!(t.endpoint_count(), 3);
        store.set_source("b", vec![]);
        let t = store.load_full();
        assert_eq!(t.route_count(), 1);
        let host = Host::from_request_authority("y.example").unwrap();
        assert!(t.lookup(&host, "/").is_none());
        assert_eq!(*rx.borrow(), 3);
        assert_eq!(store.sources().1.len(), 1);
    }

    #[test]
    fn readers_keep_their_generation_across_a_swap() {
        let store = RouteStore::new();
        store.set_source("a", vec![entry("x.example", 1)]);
        let old = store.load_full();
        store.set_source("a", vec![]);
        assert_eq!(old.route_count(), 1);
        assert_eq!(store.load().route_count(), 0);
    }
}
