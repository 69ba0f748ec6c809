//! ACL tokens already resolved (token, policies, authority), kept for a moment so an API
//! request does not cost two store reads and a policy compile.
//!
//! Staleness is bounded three ways: every ACL write on this server (policy put or delete,
//! token revoke) empties the cache before it answers, so a revoke is refused from the next
//! request on; winning the leadership empties it too (only the leader serves the API, and a
//! revoke may have gone through another leader meanwhile); and an entry is trusted for
//! [`TTL`] at most. A token's own expiry is checked on every request, cached or not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::auth::Caller;

/// How long a resolved token is trusted without reading the store again.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries kept; past it the cache starts over (a flood of distinct valid tokens is
/// rare, and a miss only costs the store reads).
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct TokenCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_hash: HashMap<String, Entry>,
    /// Bumped by every [`TokenCache::clear`]: a token read from the store before a change
    /// and put after it is not kept.
    generation: u64,
}

struct Entry {
    caller: Caller,
    expiration_time_ms: Option<u64>,
    loaded: Instant,
}

impl TokenCache {
    /// The caller of the token whose secret hashes to `hash`, if resolved within [`TTL`]
    /// and not expired at `now_ms`.
    pub fn get(&self, hash: &str, now_ms: u64) -> Option<Caller> {
        let by_hash = &mut self.state.lock().expect("token cache lock").by_hash;
        let entry = by_hash.get(hash)?;
        if entry.loaded.elapsed() >= TTL || entry.expiration_time_ms.is_some_and(|t| t <= now_ms) {
            by_hash.remove(hash);
            return None;
        }
        Some(entry.caller.clone())
    }

    /// The generation to hand to [`TokenCache::put`]: read it before the store.
    pub fn generation(&self) -> u64 {
        self.state.lock().expect("token cache lock").generation
    }

    /// Keeps `caller`, unless the cache was cleared since `generation` was read.
    pub fn put(
        &self,
        generation: u64,
        hash: String,
        caller: Caller,
        expiration_time_ms: Option<u64>,
    ) {
        let mut state = self.state.lock().expect("token cache lock");
        if state.generation != generation {
            return;
        }
        if state.by_hash.len() >= MAX_ENTRIES {
            state.by_hash.clear();
        }
        state.by_hash.insert(
            hash,
            Entry {
                caller,
                expiration_time_ms,
                loaded: Instant::now(),
            },
        );
    }

    /// Forgets every token: after an ACL change, or on taking the leadership.
    pub fn clear(&self) {
        let mut state = self.state.lock().expect("token cache lock");
        state.by_hash.clear();
        state.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_core::acl::Authority;

    use super::*;

    fn caller(name: &str) -> Caller {
        Caller(Arc::new(Authority::unrestricted(name, name)))
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_lives_for_the_ttl_and_until_its_token_expires() {
        let cache = TokenCache::default();
        cache.put(0, "h1".into(), caller("a"), None);
        cache.put(0, "h2".into(), caller("b"), Some(1_000));
        assert_eq!(cache.get("h1", 0).unwrap().name, "a");
        assert!(cache.get("h2", 999).is_some());
        assert!(cache.get("h2", 1_000).is_none(), "expired at its time");
        assert!(cache.get("h2", 0).is_none(), "an expired entry is dropped");
        tokio::time::advance(TTL).await;
        assert!(cache.get("h1", 0).is_none(), "stale after the TTL");
        assert!(cache.get("unknown", 0).is_none());
    }

    #[tokio::test]
    async fn clear_forgets_everything_and_refuses_what_was_read_before_it() {
        let cache = TokenCache::default();
        cache.put(cache.generation(), "h1".into(), caller("a"), None);
        let before = cache.generation();
        cache.clear();
        assert!(cache.get("h1", 0).is_none());
        // Read from the store before the change, put after it: not kept.
        cache.put(before, "h2".into(), caller("b"), None);
        assert!(cache.get("h2", 0).is_none());
        cache.put(cache.generation(), "h2".into(), caller("b"), None);
        assert!(cache.get("h2", 0).is_some());
    }
}
