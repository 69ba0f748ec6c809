//! The live table: readers load it without locks (arc-swap); writers change one source's
//! contribution and swap in a new generation that recomputes only the routes whose
//! entries changed. Each source batches its own changes, so one swap covers many messages.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::endpoint::StatsRegistry;
use crate::route::{RouteEntry, RouteKey};
use crate::table::RouteTable;

/// Name of the slot an in-process caller's routes live in (see [`RouteStore::set_source`]).
pub const SOURCE_STATIC: &str = "static";
pub const SOURCE_NATS: &str = "nats";
pub const SOURCE_REGISTRY: &str = "registry";

/// Every source's entries, by source name.
pub type SourceMap = BTreeMap<String, Vec<RouteEntry>>;

/// One source's entries by item: a source that replaces its whole contribution at once
/// has a single item (""); the registry keeps one item per service so a service change
/// touches only that service's routes.
type Items = BTreeMap<String, Arc<Vec<RouteEntry>>>;

#[derive(Debug, Default)]
struct State {
    generation: u64,
    sources: BTreeMap<String, Items>,
}

impl State {
    fn entries(&self) -> impl Iterator<Item = &RouteEntry> {
        self.sources
            .values()
            .flat_map(|items| items.values())
            .flat_map(|v| v.iter())
    }
}

#[derive(Debug)]
pub struct RouteStore {
    current: ArcSwap<RouteTable>,
    stats: StatsRegistry,
    state: Mutex<State>,
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
            state: Mutex::new(State::default()),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Writers serialise on this lock; readers never touch it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces everything `source` contributes and swaps in the new table. Returns the
    /// new generation.
    pub fn set_source(&self, source: &str, entries: Vec<RouteEntry>) -> u64 {
        self.set_items(source, true, [(String::new(), entries)])
    }

    /// Replaces some items of `source` (an empty list removes the item); with
    /// `replace_all`, the source's other items are removed. Only routes whose key appears
    /// in a removed or added entry are recomputed. Returns the new generation.
    pub fn set_items(
        &self,
        source: &str,
        replace_all: bool,
        items: impl IntoIterator<Item = (String, Vec<RouteEntry>)>,
    ) -> u64 {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut keys: HashSet<RouteKey> = HashSet::new();
        let mut forget = |old: Arc<Vec<RouteEntry>>| match Arc::try_unwrap(old) {
            Ok(v) => keys.extend(v.into_iter().map(|e| e.key)),
            Err(shared) => keys.extend(shared.iter().map(|e| e.key.clone())),
        };
        let slot = state.sources.entry(source.to_string()).or_default();
        if replace_all {
            for old in std::mem::take(slot).into_values() {
                forget(old);
            }
        }
        let mut added = Vec::new();
        for (item, entries) in items {
            if let Some(old) = slot.remove(&item) {
                forget(old);
            }
            if !entries.is_empty() {
                added.extend(entries.iter().map(|e| e.key.clone()));
                slot.insert(item, Arc::new(entries));
            }
        }
        keys.extend(added);
        if slot.is_empty() {
            state.sources.remove(source);
        }
        state.generation += 1;
        let generation = state.generation;
        let table = self
            .current
            .load()
            .patch(&keys, state.entries(), &self.stats, generation);
        self.publish(table, generation)
    }

    /// Replaces several sources at once (one swap, every route rebuilt), e.g. when
    /// seeding from the cache.
    pub fn update(&self, change: impl FnOnce(&mut SourceMap)) -> u64 {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut sources = flatten(&state.sources);
        change(&mut sources);
        state.sources = sources
            .into_iter()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(name, entries)| (name, Items::from([(String::new(), Arc::new(entries))])))
            .collect();
        state.generation += 1;
        let generation = state.generation;
        let previous = self.current.load_full();
        let table = RouteTable::rebuild(state.entries(), &self.stats, generation, Some(&previous));
        self.publish(table, generation)
    }

    fn publish(&self, table: RouteTable, generation: u64) -> u64 {
        self.current.store(Arc::new(table));
        self.changed.send_replace(generation);
        generation
    }

    /// Notified with the generation after every swap.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A copy of one source's entries.
    pub fn source(&self, source: &str) -> Vec<RouteEntry> {
        let items: Vec<Arc<Vec<RouteEntry>>> = self
            .lock()
            .sources
            .get(source)
            .map(|items| items.values().cloned().collect())
            .unwrap_or_default();
        items.iter().flat_map(|v| v.iter().cloned()).collect()
    }

    /// A copy of every source's entries with the generation they produced. The lock is
    /// held only to take references; the copy happens outside it.
    pub fn sources(&self) -> (u64, SourceMap) {
        let (generation, sources) = {
            let state = self.lock();
            (state.generation, state.sources.clone())
        };
        (generation, flatten(&sources))
    }
}

fn flatten(sources: &BTreeMap<String, Items>) -> SourceMap {
    sources
        .iter()
        .map(|(name, items)| {
            let entries = items.values().flat_map(|v| v.iter().cloned()).collect();
            (name.clone(), entries)
        })
        .collect()
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
    fn items_change_only_their_routes() {
        let store = RouteStore::new();
        store.set_items(
            "r",
            true,
            [
                ("svc-a".to_string(), vec![entry("a.example", 1)]),
                ("svc-b".to_string(), vec![entry("b.example", 2)]),
            ],
        );
        store.set_source("s", vec![entry("a.example", 3)]);
        let before = store.load_full();
        let host = |h: &str| Host::from_request_authority(h).unwrap();
        assert_eq!(
            before
                .lookup(&host("a.example"), "/")
                .unwrap()
                .endpoints
                .len(),
            2
        );
        // svc-a moves its route; svc-b is untouched and keeps its pool.
        store.set_items(
            "r",
            false,
            [("svc-a".to_string(), vec![entry("c.example", 4)])],
        );
        let t = store.load_full();
        assert_eq!(t.route_count(), 3);
        assert_eq!(
            t.lookup(&host("a.example"), "/").unwrap().endpoints.len(),
            1
        );
        assert!(t.lookup(&host("c.example"), "/").is_some());
        assert!(std::sync::Arc::ptr_eq(
            before.lookup(&host("b.example"), "/").unwrap(),
            t.lookup(&host("b.example"), "/").unwrap()
        ));
        // An empty list removes the item; the source's copy reflects every change.
        store.set_items("r", false, [("svc-b".to_string(), vec![])]);
        let keys: Vec<String> = store
            .source("r")
            .iter()
            .map(|e| e.key.to_string())
            .collect();
        assert_eq!(keys, vec!["c.example"]);
        assert_eq!(store.load().route_count(), 2);
        // A replace-all drops items not named.
        store.set_items(
            "r",
            true,
            [("svc-d".to_string(), vec![entry("d.example", 5)])],
        );
        assert!(store.load().lookup(&host("c.example"), "/").is_none());
        assert_eq!(store.sources().1["r"].len(), 1);
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
