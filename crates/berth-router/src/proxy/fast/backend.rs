//! Backend connections of the fast path: plain TCP streams kept alive per backend address,
//! each with its own read buffer, and one request/response-head exchange on them.
//!
//! Unlike the general engine's pool there is no connection task: the client connection's
//! task writes the request and reads the answer itself, so a request costs no wake-up of
//! another task and no channel hand-off.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Response heads larger than this are refused (502).
pub const MAX_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing was sent: another endpoint may be tried.
    #[error("cannot connect to the backend: {0}")]
    Connect(io::Error),
    #[error("cannot connect to the backend within {0:?}")]
    ConnectTimeout(Duration),
    /// A reused idle connection failed before any byte of an answer: the backend closed
    /// it while idle, so the request is sent again on another connection.
    #[error("idle backend connection was closed: {0}")]
    Stale(io::Error),
    #[error("backend request failed: {0}")]
    Io(io::Error),
    #[error("backend closed the connection before answering")]
    Closed,
    #[error("invalid backend response head: {0}")]
    BadResponse(&'static str),
}

impl ExchangeError {
    /// True when the backend cannot have seen the request.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            ExchangeError::Connect(_) | ExchangeError::ConnectTimeout(_)
        )
    }
}

/// One backend connection and the bytes read from it but not yet relayed.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// It carried an earlier request (so a failure before any answer means it went stale).
    pub reused: bool,
}

impl Conn {
    /// Reads more into `buf`; `Ok(0)` at end of stream.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        self.stream.read_buf(&mut self.buf).await
    }

    /// Writes the whole request. A failure on a reused connection means it went stale.
    pub async fn send(&mut self, request: &[u8]) -> Result<(), ExchangeError> {
        self.buf.clear();
        self.stream.write_all(request).await.map_err(|e| {
            if self.reused {
                ExchangeError::Stale(e)
            } else {
                ExchangeError::Io(e)
            }
        })
    }

    /// Reads until `buf` holds more than `have` bytes; classifies failures before the
    /// first byte of an answer (`have == 0`) on a reused connection as stale.
    pub async fn fill(&mut self, have: usize) -> Result<(), ExchangeError> {
        let stale = self.reused && have == 0;
        match self.read_more().await {
            Ok(0) if stale => Err(ExchangeError::Stale(io::ErrorKind::UnexpectedEof.into())),
            Ok(0) if have == 0 => Err(ExchangeError::Closed),
            Ok(0) => Err(ExchangeError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) if stale => Err(ExchangeError::Stale(e)),
            Err(e) => Err(ExchangeError::Io(e)),
        }
    }
}

pub struct RawPool {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Mutex<HashMap<SocketAddr, Vec<(Conn, Instant)>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_backend: usize,
}

impl RawPool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        let inner = Arc::new(Inner {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
            max_idle_per_backend: max_idle,
        });
        // Close connections idle past the limit even when their backend sees no traffic.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(crate::proxy::idle::reap_every(Arc::downgrade(&inner)));
        }
        RawPool { inner }
    }

    /// The most recently used idle connection to `addr` that still looks open.
    pub fn take(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.inner.lock();
        let list = idle.get_mut(&addr)?;
        while let Some((mut conn, since)) = list.pop() {
            if since.elapsed() < self.inner.idle_timeout && looks_open(&conn.stream) {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `addr`.
    pub fn put(&self, addr: SocketAddr, conn: Conn) {
        let mut idle = self.inner.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < self.inner.max_idle_per_backend {
            list.push((conn, Instant::now()));
        }
    }

    pub async fn connect(&self, addr: SocketAddr) -> Result<Conn, ExchangeError> {
        let timeout = self.inner.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ExchangeError::Connect(e)),
            Err(_) => return Err(ExchangeError::ConnectTimeout(timeout)),
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            reused: false,
        })
    }

    /// Idle connections held now (all backends).
    pub fn idle_count(&self) -> usize {
        self.inner.lock().values().map(Vec::len).sum()
    }
}

/// An idle connection has nothing to read. When the runtime has seen it become readable
/// (or never saw it drained), one non-blocking read tells: "would block" means open and
/// idle; end of stream, an error or unsolicited bytes (a late `408`) mean it cannot carry
/// a request. The probe also clears the stale readiness, so the read of the answer waits
/// for the backend instead of trying first.
fn looks_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Vec<(Conn, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reap(&self) {
        let limit = self.idle_timeout;
        self.lock().retain(|_, list| {
            list.retain(|(_, since)| since.elapsed() < limit);
            !list.is_empty()
        });
    }
}

impl crate::proxy::idle::Reap for Inner {
    fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }
    fn reap(&self) {
        Inner::reap(self)
    }
}
