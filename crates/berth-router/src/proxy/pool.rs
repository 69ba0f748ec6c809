//! Keep-alive HTTP/1.1 connections to backends, pooled per address.
//!
//! A direct pool over `hyper::client::conn::http1` rather than hyper-util's generic client:
//! a request checks out an idle connection (most recently used first, so warm ones are
//! reused), and the response body checks it back in when it ends. No task is spawned per
//! request and no pool key is built from the URI. A request that an idle connection could
//! not even start (the backend closed it while it sat in the pool) is sent again on
//! another connection, as the generic client does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::RequestBody;

type Sender = SendRequest<RequestBody>;

/// Why a request could not get a response from the backend.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made: nothing was sent, so another endpoint may be tried.
    #[error("cannot connect to the backend: {0}")]
    Connect(std::io::Error),
    #[error("cannot connect to the backend within {0:?}")]
    ConnectTimeout(Duration),
    #[error("backend HTTP/1.1 handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The request was (possibly) sent; it must not be repeated.
    #[error("backend request failed: {0}")]
    Request(#[source] hyper::Error),
}

impl SendError {
    /// True when the backend cannot have seen the request.
    pub fn is_connect(&self) -> bool {
        !matches!(self, SendError::Request(_))
    }
}

pub struct Http1Pool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_backend: usize,
}

struct Idle {
    tx: Sender,
    since: Instant,
}

/// A connection lent to one request; [`Checkin::release`] returns it to the pool.
pub struct Checkin {
    tx: Sender,
    addr: SocketAddr,
    pool: Weak<Inner>,
}

impl Checkin {
    /// Returns the connection for reuse when the response ended cleanly; otherwise drops
    /// it (hyper closes a connection whose response was abandoned half-way).
    pub fn release(self, complete: bool) {
        if !complete || self.tx.is_closed() {
            return;
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self.addr, self.tx);
        }
    }
}

impl Http1Pool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        let inner = Arc::new(Inner {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
            max_idle_per_backend: max_idle,
        });
        // Close connections idle past the limit even when their backend sees no traffic.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(super::idle::reap_every(Arc::downgrade(&inner)));
        }
        Http1Pool { inner }
    }

    /// Sends `req` (origin-form URI, `Host` set) to `addr` on a pooled or new connection.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Checkin), SendError> {
        while let Some(mut tx) = self.inner.take(addr) {
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.checkin(tx, addr))),
                Err(mut e) => match e.take_message() {
                    // Never started on this connection: try the next one.
                    Some(back) => req = back,
                    None => return Err(SendError::Request(e.into_error())),
                },
            }
        }
        let mut tx = self.connect(addr).await?;
        match tx.try_send_request(req).await {
            Ok(resp) => Ok((resp, self.checkin(tx, addr))),
            Err(e) => Err(SendError::Request(e.into_error())),
        }
    }

    fn checkin(&self, tx: Sender, addr: SocketAddr) -> Checkin {
        Checkin {
            tx,
            addr,
            pool: Arc::downgrade(&self.inner),
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, SendError> {
        let timeout = self.inner.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::ConnectTimeout(timeout)),
        };
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %addr, error = %e, "backend connection ended");
            }
        });
        Ok(tx)
    }

    /// Idle connections held now (all backends).
    pub fn idle_count(&self) -> usize {
        self.inner.lock().values().map(Vec::len).sum()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection that can take a request now. Closed and
    /// expired ones are dropped; busy ones (still finishing a response) stay.
    fn take(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.lock();
        let list = idle.get_mut(&addr)?;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let c = &list[i];
            if c.tx.is_closed() || c.since.elapsed() >= self.idle_timeout {
                list.remove(i);
            } else if c.tx.is_ready() {
                return Some(list.remove(i).tx);
            }
        }
        None
    }

    fn put(&self, addr: SocketAddr, tx: Sender) {
        let mut idle = self.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle_per_backend {
            list.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    fn reap(&self) {
        let limit = self.idle_timeout;
        self.lock().retain(|_, list| {
            list.retain(|c| !c.tx.is_closed() && c.since.elapsed() < limit);
            !list.is_empty()
        });
    }
}

impl super::idle::Reap for Inner {
    fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
    fn reap(&self) {
        Inner::reap(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(e.is_connect(), "{e}");
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
