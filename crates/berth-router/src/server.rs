//! Client-facing listener: accepts connections, speaks HTTP/1.1 or HTTP/2 (h2c by prior
//! knowledge, or ALPN over TLS) and hands each request to the proxy engine. Plain
//! connections start on the HTTP/1.1 fast path, which hands anything unusual to the
//! general (hyper) engine. On cancellation it stops accepting and lets open connections
//! finish, bounded by `grace`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::fast::{self, Outcome, Rewind};
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let fast_path = proxy.fast_path();
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
        let svc = {
            let (proxy, info) = (proxy.clone(), info.clone());
            service_fn(move |req| {
                let proxy = proxy.clone();
                let info = info.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, &info).await) }
            })
        };
        let builder = builder.clone();
        match &tls {
            None if fast_path => {
                // The watcher keeps the drain waiting for this connection on either path.
                let watcher = graceful.watcher();
                let (stop, proxy) = (stop.clone(), proxy.clone());
                tokio::spawn(async move {
                    let outcome = fast::serve(proxy, stream, info, stop, header_read_timeout).await;
                    if let Outcome::Fallback(stream, buffered) = outcome {
                        let io = Rewind::new(buffered.freeze(), stream);
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(io), svc)
                            .into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%remote, error = %e, "client connection ended");
                        }
                    }
                });
            }
            None => {
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%remote, error = %e, "client connection ended");
                    }
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match acceptor.accept(stream).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(%remote, error = %e, "client connection ended");
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
