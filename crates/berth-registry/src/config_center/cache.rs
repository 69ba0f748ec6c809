//! Reads of configs answered from memory while the store has not changed.
//!
//! The cache is valid for one store index: the index is taken before a read, and an
//! entry is kept only while the store is still at that index, so a cached answer is never
//! older than the index it is filed under. Any write (here, or another member's, once its
//! notification arrived) moves the index and empties the cache. Config reads outnumber
//! writes by far (every listener re-reads after a change, SDKs poll), and the store read
//! behind a miss is a blocking database query.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::Config;

/// Entries kept at most; past it the cache starts over (configs are few, keys unbounded).
const LIMIT: usize = 10_000;

#[derive(Default)]
pub struct ReadCache {
    inner: Mutex<State>,
}

#[derive(Default)]
struct State {
    index: u64,
    entries: HashMap<String, Option<Config>>,
}

impl ReadCache {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached answer for `key` at store index `index` (`Some(None)`: known absent).
    pub fn get(&self, index: u64, key: &str) -> Option<Option<Config>> {
        let mut state = self.lock();
        if state.index != index {
            state.index = index;
            state.entries.clear();
            return None;
        }
        state.entries.get(key).cloned()
    }

    /// Files what a read started at `index` found, if the store is still there.
    pub fn put(&self, index: u64, key: String, found: Option<Config>) {
        let mut state = self.lock();
        if state.index != index {
            return;
        }
        if state.entries.len() >= LIMIT {
            state.entries.clear();
        }
        state.entries.insert(key, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_lives_only_at_its_index() {
        let cache = ReadCache::default();
        assert_eq!(cache.get(5, "k"), None);
        cache.put(5, "k".into(), None);
        assert_eq!(cache.get(5, "k"), Some(None));
        // The store moved: everything read before is dropped.
        assert_eq!(cache.get(6, "k"), None);
        // A read started before the move is not filed after it.
        cache.put(5, "k".into(), None);
        assert_eq!(cache.get(6, "k"), None);
    }
}
