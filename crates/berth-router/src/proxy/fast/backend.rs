//! Backend connections of the fast path: plain TCP streams, each with its own read buffer,
//! kept alive in the shared idle pool.
//!
//! Unlike the general engine's HTTP/1.1 client there is no connection task: the client connection's
//! task writes the request and reads the answer itself, so a request costs no wake-up of
//! another task and no channel hand-off.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy::policy::BackendError;
use crate::proxy::pool::{IdlePool, Reusable, State};

/// Response heads larger than this are refused (502).
pub const MAX_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

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
    pub async fn send(&mut self, request: &[u8]) -> Result<(), BackendError> {
        self.buf.clear();
        self.stream.write_all(request).await.map_err(|e| {
            if self.reused {
                BackendError::Stale(e)
            } else {
                BackendError::Io(e)
            }
        })
    }

    /// Reads until `buf` holds more than `have` bytes; classifies failures before the
    /// first byte of an answer (`have == 0`) on a reused connection as stale.
    pub async fn fill(&mut self, have: usize) -> Result<(), BackendError> {
        let stale = self.reused && have == 0;
        match self.read_more().await {
            Ok(0) if stale => Err(BackendError::Stale(io::ErrorKind::UnexpectedEof.into())),
            Ok(0) if have == 0 => Err(BackendError::Closed),
            Ok(0) => Err(BackendError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => Ok(()),
            Err(e) if stale => Err(BackendError::Stale(e)),
            Err(e) => Err(BackendError::Io(e)),
        }
    }
}

impl Reusable for Conn {
    fn state(&self) -> State {
        if looks_open(&self.stream) {
            State::Ready
        } else {
            State::Gone
        }
    }

    /// Only the probe on checkout tells (it also clears stale readiness, which the reaper
    /// must not do behind a connection's back).
    fn is_closed(&self) -> bool {
        false
    }
}

/// The fast path's backend connections: the shared idle pool over raw TCP connections.
pub struct RawPool {
    idle: IdlePool<Conn>,
}

impl RawPool {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        RawPool {
            idle: IdlePool::new(connect_timeout, idle_timeout, max_idle),
        }
    }

    /// The most recently used idle connection to `addr` that still looks open.
    pub fn take(&self, addr: SocketAddr) -> Option<Conn> {
        self.idle.take(addr)
    }

    /// Keeps `conn` for the next request to `addr`.
    pub fn put(&self, addr: SocketAddr, mut conn: Conn) {
        conn.reused = true;
        self.idle.put(addr, conn);
    }

    pub async fn connect(&self, addr: SocketAddr) -> Result<Conn, BackendError> {
        Ok(Conn {
            stream: self.idle.connect(addr).await?,
            buf: BytesMut::with_capacity(READ_CHUNK),
            reused: false,
        })
    }

    /// Idle connections held now (all backends).
    pub fn idle_count(&self) -> usize {
        self.idle.idle_count()
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
