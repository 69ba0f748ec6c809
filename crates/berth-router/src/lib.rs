//! The router role: Berth's HTTP traffic entry.
//!
//! Owns the route table (host and path-prefix routes to endpoints, swapped atomically and
//! read without locks), the route sources that feed it (registry watch, gorouter-compatible
//! NATS messages, the on-disk route cache), the proxy engine, and the status endpoints.
//!
//! Must never depend on another role's crate (registry, server, agent, diag): it talks to
//! the registry only through its watch contract (`berth-proto`, opened with
//! `berth-registry-client`), so the router keeps routing while the control plane is down.

mod config;
mod error;
mod handle;

pub mod balance;
pub mod endpoint;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod server;
pub mod sources;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;

pub use config::RouterConfig;
pub use error::Error;
pub use handle::{RouterHandle, start};
pub use route::{EndpointSpec, Host, LbAlgorithm, PathPrefix, RouteEntry, RouteError, RouteKey};
pub use store::RouteStore;
