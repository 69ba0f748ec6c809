//! The general engine's HTTP/1.1 client: hyper's `client::conn::http1` over the shared
//! idle pool, rather than hyper-util's generic client. No task is spawned per request and
//! no pool key is built from the URI. A request that an idle connection could not even
//! start (the backend closed it while it sat in the pool) is sent again on another
//! connection, as the generic client does.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::body::RequestBody;
use crate::proxy::policy::BackendError;
use crate::proxy::pool::{IdlePool, Reusable, State, WeakPool};

type Sender = SendRequest<RequestBody>;

impl Reusable for Sender {
    fn state(&self) -> State {
        if self.is_closed() {
            State::Gone
        } else if self.is_ready() {
            State::Ready
        } else {
            State::Busy
        }
    }

    fn is_closed(&self) -> bool {
        SendRequest::is_closed(self)
    }
}

pub struct Http1Pool {
    idle: IdlePool<Sender>,
}

/// A connection lent to one request; [`Checkin::release`] returns it to the pool.
pub struct Checkin {
    tx: Sender,
    addr: SocketAddr,
    pool: WeakPool<Sender>,
}

impl Checkin {
    /// Returns the connection for reuse when the response ended cleanly; otherwise drops
    /// it (hyper closes a connection whose response was abandoned half-way).
    pub fn release(self, complete: bool) {
        if !complete || self.tx.is_closed() {
            return;
        }
        self.pool.put(self.addr, self.tx);
    }
}

impl Http1Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        Http1Pool {
            idle: IdlePool::new(connect_timeout, idle_timeout, max_idle),
        }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr` on a pooled or new connection.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Checkin), BackendError> {
        while let Some(mut tx) = self.idle.take(addr) {
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.checkin(tx, addr))),
                Err(mut e) => match e.take_message() {
                    // Never started on this connection: try the next one.
                    Some(back) => req = back,
                    None => return Err(BackendError::Request(e.into_error())),
                },
            }
        }
        let mut tx = self.connect(addr).await?;
        match tx.try_send_request(req).await {
            Ok(resp) => Ok((resp, self.checkin(tx, addr))),
            Err(e) => Err(BackendError::Request(e.into_error())),
        }
    }

    fn checkin(&self, tx: Sender, addr: SocketAddr) -> Checkin {
        Checkin {
            tx,
            addr,
            pool: self.idle.downgrade(),
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, BackendError> {
        let stream = self.idle.connect(addr).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(BackendError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended");
            }
        });
        Ok(tx)
    }

    /// Idle connections held now (all backends).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.idle_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend answering every request on a connection, counting connections.
    async fn backend() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut have = Vec::new();
                    loop {
                        let n = match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        have.extend_from_slice(&buf[..n]);
                        while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            have.drain(..end + 4);
                            let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(r).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    fn get() -> Request<RequestBody> {
        let mut r = Request::new(RequestBody::empty());
        *r.uri_mut() = "/".parse().unwrap();
        r.headers_mut()
            .insert(http::header::HOST, "b.example".parse().unwrap());
        r
    }

    async fn drain(resp: Response<Incoming>) {
        use http_body_util::BodyExt;
        resp.into_body().collect().await.unwrap();
    }

    #[tokio::test]
    async fn connections_are_reused_after_the_body_ends() {
        let (addr, conns) = backend().await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(30), 8);
        for _ in 0..5 {
            let (resp, checkin) = pool.send(addr, get()).await.unwrap();
            drain(resp).await;
            checkin.release(true);
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn incomplete_responses_do_not_return_their_connection() {
        let (addr, conns) = backend().await;
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(30), 8);
        let (_resp, checkin) = pool.send(addr, get()).await.unwrap();
        checkin.release(false);
        assert_eq!(pool.idle_count(), 0);
        let (resp, checkin) = pool.send(addr, get()).await.unwrap();
        drain(resp).await;
        checkin.release(true);
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refused_connection_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(30), 8);
        let e = pool.send(addr, get()).await.err().unwrap();
        assert!(e.retryable(), "{e}");
    }

    #[tokio::test]
    async fn a_connection_the_backend_closes_is_not_reused() {
        // One answer per connection, announced with `connection: close`.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        let pool = Http1Pool::new(Duration::from_secs(1), Duration::from_secs(30), 8);
        for _ in 0..3 {
            let (resp, checkin) = pool.send(addr, get()).await.unwrap();
            drain(resp).await;
            checkin.release(true);
        }
        assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
