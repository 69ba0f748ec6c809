//! Who is in the cluster and healthy: a heartbeat to every peer each `heartbeat`
//! period. A peer that misses `missed_beats` in a row leaves the healthy list, and with
//! it the ownership view, so its keys move to the remaining members.
//!
//! Members are dialled by address but known by the id they announce (their advertised
//! address): every member sorts the same ids, whatever address it dials them by.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use berth_proto::registry::v1 as pb;
use tokio::time::{Instant, MissedTickBehavior};

use super::peer::Peer;
use super::replicate::Queue;
use super::{Cluster, ClusterOptions, ClusterStats};

/// What this member knows of one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerState {
    /// The id it announced; unknown until it first answers.
    pub id: Option<String>,
    pub incarnation: u64,
    pub loaded: bool,
    /// The address turned out to be this member itself.
    pub is_self: bool,
    /// Heartbeats missed in a row.
    pub failures: u32,
    pub last_ok: Option<Instant>,
    pub healthy: bool,
    /// Apply-to-acknowledge time of the last batch this peer took.
    pub lag_ms: u64,
    pub replicate_failures: u64,
    pub sync_failures: u64,
}

pub struct PeerEntry {
    pub peer: Peer,
    pub state: Mutex<PeerState>,
    /// States waiting to be replicated to this peer.
    pub queue: Queue,
}

impl PeerEntry {
    pub fn state(&self) -> std::sync::MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A peer other than this member (or not known yet to be this member).
    pub fn is_other(&self) -> bool {
        !self.state().is_self
    }
}

/// The member table and the current ownership view.
pub struct Members {
    peers: Vec<Arc<PeerEntry>>,
    view: ArcSwap<Vec<String>>,
    /// When the view last changed (ownership handovers are settling until a while after).
    changed_at: Mutex<Instant>,
    missed_beats: u32,
    /// Wakes the heartbeat loop at once (this member just loaded).
    pub(crate) beat_now: tokio::sync::Notify,
}

impl Members {
    pub fn new(options: &ClusterOptions) -> Self {
        let keepalive = options.heartbeat.max(std::time::Duration::from_millis(100));
        let mut dials: Vec<&String> = options.peers.iter().collect();
        dials.sort();
        dials.dedup();
        let peers = dials
            .into_iter()
            .filter_map(|d| {
                Peer::new(
                    d,
                    &options.secret,
                    options.tls.clone(),
                    options.rpc_timeout,
                    keepalive,
                )
                .map(|peer| {
                    let is_self = *d == options.advertise;
                    Arc::new(PeerEntry {
                        peer,
                        queue: Queue::default(),
                        state: Mutex::new(PeerState {
                            is_self,
                            id: is_self.then(|| d.clone()),
                            ..PeerState::default()
                        }),
                    })
                })
                .or_else(|| {
                    tracing::error!(peer = %d, "peer address is not usable; ignored");
                    None
                })
            })
            .collect();
        Self {
            peers,
            view: ArcSwap::from_pointee(Vec::new()),
            changed_at: Mutex::new(Instant::now()),
            beat_now: tokio::sync::Notify::new(),
            missed_beats: options.missed_beats.max(1),
        }
    }

    /// Every configured peer, this member included if it was listed.
    pub fn entries(&self) -> &[Arc<PeerEntry>] {
        &self.peers
    }

    /// Peers other than this member.
    pub fn others(&self) -> impl Iterator<Item = &Arc<PeerEntry>> {
        self.peers.iter().filter(|p| p.is_other())
    }

    /// Sorted ids of the members that own keys now: healthy, loaded peers and this
    /// member once loaded.
    pub fn view(&self) -> Arc<Vec<String>> {
        self.view.load_full()
    }

    /// Time since the view last changed.
    pub fn since_change(&self) -> std::time::Duration {
        self.changed_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// The peer that announced `id`.
    pub fn peer_by_id(&self, id: &str) -> Option<Peer> {
        self.peers.iter().find_map(|p| {
            let s = p.state();
            (!s.is_self && s.id.as_deref() == Some(id)).then(|| p.peer.clone())
        })
    }

    /// Rebuilds the ownership view from the table.
    pub fn recompute(&self, self_id: &str, self_loaded: bool, stats: &ClusterStats) {
        let mut ids: Vec<String> = self
            .peers
            .iter()
            .filter_map(|p| {
                let s = p.state();
                (!s.is_self && s.healthy && s.loaded)
                    .then(|| s.id.clone())
                    .flatten()
            })
            .filter(|id| id != self_id)
            .collect();
        if self_loaded {
            ids.push(self_id.to_string());
        }
        ids.sort();
        ids.dedup();
        if *self.view.load_full() != ids {
            tracing::info!(members = ?ids, "cluster view changed");
            stats.membership_changes.fetch_add(1, Ordering::Relaxed);
            self.view.store(Arc::new(ids));
            *self.changed_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }

    /// A peer's own heartbeat reached this member: take its load state and life at
    /// once, so a member that just loaded joins every view within one call, not one
    /// period. Health still comes from this member's own heartbeats only (an inbound
    /// beat says nothing about whether this member can reach the peer).
    pub fn observe(&self, beat: &pb::Beat) -> bool {
        let mut changed = false;
        for p in &self.peers {
            let mut s = p.state();
            if !s.is_self && s.id.as_deref() == Some(beat.id.as_str()) {
                changed |= s.loaded != beat.loaded || s.incarnation != beat.incarnation;
                s.loaded = beat.loaded;
                s.incarnation = beat.incarnation;
            }
        }
        changed
    }

    /// Records one heartbeat outcome.
    fn record(&self, entry: &PeerEntry, self_id: &str, outcome: Option<pb::Beat>) {
        let mut s = entry.state();
        match outcome {
            Some(beat) if beat.id == self_id => {
                if !s.is_self {
                    tracing::info!(peer = %entry.peer.dial, "peer address is this member");
                }
                s.is_self = true;
                s.id = Some(beat.id);
                s.healthy = false;
            }
            Some(beat) => {
                if s.id.as_deref() != Some(beat.id.as_str()) || s.incarnation != beat.incarnation {
                    tracing::info!(peer = %entry.peer.dial, id = %beat.id, loaded = beat.loaded, "peer (re)joined");
                }
                s.id = Some(beat.id);
                s.incarnation = beat.incarnation;
                s.loaded = beat.loaded;
                s.failures = 0;
                s.last_ok = Some(Instant::now());
                s.healthy = true;
            }
            None => {
                s.failures = s.failures.saturating_add(1);
                if s.healthy && s.failures >= self.missed_beats {
                    tracing::warn!(peer = %entry.peer.dial, missed = s.failures, "peer left the healthy list");
                    s.healthy = false;
                }
            }
        }
    }
}

/// This member's own heartbeat.
pub fn own_beat(c: &Cluster) -> pb::Beat {
    pb::Beat {
        id: c.id().to_string(),
        incarnation: c.incarnation,
        loaded: c.is_loaded(),
    }
}

/// Heartbeats every peer forever.
pub async fn run(c: Arc<Cluster>) {
    let mut tick = tokio::time::interval(c.options.heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Replies must come back well within one period, or rounds would pile up.
    let timeout = c.options.rpc_timeout.min(
        c.options
            .heartbeat
            .max(std::time::Duration::from_millis(50)),
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = c.members.beat_now.notified() => {}
        }
        let beat = own_beat(&c);
        let calls = c.members.others().map(|entry| {
            let beat = beat.clone();
            async move {
                let outcome = entry.peer.heartbeat(beat, timeout).await.ok();
                (entry, outcome)
            }
        });
        for (entry, outcome) in futures::future::join_all(calls).await {
            c.members.record(entry, c.id(), outcome);
        }
        c.members.recompute(c.id(), c.is_loaded(), &c.stats);
    }
}
