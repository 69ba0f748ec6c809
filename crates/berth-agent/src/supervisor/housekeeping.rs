//! Periodic upkeep: log rotation of running instances, and forgetting instances that
//! finished longer ago than the retention.

use std::path::PathBuf;

use crate::record::now_ms;

use super::Supervisor;

impl Supervisor {
    /// Rotates oversized logs and forgets instances that ended long enough ago.
    pub fn spawn_housekeeping(&self) {
        let this = self.clone();
        let token = self.inner.tasks.token().clone();
        self.inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(this.inner.config.housekeeping_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => this.housekeeping(),
                    _ = token.cancelled() => return,
                }
            }
        });
    }

    fn housekeeping(&self) {
        let config = &self.inner.config;
        let cutoff = now_ms() - config.terminal_retention.as_millis() as i64;
        let mut live_logs: Vec<PathBuf> = Vec::new();
        let mut expired = Vec::new();
        {
            let mut state = self.lock();
            state.instances.retain(|id, slot| {
                if slot.record.phase.is_terminal() && slot.record.updated_at_ms < cutoff {
                    expired.push(id.clone());
                    return false;
                }
                if !slot.record.phase.is_terminal() {
                    let logs = self.inner.store.logs(id);
                    live_logs.push(logs.stdout);
                    live_logs.push(logs.stderr);
                }
                true
            });
        }
        for id in expired {
            tracing::debug!(instance = %id, "forgetting a finished instance");
            self.inner.store.remove(&id);
        }
        for path in live_logs {
            if let Err(err) = config.log_rotator.rotate_if_needed(&path) {
                tracing::warn!(path = %path.display(), "cannot rotate log: {err}");
            }
        }
    }
}
