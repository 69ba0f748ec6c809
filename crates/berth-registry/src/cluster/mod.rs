//! A registry cluster: the Distro protocol (AP), as Nacos 1.x runs it for ephemeral data.
//!
//! Every member holds every service. Each service key is owned by one member, chosen by
//! rendezvous hashing over the healthy, loaded members ([`ownership`]). The owner applies
//! the key's writes (others forward them, [`ClusterLink::forward`]; a forward that gets no
//! answer waits in a hand-off queue until the owner takes it, [`handoff`], and the owner
//! applies each forwarded write once, [`idempotence`]), runs its beat expiry and
//! server-side checks, and replicates what changed to every peer in batches: the touched
//! instances only, or the whole service when a peer lacks the base ([`replicate`]).
//! Anti-entropy ([`antientropy`]) repairs what replication missed; a starting member
//! loads a full snapshot from a peer first ([`snapshot`]). Members watch each other with
//! heartbeats ([`membership`]).
//!
//! The core only sees [`crate::core::ClusterLink`]: a single node never builds any of this.

pub mod antientropy;
pub mod apply;
pub mod handoff;
pub mod idempotence;
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

use berth_proto::registry::v1 as pb;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::{ClusterLink, Forwarded, ForwardedReply, Registry};
use crate::model::ServiceKey;
use crate::naming::Change;

pub use apply::{put_touches_durable, track_patch, track_put};
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
    /// Writes that may wait in the hand-off queues in all.
    pub handoff_limit: usize,
    /// Mutual TLS to the peers (each verified as `registry.berth`), when configured.
    pub tls: Option<std::sync::Arc<berth_identity::ReloadingTls>>,
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
    /// Copies of forwarded writes the owner had already seen (not applied again).
    pub forwarded_again: AtomicU64,
    pub handoff_queued: AtomicU64,
    pub handoff_retries: AtomicU64,
    pub handoff_delivered: AtomicU64,
    pub handoff_rerouted: AtomicU64,
    pub handoff_local: AtomicU64,
    pub handoff_refused: AtomicU64,
    pub handoff_dropped: AtomicU64,
    pub deltas_sent: AtomicU64,
    pub deltas_applied: AtomicU64,
    /// Deltas a receiver could not apply (it then got the whole service).
    pub delta_gaps: AtomicU64,
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
    pub(crate) handoff: handoff::Handoff,
    pub(crate) once: idempotence::Once,
    /// This member itself, for futures that outlive a borrow of it.
    me: std::sync::Weak<Cluster>,
}

impl Cluster {
    /// Builds the member; nothing runs until [`Cluster::run`].
    pub fn new(options: ClusterOptions, registry: Registry) -> Arc<Self> {
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let incarnation = rand::random::<u64>() | 1;
        let members = Members::new(&options);
        let handoff = handoff::Handoff::new(options.handoff_limit);
        Arc::new_cyclic(|me| Self {
            handoff,
            once: idempotence::Once::default(),
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

    /// Sorted ids of the members that own keys now.
    pub fn view(&self) -> Arc<Vec<String>> {
        self.members.view()
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
        for e in self.members.entries() {
            tasks.push(Box::pin(handoff::run(self.clone(), e.clone())));
        }
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

/// What became of a replicated delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOutcome {
    Applied,
    /// Older than what this member holds, or for a key it owns.
    Ignored,
    /// This member lacks the delta's base: it needs the whole service.
    Gap,
}

impl Cluster {
    /// This member's stamp for a revision of one of its services.
    pub(crate) fn stamp(&self, revision: u64) -> Stamp {
        Stamp {
            origin: self.id().to_string(),
            incarnation: self.incarnation,
            revision,
        }
    }

    /// How long after a view change the previous owner's states are still taken.
    fn handover(&self) -> Duration {
        self.options.heartbeat * 2 + self.options.rpc_timeout
    }

    /// Applies a delta another member replicated, when this member holds the same owner
    /// life's state at the delta's base or later (the delta carries the final value of
    /// every instance touched since its base, so it also applies over a later state).
    /// With `overlay` (the owner's answer to a write forwarded from here) the touched
    /// instances are applied even over an unknown base, so the client reads its own
    /// write here; the stamp then stays put and replication brings the rest.
    pub(crate) async fn apply_delta(&self, d: wire::Delta, overlay: bool) -> DeltaOutcome {
        if self.is_loaded()
            && self.registry.owns(&d.key)
            && self.members.since_change() > self.handover()
        {
            self.stats
                .replicated_ignored
                .fetch_add(1, Ordering::Relaxed);
            return DeltaOutcome::Ignored;
        }
        let follows = {
            let stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            match stamps.get(&d.key) {
                Some(old)
                    if old.origin == d.stamp.origin && old.incarnation == d.stamp.incarnation =>
                {
                    if old.revision >= d.stamp.revision {
                        self.stats
                            .replicated_ignored
                            .fetch_add(1, Ordering::Relaxed);
                        return DeltaOutcome::Ignored;
                    }
                    d.base > 0 && old.revision >= d.base
                }
                _ => false,
            }
        };
        if !follows && !overlay {
            self.stats.delta_gaps.fetch_add(1, Ordering::Relaxed);
            return DeltaOutcome::Gap;
        }
        let (key, stamp) = (d.key.clone(), d.stamp.clone());
        let op = crate::naming::Op::Patch {
            service: d.key,
            put: d.put,
            removed: d.removed,
        };
        match self.registry.submit_local(op).await {
            Ok(_) => {
                if follows {
                    let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(old) = stamps.get_mut(&key)
                        && old.origin == stamp.origin
                        && old.incarnation == stamp.incarnation
                        && old.revision < stamp.revision
                    {
                        old.revision = stamp.revision;
                    }
                }
                self.stats.deltas_applied.fetch_add(1, Ordering::Relaxed);
                DeltaOutcome::Applied
            }
            Err(crate::naming::NamingError::ServiceNotFound(_)) => {
                self.stats.delta_gaps.fetch_add(1, Ordering::Relaxed);
                DeltaOutcome::Gap
            }
            Err(e) => {
                tracing::warn!(error = %e, "replicated delta not applied");
                DeltaOutcome::Ignored
            }
        }
    }

    /// Sends one write to `peer` (its key's owner) and applies what the owner changed.
    pub(crate) async fn send_forward(
        &self,
        peer_id: &str,
        peer: &peer::Peer,
        seq: u64,
        write: &Forwarded,
        timeout: Duration,
    ) -> Result<ForwardedReply, ClusterError> {
        let numbering = (self.incarnation, seq, self.handoff.seqs.low(peer_id));
        let (reply, raw) = peer.forward(self.id(), numbering, write, timeout).await?;
        self.stats.forwarded_out.fetch_add(1, Ordering::Relaxed);
        // The owner's change, applied here before the client hears back: it then reads
        // its own write on this member.
        if let Some(state) = raw.state
            && let Ok((key, svc, stamp)) = wire::decode_state(&state)
        {
            self.apply_replicated(key, svc, stamp).await;
        }
        if let Some(delta) = raw.delta
            && let Ok(d) = wire::Delta::decode(&delta)
        {
            self.apply_delta(d, true).await;
        }
        Ok(reply)
    }

    /// Applies a write on this member, whoever owns its key.
    pub(crate) async fn apply_here(&self, write: Forwarded) -> ForwardedReply {
        let r = &self.registry;
        match write {
            Forwarded::Op(op) => ForwardedReply::Op(r.submit_local(op).await.map(|_| ())),
            Forwarded::Beat {
                service,
                ip,
                port,
                cluster,
                status,
            } => ForwardedReply::Beat(r.beat_local(service, ip, port, cluster, status).await),
            Forwarded::Fail { service, instance } => {
                ForwardedReply::Beat(r.fail_local(service, instance).await)
            }
        }
    }

    /// Applies a write another member forwarded, with what it changed for the sender:
    /// the touched instances, or the whole service when it was created, deleted or
    /// reconfigured.
    pub(crate) async fn apply_forwarded(&self, write: Forwarded) -> pb::ForwardReply {
        let r = &self.registry;
        let mut out = pb::ForwardReply::default();
        let reply = match write {
            Forwarded::Op(op) => ForwardedReply::Op(match r.submit_local(op).await {
                Ok(applied) => {
                    if let Some(c) = applied.change {
                        let stamp = self.stamp(c.revision);
                        match (&c.service, &c.touched) {
                            (Some(svc), crate::naming::Touched::Instances(keys)) if c.base > 0 => {
                                out.delta =
                                    Some(wire::Delta::of(svc, c.base, stamp, keys.iter()).encode());
                            }
                            _ => {
                                out.state =
                                    Some(wire::encode_state(&c.key, c.service.as_deref(), &stamp));
                            }
                        }
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }),
            other => self.apply_here(other).await,
        };
        out.reply = wire::to_json(&reply);
        out
    }

    /// Hands a write to its key's owner; see [`handoff`] for what happens when the owner
    /// does not answer. `None`: this member applies it itself.
    async fn forward_write(self: Arc<Self>, write: Forwarded) -> Option<ForwardedReply> {
        let key = write.service().clone();
        let owner = self.owner_of(&key)?;
        let seq = self.handoff.seqs.start(&owner);
        let queue = if owner == self.id() {
            // Owned here, but earlier writes of the service still wait in a queue:
            // this one goes behind them.
            None
        } else {
            if !self.handoff.holds(&key) {
                let peer = self.members.peer_by_id(&owner)?;
                match self
                    .send_forward(&owner, &peer, seq.seq, &write, self.options.rpc_timeout)
                    .await
                {
                    Ok(reply) => return Some(reply),
                    Err(ClusterError::Refused { message, .. }) => {
                        self.stats.forward_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(service = %key, owner = %owner, %message, "owner refused a forwarded write; applying it here");
                        return None;
                    }
                    Err(e) => {
                        self.stats.forward_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(service = %key, error = %e, "forward not acknowledged; handing it off");
                    }
                }
            }
            Some(owner.as_str())
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let entry = handoff::Entry {
            seq,
            write: write.clone(),
            reply: Some(tx),
            since: tokio::time::Instant::now(),
        };
        match self.handoff.push(queue, entry) {
            handoff::Pushed::Queued => {
                self.stats.handoff_queued.fetch_add(1, Ordering::Relaxed);
            }
            handoff::Pushed::NoQueue => return None,
            handoff::Pushed::Full => {
                self.stats.handoff_refused.fetch_add(1, Ordering::Relaxed);
                let busy = crate::naming::NamingError::OwnerBusy(key.to_string());
                return Some(match write {
                    Forwarded::Op(_) => ForwardedReply::Op(Err(busy)),
                    _ => ForwardedReply::Beat(Err(busy)),
                });
            }
        }
        match tokio::time::timeout(self.options.rpc_timeout, rx).await {
            Ok(Ok(reply)) => Some(reply),
            _ => Some(self.provisional(&write)),
        }
    }

    /// The answer for a write still waiting for its owner: it is accepted (it will be
    /// delivered), and a beat is answered from this member's copy.
    fn provisional(&self, write: &Forwarded) -> ForwardedReply {
        let found =
            |service: &ServiceKey,
             f: &dyn Fn(&crate::model::Service) -> Option<crate::model::Instance>| {
                match self.registry.get(service).and_then(|s| f(&s)) {
                    Some(i) => crate::core::BeatResult::Alive(i),
                    None => crate::core::BeatResult::NotFound,
                }
            };
        match write {
            Forwarded::Op(_) => ForwardedReply::Op(Ok(())),
            Forwarded::Beat {
                service,
                ip,
                port,
                cluster,
                ..
            } => ForwardedReply::Beat(Ok(found(service, &|s| {
                s.find(ip, *port, cluster.as_deref()).cloned()
            }))),
            Forwarded::Fail { service, instance } => {
                ForwardedReply::Beat(Ok(found(service, &|s| {
                    s.instances.get(instance).map(|i| (**i).clone())
                })))
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

    fn takes_writes(&self, key: &ServiceKey) -> bool {
        self.owns(key) && !self.handoff.holds(key)
    }

    fn forward(&self, write: Forwarded) -> BoxFuture<'static, Option<ForwardedReply>> {
        let Some(me) = self.me.upgrade() else {
            return Box::pin(async { None });
        };
        Box::pin(me.forward_write(write))
    }

    fn emitted(&self, change: &Change) {
        let _ = self.outbox.send(change.clone());
    }
}
