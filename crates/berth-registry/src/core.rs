//! The running naming core: one writer task applies every op in arrival order (so
//! per-service order holds), readers take short read locks and clone `Arc`s.
//!
//! Changes fan out through a broadcast channel (watch streams, UDP push) and a revision
//! watch (Consul blocking queries). Liveness deadlines are swept by the same writer, so
//! a beat and an expiry can never race.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::liveness::{Deadlines, DeletePolicy, Liveness};
use crate::model::{
    BeatTimings, CheckSpec, HealthStatus, Instance, InstanceKey, Service, ServiceKey,
};
use crate::naming::{Applied, Change, Naming, NamingError, Op};
use crate::persist::{self, PersistError};

/// Tunables of the core.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// Default beat timings for ephemeral instances (overridable per instance).
    pub beat: BeatTimings,
    /// How often deadlines are checked.
    pub sweep_every: Duration,
    /// Where services and persistent instances are stored; `None` keeps them in memory.
    pub state_file: Option<PathBuf>,
    /// How many recent changes a watcher can resume from.
    pub history: usize,
}

impl Default for CoreOptions {
    fn default() -> Self {
        Self {
            beat: BeatTimings::default(),
            sweep_every: Duration::from_millis(500),
            state_file: None,
            history: 1024,
        }
    }
}

/// Result of a beat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum BeatResult {
    /// The instance exists; its state after the beat.
    Alive(Instance),
    NotFound,
}

/// Counters the metrics endpoint reads.
#[derive(Debug, Default)]
pub struct CoreStats {
    pub beats: AtomicU64,
    pub ops: AtomicU64,
    pub expired: AtomicU64,
    pub persist_failures: AtomicU64,
}

enum Command {
    Apply(Op, oneshot::Sender<Result<Applied, NamingError>>),
    Beat {
        service: ServiceKey,
        ip: String,
        port: u16,
        cluster: Option<String>,
        status: HealthStatus,
        reply: oneshot::Sender<BeatResult>,
    },
    Fail {
        service: ServiceKey,
        instance: InstanceKey,
        reply: oneshot::Sender<BeatResult>,
    },
}

struct Shared {
    naming: RwLock<Naming>,
    changes: broadcast::Sender<Change>,
    revision: watch::Sender<u64>,
    stats: CoreStats,
    /// Set once when the node runs in a cluster; a single node never sets it.
    link: OnceLock<Arc<dyn ClusterLink>>,
}

// ---- Cluster hook ----------------------------------------------------------------------
// The core knows nothing of peers: a cluster plugs in through this trait. Ops from
// clients and the core's own expiry are "local"; `Op::Put` is the only replicated op and
// is never forwarded nor replicated again.

/// What a registry cluster plugs into the core (see `crate::cluster`).
pub trait ClusterLink: Send + Sync + 'static {
    /// True when this node owns `key`: it applies its writes and runs its expiry.
    fn owns(&self, key: &ServiceKey) -> bool;
    /// True when a write to `key` is applied here right away: this node owns the key
    /// and no earlier write of it still waits to reach a previous owner.
    fn takes_writes(&self, key: &ServiceKey) -> bool {
        self.owns(key)
    }
    /// Hands a write to `key`'s owner, and answers with the owner's reply, or
    /// provisionally while the write waits to be delivered. `None`: apply it here (this
    /// node became the owner).
    fn forward(&self, write: Forwarded) -> BoxFuture<'static, Option<ForwardedReply>>;
    /// A change this node made from a local op, for the replicator to batch.
    fn emitted(&self, change: &Change);
}

/// A write sent to the owner of its key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Forwarded {
    Op(Op),
    Beat {
        service: ServiceKey,
        ip: String,
        port: u16,
        cluster: Option<String>,
        status: HealthStatus,
    },
    Fail {
        service: ServiceKey,
        instance: InstanceKey,
    },
}

impl Forwarded {
    pub fn service(&self) -> &ServiceKey {
        match self {
            Forwarded::Op(op) => op.service(),
            Forwarded::Beat { service, .. } | Forwarded::Fail { service, .. } => service,
        }
    }
}

/// The owner's answer to a [`Forwarded`] write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardedReply {
    Op(Result<(), NamingError>),
    Beat(Result<BeatResult, NamingError>),
}

/// Handle to the naming core. Cheap to clone; the writer stops when every handle is gone.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
}

impl Registry {
    /// Loads stored state, then spawns the writer on the current runtime.
    pub fn start(options: CoreOptions) -> Result<Self, PersistError> {
        let mut naming = Naming::new(options.history);
        let mut liveness = Liveness::default();
        if let Some(path) = &options.state_file {
            let now = Instant::now();
            for op in persist::load(path)? {
                if let Op::Register { service, instance } = &op
                    && let Some(d) = deadlines(instance, &options.beat)
                {
                    liveness.track(service, &instance.key(), d, now);
                }
                // Replaying our own file: a refused op means a duplicate, keep going.
                let _ = naming.apply(op);
            }
        }
        let (changes, _) = broadcast::channel(4096);
        let (revision, _) = watch::channel(naming.revision());
        let shared = Arc::new(Shared {
            naming: RwLock::new(naming),
            changes,
            revision,
            stats: CoreStats::default(),
            link: OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel(8192);
        tokio::spawn(writer(shared.clone(), rx, liveness, options));
        Ok(Self { shared, tx })
    }

    /// Plugs a cluster in; only the first call counts.
    pub fn attach(&self, link: Arc<dyn ClusterLink>) {
        let _ = self.shared.link.set(link);
    }

    /// True when this node is responsible for `key` (always on a single node).
    pub fn owns(&self, key: &ServiceKey) -> bool {
        self.shared.link.get().is_none_or(|l| l.owns(key))
    }

    /// Sends a write to the owner of `key` when another member owns it: `Some` with the
    /// owner's reply, `None` when this node applies it (single node, or owner here).
    /// `write` is built only when it is sent.
    async fn forward(
        &self,
        key: &ServiceKey,
        write: impl FnOnce() -> Forwarded,
    ) -> Option<ForwardedReply> {
        let link = self.shared.link.get()?;
        if link.takes_writes(key) {
            return None;
        }
        link.forward(write()).await
    }

    /// Applies an op on its key's owner (forwarding it there when that is another node)
    /// and waits until it is applied.
    pub async fn submit(&self, op: Op) -> Result<Applied, NamingError> {
        if let Some(ForwardedReply::Op(result)) = self
            .forward(op.service(), || Forwarded::Op(op.clone()))
            .await
        {
            // The owner applied it (or it waits in the hand-off queue to reach the
            // owner); the change reaches this node by replication.
            return result.map(|()| Applied {
                change: None,
                previous: None,
            });
        }
        self.submit_local(op).await
    }

    /// Queues an op on this node whoever owns its key, and waits until it is applied.
    pub async fn submit_local(&self, op: Op) -> Result<Applied, NamingError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Apply(op, reply))
            .await
            .map_err(|_| NamingError::ShuttingDown)?;
        rx.await.map_err(|_| NamingError::ShuttingDown)?
    }

    /// Records a beat (or Consul pass/warn) for an instance, on its owner.
    pub async fn beat(
        &self,
        service: ServiceKey,
        ip: String,
        port: u16,
        cluster: Option<String>,
        status: HealthStatus,
    ) -> Result<BeatResult, NamingError> {
        let write = || Forwarded::Beat {
            service: service.clone(),
            ip: ip.clone(),
            port,
            cluster: cluster.clone(),
            status,
        };
        if let Some(ForwardedReply::Beat(result)) = self.forward(&service, write).await {
            return result;
        }
        self.beat_local(service, ip, port, cluster, status).await
    }

    /// Records a beat on this node whoever owns the instance.
    pub async fn beat_local(
        &self,
        service: ServiceKey,
        ip: String,
        port: u16,
        cluster: Option<String>,
        status: HealthStatus,
    ) -> Result<BeatResult, NamingError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Beat {
                service,
                ip,
                port,
                cluster,
                status,
                reply,
            })
            .await
            .map_err(|_| NamingError::ShuttingDown)?;
        rx.await.map_err(|_| NamingError::ShuttingDown)
    }

    /// Marks a client-reported check as failed (Consul `check/fail`), on its owner.
    pub async fn fail(
        &self,
        service: ServiceKey,
        instance: InstanceKey,
    ) -> Result<BeatResult, NamingError> {
        let write = || Forwarded::Fail {
            service: service.clone(),
            instance: instance.clone(),
        };
        if let Some(ForwardedReply::Beat(result)) = self.forward(&service, write).await {
            return result;
        }
        self.fail_local(service, instance).await
    }

    /// Marks a check failed on this node whoever owns the instance.
    pub async fn fail_local(
        &self,
        service: ServiceKey,
        instance: InstanceKey,
    ) -> Result<BeatResult, NamingError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Fail {
                service,
                instance,
                reply,
            })
            .await
            .map_err(|_| NamingError::ShuttingDown)?;
        rx.await.map_err(|_| NamingError::ShuttingDown)
    }

    pub fn get(&self, key: &ServiceKey) -> Option<Arc<Service>> {
        self.read().get(key)
    }

    pub fn revision(&self) -> u64 {
        self.read().revision()
    }

    /// Every service with the revision it was taken at.
    pub fn snapshot(&self) -> (u64, Vec<Arc<Service>>) {
        let n = self.read();
        (n.revision(), n.services().cloned().collect())
    }

    /// Changes after `revision`, or `None` when only a snapshot can catch up.
    pub fn changes_since(&self, revision: u64) -> Option<Vec<Change>> {
        self.read().changes_since(revision)
    }

    /// Every change from now on, in revision order.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// The global revision, for waiting on "anything changed".
    pub fn revision_watch(&self) -> watch::Receiver<u64> {
        self.shared.revision.subscribe()
    }

    pub fn stats(&self) -> &CoreStats {
        &self.shared.stats
    }

    /// (services, instances, healthy instances).
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = self.read();
        let mut instances = 0;
        let mut healthy = 0;
        for s in n.services() {
            instances += s.instances.len();
            healthy += s.healthy_count();
        }
        (n.len(), instances, healthy)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Naming> {
        // A panic while holding the lock cannot leave Naming half-written (apply builds
        // the new service before swapping it in), so a poisoned lock is still usable.
        self.shared
            .naming
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Liveness deadlines for instances whose health the client reports, else `None`.
pub fn deadlines(instance: &Instance, defaults: &BeatTimings) -> Option<Deadlines> {
    if instance.ephemeral {
        let t = instance.timings(defaults);
        let delete_ms = if instance.owner.is_some() {
            t.delete_after_ms.max(t.held_delete_after_ms)
        } else {
            t.delete_after_ms
        };
        return Some(Deadlines {
            unhealthy_after: Duration::from_millis(t.unhealthy_after_ms),
            delete: DeletePolicy::AfterLastBeat(Duration::from_millis(delete_ms)),
        });
    }
    if let Some(CheckSpec::Ttl { ttl_ms }) = instance.check {
        return Some(Deadlines {
            unhealthy_after: Duration::from_millis(ttl_ms),
            delete: match instance.deregister_critical_after_ms {
                Some(ms) => DeletePolicy::AfterCritical(Duration::from_millis(ms)),
                None => DeletePolicy::Never,
            },
        });
    }
    None
}

struct Writer {
    shared: Arc<Shared>,
    liveness: Liveness,
    options: CoreOptions,
}

async fn writer(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Command>,
    liveness: Liveness,
    options: CoreOptions,
) {
    let mut tick = tokio::time::interval(options.sweep_every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut w = Writer {
        shared,
        liveness,
        options,
    };
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => w.handle(cmd),
                None => break,
            },
            _ = tick.tick() => w.sweep(),
        }
    }
}

impl Writer {
    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Apply(op, reply) => {
                let result = self.apply(op);
                let _ = reply.send(result);
            }
            Command::Beat {
                service,
                ip,
                port,
                cluster,
                status,
                reply,
            } => {
                self.shared.stats.beats.fetch_add(1, Ordering::Relaxed);
                let found = self
                    .shared
                    .naming
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&service)
                    .and_then(|s| s.find(&ip, port, cluster.as_deref()).cloned());
                let Some(instance) = found else {
                    let _ = reply.send(BeatResult::NotFound);
                    return;
                };
                let key = instance.key();
                let now = Instant::now();
                if !self.liveness.beat(&service, &key, now)
                    && let Some(d) = deadlines(&instance, &self.options.beat)
                {
                    self.liveness.track(&service, &key, d, now);
                }
                let mut result = instance.clone();
                // Only client-reported health follows beats; a server-checked instance
                // keeps the checker's verdict.
                let reported = deadlines(&instance, &self.options.beat).is_some();
                if reported && instance.status != status {
                    let _ = self.apply(Op::SetHealth {
                        service,
                        instance: key,
                        status,
                    });
                    result.status = status;
                }
                let _ = reply.send(BeatResult::Alive(result));
            }
            Command::Fail {
                service,
                instance,
                reply,
            } => {
                let found = self
                    .shared
                    .naming
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&service)
                    .and_then(|s| s.instances.get(&instance).map(|i| (**i).clone()));
                let Some(mut found) = found else {
                    let _ = reply.send(BeatResult::NotFound);
                    return;
                };
                self.liveness.fail(&service, &instance, Instant::now());
                let _ = self.apply(Op::SetHealth {
                    service,
                    instance,
                    status: HealthStatus::Critical,
                });
                found.status = HealthStatus::Critical;
                let _ = reply.send(BeatResult::Alive(found));
            }
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        let verdicts = match self.shared.link.get() {
            None => self.liveness.sweep(now),
            Some(link) => self.liveness.sweep_owned(now, |key| link.owns(key)),
        };
        if verdicts.is_empty() {
            return;
        }
        // One change per service per sweep (see `Naming::apply_expiry`); a service's
        // verdicts keep their order.
        let mut by_service: HashMap<ServiceKey, Vec<Op>> = HashMap::new();
        for op in verdicts {
            if matches!(op, Op::Deregister { .. }) {
                self.shared.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
            by_service.entry(op.service().clone()).or_default().push(op);
        }
        for (service, ops) in by_service {
            self.shared
                .stats
                .ops
                .fetch_add(ops.len() as u64, Ordering::Relaxed);
            let (change, durable) = self
                .shared
                .naming
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .apply_expiry(&service, &ops);
            let Some(change) = change else { continue };
            if durable {
                self.save();
            }
            self.publish(&change);
            // Expiry runs on the owner only; its result replicates like a write.
            self.emit(&change);
        }
    }

    /// Writes the stored state (services, persistent instances) to the state file.
    fn save(&self) {
        let Some(path) = &self.options.state_file else {
            return;
        };
        // Saved under a read lock: readers go on while the file is written and synced.
        // Only this task writes, so the state saved is exactly the state just applied.
        let naming = self.shared.naming.read().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = persist::save(path, &naming) {
            self.shared
                .stats
                .persist_failures
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "registry state not saved");
        }
    }

    /// Tells watchers, pushes and blocking queries about a committed change.
    fn publish(&self, change: &Change) {
        let _ = self.shared.changes.send(change.clone());
        self.shared.revision.send_replace(change.revision);
    }

    /// Hands a change this node made to the cluster's replicator (if in a cluster).
    fn emit(&self, change: &Change) {
        if let Some(link) = self.shared.link.get() {
            link.emitted(change);
        }
    }

    fn apply(&mut self, op: Op) -> Result<Applied, NamingError> {
        self.shared.stats.ops.fetch_add(1, Ordering::Relaxed);
        let persist = needs_persist(&op);
        // Taken before the op moves into the state, so that a registration is never
        // copied: only a replicated state is kept whole (to diff it with the old one).
        let track = Track::of(&op, &self.options.beat);
        let put = matches!(op, Op::Put { .. } | Op::Patch { .. }).then(|| op.clone());
        let (applied, save, before) = {
            let mut naming = self
                .shared
                .naming
                .write()
                .unwrap_or_else(|p| p.into_inner());
            // A replicated state or patch replaces part of a service: keep the old one
            // to diff.
            let before = put.as_ref().and_then(|op| naming.get(op.service()));
            let applied = naming.apply(op)?;
            let touched_persistent = applied.previous.as_ref().is_some_and(|p| !p.ephemeral);
            let save = applied.change.is_some()
                && (persist
                    || touched_persistent
                    || put.as_ref().is_some_and(|op| {
                        crate::cluster::put_touches_durable(op, before.as_deref())
                    }));
            (applied, save, before)
        };
        if save {
            self.save();
        }
        match &put {
            Some(Op::Put { service, state }) => {
                crate::cluster::track_put(
                    &mut self.liveness,
                    &self.options.beat,
                    service,
                    before.as_deref(),
                    state.as_ref(),
                );
            }
            Some(Op::Patch {
                service,
                put,
                removed,
            }) => {
                crate::cluster::track_patch(
                    &mut self.liveness,
                    &self.options.beat,
                    service,
                    before.as_deref(),
                    put,
                    removed,
                );
            }
            // A release that found the instance held by someone else changed nothing.
            _ if matches!(track, Track::Forget { .. }) && applied.change.is_none() => {}
            _ => self.track(track),
        }
        if let Some(change) = &applied.change {
            self.publish(change);
            // Replicated states are not replicated again.
            if put.is_none() {
                self.emit(change);
            }
        }
        Ok(applied)
    }

    fn track(&mut self, track: Track) {
        match track {
            Track::Timed {
                service,
                key,
                deadlines,
                update,
            } => match deadlines {
                Some(d) if update && self.liveness.contains(&service, &key) => {
                    self.liveness.retime(&service, &key, d)
                }
                Some(d) => self.liveness.track(&service, &key, d, Instant::now()),
                None => self.liveness.forget(&service, &key),
            },
            Track::Forget { service, key } => self.liveness.forget(&service, &key),
            Track::Nothing => {}
        }
    }
}

/// What an applied op means for liveness bookkeeping.
enum Track {
    /// A registration or update: track with these deadlines, or forget when `None`
    /// (server-checked). An update of a tracked instance keeps its last beat.
    Timed {
        service: ServiceKey,
        key: InstanceKey,
        deadlines: Option<Deadlines>,
        update: bool,
    },
    Forget {
        service: ServiceKey,
        key: InstanceKey,
    },
    Nothing,
}

impl Track {
    fn of(op: &Op, defaults: &BeatTimings) -> Self {
        match op {
            Op::Register { service, instance } | Op::Update { service, instance } => Track::Timed {
                service: service.clone(),
                key: instance.key(),
                deadlines: deadlines(instance, defaults),
                update: matches!(op, Op::Update { .. }),
            },
            Op::Deregister { service, instance }
            | Op::Release {
                service, instance, ..
            } => Track::Forget {
                service: service.clone(),
                key: instance.clone(),
            },
            _ => Track::Nothing,
        }
    }
}

fn needs_persist(op: &Op) -> bool {
    match op {
        Op::Register { instance, .. } | Op::Update { instance, .. } => !instance.ephemeral,
        Op::CreateService { .. }
        | Op::UpdateService { .. }
        | Op::DeleteService { .. }
        | Op::UpdateCluster { .. } => true,
        // Decided from the states it replaces (`cluster::put_touches_durable`).
        Op::Deregister { .. }
        | Op::Release { .. }
        | Op::SetHealth { .. }
        | Op::Put { .. }
        | Op::Patch { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DEFAULT_CLUSTER, META_BEAT_TIMEOUT, META_DELETE_TIMEOUT};

    fn fast() -> CoreOptions {
        CoreOptions {
            sweep_every: Duration::from_millis(100),
            ..CoreOptions::default()
        }
    }

    async fn register(r: &Registry, s: &ServiceKey, i: Instance) {
        r.submit(Op::Register {
            service: s.clone(),
            instance: i,
        })
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn ephemeral_instance_expires_on_default_timings() {
        let r = Registry::start(fast()).unwrap();
        let s = ServiceKey::simple("a");
        register(&r, &s, Instance::new(&s, "10.0.0.1", 80, DEFAULT_CLUSTER)).await;
        tokio::time::sleep(Duration::from_millis(14_500)).await;
        assert!(r.get(&s).unwrap().instances.values().all(|i| i.healthy()));
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(r.get(&s).unwrap().instances.values().all(|i| !i.healthy()));
        // A beat brings it back.
        let res = r
            .beat(
                s.clone(),
                "10.0.0.1".into(),
                80,
                None,
                HealthStatus::Passing,
            )
            .await
            .unwrap();
        assert!(matches!(res, BeatResult::Alive(i) if i.healthy()));
        assert!(r.get(&s).unwrap().instances.values().all(|i| i.healthy()));
        tokio::time::sleep(Duration::from_millis(31_000)).await;
        assert!(r.get(&s).unwrap().instances.is_empty());
        assert_eq!(r.stats().expired.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn per_instance_timeouts_apply() {
        let r = Registry::start(fast()).unwrap();
        let s = ServiceKey::simple("a");
        let mut i = Instance::new(&s, "10.0.0.1", 80, DEFAULT_CLUSTER);
        let m = Arc::make_mut(&mut i.metadata);
        m.insert(META_BEAT_TIMEOUT.into(), "1000".into());
        m.insert(META_DELETE_TIMEOUT.into(), "2000".into());
        register(&r, &s, i).await;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert!(r.get(&s).unwrap().instances.values().all(|i| !i.healthy()));
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert!(r.get(&s).unwrap().instances.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_held_instance_outlives_its_beats_by_the_orphan_timeout() {
        let mut options = fast();
        options.beat = BeatTimings {
            interval_ms: 500,
            unhealthy_after_ms: 1_000,
            delete_after_ms: 2_000,
            held_delete_after_ms: 6_000,
        };
        let r = Registry::start(options).unwrap();
        let s = ServiceKey::simple("a");
        let mut held = Instance::new(&s, "10.0.0.1", 80, DEFAULT_CLUSTER);
        held.owner = Some("conn-1".into());
        register(&r, &s, held).await;
        register(&r, &s, Instance::new(&s, "10.0.0.2", 80, DEFAULT_CLUSTER)).await;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let left: Vec<_> = r
            .get(&s)
            .unwrap()
            .instances
            .values()
            .map(|i| i.ip.to_string())
            .collect();
        assert_eq!(
            left,
            ["10.0.0.1"],
            "the plain one went after 2 s, the held one stays"
        );
        tokio::time::sleep(Duration::from_millis(4_000)).await;
        assert!(r.get(&s).unwrap().instances.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn beat_for_unknown_instance_is_not_found() {
        let r = Registry::start(fast()).unwrap();
        let res = r
            .beat(
                ServiceKey::simple("x"),
                "1.2.3.4".into(),
                1,
                None,
                HealthStatus::Passing,
            )
            .await
            .unwrap();
        assert!(matches!(res, BeatResult::NotFound));
    }

    #[tokio::test]
    async fn changes_are_broadcast_in_order() {
        let r = Registry::start(fast()).unwrap();
        let mut rx = r.changes();
        let mut revisions = r.revision_watch();
        let s = ServiceKey::simple("a");
        for port in 1..=3 {
            register(&r, &s, Instance::new(&s, "10.0.0.1", port, DEFAULT_CLUSTER)).await;
        }
        for want in 1..=3 {
            let c = rx.recv().await.unwrap();
            assert_eq!(c.revision, want);
        }
        revisions.changed().await.unwrap();
        assert_eq!(*revisions.borrow(), 3);
    }

    #[tokio::test]
    async fn failed_save_is_counted_and_the_registry_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CoreOptions {
            // Its folder does not exist: every save fails.
            state_file: Some(dir.path().join("missing/naming.json")),
            ..fast()
        };
        let r = Registry::start(opts).unwrap();
        let s = ServiceKey::simple("db");
        let mut i = Instance::new(&s, "10.0.0.1", 5432, DEFAULT_CLUSTER);
        i.ephemeral = false;
        register(&r, &s, i).await;
        assert_eq!(r.stats().persist_failures.load(Ordering::Relaxed), 1);
        assert_eq!(r.get(&s).unwrap().instances.len(), 1);
    }

    #[tokio::test]
    async fn persistent_instances_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CoreOptions {
            state_file: Some(dir.path().join("naming.json")),
            ..fast()
        };
        let s = ServiceKey::simple("db");
        {
            let r = Registry::start(opts.clone()).unwrap();
            let mut i = Instance::new(&s, "10.0.0.1", 5432, DEFAULT_CLUSTER);
            i.ephemeral = false;
            register(&r, &s, i).await;
            register(&r, &s, Instance::new(&s, "10.0.0.2", 5432, DEFAULT_CLUSTER)).await;
        }
        let r = Registry::start(opts).unwrap();
        let svc = r.get(&s).unwrap();
        assert_eq!(svc.instances.len(), 1);
        assert!(!svc.instances.values().next().unwrap().ephemeral);
    }
}
