//! What every part of the server shares.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::agents::sessions::Sessions;
use crate::config::ServerConfig;
use crate::deploy::Deployments;
use crate::events::EventBus;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::reconcile::plan::PlanConfig;
use crate::state::RealState;
use crate::store::StoreHandle;

pub struct Ctx {
    pub config: ServerConfig,
    pub store: StoreHandle,
    pub state: Mutex<RealState>,
    /// How to reach each connected agent (take after `state` when both are needed).
    pub sessions: Sessions,
    pub events: EventBus,
    /// Deployments being followed, one per app at most.
    pub deployments: Deployments,
    /// Wakes the reconciler.
    pub wake: Notify,
    pub metrics: Metrics,
    pub registry: Arc<prometheus_client::registry::Registry>,
    pub server_id: String,
    pub started_ms: u64,
    /// Serialises writes to the store so version ids stay increasing.
    pub write_lock: tokio::sync::Mutex<Option<berth_core::VersionId>>,
    /// Fires on shutdown; long-lived responses (SSE) end with it.
    pub cancel: tokio_util::sync::CancellationToken,
    /// Whether this server leads, and if not who does (see `leader`).
    pub leadership: Mutex<Leadership>,
    /// Recent failed token attempts per client address (see `api::auth`).
    pub auth_failures: crate::api::auth::Failures,
    /// Resolved ACL tokens (emptied by every ACL change and on taking the leadership).
    pub tokens: crate::api::token_cache::TokenCache,
    /// The server's certificate, when it has one: it also presents it to the diagnostics
    /// gateways it calls.
    pub tls: Option<Arc<berth_identity::ReloadingTls>>,
}

impl Ctx {
    pub fn lock_state(&self) -> MutexGuard<'_, RealState> {
        // Every mutation is a few map operations that cannot leave the state half-done
        // in a way that matters: reuse it after a panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the leadership state; returns the previous one.
    pub fn set_leadership(&self, next: Leadership) -> Leadership {
        let mut guard = self.leadership.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, next)
    }

    pub fn plan_config(&self) -> PlanConfig {
        PlanConfig {
            launch_timeout: self.config.launch_timeout,
            stop_retry: self.config.stop_drain
                + self.config.stop_grace
                + self.config.launch_timeout,
            drain_ms: self.config.stop_drain.as_millis() as u32,
            grace_ms: self.config.stop_grace.as_millis() as u32,
        }
    }
}
