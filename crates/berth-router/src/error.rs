//! The router's boundary error: everything `start` and the sources can report to a caller.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr} ({setting}): {source}; pick another address with --{setting}")]
    Bind {
        addr: SocketAddr,
        setting: &'static str,
        source: std::io::Error,
    },
    #[error("TLS certificate or key {}: {reason}", path.display())]
    Tls { path: PathBuf, reason: String },
    #[error("route cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },
    #[error(transparent)]
    Upstreams(#[from] crate::sources::upstreams::UpstreamsError),
    #[error("invalid setting {key}: {reason}")]
    Config { key: &'static str, reason: String },
}
