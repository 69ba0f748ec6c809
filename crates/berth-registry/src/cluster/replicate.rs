//! Replication: every change this member applies from a local op (client write, expiry,
//! check verdict) goes to every peer, batched.
//!
//! What goes is the change, not the service. Each peer has a queue keyed by service that
//! gathers, between two sends, the instances touched since the revision that peer last
//! got (the base), and sends their latest values as one delta. A receiver holding that
//! base or later of this owner life patches them in; one that does not (it missed a
//! batch, loaded its copy from another member, or the key just changed owner) names the
//! key in its ack and gets the whole service in the next batch. New, deleted and
//! reconfigured services go whole, as does a delta that touched most of its service.
//! A sender per peer waits `replicate_delay` to batch, sends, and on failure merges the
//! batch back under the changes that came meanwhile and retries.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use berth_proto::registry::v1 as pb;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::membership::PeerEntry;
use super::{Cluster, wire};
use crate::model::{InstanceKey, Service, ServiceKey};
use crate::naming::{Change, Touched};

/// Services per batch: bounds message size and lets acks come back steadily.
const BATCH: usize = 1000;
/// A delta of at most this many instances always goes as a delta; a larger one goes
/// whole once it touched over half of its service (cheaper to send and to apply).
const SMALL_DELTA: usize = 16;

/// What one peer has not been sent yet of one service.
#[derive(Debug, Clone)]
struct Pending {
    /// The revision the peer is assumed to hold (what it was last sent).
    base: u64,
    revision: u64,
    /// The service at `revision` (`None`: deleted).
    latest: Option<Arc<Service>>,
    /// Instances touched since `base`; `None`: the whole service goes.
    touched: Option<HashSet<InstanceKey>>,
    since: Instant,
}

impl Pending {
    fn of(change: &Change) -> Self {
        let touched = match (&change.touched, &change.service) {
            (Touched::Instances(keys), Some(_)) if change.base > 0 => {
                Some(keys.iter().cloned().collect())
            }
            _ => None,
        };
        Self {
            base: change.base,
            revision: change.revision,
            latest: change.service.clone(),
            touched,
            since: Instant::now(),
        }
    }

    /// The whole current state of a service (a peer had a gap).
    fn whole(latest: Option<Arc<Service>>, revision: u64) -> Self {
        Self {
            base: 0,
            revision,
            latest,
            touched: None,
            since: Instant::now(),
        }
    }

    /// Takes a later change of the same service in: the touched sets add up (the
    /// latest state holds every touched instance's final value).
    fn absorb(&mut self, later: Pending) {
        self.revision = later.revision;
        self.latest = later.latest;
        match (&mut self.touched, later.touched) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            _ => self.touched = None,
        }
    }

    /// What goes on the wire: a delta, or the whole state.
    fn encode(&self, c: &Cluster, key: &ServiceKey) -> Encoded {
        let stamp = c.stamp(self.revision);
        match (&self.touched, &self.latest) {
            (Some(t), Some(svc))
                if t.len() <= SMALL_DELTA || t.len() * 2 <= svc.instances.len() =>
            {
                Encoded::Delta(wire::Delta::of(svc, self.base, stamp, t.iter()).encode())
            }
            _ => Encoded::State(wire::encode_state(key, self.latest.as_deref(), &stamp)),
        }
    }
}

enum Encoded {
    State(pb::ServiceState),
    Delta(pb::ServiceDelta),
}

/// One peer's outgoing changes.
#[derive(Default)]
pub struct Queue {
    map: Mutex<HashMap<ServiceKey, Pending>>,
    notify: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceKey, Pending>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, key: &ServiceKey, p: Pending) {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(old) => old.absorb(p),
            None => {
                map.insert(key.clone(), p);
            }
        }
        drop(map);
        self.notify.notify_one();
    }

    fn take(&self, n: usize) -> Vec<(ServiceKey, Pending)> {
        let mut map = self.lock();
        let keys: Vec<ServiceKey> = map.keys().take(n).cloned().collect();
        keys.into_iter()
            .filter_map(|k| map.remove(&k).map(|p| (k, p)))
            .collect()
    }

    /// Puts an unsent batch back, under any change that arrived meanwhile.
    fn restore(&self, batch: Vec<(ServiceKey, Pending)>) {
        let mut map = self.lock();
        for (k, mut older) in batch {
            if let Some(newer) = map.remove(&k) {
                older.absorb(newer);
            }
            map.insert(k, older);
        }
    }

    /// The peer lacked the base of these keys: their whole state goes next.
    fn send_whole(&self, c: &Cluster, keys: impl IntoIterator<Item = ServiceKey>) {
        let mut map = self.lock();
        for k in keys {
            match map.get_mut(&k) {
                Some(p) => p.touched = None,
                None => {
                    let latest = c.registry.get(&k);
                    let revision = latest
                        .as_ref()
                        .map_or_else(|| c.registry.revision(), |s| s.revision);
                    map.insert(k, Pending::whole(latest, revision));
                }
            }
        }
    }

    /// (services waiting, age of the oldest change in ms).
    pub fn backlog(&self) -> (usize, u64) {
        let map = self.lock();
        let now = Instant::now();
        let oldest = map
            .values()
            .map(|p| now.saturating_duration_since(p.since).as_millis() as u64)
            .max()
            .unwrap_or(0);
        (map.len(), oldest)
    }
}

/// Fans changes out to the peers' queues and runs one sender per peer.
pub async fn run(c: Arc<Cluster>, mut rx: mpsc::UnboundedReceiver<Change>) {
    let senders = c
        .members
        .entries()
        .iter()
        .map(|e| send_loop(c.clone(), e.clone()));
    let dispatch = async {
        while let Some(change) = rx.recv().await {
            let p = Pending::of(&change);
            for e in c.members.others() {
                e.queue.push(&change.key, p.clone());
            }
        }
    };
    tokio::join!(dispatch, futures::future::join_all(senders));
}

async fn send_loop(c: Arc<Cluster>, e: Arc<PeerEntry>) {
    let timeout = c.options.rpc_timeout * 4;
    let backoff = c
        .options
        .heartbeat
        .max(std::time::Duration::from_millis(100));
    loop {
        if e.queue.lock().is_empty() {
            e.queue.notify.notified().await;
        }
        tokio::time::sleep(c.options.replicate_delay).await;
        loop {
            if !e.is_other() {
                e.queue.lock().clear();
                break;
            }
            let batch = e.queue.take(BATCH);
            if batch.is_empty() {
                break;
            }
            let mut msg = pb::StateBatch {
                from: c.id().to_string(),
                ..Default::default()
            };
            for (k, p) in &batch {
                match p.encode(&c, k) {
                    Encoded::State(s) => msg.states.push(s),
                    Encoded::Delta(d) => msg.deltas.push(d),
                }
            }
            let deltas = msg.deltas.len() as u64;
            match e.peer.replicate(msg, timeout).await {
                Ok(ack) => {
                    let now = Instant::now();
                    let lag = batch
                        .iter()
                        .map(|(_, p)| now.saturating_duration_since(p.since).as_millis() as u64)
                        .max()
                        .unwrap_or(0);
                    c.stats
                        .replicated_sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    c.stats.deltas_sent.fetch_add(deltas, Ordering::Relaxed);
                    c.stats.lag_ms_last.store(lag, Ordering::Relaxed);
                    c.stats.lag_ms_max.fetch_max(lag, Ordering::Relaxed);
                    c.stats.lag_ms_sum.fetch_add(lag, Ordering::Relaxed);
                    c.stats.lag_count.fetch_add(1, Ordering::Relaxed);
                    e.state().lag_ms = lag;
                    if !ack.gaps.is_empty() {
                        let keys = ack.gaps.iter().filter_map(|k| wire::from_json(k).ok());
                        e.queue.send_whole(&c, keys);
                    }
                }
                Err(err) => {
                    tracing::debug!(peer = %e.peer.dial, error = %err, "replication failed; will retry");
                    c.stats.replicate_failures.fetch_add(1, Ordering::Relaxed);
                    e.state().replicate_failures += 1;
                    e.queue.restore(batch);
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

/// Sends the current state of `keys` to one peer now (anti-entropy repairs).
pub async fn push_now(
    c: &Cluster,
    e: &PeerEntry,
    keys: Vec<ServiceKey>,
) -> Result<(), super::ClusterError> {
    for chunk in keys.chunks(BATCH) {
        let states = chunk
            .iter()
            .map(|k| {
                let svc = c.registry.get(k);
                let stamp = c.stamp(svc.as_ref().map_or(c.registry.revision(), |s| s.revision));
                wire::encode_state(k, svc.as_deref(), &stamp)
            })
            .collect();
        let msg = pb::StateBatch {
            from: c.id().to_string(),
            states,
            deltas: Vec::new(),
        };
        e.peer.replicate(msg, c.options.rpc_timeout * 4).await?;
    }
    Ok(())
}
