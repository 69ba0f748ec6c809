//! The node agent: runs instances through drivers (the process driver by default), keeps
//! their records in its data folder so instances survive agent restarts, health-checks
//! them, registers healthy ones in the service registry and reports everything to the
//! server over one long-lived stream.
//!
//! Owns: everything that happens on one node. Speaks `berth-core`'s vocabulary (the
//! launch spec it persists, instance ids and states, resources as requested), decoded
//! from the wire by `berth-wire`; registers through `berth-registry-client`. Must never
//! depend on the server, registry, router or diag crates: it talks to them only over the
//! network (gRPC contract in `berth-proto`, the registry's Nacos HTTP API), so each side
//! can be replaced alone.

mod agent;
pub mod config;
pub mod diag;
pub mod driver;
pub mod health;
pub mod link;
mod logfollow;
pub mod metrics;
mod monitor;
pub mod ports;
pub mod procfs;
pub mod record;
pub mod registry;
pub mod status;
pub mod supervisor;
pub mod tasks;

pub use agent::{AgentHandle, Error, start, start_with_token};
pub use config::AgentConfig;
