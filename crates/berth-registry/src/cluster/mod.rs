//! A registry cluster: the Distro protocol (AP), as Nacos 1.x runs it for ephemeral data.
//!
//! Every member holds every service. Each service key is owned by one member, chosen by
//! rendezvous hashing over the healthy, loaded members ([`ownership`]). The owner applies
//! the key's writes (others forward them, [`Cluster::forward`]), runs its beat expiry and
//! server-side checks, and replicates each resulting service state to every peer in
//! batches ([`replicate`]). Anti-entropy ([`antientropy`]) repairs what replication
//! missed; a starting member loads a full snapshot from a peer first ([`snapshot`]).
//! Members watch each other with heartbeats ([`membership`]).
//!
//! The core only sees [`crate::core::ClusterLink`]: a single node never builds any of this.

pub mod antientropy;
pub mod apply;
pub mod membership;
pub mod ownership;
pub mod peer;
pub mod replicate;
pub mod service;
pub mod snapshot;
pub mod view;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::{ClusterLink, Forwarded, ForwardedReply, Registry};
use crate::model::ServiceKey;
use crate::naming::Change;

pub use apply::{put_touches_durable, track_put};
pub use membership::Members;

/// Settings of the cluster machinery (see `RegistryConfig` for the keys).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// gRPC addresses to dial; this node may be among them (it finds itself).
    pub peers: Vec<String>,
    /// This member's id, the address peers know it by.
    pub advertise: String,
    pub secret: String,
    pub heartbeat: Duration,
    /// Heartbeats missed in a row before a member leaves the healthy list.
    pub missed_beats: u32,
    pub sync_interval: Duration,
    pub replicate_delay: Duration,
    pub rpc_timeout: Duration,
    /// Snapshot rounds before a member with no loaded peer may declare itself loaded.
    pub startup_attempts: u32,
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("peer {peer} did not answer: {message}")]
    Unreachable { peer: String, message: String },
    #[error("peer {peer} refused: {message}")]
    Refused { peer: String, message: String },
    #[error("peer {peer} sent a bad {what}: {message}")]
    BadPayload {
        peer: String,
        what: &'static str,
        message: String,
    },
}

/// Counters for `/metrics` and `/v1/cluster`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub forwarded_out: AtomicU64,
    pub forward_failures: AtomicU64,
    pub forwarded_in: AtomicU64,
    pub replicated_sent: AtomicU64,
    pub replicate_failures: AtomicU64,
    pub replicated_applied: AtomicU64,
    pub replicated_ignored: AtomicU64,
    pub sync_rounds: AtomicU64,
    pub sync_repaired: AtomicU64,
    pub sync_dropped: AtomicU64,
    pub sync_failures: AtomicU64,
    pub snapshots_served: AtomicU64,
    pub membership_changes: AtomicU64,
    pub lag_ms_last: AtomicU64,
    pub lag_ms_max: AtomicU64,
    pub lag_ms_sum: AtomicU64,
    pub lag_count: AtomicU64,
}

/// Which owner life applied a replicated state; older states of one life are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub origin: String,
    pub incarnation: u64,
    pub revision: u64,
}

/// One running cluster member.
pub struct Cluster {
    pub(crate) options: ClusterOptions,
    pub(crate) incarnation: u64,
    pub(crate) registry: Registry,
    pub(crate) members: Members,
    pub(crate) loaded: AtomicBool,
    pub(crate) stats: Arc<ClusterStats>,
    outbox: mpsc::UnboundedSender<Change>,
    outbox_rx: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    /// Last stamp applied per key (see [`Stamp`]).
    stamps: Mutex<HashMap<ServiceKey, Stamp>>,
    pub(crate) checksums: antientropy::Cache,
    /// This member itself, for futures that outlive a borrow of it.
    me: std::sync::Weak<Cluster>,
}

impl Cluster {
    /// Builds the member; nothing runs until [`Cluster::run`].
    pub fn new(options: ClusterOptions, registry: Registry) -> Arc<Self> {
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let incarnation = rand::random::<u64>() | 1;
        let members = Members::new(&options);
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            options,
            incarnation,
            registry,
            members,
            loaded: AtomicBool::new(false),
            stats: Arc::default(),
            outbox,
            outbox_rx: Mutex::new(Some(outbox_rx)),
            stamps: Mutex::new(HashMap::new()),
            checksums: antientropy::Cache::default(),
        })
    }

    pub fn id(&self) -> &str {
        &self.options.advertise
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub(crate) fn set_loaded(&self) {
        if !self.loaded.swap(true, Ordering::AcqRel) {
            tracing::info!(id = %self.id(), "cluster member loaded; serving snapshots and owning keys");
            self.members.recompute(self.id(), true, &self.stats);
            // Tell the peers now rather than at the next period.
            self.members.beat_now.notify_one();
        }
    }

    /// The owner of `key` in this member's current view (`None`: no loaded member).
    pub fn owner_of(&self, key: &ServiceKey) -> Option<String> {
        ownership::owner(key, &self.members.view()).map(str::to_string)
    }

    /// Spawns heartbeats, the start-up load, replication and anti-entropy.
    pub fn run(
        self: &Arc<Self>,
        token: &CancellationToken,
        spawn: impl Fn(BoxFuture<'static, ()>),
    ) {
        let outbox = self
            .outbox_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let tasks: Vec<BoxFuture<'static, ()>> = vec![
            Box::pin(membership::run(self.clone())),
            Box::pin(snapshot::load(self.clone())),
            Box::pin(antientropy::run(self.clone())),
        ];
        let mut tasks = tasks;
        if let Some(rx) = outbox {
            tasks.push(Box::pin(replicate::run(self.clone(), rx)));
        }
        for task in tasks {
            let token = token.clone();
            spawn(Box::pin(async move {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = task => {}
                }
            }));
        }
    }

    /// Accepts any later state of `key`, whoever sends it (its owner dropped it).
    pub(crate) fn forget_stamp(&self, key: &ServiceKey) {
        self.stamps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Applies a state another member replicated, unless this member owns the key (its
    /// own state is the truth) or already holds a newer state of the same owner life.
    /// Right after a view change the previous owner may not know yet that it lost the
    /// key: its states are still taken for a short handover, so writes it applied in
    /// that window are not dropped.
    pub(crate) async fn apply_replicated(
        &self,
        key: ServiceKey,
        state: Option<crate::model::Service>,
        stamp: Stamp,
    ) -> bool {
        let handover = self.options.heartbeat * 2 + self.options.rpc_timeout;
        if self.is_loaded() && self.registry.owns(&key) && self.members.since_change() > handover {
            self.stats
                .replicated_ignored
                .fetch_add(1, Ordering::Relaxed);
            return false;
        }
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = stamps.get(&key)
                && old.origin == stamp.origin
                && old.incarnation == stamp.incarnation
                && old.revision > stamp.revision
            {
                self.stats
                    .replicated_ignored
                    .fetch_add(1, Ordering::Relaxed);
                return false;
            }
            stamps.insert(key.clone(), stamp);
        }
        match self
            .registry
            .submit_local(crate::naming::Op::Put {
                service: key,
                state,
            })
            .await
        {
            Ok(_) => {
                self.stats
                    .replicated_applied
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "replicated state not applied");
                false
            }
        }
    }
}

impl ClusterLink for Cluster {
    fn owns(&self, key: &ServiceKey) -> bool {
        match ownership::owner(key, &self.members.view()) {
            Some(owner) => owner == self.id(),
            // Nobody loaded is reachable: this member answers alone.
            None => true,
        }
    }

    fn forward(&self, write: Forwarded) -> BoxFuture<'static, Option<ForwardedReply>> {
        let Some(owner) = self.owner_of(write.service()) else {
            return Box::pin(async { None });
        };
        let Some(peer) = self.members.peer_by_id(&owner) else {
            return Box::pin(async { None });
        };
        let from = self.id().to_string();
        let timeout = self.options.rpc_timeout;
        let stats = self.stats.clone();
        let me = self.me.clone();
        Box::pin(async move {
            match peer.forward(&from, &write, timeout).await {
                Ok((reply, state)) => {
                    stats.forwarded_out.fetch_add(1, Ordering::Relaxed);
                    // The owner's resulting state, applied here before the client hears
                    // back: it then reads its own write on this member.
                    if let (Some(state), Some(me)) = (state, me.upgrade())
                        && let Ok((key, svc, stamp)) = wire::decode_state(&state)
                    {
                        me.apply_replicated(key, svc, stamp).await;
                    }
                    Some(reply)
                }
                Err(e) => {
                    stats.forward_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "forward failed; applying locally");
                    None
                }
            }
        })
    }

    fn emitted(&self, change: &Change) {
        let _ = self.outbox.send(change.clone());
    }
}
