//! Plumbing every Berth role uses from its first line: layered configuration, logging,
//! Prometheus metrics, graceful shutdown, the "ready" line, data folders and listeners.
//!
//! This crate sits at the bottom of the workspace: it must never depend on another Berth
//! crate, and it holds no domain knowledge (no apps, instances, routes or services).
#![forbid(unsafe_code)]

pub mod config;
pub mod datadir;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod net;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod ready;
pub mod shutdown;

#[cfg(test)]
mod test_support;
