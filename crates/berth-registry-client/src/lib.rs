//! Every client of the service registry, for the roles that talk to it: the agent
//! (registers its instances), the diagnostics gateway (registers itself and the nodes it
//! holds), the server (looks a node's gateway up), the router and `berth services` (watch).
//!
//! - [`nacos`]: the Nacos v1 HTTP API (register, beat, deregister, list instances), which
//!   Berth's registry and a real Nacos both speak.
//! - [`watch`]: the native gRPC watch (snapshot, then every change).
//! - [`names`]: the names of the registry services Berth itself writes and reads.
//!
//! Owns: the request formats and their error messages on the client side. Must never
//! depend on `berth-registry` (the server side, which may be replaced by a real Nacos) nor
//! on any role crate: it speaks only the wire contracts.

pub mod nacos;
pub mod names;
pub mod watch;

pub use nacos::{
    BeatOutcome, Credentials, ListedInstance, NacosClient, Registration, RegistryError,
};
