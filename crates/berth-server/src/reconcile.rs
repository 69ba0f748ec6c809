//! The reconciler loop: wakes on every change and every few seconds, and runs a pass:
//! read the desired state, compute a [`plan::Plan`] against real state, carry it out
//! ([`apply`]), then follow the deployments over the result and carry out their
//! verdicts in the same pass.

pub mod apply;
pub mod plan;

use std::sync::Arc;

use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::context::Ctx;
use crate::events::{EventKind, NewEvent};
use plan::PlanInput;

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    // Acting before agents have reported would start duplicates of instances that are
    // running fine on nodes not yet reconnected.
    let grace = ctx.config.startup_grace;
    ctx.events.emit(
        EventKind::ReconcilerWaiting,
        NewEvent::default(),
        format!(
            "waiting {} ms for agents to report before acting",
            grace.as_millis()
        ),
    );
    tokio::select! {
        _ = sleep(grace) => {}
        _ = cancel.cancelled() => return,
    }
    ctx.events.emit(
        EventKind::ReconcilerStarted,
        NewEvent::default(),
        "reconciler active",
    );
    let mut store_failing = false;
    loop {
        pass(&ctx, &mut store_failing).await;
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = sleep(ctx.config.reconcile_interval) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// One pass. Changes nothing when the desired state cannot be read.
async fn pass(ctx: &Arc<Ctx>, store_failing: &mut bool) {
    ctx.metrics.reconcile_passes.inc();
    let now = Instant::now();
    {
        let mut state = ctx.lock_state();
        state.mark_lost(now, ctx.config.node_ttl, &ctx.events);
    }
    let desired = match ctx.store.run(|s| s.list_apps()).await {
        Ok(apps) => apps,
        Err(e) => {
            // Never read a failing store as "no apps": that would stop everything.
            if !*store_failing {
                ctx.events.emit(
                    EventKind::StoreError,
                    NewEvent::default(),
                    format!("cannot read desired state, changing nothing until it can: {e}"),
                );
            }
            *store_failing = true;
            return;
        }
    };
    *store_failing = false;
    let progress = {
        let mut state = ctx.lock_state();
        let connected = ctx.sessions.connected();
        let first_seq = state.next_instance_seq();
        let plan = plan::plan(
            &PlanInput {
                desired: &desired,
                state: &state,
                connected: &connected,
                now,
                now_ms: crate::clock::unix_ms(),
                first_seq,
            },
            &ctx.plan_config(),
        );
        apply::carry_out(ctx, &mut state, plan, now);
        ctx.metrics.observe(&state, desired.len());
        // The deployments see the starts and stops just ordered.
        let mut progress = crate::deploy::progress::evaluate(
            &ctx.deployments,
            &desired,
            &state,
            crate::clock::unix_ms(),
        );
        // Told under the state lock, like the plan's notes, so no agent report slips
        // between what was seen and what is said about it.
        apply::emit(&ctx.events, std::mem::take(&mut progress.notes));
        progress
    };
    apply::deployments(ctx, progress).await;
}
