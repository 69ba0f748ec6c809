//! Idle keep-alive connections to backends, per backend address, for either codec: the
//! general engine pools hyper's HTTP/1.1 senders, the fast path its raw TCP connections.
//!
//! A request checks out the most recently used idle connection that can take it (warm ones
//! are reused), and checks it back in when its answer ended cleanly. A background reaper
//! drops connections idle past the timeout even when their backend sees no traffic. New
//! connections are made here too, so both codecs connect with the same timeout and options.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::policy::BackendError;

/// A connection the pool can hold.
pub trait Reusable: Send + 'static {
    /// Whether the connection can carry a request now.
    fn state(&self) -> State;
    /// Known closed, so the reaper drops it before it expires.
    fn is_closed(&self) -> bool;
}

/// What an idle connection can do now.
pub enum State {
    Ready,
    /// Still finishing an earlier answer: it stays in the pool.
    Busy,
    /// Closed or unusable: it is dropped.
    Gone,
}

pub struct IdlePool<C> {
    shared: Arc<Shared<C>>,
}

/// A handle that returns connections to a pool without keeping it alive.
pub struct WeakPool<C>(Weak<Shared<C>>);

struct Shared<C> {
    idle: Mutex<HashMap<SocketAddr, Vec<(C, Instant)>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_backend: usize,
}

impl<C: Reusable> IdlePool<C> {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Self {
        let shared = Arc::new(Shared {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
            max_idle_per_backend: max_idle,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap_every(Arc::downgrade(&shared)));
        }
        IdlePool { shared }
    }

    /// The most recently used idle connection to `addr` that can take a request now.
    /// Expired and gone ones are dropped on the way; busy ones stay.
    pub fn take(&self, addr: SocketAddr) -> Option<C> {
        let mut idle = self.shared.lock();
        let list = idle.get_mut(&addr)?;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let (conn, since) = &list[i];
            if since.elapsed() >= self.shared.idle_timeout {
                list.remove(i);
                continue;
            }
            match conn.state() {
                State::Ready => return Some(list.remove(i).0),
                State::Busy => {}
                State::Gone => {
                    list.remove(i);
                }
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `addr` (unless `addr` has enough idle ones).
    pub fn put(&self, addr: SocketAddr, conn: C) {
        self.shared.put(addr, conn);
    }

    pub fn downgrade(&self) -> WeakPool<C> {
        WeakPool(Arc::downgrade(&self.shared))
    }

    /// A new TCP connection to `addr` (no delay), bounded by the connect timeout.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream, BackendError> {
        let timeout = self.shared.connect_timeout;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(BackendError::Connect(e)),
            Err(_) => return Err(BackendError::ConnectTimeout(timeout)),
        };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Idle connections held now (all backends).
    pub fn idle_count(&self) -> usize {
        self.shared.lock().values().map(Vec::len).sum()
    }
}

impl<C: Reusable> WeakPool<C> {
    /// Like [`IdlePool::put`]; a no-op once the pool is gone.
    pub fn put(&self, addr: SocketAddr, conn: C) {
        if let Some(pool) = self.0.upgrade() {
            pool.put(addr, conn);
        }
    }
}

impl<C: Reusable> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Vec<(C, Instant)>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, addr: SocketAddr, conn: C) {
        let mut idle = self.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle_per_backend {
            list.push((conn, Instant::now()));
        }
    }

    fn reap(&self) {
        let limit = self.idle_timeout;
        self.lock().retain(|_, list| {
            list.retain(|(conn, since)| !conn.is_closed() && since.elapsed() < limit);
            !list.is_empty()
        });
    }
}

/// Reaps every half timeout (at least every 100 ms) until the pool is dropped.
async fn reap_every<C: Reusable>(pool: Weak<Shared<C>>) {
    let every = pool
        .upgrade()
        .map(|p| (p.idle_timeout / 2).max(Duration::from_millis(100)))
        .unwrap_or_default();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.reap(),
            None => return,
        }
    }
}
