//! Berth's service registry role.
//!
//! Owns: the naming core (namespace -> group -> service -> cluster -> instances), instance
//! liveness and server-side health checks, the durable registry state, UDP push, the Nacos
//! v1 and Consul HTTP APIs and the native gRPC watch stream: the server side only. The
//! clients of these APIs live in `berth-registry-client`.
//!
//! Must never depend on other roles' crates (server, agent, router, diag) nor on
//! `berth-registry-client`: they depend on the registry's public APIs over the network,
//! never the other way round.

pub mod auth;
pub mod checks;
pub mod cluster;
pub mod config;
pub mod config_center;
pub mod core;
pub mod dns;
pub mod grpc;
pub mod http;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod nacos_grpc;
pub mod naming;
pub mod persist;
pub mod push;
pub mod server;
pub mod sessions;

pub use crate::config::RegistryConfig;
pub use crate::core::{BeatResult, CoreOptions, Registry};
pub use crate::model::{HealthStatus, Instance, InstanceKey, Service, ServiceKey};
pub use crate::naming::{Change, NamingError, Op};
pub use crate::server::{Error, RegistryHandle, start};
