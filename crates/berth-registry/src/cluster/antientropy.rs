//! Anti-entropy: every `sync_interval` a loaded member sends each healthy peer the
//! checksums of the keys it owns. The peer answers with the keys whose state differs
//! (or that it lacks) and gets their current state; it drops the keys it believes this
//! member owns but that are not in the list, only when both members share the same
//! view and the peer has loaded its own snapshot (deleting before loading is how a
//! restarted Nacos node once wiped live data).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use berth_proto::registry::v1 as pb;
use tokio::time::MissedTickBehavior;

use super::ownership::{self, fnv1a};
use super::{Cluster, replicate, wire};
use crate::model::{Service, ServiceKey};
use crate::naming::Op;

/// Checksums by key, valid while the service's local revision stays the same.
#[derive(Default)]
pub struct Cache {
    sums: Mutex<HashMap<ServiceKey, (u64, u64)>>,
}

impl Cache {
    /// Checksum of a service's content (its local revision left out: revisions differ
    /// from member to member for the same content).
    pub fn checksum(&self, svc: &Service) -> u64 {
        let mut sums = self.sums.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rev, sum)) = sums.get(&svc.key)
            && *rev == svc.revision
        {
            return *sum;
        }
        let sum = content_checksum(svc);
        sums.insert(svc.key.clone(), (svc.revision, sum));
        sum
    }

    /// Forgets keys that no longer exist.
    fn retain(&self, live: &HashSet<&ServiceKey>) {
        self.sums
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| live.contains(k));
    }
}

pub fn content_checksum(svc: &Service) -> u64 {
    let mut s = svc.clone();
    s.revision = 0;
    fnv1a(&wire::service_json(&s), 0xcbf2_9ce4_8422_2325)
}

/// Sends this member's checksums to its peers forever.
pub async fn run(c: Arc<Cluster>) {
    let mut tick = tokio::time::interval(c.options.sync_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !c.is_loaded() {
            continue;
        }
        round(&c).await;
    }
}

async fn round(c: &Cluster) {
    let view = c.members.view();
    let (_, services) = c.registry.snapshot();
    let live: HashSet<&ServiceKey> = services.iter().map(|s| &s.key).collect();
    c.checksums.retain(&live);
    let keys: Vec<pb::KeyChecksum> = services
        .iter()
        .filter(|s| ownership::owner(&s.key, &view) == Some(c.id()))
        .map(|s| pb::KeyChecksum {
            key: wire::to_json(&s.key),
            checksum: c.checksums.checksum(s),
        })
        .collect();
    c.stats.sync_rounds.fetch_add(1, Ordering::Relaxed);
    let list = pb::ChecksumList {
        from: c.id().to_string(),
        members: view.to_vec(),
        keys,
    };
    let calls = c
        .members
        .others()
        .filter(|e| {
            let s = e.state();
            s.healthy && s.loaded
        })
        .map(|e| {
            let list = list.clone();
            async move {
                let result = match e.peer.checksums(list, c.options.rpc_timeout * 2).await {
                    Ok(wanted) if wanted.loaded => {
                        let keys: Vec<ServiceKey> = wanted
                            .keys
                            .iter()
                            .filter_map(|k| wire::from_json(k).ok())
                            .collect();
                        let n = keys.len() as u64;
                        let pushed = replicate::push_now(c, e, keys).await;
                        if pushed.is_ok() {
                            c.stats.sync_repaired.fetch_add(n, Ordering::Relaxed);
                        }
                        pushed
                    }
                    Ok(_) => Ok(()),
                    Err(err) => Err(err),
                };
                if let Err(err) = result {
                    tracing::debug!(peer = %e.peer.dial, error = %err, "anti-entropy round failed");
                    c.stats.sync_failures.fetch_add(1, Ordering::Relaxed);
                    e.state().sync_failures += 1;
                }
            }
        });
    futures::future::join_all(calls).await;
}

/// A peer's checksums arrived: name the keys wanted, drop the ones its owner dropped.
pub async fn receive(c: &Cluster, list: pb::ChecksumList) -> Result<pb::WantedKeys, String> {
    if !c.is_loaded() {
        return Ok(pb::WantedKeys {
            keys: Vec::new(),
            loaded: false,
        });
    }
    let mut wanted = Vec::new();
    let mut listed = HashSet::new();
    for (i, kc) in list.keys.iter().enumerate() {
        let key: ServiceKey =
            wire::from_json(&kc.key).map_err(|e| format!("field 'keys[{i}].key': {e}"))?;
        let local = c.registry.get(&key).map(|s| c.checksums.checksum(&s));
        if local != Some(kc.checksum) {
            wanted.push(kc.key.clone());
        }
        listed.insert(key);
    }
    let view = c.members.view();
    if *view == list.members && view.contains(&list.from) {
        let (_, services) = c.registry.snapshot();
        for s in services {
            if listed.contains(&s.key)
                || ownership::owner(&s.key, &view) != Some(list.from.as_str())
            {
                continue;
            }
            c.forget_stamp(&s.key);
            let applied = c
                .registry
                .submit_local(Op::Put {
                    service: s.key.clone(),
                    state: None,
                })
                .await;
            if applied.is_ok_and(|a| a.change.is_some()) {
                tracing::info!(service = %s.key, owner = %list.from, "dropped a service its owner no longer has");
                c.stats.sync_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(pb::WantedKeys {
        keys: wanted,
        loaded: true,
    })
}
