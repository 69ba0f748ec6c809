//! Hand-off of writes whose owner did not answer.
//!
//! A write for a key another member owns is forwarded there. When that call fails (the
//! owner is slow, cut off or dead) the write must not be applied here: the owner's next
//! state of the key would overwrite it and the write would be lost. It waits instead in
//! a queue per owner, behind any earlier write of the same service, and a worker per
//! peer re-sends it with the same sequence number (the owner applies each number once,
//! [`super::idempotence`]) until the owner acknowledges it. If ownership moves meanwhile,
//! the service's waiting writes move to the new owner's queue in order; if this member
//! becomes the owner, it applies them itself.
//!
//! The queues are bounded (`cluster_handoff_limit` writes in all): past it a write is
//! refused with an error that says to retry, rather than held without limit.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::membership::PeerEntry;
use super::{Cluster, ClusterError};
use crate::core::{Forwarded, ForwardedReply};
use crate::model::ServiceKey;

/// One write waiting for its owner.
pub struct Entry {
    pub seq: InFlight,
    pub write: Forwarded,
    /// The client still waiting for the owner's answer, if any.
    pub reply: Option<oneshot::Sender<ForwardedReply>>,
    pub since: Instant,
}

/// A sequence number of a write for one owner that this member has not finished with:
/// that owner keeps its record of numbers at or above the lowest one still in flight
/// for it ([`Seqs::low`]), so a write stuck for a dead owner holds no other owner's
/// record open. A write that moves to another owner gets a new number there.
pub struct InFlight {
    pub seq: u64,
    pub owner: String,
    seqs: Arc<Seqs>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut open = self.seqs.lock();
        if let Some(set) = open.get_mut(&self.owner) {
            set.remove(&self.seq);
            if set.is_empty() {
                open.remove(&self.owner);
            }
        }
    }
}

/// Sequence numbers of forwarded writes, and those not finished yet, by owner.
#[derive(Default)]
pub struct Seqs {
    next: std::sync::atomic::AtomicU64,
    open: Mutex<HashMap<String, BTreeSet<u64>>>,
}

impl Seqs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeSet<u64>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn start(self: &Arc<Self>, owner: &str) -> InFlight {
        // Numbered under the lock that [`Seqs::low`] reads: a number is never handed
        // out that a concurrent `low` already declared finished.
        let mut open = self.lock();
        let seq = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        open.entry(owner.to_string()).or_default().insert(seq);
        drop(open);
        InFlight {
            seq,
            owner: owner.to_string(),
            seqs: self.clone(),
        }
    }

    /// Every number for `owner` below this one is finished: never sent again.
    pub fn low(&self, owner: &str) -> u64 {
        let open = self.lock();
        open.get(owner)
            .and_then(|s| s.first().copied())
            .unwrap_or_else(|| self.next.load(Ordering::Relaxed) + 1)
    }
}

#[derive(Default)]
struct State {
    /// Waiting writes by owner id, oldest first.
    queues: HashMap<String, VecDeque<Entry>>,
    /// Which queue holds a service's waiting writes, and how many: a later write of the
    /// service joins them there, so one service's writes reach the owner in order.
    services: HashMap<ServiceKey, (String, usize)>,
    len: usize,
}

impl State {
    fn forget(&mut self, key: &ServiceKey, n: usize) {
        if let Some((_, count)) = self.services.get_mut(key) {
            *count -= n.min(*count);
            if *count == 0 {
                self.services.remove(key);
            }
        }
        self.len -= n.min(self.len);
    }
}

/// Every queue of this member.
pub struct Handoff {
    state: Mutex<State>,
    pub(crate) notify: Notify,
    limit: usize,
    pub(crate) seqs: Arc<Seqs>,
}

/// What [`Handoff::push`] did.
pub enum Pushed {
    Queued,
    /// The queues hold `cluster_handoff_limit` writes already.
    Full,
    /// No write of the service waits (and no owner was given).
    NoQueue,
}

/// One owner's queue as the cluster view shows it.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub waiting: usize,
    pub oldest_ms: u64,
}

impl Handoff {
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            limit: limit.max(1),
            seqs: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when writes of `key` wait: a new one must queue behind them.
    pub fn holds(&self, key: &ServiceKey) -> bool {
        self.lock().services.contains_key(key)
    }

    /// Queues a write behind its service's waiting writes wherever they are, else for
    /// `owner` (`None`: only behind waiting writes).
    pub fn push(&self, owner: Option<&str>, entry: Entry) -> Pushed {
        let mut st = self.lock();
        if st.len >= self.limit {
            return Pushed::Full;
        }
        let key = entry.write.service().clone();
        let queue = match (st.services.get_mut(&key), owner) {
            (Some(slot), _) => {
                slot.1 += 1;
                slot.0.clone()
            }
            (None, Some(owner)) => {
                st.services.insert(key, (owner.to_string(), 1));
                owner.to_string()
            }
            (None, None) => return Pushed::NoQueue,
        };
        st.queues.entry(queue).or_default().push_back(entry);
        st.len += 1;
        drop(st);
        self.notify.notify_waiters();
        Pushed::Queued
    }

    /// The oldest write waiting for `owner`: its number and a copy to send. A write
    /// numbered for another owner (it moved, or joined its service's queue) is
    /// renumbered for this one.
    fn front(&self, owner: &str) -> Option<(u64, Forwarded)> {
        let mut st = self.lock();
        let e = st.queues.get_mut(owner)?.front_mut()?;
        if e.seq.owner != owner {
            e.seq = self.seqs.start(owner);
        }
        Some((e.seq.seq, e.write.clone()))
    }

    /// Removes the oldest write of `owner` if it is still number `seq`.
    fn pop(&self, owner: &str, seq: u64) -> Option<Entry> {
        let mut st = self.lock();
        let q = st.queues.get_mut(owner)?;
        if q.front().is_none_or(|e| e.seq.seq != seq) {
            return None;
        }
        let e = q.pop_front()?;
        if q.is_empty() {
            st.queues.remove(owner);
        }
        st.forget(e.write.service(), 1);
        Some(e)
    }

    /// Moves every waiting write of `key` from `from`'s queue to the end of `to`'s, in
    /// order (`to` holds none of them: one service's writes are in one queue).
    fn reroute(&self, key: &ServiceKey, from: &str, to: &str) -> usize {
        let mut st = self.lock();
        let Some(q) = st.queues.get_mut(from) else {
            return 0;
        };
        let (moved, kept): (VecDeque<Entry>, VecDeque<Entry>) =
            q.drain(..).partition(|e| e.write.service() == key);
        if kept.is_empty() {
            st.queues.remove(from);
        } else {
            *q = kept;
        }
        let n = moved.len();
        st.queues.entry(to.to_string()).or_default().extend(moved);
        st.services.insert(key.clone(), (to.to_string(), n));
        drop(st);
        self.notify.notify_waiters();
        n
    }

    /// Writes waiting in all.
    pub fn depth(&self) -> usize {
        self.lock().len
    }

    /// The queue of `owner`.
    pub fn backlog(&self, owner: &str) -> Backlog {
        let st = self.lock();
        let Some(q) = st.queues.get(owner) else {
            return Backlog::default();
        };
        Backlog {
            waiting: q.len(),
            oldest_ms: q
                .front()
                .map_or(0, |e| e.since.elapsed().as_millis() as u64),
        }
    }
}

/// Delivers the writes waiting for one peer, forever.
pub async fn run(c: Arc<Cluster>, e: Arc<PeerEntry>) {
    let idle = c.options.heartbeat.max(Duration::from_millis(100));
    let timeout = c.options.rpc_timeout * 2;
    let mut backoff = Duration::from_millis(50);
    loop {
        let notified = c.handoff.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let id = {
            let s = e.state();
            (!s.is_self).then(|| s.id.clone()).flatten()
        };
        let Some((id, (seq, write))) = id.and_then(|id| c.handoff.front(&id).map(|f| (id, f)))
        else {
            let _ = tokio::time::timeout(idle, notified).await;
            continue;
        };
        let key = write.service().clone();
        match c.owner_of(&key) {
            Some(owner) if owner == id => {}
            Some(owner) if owner != c.id() => {
                let n = c.handoff.reroute(&key, &id, &owner);
                tracing::info!(service = %key, from = %id, to = %owner, writes = n, "ownership moved; waiting writes follow it");
                c.stats
                    .handoff_rerouted
                    .fetch_add(n as u64, Ordering::Relaxed);
                continue;
            }
            // This member owns the key now (or nobody loaded is reachable): it applies
            // the writes itself, one by one; later writes of the service keep queueing
            // behind them until the last is applied ([`Cluster::takes_writes`]).
            _ => {
                let reply = c.apply_here(write).await;
                c.stats.handoff_local.fetch_add(1, Ordering::Relaxed);
                if let Some(entry) = c.handoff.pop(&id, seq)
                    && let Some(tx) = entry.reply
                {
                    let _ = tx.send(reply);
                }
                continue;
            }
        }
        match c.send_forward(&id, &e.peer, seq, &write, timeout).await {
            Ok(reply) => {
                backoff = Duration::from_millis(50);
                c.stats.handoff_delivered.fetch_add(1, Ordering::Relaxed);
                if let Some(entry) = c.handoff.pop(&id, seq)
                    && let Some(tx) = entry.reply
                {
                    let _ = tx.send(reply);
                }
            }
            Err(ClusterError::Refused { message, .. }) => {
                // The owner read the write and said no (a version it cannot decode, a
                // wrong secret): sending it again cannot help, and it would hold back
                // every later write of the service.
                tracing::error!(service = %key, peer = %id, %message, "owner refused a handed-off write; dropped");
                c.stats.handoff_dropped.fetch_add(1, Ordering::Relaxed);
                c.handoff.pop(&id, seq);
            }
            Err(err) => {
                tracing::debug!(service = %key, peer = %id, error = %err, "hand-off not acknowledged; will retry");
                c.stats.handoff_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(idle);
            }
        }
    }
}
