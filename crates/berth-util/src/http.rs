//! Serving an axum router with the shared graceful-shutdown contract: once shutdown fires
//! the listener stops accepting, idle keep-alive connections close, in-flight requests
//! finish, and after `grace` whatever is left (a stuck stream, an open SSE feed) is dropped.

use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::{Listener, ListenerExt};
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// Serves `router` on `listener` (a `TcpListener`, or any listener of TCP peers such as
/// the HTTPS one of berth-identity) as a task tracked by `shutdown`. Handlers can read
/// the client's address as `ConnectInfo<SocketAddr>`.
pub fn serve<L>(
    listener: L,
    router: axum::Router,
    shutdown: &Shutdown,
    grace: Duration,
) -> JoinHandle<()>
where
    L: Listener<Addr = SocketAddr>,
{
    let addr = listener.local_addr().ok();
    let stop_accepting = shutdown.cancelled();
    let deadline = shutdown.cancelled();
    shutdown.spawn(async move {
        // `tap_io` only so axum hands the peer address to `ConnectInfo` for any listener.
        let server = axum::serve(
            listener.tap_io(|_| {}),
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_accepting);
        tokio::select! {
            result = server => {
                if let Err(err) = result {
                    tracing::error!(?addr, %err, "HTTP server failed");
                }
            }
            _ = async { deadline.await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?addr, ?grace, "HTTP connections still open after the grace period; closing them");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn in_flight_requests_finish_and_new_connections_are_refused() {
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let router = axum::Router::new().route(
            "/slow",
            get({
                let release = release.clone();
                let entered = entered.clone();
                move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "finished"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = serve(listener, router, &shutdown, Duration::from_secs(10));

        let request = tokio::spawn(async move {
            let response = reqwest::get(format!("http://{addr}/slow")).await.unwrap();
            (response.status(), response.text().await.unwrap())
        });
        entered.notified().await;
        shutdown.trigger();
        // The listener closes while the request is still being handled.
        crate::test_support::wait_until_refused(addr).await;
        release.notify_one();
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "finished");
        shutdown.drain(Duration::from_secs(5)).await.unwrap();
        assert!(task.is_finished());
    }

    #[tokio::test]
    async fn stuck_requests_are_cut_after_the_grace_period() {
        let entered = Arc::new(Notify::new());
        let router = axum::Router::new().route(
            "/stuck",
            get({
                let entered = entered.clone();
                move || async move {
                    entered.notify_one();
                    std::future::pending::<()>().await;
                    "never"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let task = serve(listener, router, &shutdown, Duration::from_millis(200));
        let request = tokio::spawn(reqwest::get(format!("http://{addr}/stuck")));
        entered.notified().await;
        shutdown.trigger();
        // The server stops waiting for the stuck request after the grace period, so the
        // role can exit; the process exit then closes the connection.
        shutdown.drain(Duration::from_secs(5)).await.unwrap();
        assert!(task.is_finished());
        assert!(
            !request.is_finished(),
            "the stuck request was still in flight"
        );
        request.abort();
    }
}
