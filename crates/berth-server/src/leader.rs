//! Leader election: of the servers sharing one store, one leads at a time.
//!
//! The leader holds the store lease `leader` and renews it every third of its time to
//! live. Only the leader reconciles and accepts agent streams; the others stand by:
//! they refuse agents (which move on to the next address in their `--server` list) and
//! redirect API calls to the leader. A leader that cannot renew steps down before its
//! lease can have expired by its own clock, so two servers never act at once; the store's
//! clock, not the servers', decides when a lease is free.
//!
//! Each time a server becomes leader it starts a new term: a cancellation token that the
//! reconciler and every agent session run under. Stepping down cancels the term, which
//! ends both, and clears the real state, since agents will report to the next leader.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use crate::context::Ctx;
use crate::events::{EventKind, NewEvent};
use crate::state::RealState;

const LEASE: &str = "leader";

/// What a leader publishes with its lease: how the others reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub server_id: String,
    /// Base URL of its REST API, where standbys redirect.
    pub api_url: String,
    /// Its agent stream address.
    pub agent_addr: String,
}

#[derive(Debug, Clone)]
pub enum Leadership {
    /// Not known yet, or the store cannot be read.
    Unknown { reason: String },
    /// This server leads; `term` ends when it stops leading.
    Leader {
        term: CancellationToken,
        since: Instant,
    },
    /// Another server leads.
    Standby { leader: LeaderInfo },
}

impl Leadership {
    pub fn term(&self) -> Option<CancellationToken> {
        match self {
            Leadership::Leader { term, .. } => Some(term.clone()),
            _ => None,
        }
    }

    /// Why this server does not take the request, and where to go instead.
    pub fn refusal(&self) -> String {
        match self {
            Leadership::Leader { .. } => "this server leads".into(),
            Leadership::Standby { leader } => format!(
                "this server stands by; {} leads (API {}, agent stream {})",
                leader.server_id, leader.api_url, leader.agent_addr
            ),
            Leadership::Unknown { reason } => {
                format!("no server is known to lead right now ({reason}); retry shortly")
            }
        }
    }
}

/// Campaigns for the lease, one round at a time.
pub struct Elector {
    ctx: Arc<Ctx>,
    me: LeaderInfo,
    info: String,
    /// Until when this server may act as leader by its own clock. Counted from before the
    /// renewal was sent, so it ends no later than the lease in the store.
    valid_until: Option<Instant>,
}

impl Elector {
    pub fn new(ctx: Arc<Ctx>, me: LeaderInfo) -> Self {
        let info = serde_json::to_string(&me).expect("leader info serialises");
        Elector {
            ctx,
            me,
            info,
            valid_until: None,
        }
    }

    fn renew_every(&self) -> Duration {
        (self.ctx.config.leader_lease / 3).max(Duration::from_millis(100))
    }

    /// One attempt to take or keep the lease; returns when the next one is due.
    pub async fn round(&mut self) -> Instant {
        let ctx = &self.ctx;
        let ttl = ctx.config.leader_lease;
        let asked_at = Instant::now();
        let (id, info) = (self.me.server_id.clone(), self.info.clone());
        let attempt = timeout(
            self.renew_every(),
            ctx.store
                .run(move |s| s.acquire_lease(LEASE, &id, &info, ttl)),
        )
        .await;
        match attempt {
            Ok(Ok(lease)) if lease.mine => {
                self.valid_until = Some(asked_at + ttl.mul_f64(0.9));
                if ctx.leadership().term().is_none() {
                    become_leader(ctx);
                }
            }
            Ok(Ok(lease)) => {
                self.valid_until = None;
                let leader = serde_json::from_str(&lease.info).unwrap_or(LeaderInfo {
                    server_id: lease.holder.clone(),
                    api_url: String::new(),
                    agent_addr: String::new(),
                });
                step_down(ctx, Leadership::Standby { leader });
            }
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => format!("cannot reach the store: {e}"),
                    Err(_) => "the store did not answer in time".into(),
                    Ok(Ok(_)) => unreachable!("handled above"),
                };
                tracing::warn!("leader lease: {reason}");
                // A leader keeps leading until its lease may have run out; a standby
                // no longer knows who leads.
                if ctx.leadership().term().is_none() {
                    ctx.set_leadership(Leadership::Unknown { reason });
                }
            }
        }
        let next = asked_at + self.renew_every();
        match self.valid_until {
            Some(until) if ctx.leadership().term().is_some() => next.min(until),
            _ => next,
        }
    }

    /// Campaigns until `cancel`, then releases the lease if held.
    pub async fn run(mut self, mut next: Instant, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = cancel.cancelled() => break,
            }
            if let Some(until) = self.valid_until
                && Instant::now() >= until
                && self.ctx.leadership().term().is_some()
            {
                self.valid_until = None;
                step_down(
                    &self.ctx,
                    Leadership::Unknown {
                        reason: "the lease could not be renewed in time".into(),
                    },
                );
            }
            next = self.round().await;
        }
        if self.ctx.leadership().term().is_some() {
            step_down(
                &self.ctx,
                Leadership::Unknown {
                    reason: "this server is shutting down".into(),
                },
            );
            let id = self.me.server_id.clone();
            // Best effort and bounded: otherwise the next leader waits for expiry.
            let _ = timeout(
                Duration::from_secs(2),
                self.ctx.store.run(move |s| s.release_lease(LEASE, &id)),
            )
            .await;
        }
    }
}

fn become_leader(ctx: &Arc<Ctx>) {
    // ACL changes made through another leader meanwhile are not in this cache.
    ctx.tokens.clear();
    let term = ctx.cancel.child_token();
    ctx.set_leadership(Leadership::Leader {
        term: term.clone(),
        since: Instant::now(),
    });
    ctx.events.emit(
        EventKind::LeaderElected,
        NewEvent::default(),
        format!("server {} leads", ctx.server_id),
    );
    tokio::spawn(crate::retention::run(ctx.clone(), term.clone()));
    let ctx = ctx.clone();
    tokio::spawn(async move {
        // Another server may have led since this one loaded deployments: pick up the
        // rolls in progress before acting.
        loop {
            match ctx.store.run(|s| s.list_deployments()).await {
                Ok(stored) => {
                    ctx.deployments.reload(stored);
                    break;
                }
                Err(e) => tracing::warn!("cannot load deployments, retrying: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = term.cancelled() => return,
            }
        }
        crate::reconcile::run(ctx, term).await;
    });
}

/// Leaves the leader role (if held) for `next`.
fn step_down(ctx: &Arc<Ctx>, next: Leadership) {
    let previous = ctx.set_leadership(next.clone());
    if let Some(term) = previous.term() {
        term.cancel();
        let mut state = ctx.lock_state();
        *state = RealState::default();
        // Dropping the senders ends every agent's outbound stream.
        ctx.sessions.clear();
        drop(state);
        ctx.deployments.clear();
        ctx.events.emit(
            EventKind::LeadershipLost,
            NewEvent::default(),
            format!(
                "server {} no longer leads: {}",
                ctx.server_id,
                next.refusal()
            ),
        );
    }
}
