//! Client-facing listener: accepts connections, completes the TLS handshake on a TLS
//! listener, and hands each connection to the proxy (`proxy::conn` decides which codec
//! serves it). On cancellation it stops accepting and lets open connections finish,
//! bounded by `grace`.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::conn::Connections;
use crate::proxy::{ConnInfo, Proxy};
use crate::tls::TlsAcceptorSource;

pub struct Listener {
    pub listener: TcpListener,
    pub tls: Option<Arc<TlsAcceptorSource>>,
}

/// Runs until `stop` fires, then drains for at most `grace`.
pub async fn serve(
    Listener { listener, tls }: Listener,
    proxy: Arc<Proxy>,
    stop: CancellationToken,
    grace: Duration,
    header_read_timeout: Duration,
) {
    let conns = Connections::new(proxy, header_read_timeout);
    let graceful = GracefulShutdown::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let info = Arc::new(ConnInfo::new(remote, scheme));
        // The watcher keeps the drain waiting for this connection, whichever codec has it.
        let watcher = graceful.watcher();
        let conns = conns.clone();
        match &tls {
            None => {
                tokio::spawn(conns.serve_tcp(stream, info, watcher, stop.clone()));
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    match acceptor.accept(stream).await {
                        Ok(stream) => conns.serve_tls(stream, info, watcher).await,
                        Err(e) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the drain timeout; closing"
        );
    }
}
