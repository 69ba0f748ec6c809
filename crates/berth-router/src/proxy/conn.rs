//! One client connection, from accept to close: which codec serves it, and the handover
//! between them. A plain-TCP connection starts on the HTTP/1.1 fast path (when enabled);
//! once the fast path meets something it does not serve, it hands the connection, from its
//! first unanswered byte, to the general engine (hyper) for the rest of its life. TLS
//! connections, and plain ones with the fast path off, are the general engine's from the
//! start (HTTP/1.1 or HTTP/2: h2c by prior knowledge, or ALPN over TLS).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::fast::{Outcome, Rewind};
use super::{ConnInfo, Proxy};

/// Serves a listener's client connections with the proxy.
pub struct Connections {
    proxy: Arc<Proxy>,
    /// The general engine's connection settings.
    http: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

impl Connections {
    /// `header_read_timeout` bounds the wait for each request head, on either codec.
    pub fn new(proxy: Arc<Proxy>, header_read_timeout: Duration) -> Arc<Self> {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        http.http2().timer(TokioTimer::new());
        Arc::new(Connections {
            proxy,
            http,
            header_read_timeout,
        })
    }

    /// Serves a plain-TCP connection until it closes. `watcher` keeps the listener's drain
    /// waiting for it; `stop` (the drain) closes it between requests.
    pub async fn serve_tcp(
        self: Arc<Self>,
        stream: TcpStream,
        info: Arc<ConnInfo>,
        watcher: Watcher,
        stop: CancellationToken,
    ) {
        if !self.proxy.policy.config().http1_fast_path {
            return self.serve_general(stream, info, watcher).await;
        }
        let outcome = self
            .proxy
            .serve_http1(stream, &info, &stop, self.header_read_timeout)
            .await;
        if let Outcome::Fallback(stream, buffered) = outcome {
            let io = Rewind::new(buffered.freeze(), stream);
            self.serve_general(io, info, watcher).await;
        }
    }

    /// Serves an already established TLS stream with the general engine (ALPN may have
    /// picked HTTP/2).
    pub async fn serve_tls<IO>(self: Arc<Self>, io: IO, info: Arc<ConnInfo>, watcher: Watcher)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.serve_general(io, info, watcher).await;
    }

    async fn serve_general<IO>(&self, io: IO, info: Arc<ConnInfo>, watcher: Watcher)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let remote = info.remote;
        let proxy = self.proxy.clone();
        let svc = service_fn(move |req| {
            let proxy = proxy.clone();
            let info = info.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, &info).await) }
        });
        let conn = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(%remote, error = %e, "client connection ended");
        }
    }
}
