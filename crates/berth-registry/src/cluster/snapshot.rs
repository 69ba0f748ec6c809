//! Start-up: a member with peers loads a full snapshot from one of them before it owns
//! keys, serves snapshots or deletes anything.
//!
//! It asks each peer in turn, every heartbeat period, until one answers. A peer that has
//! not loaded itself refuses. When a whole cluster starts cold nobody is loaded, so after
//! `startup_attempts` rounds with no loaded peer a member declares itself loaded if no
//! reachable peer has a lower id: the lowest reachable member goes first and the others
//! load from it. A member that reaches no peer at all also declares itself loaded after
//! those rounds (first member of a new cluster, or alone in a partition: AP).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_proto::registry::v1 as pb;
use futures::{Stream, StreamExt};
use tonic::Status;

use super::membership::PeerEntry;
use super::{Cluster, ClusterError, Stamp, wire};

/// Services per snapshot chunk.
const CHUNK: usize = 500;

/// Loads from a peer, or declares this member loaded by the rule above.
pub async fn load(c: Arc<Cluster>) {
    let mut rounds: u32 = 0;
    loop {
        let others: Vec<Arc<PeerEntry>> = c.members.others().cloned().collect();
        if others.is_empty() {
            c.set_loaded();
            return;
        }
        for e in &others {
            if !e.is_other() {
                continue;
            }
            match load_from(&c, e).await {
                Ok(n) => {
                    tracing::info!(peer = %e.peer.dial, services = n, "snapshot loaded");
                    c.set_loaded();
                    return;
                }
                Err(err) => tracing::debug!(error = %err, "no snapshot from this peer"),
            }
        }
        rounds += 1;
        if rounds >= c.options.startup_attempts.max(1) {
            let states: Vec<_> = others
                .iter()
                .map(|e| e.state().clone())
                .filter(|s| !s.is_self)
                .collect();
            let loaded_peer = states.iter().any(|s| s.healthy && s.loaded);
            let lower_peer = states
                .iter()
                .any(|s| s.healthy && s.id.as_deref().is_some_and(|id| id < c.id()));
            if !loaded_peer && !lower_peer {
                tracing::warn!(
                    rounds,
                    "no loaded peer answered; this member declares itself loaded"
                );
                c.set_loaded();
                return;
            }
        }
        tokio::time::sleep(c.options.heartbeat).await;
    }
}

async fn load_from(c: &Cluster, e: &PeerEntry) -> Result<usize, ClusterError> {
    let mut stream = e.peer.snapshot(c.id(), c.options.rpc_timeout).await?;
    let chunk_timeout = c.options.rpc_timeout * 4;
    let mut n = 0;
    loop {
        let next = tokio::time::timeout(chunk_timeout, stream.message()).await;
        let batch = match next {
            Ok(Ok(Some(batch))) => batch,
            Ok(Ok(None)) => return Ok(n),
            Ok(Err(s)) => {
                return Err(ClusterError::Unreachable {
                    peer: e.peer.dial.clone(),
                    message: s.message().to_string(),
                });
            }
            Err(_) => {
                return Err(ClusterError::Unreachable {
                    peer: e.peer.dial.clone(),
                    message: "snapshot stalled".into(),
                });
            }
        };
        for s in &batch.states {
            let (key, state, stamp) =
                wire::decode_state(s).map_err(|message| ClusterError::BadPayload {
                    peer: e.peer.dial.clone(),
                    what: "snapshot state",
                    message,
                })?;
            c.apply_replicated(key, state, stamp).await;
            n += 1;
        }
    }
}

/// Every service this member holds, in chunks; refused until it has loaded.
pub fn serve(
    c: &Arc<Cluster>,
) -> Result<impl Stream<Item = Result<pb::StateBatch, Status>> + Send + 'static, Status> {
    if !c.is_loaded() {
        return Err(Status::failed_precondition(format!(
            "member {} has not loaded its own snapshot yet",
            c.id()
        )));
    }
    c.stats.snapshots_served.fetch_add(1, Ordering::Relaxed);
    let (_, services) = c.registry.snapshot();
    let chunks: Vec<Vec<_>> = services.chunks(CHUNK).map(<[_]>::to_vec).collect();
    let (id, incarnation) = (c.id().to_string(), c.incarnation);
    Ok(futures::stream::iter(chunks).map(move |chunk| {
        let states = chunk
            .iter()
            .map(|s| {
                let stamp = Stamp {
                    origin: id.clone(),
                    incarnation,
                    revision: s.revision,
                };
                wire::encode_state(&s.key, Some(s), &stamp)
            })
            .collect();
        Ok(pb::StateBatch {
            from: id.clone(),
            states,
            deltas: Vec::new(),
        })
    }))
}
