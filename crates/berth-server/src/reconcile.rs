//! The reconciler loop: wakes on every change and every few seconds, compares desired and
//! real state, and sends the resulting commands to agents.

pub mod plan;

use std::sync::Arc;

use berth_proto::agent::v1::server_message::Kind;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use crate::context::Ctx;
use crate::events::NewEvent;

pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    // Acting before agents have reported would start duplicates of instances that are
    // running fine on nodes not yet reconnected.
    let grace = ctx.config.startup_grace;
    ctx.events.emit(
        "reconciler_waiting",
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
        "reconciler_started",
        NewEvent::default(),
        "reconciler active",
    );
    let mut store_failing = false;
    loop {
        if let Some(desired) = pass(&ctx, &mut store_failing).await {
            crate::deploy::tick(&ctx, &desired).await;
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = sleep(ctx.config.reconcile_interval) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// One pass; returns the desired state it acted on (`None` when it could not read it).
async fn pass(ctx: &Arc<Ctx>, store_failing: &mut bool) -> Option<Vec<berth_store::AppVersion>> {
    ctx.metrics.reconcile_passes.inc();
    let now = Instant::now();
    {
        let mut state = ctx.lock_state();
        state.mark_lost(now, ctx.config.node_ttl, &ctx.events);
    }
    let store = ctx.store.clone();
    let desired = match tokio::task::spawn_blocking(move || store.list_apps()).await {
        Ok(Ok(apps)) => apps,
        Ok(Err(e)) => {
            // Never read a failing store as "no apps": that would stop everything.
            if !*store_failing {
                ctx.events.emit(
                    "store_error",
                    NewEvent::default(),
                    format!("cannot read desired state, changing nothing until it can: {e}"),
                );
            }
            *store_failing = true;
            return None;
        }
        Err(e) => {
            tracing::error!("store read task failed: {e}");
            return None;
        }
    };
    *store_failing = false;
    let mut state = ctx.lock_state();
    let commands = plan::plan(&desired, &mut state, now, &ctx.plan_config(), &ctx.events);
    for cmd in commands {
        let (kind, instance) = match &cmd.message.kind {
            Some(Kind::Start(s)) => ("start", s.instance_id.clone()),
            Some(Kind::Stop(s)) => ("stop", s.instance_id.clone()),
            _ => ("other", String::new()),
        };
        let sent = state
            .nodes
            .get(&cmd.node)
            .and_then(|n| n.tx.as_ref())
            .map(|tx| tx.try_send(cmd.message).is_ok())
            .unwrap_or(false);
        if sent {
            ctx.metrics
                .commands
                .get_or_create(&crate::metrics::KindLabel { kind })
                .inc();
        } else {
            // Forget the order so the next pass decides again with fresh state.
            let id = berth_core::InstanceId::new(instance);
            state.pending.remove(&id);
            state.stop_requested.remove(&id);
            ctx.events.emit(
                "command_not_delivered",
                NewEvent::node(&cmd.node),
                format!("could not send a {kind} command to node {}: not connected or its queue is full", cmd.node),
            );
        }
    }
    ctx.metrics.observe(&state, desired.len());
    drop(state);
    Some(desired)
}
