//! The registry's HTTP listener: Nacos v1 naming API, Nacos v1 and v2 config APIs, Consul
//! API subset, metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::core::Registry;
use crate::model::BeatTimings;
use crate::push::PushService;

pub mod config;
pub mod config_history;
pub mod config_listen;
pub mod config_v2;
pub mod consul;
pub mod consul_kv;
pub mod consul_session;
pub mod consul_txn;
pub mod list_cache;
pub mod nacos;
pub mod nacos_json;
pub mod params;
pub mod serve;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub registry: Registry,
    pub push: Arc<PushService>,
    pub beat: BeatTimings,
    /// Rendered instance lists, reused until their service changes.
    pub lists: Arc<list_cache::HostsCache>,
    /// The bound HTTP address (Consul's `status/leader` answers with it).
    pub http_addr: std::net::SocketAddr,
    /// The cluster member, when running with peers.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The Nacos config center (v1 and v2 config APIs).
    pub configs: Arc<crate::config_center::ConfigCenter>,
    /// Consul sessions and KV (the config center's store, spaces `kv` and `session`);
    /// `None` in a cluster without a shared store.
    pub sessions: Option<crate::sessions::SessionStore>,
}

/// Every HTTP route of the registry.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(nacos::routes())
        .merge(config::routes())
        .merge(consul_kv::routes())
        .merge(consul_session::routes())
        .merge(consul_txn::routes())
        .merge(consul::routes())
        .layer(DefaultBodyLimit::max(params::MAX_BODY))
        .with_state(state)
}
