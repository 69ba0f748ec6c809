//! Replication: every change this member applies from a local op (client write, expiry,
//! check verdict) goes to every peer as the service's whole new state.
//!
//! Each peer has a queue keyed by service, so a burst of changes to one service sends
//! only its latest state. A sender per peer waits `replicate_delay` to batch, sends, and
//! on failure puts the batch back (unless newer states replaced it) and retries.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use berth_proto::registry::v1 as pb;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::membership::PeerEntry;
use super::{Cluster, Stamp, wire};
use crate::model::{Service, ServiceKey};
use crate::naming::Change;

/// States per batch: bounds message size and lets acks come back steadily.
const BATCH: usize = 1000;

#[derive(Debug, Clone)]
struct Pending {
    state: Option<Arc<Service>>,
    revision: u64,
    since: Instant,
}

/// One peer's outgoing states.
#[derive(Default)]
pub struct Queue {
    map: Mutex<HashMap<ServiceKey, Pending>>,
    notify: Notify,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceKey, Pending>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, key: ServiceKey, p: Pending) {
        self.lock().insert(key, p);
        self.notify.notify_one();
    }

    fn take(&self, n: usize) -> Vec<(ServiceKey, Pending)> {
        let mut map = self.lock();
        let keys: Vec<ServiceKey> = map.keys().take(n).cloned().collect();
        keys.into_iter()
            .filter_map(|k| map.remove(&k).map(|p| (k, p)))
            .collect()
    }

    /// Puts unsent states back, unless a newer state of the key arrived meanwhile.
    fn restore(&self, batch: Vec<(ServiceKey, Pending)>) {
        let mut map = self.lock();
        for (k, p) in batch {
            map.entry(k).or_insert(p);
        }
    }

    /// (states waiting, age of the oldest in ms).
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
            let p = Pending {
                state: change.service.clone(),
                revision: change.revision,
                since: Instant::now(),
            };
            for e in c.members.others() {
                e.queue.push(change.key.clone(), p.clone());
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
            let msg = pb::StateBatch {
                from: c.id().to_string(),
                states: batch
                    .iter()
                    .map(|(k, p)| {
                        let stamp = Stamp {
                            origin: c.id().to_string(),
                            incarnation: c.incarnation,
                            revision: p.revision,
                        };
                        wire::encode_state(k, p.state.as_deref(), &stamp)
                    })
                    .collect(),
            };
            match e.peer.replicate(msg, timeout).await {
                Ok(_) => {
                    let now = Instant::now();
                    let lag = batch
                        .iter()
                        .map(|(_, p)| now.saturating_duration_since(p.since).as_millis() as u64)
                        .max()
                        .unwrap_or(0);
                    c.stats
                        .replicated_sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    c.stats.lag_ms_last.store(lag, Ordering::Relaxed);
                    c.stats.lag_ms_max.fetch_max(lag, Ordering::Relaxed);
                    c.stats.lag_ms_sum.fetch_add(lag, Ordering::Relaxed);
                    c.stats.lag_count.fetch_add(1, Ordering::Relaxed);
                    e.state().lag_ms = lag;
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
                let stamp = Stamp {
                    origin: c.id().to_string(),
                    incarnation: c.incarnation,
                    revision: svc.as_ref().map_or(c.registry.revision(), |s| s.revision),
                };
                wire::encode_state(k, svc.as_deref(), &stamp)
            })
            .collect();
        let msg = pb::StateBatch {
            from: c.id().to_string(),
            states,
        };
        e.peer.replicate(msg, c.options.rpc_timeout * 4).await?;
    }
    Ok(())
}
