//! After each reconciler pass: follow every active deployment, and end the ones that
//! are done or failed.

use std::sync::Arc;

use berth_core::AppId;
use berth_core::deployment::{Deployment, DeploymentState};
use berth_store::AppVersion;

use super::rollback::begin_rollback;
use super::track::Verdict;
use super::{HISTORY, emit, now_ms, persist_or_report};
use crate::apps::blocking;
use crate::context::Ctx;

/// Ends the app's active deployment in `state`, stores it and tells.
pub(super) async fn finish(
    ctx: &Ctx,
    app: &AppId,
    state: DeploymentState,
    reason: Option<String>,
) -> Option<Deployment> {
    let mut t = ctx.deployments.lock().remove(app)?;
    let now = now_ms();
    t.d.finish(state, now, reason.clone());
    persist_or_report(ctx, &t.d).await;
    let took = format!(
        "{:.1} s",
        now.saturating_sub(t.d.created_at_ms) as f64 / 1000.0
    );
    let (kind, message) = match state {
        DeploymentState::Succeeded => (
            "deployment_succeeded",
            format!("{} succeeded in {took}", t.d.app),
        ),
        DeploymentState::RolledBack => (
            "deployment_rolled_back",
            format!(
                "{} rolled back to version {} in {took}{}",
                t.d.app,
                t.d.target().config_version,
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ),
        DeploymentState::Failed => (
            "deployment_failed",
            format!("{} failed: {}", t.d.app, reason.unwrap_or_default()),
        ),
        _ => (
            "deployment_cancelled",
            format!("{} cancelled: {}", t.d.app, reason.unwrap_or_default()),
        ),
    };
    emit(ctx, kind, &t.d, message);
    let store_app = app.clone();
    let _ = blocking(ctx, move |s| s.prune_deployments(&store_app, HISTORY)).await;
    Some(t.d)
}

/// After each reconciler pass: follow every active deployment and end those that are
/// done or failed.
pub async fn tick(ctx: &Arc<Ctx>, desired: &[AppVersion]) {
    let now = now_ms();
    let mut changed = Vec::new();
    let mut verdicts = Vec::new();
    {
        let state = ctx.lock_state();
        let mut active = ctx.deployments.lock();
        for (app, t) in active.iter_mut() {
            let before = t.d.clone();
            let current = desired.iter().find(|a| &a.spec.id == app);
            let (verdict, said) = t.evaluate(current, &state, now);
            for message in said {
                emit(ctx, "deployment_step", &t.d, message);
            }
            if t.d != before {
                changed.push(t.d.clone());
            }
            if verdict != Verdict::Continue {
                verdicts.push((app.clone(), t.d.id.clone(), verdict));
            }
        }
    }
    for d in &changed {
        persist_or_report(ctx, d).await;
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
        match verdict {
            Verdict::Continue => {}
            Verdict::Done => {
                let state = if d.state == DeploymentState::RollingBack {
                    DeploymentState::RolledBack
                } else {
                    DeploymentState::Succeeded
                };
                finish(ctx, &app, state, None).await;
            }
            Verdict::Cancel(reason) => {
                finish(ctx, &app, DeploymentState::Cancelled, Some(reason)).await;
            }
            Verdict::Fail(reason) => {
                let can_roll_back = d.state == DeploymentState::Running
                    && d.rollback_on_failure
                    && d.from.is_some();
                if !can_roll_back {
                    let reason = if d.state == DeploymentState::RollingBack {
                        format!("the rollback did not complete: {reason}")
                    } else {
                        reason
                    };
                    finish(ctx, &app, DeploymentState::Failed, Some(reason)).await;
                    continue;
                }
                emit(
                    ctx,
                    "deployment_failed",
                    &d,
                    format!("{app} failed: {reason}; rolling back"),
                );
                if let Err(e) = begin_rollback(ctx, &mut last, &app, reason.clone()).await {
                    finish(
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
