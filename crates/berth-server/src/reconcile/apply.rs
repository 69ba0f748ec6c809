//! Carries a pass out: the plan's decisions into real state, its notes onto the event
//! bus, its commands to the agents; then the deployments' verdicts (stored, finished,
//! rolled back). The only place a pass changes anything.

use berth_core::InstanceId;
use berth_core::deployment::DeploymentState;
use tokio::time::Instant;

use super::plan::Plan;
use crate::agents::wire;
use crate::context::Ctx;
use crate::deploy::progress::{self, Ending, Progress};
use crate::events::{EventBus, EventKind, NewEvent, Note};
use crate::state::RealState;

/// Records what `plan` decided in real state: forgotten starts and stops, failures,
/// verdicts, pending starts and requested stops (so the next pass does not order them
/// again).
pub fn record(state: &mut RealState, plan: &Plan<'_>, now: Instant) {
    for id in &plan.timed_out {
        state.pending.remove(id);
    }
    for id in &plan.rearmed {
        state.stop_requested.remove(id);
    }
    for f in &plan.failures {
        state.note_failure(&f.app, now, f.info.clone());
    }
    for (app, failures) in &plan.delays_announced {
        state.apps.entry(app.clone()).or_default().announced_delay = *failures;
    }
    for app in &plan.settled {
        if let Some(health) = state.apps.get_mut(app) {
            health.why = None;
        }
    }
    for p in &plan.placements {
        state.apps.entry(p.app.clone()).or_default().why = p.why.clone();
    }
    for s in &plan.starts {
        state.pending.insert(s.instance.clone(), s.pending(now));
    }
    for s in &plan.stops {
        state.pending.remove(&s.instance);
        state.stop_requested.insert(s.instance.clone(), now);
    }
    state.used_instance_seqs(plan.next_seq);
}

pub fn emit(events: &EventBus, notes: Vec<Note>) {
    for n in notes {
        events.emit(n.kind, n.about, n.message);
    }
}

/// The whole plan: recorded, told, and sent (starts, then stops).
pub fn carry_out(ctx: &Ctx, state: &mut RealState, plan: Plan<'_>, now: Instant) {
    record(state, &plan, now);
    let Plan {
        starts,
        stops,
        notes,
        ..
    } = plan;
    emit(&ctx.events, notes);
    for s in starts {
        let message = wire::start(s.app, &s.instance);
        send(ctx, state, &s.node, "start", &s.instance, message);
    }
    for s in stops {
        let message = wire::stop(&s.instance, s.drain_ms, s.grace_ms, &s.reason);
        send(ctx, state, &s.node, "stop", &s.instance, message);
    }
}

fn send(
    ctx: &Ctx,
    state: &mut RealState,
    node: &berth_core::NodeId,
    kind: &'static str,
    instance: &InstanceId,
    message: berth_proto::agent::v1::ServerMessage,
) {
    if ctx.sessions.send(node, message) {
        ctx.metrics
            .commands
            .get_or_create(&crate::metrics::KindLabel { kind })
            .inc();
    } else {
        // Forget the order so the next pass decides again with fresh state.
        state.pending.remove(instance);
        state.stop_requested.remove(instance);
        ctx.events.emit(
            EventKind::CommandNotDelivered,
            NewEvent::node(node),
            format!(
                "could not send a {kind} command to node {node}: not connected or its queue is full"
            ),
        );
    }
}

/// Carries out what following the deployments found: their steps told, changed ones
/// stored, finished ones ended and failed ones rolled back.
pub async fn deployments(ctx: &Ctx, progress: Progress) {
    let Progress {
        notes,
        changed,
        verdicts,
    } = progress;
    emit(&ctx.events, notes);
    for d in &changed {
        crate::deploy::persist_or_report(ctx, d).await;
    }
    if verdicts.is_empty() {
        return;
    }
    let mut last = ctx.write_lock.lock().await;
    for (app, id, verdict) in verdicts {
        // An API call may have ended or replaced it while the lock was free.
        let Some(d) = ctx.deployments.active_for(&app).filter(|d| d.id == id) else {
            continue;
        };
        match progress::ending(&d, verdict) {
            None => {}
            Some(Ending::Finish(state, reason)) => {
                progress::finish(ctx, &app, state, reason).await;
            }
            Some(Ending::RollBack { reason }) => {
                crate::deploy::emit(
                    ctx,
                    EventKind::DeploymentFailed,
                    &d,
                    format!("{app} failed: {reason}; rolling back"),
                );
                if let Err(e) =
                    crate::deploy::begin_rollback(ctx, &mut last, &app, reason.clone()).await
                {
                    progress::finish(
                        ctx,
                        &app,
                        DeploymentState::Failed,
                        Some(format!("{reason}; the rollback could not start: {e}")),
                    )
                    .await;
                }
            }
        }
    }
    drop(last);
    ctx.wake.notify_one();
}
