//! How a replicated service state lands in the core: which liveness entries it starts
//! or ends, and whether the stored state must be rewritten.

use std::sync::Arc;

use tokio::time::Instant;

use crate::core::deadlines;
use crate::liveness::Liveness;
use crate::model::{BeatTimings, Instance, InstanceKey, Service, ServiceKey};
use crate::naming::Op;

/// Tracks the instances a replicated state brings and forgets those it removed. A newly
/// seen instance starts with a fresh beat: if this member becomes its owner, the client
/// gets a full timeout to beat here before it is expired.
pub fn track_put(
    liveness: &mut Liveness,
    defaults: &BeatTimings,
    service: &ServiceKey,
    before: Option<&Service>,
    after: Option<&Service>,
) {
    if let Some(b) = before {
        for key in b.instances.keys() {
            if after.is_none_or(|a| !a.instances.contains_key(key)) {
                liveness.forget(service, key);
            }
        }
    }
    let Some(a) = after else { return };
    let now = Instant::now();
    for (key, instance) in a.instances.iter() {
        if before.and_then(|b| b.instances.get(key)) == Some(instance) {
            continue;
        }
        match deadlines(instance, defaults) {
            Some(d) if liveness.contains(service, key) => liveness.retime(service, key, d),
            Some(d) => liveness.track(service, key, d, now),
            None => liveness.forget(service, key),
        }
    }
}

/// Like [`track_put`] for a replicated patch: only the instances it names are looked at.
pub fn track_patch(
    liveness: &mut Liveness,
    defaults: &BeatTimings,
    service: &ServiceKey,
    before: Option<&Service>,
    put: &[Arc<Instance>],
    removed: &[InstanceKey],
) {
    for key in removed {
        liveness.forget(service, key);
    }
    let now = Instant::now();
    for instance in put {
        let key = instance.key();
        if before.and_then(|b| b.instances.get(&key)) == Some(instance) {
            continue;
        }
        match deadlines(instance, defaults) {
            Some(d) if liveness.contains(service, &key) => liveness.retime(service, &key, d),
            Some(d) => liveness.track(service, &key, d, now),
            None => liveness.forget(service, &key),
        }
    }
}

/// True when a replicated state changes what the state file holds: service settings or
/// persistent instances (ephemeral ones are never stored).
pub fn put_touches_durable(op: &Op, before: Option<&Service>) -> bool {
    let state = match op {
        Op::Put { state, .. } => state,
        // A patch touches the file when a persistent instance comes, changes or goes.
        Op::Patch { put, removed, .. } => {
            return put.iter().any(|i| !i.ephemeral)
                || removed.iter().any(|k| {
                    before
                        .and_then(|b| b.instances.get(k))
                        .is_some_and(|i| !i.ephemeral)
                });
        }
        _ => return false,
    };
    let durable = |s: &Service| {
        (
            s.metadata.clone(),
            s.protect_threshold.to_bits(),
            s.selector.clone(),
            s.clusters.clone(),
            s.instances
                .values()
                .filter(|i| !i.ephemeral)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    match (before, state.as_ref()) {
        (Some(b), Some(a)) => durable(b) != durable(a),
        (None, None) => false,
        (Some(s), None) | (None, Some(s)) => {
            let (meta, threshold, selector, clusters, persistent) = durable(s);
            !meta.is_empty()
                || threshold != 0
                || selector.is_some()
                || !clusters.is_empty()
                || !persistent.is_empty()
        }
    }
}
