//! The one reaper both backend connection pools (the hyper pool and the fast path's raw
//! one) use to drop idle connections past their timeout.

use std::sync::Weak;
use std::time::Duration;

/// A pool whose idle connections expire.
pub trait Reap: Send + Sync + 'static {
    fn idle_timeout(&self) -> Duration;
    /// Drops the idle connections older than the timeout.
    fn reap(&self);
}

/// Reaps every half timeout (at least every 100 ms) until the pool is dropped.
pub async fn reap_every<P: Reap>(pool: Weak<P>) {
    let every = pool
        .upgrade()
        .map(|p| (p.idle_timeout() / 2).max(Duration::from_millis(100)))
        .unwrap_or_default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.reap(),
            None => return,
        }
    }
}
