//! What `/metrics` reports of the config center. The counters are bumped where things
//! happen; the number of configs is counted in the store, but only again once the store
//! changed (a scrape after a quiet period costs nothing).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ConfigCenter, ConfigError};

#[derive(Debug, Default)]
pub struct ConfigStats {
    /// Publishes committed (rollbacks included), on this member.
    pub publishes: AtomicU64,
    /// HTTP long-polls held right now.
    pub listeners: AtomicU64,
    /// Long-poll answers that named changed configs.
    pub listener_wakeups: AtomicU64,
    /// (store index it was counted at, count).
    count: Mutex<Option<(u64, u64)>>,
}

impl ConfigStats {
    /// The last count taken by [`ConfigCenter::refresh_count`].
    pub fn configs(&self) -> Option<u64> {
        self.count
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(_, n)| n)
    }

    /// Counts one held long-poll until the guard drops (also when the request is
    /// cancelled because its client went away).
    pub fn hold_listener(&self) -> ListenerGuard<'_> {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        ListenerGuard(self)
    }
}

pub struct ListenerGuard<'a>(&'a ConfigStats);

impl Drop for ListenerGuard<'_> {
    fn drop(&mut self) {
        self.0.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ConfigCenter {
    /// Counts the configs again when the store changed since the last count. The index
    /// moves with every write of every member (PostgreSQL's feed carries the others'),
    /// so the count is never staler than the feed.
    pub async fn refresh_count(&self) -> Result<u64, ConfigError> {
        let Some(kv) = self.handle() else {
            return Err(ConfigError::Unavailable);
        };
        let index = kv.current_index();
        let cached = *self.stats.count.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, n)) = cached
            && at == index
        {
            return Ok(n);
        }
        let n = self.count().await? as u64;
        *self.stats.count.lock().unwrap_or_else(|p| p.into_inner()) = Some((index, n));
        Ok(n)
    }
}
