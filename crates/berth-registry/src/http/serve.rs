//! The HTTP accept loop. The registry serves HTTP/1.1 itself (instead of the shared
//! helper) for one reason: Consul clients read `X-Consul-Index` and some match the header
//! case exactly, so response headers go out title-cased.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use berth_util::shutdown::Shutdown;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// Serves `router` until `shutdown`, then lets requests finish for at most `grace`.
/// `listener` is the bound `TcpListener`, or berth-identity's HTTPS listener.
pub fn serve<L>(
    mut listener: L,
    router: Router,
    shutdown: &Shutdown,
    grace: Duration,
) -> JoinHandle<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let token = shutdown.token();
    shutdown.spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = token.cancelled() => break,
                // Accept errors (out of file descriptors and the like) are retried by
                // the listener itself, after a pause.
                accepted = listener.accept() => accepted,
            };
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let router = router.clone();
                async move {
                    let response = router
                        .oneshot(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                    Ok::<_, Infallible>(response)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .title_case_headers(true)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(%err, %peer, "HTTP connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "HTTP connections still open after the grace period; closing them"
            );
        }
    })
}
