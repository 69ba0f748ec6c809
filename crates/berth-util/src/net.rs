//! Binding listeners with errors that tell the user which setting to change.

use std::net::SocketAddr;

use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (set by {setting}): {source}; {hint}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub setting: String,
    pub hint: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds a TCP listener; `setting` names the flag that chose `addr` (e.g. `--listen`).
pub async fn bind_tcp(addr: SocketAddr, setting: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError {
        addr,
        setting: setting.to_string(),
        hint: match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another process already uses this address; stop it or pass another address (port 0 picks a free one)"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges; pick a port above 1024"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                "this machine has no such address; use 127.0.0.1 or an address of one of its interfaces"
            }
            _ => "check the address",
        },
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn address_in_use_names_the_setting_and_the_fix() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind_tcp(addr, "--listen").await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("--listen"), "{text}");
        assert!(text.contains("port 0"), "{text}");
    }
}
