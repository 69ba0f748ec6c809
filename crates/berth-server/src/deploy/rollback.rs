//! Rolling back and cancelling: DELETE and `POST .../rollback` of a deployment, and the
//! automatic rollback of a failed one.

use std::sync::Arc;

use berth_core::deployment::{Deployment, DeploymentState};
use berth_core::{AppId, DeploymentId, VersionId};

use super::progress::finish;
use super::{ChangeError, ChangeOptions, begin, check_free, emit, get, now_ms, persist_or_report};
use crate::apps::{announce, next_version};
use crate::context::Ctx;
use crate::events::EventKind;

/// `DELETE /v1/deployments/{id}`: a running deployment rolls back; with `force` it
/// stops where it stands (the app keeps its new version, nothing is rolled back).
pub async fn cancel(
    ctx: &Arc<Ctx>,
    id: &DeploymentId,
    force: bool,
) -> Result<Deployment, ChangeError> {
    let mut last = ctx.write_lock.lock().await;
    let Some(d) = ctx
        .deployments
        .all_active()
        .into_iter()
        .find(|d| &d.id == id)
    else {
        return match get(ctx, id).await? {
            Some(d) => Err(ChangeError::Refused(format!(
                "deployment {id} already ended ({}); nothing to cancel. To go back to the version before it, use `berth deployments rollback {id}`",
                d.state
            ))),
            None => Err(ChangeError::NotFound(id.clone())),
        };
    };
    if force {
        return Ok(finish(
            ctx,
            &d.app,
            DeploymentState::Cancelled,
            Some("stopped where it stood (force); nothing rolled back".into()),
        )
        .await
        .unwrap_or(d));
    }
    match d.state {
        DeploymentState::RollingBack => Err(ChangeError::Refused(format!(
            "deployment {id} is already rolling back; pass force=true to stop it where it stands"
        ))),
        _ if d.from.is_none() => Err(ChangeError::Refused(format!(
            "deployment {id} created {}: there is no earlier version to roll back to; delete the app (`berth apps rm {}`) or pass force=true to stop following it",
            d.app, d.app
        ))),
        _ => {
            begin_rollback(ctx, &mut last, &d.app, "rolled back on request".into()).await?;
            Ok(ctx.deployments.active_for(&d.app).unwrap_or(d))
        }
    }
}

/// `POST /v1/deployments/{id}/rollback`: a running deployment rolls back (as DELETE);
/// a succeeded one is undone by a new deployment back to the version before it, if the
/// app has not changed since.
pub async fn rollback(ctx: &Arc<Ctx>, id: &DeploymentId) -> Result<Deployment, ChangeError> {
    if ctx.deployments.all_active().iter().any(|d| &d.id == id) {
        return cancel(ctx, id, false).await;
    }
    let mut last = ctx.write_lock.lock().await;
    let d = get(ctx, id)
        .await?
        .ok_or_else(|| ChangeError::NotFound(id.clone()))?;
    let Some(from) = d.from.clone() else {
        return Err(ChangeError::Refused(format!(
            "deployment {id} created {}: there is no earlier version to go back to",
            d.app
        )));
    };
    check_free(ctx, &d.app, false)?;
    let app = d.app.clone();
    let cur = {
        let app = app.clone();
        ctx.store.run(move |s| s.get_app(&app)).await?
    }
    .ok_or_else(|| ChangeError::Refused(format!("app {app} no longer exists")))?;
    if cur.version != d.to.version {
        return Err(ChangeError::Refused(format!(
            "app {app} changed after {id} (now at version {}); deploy the spec you want instead",
            cur.version
        )));
    }
    let earlier = {
        let app = app.clone();
        ctx.store
            .run(move |s| s.get_version(&app, from.version))
            .await?
    }
    .ok_or_else(|| {
        ChangeError::Refused(format!(
            "version {} of {app} is no longer stored; deploy the spec you want instead",
            from.version
        ))
    })?;
    let version = next_version(&mut last, Some(cur.version));
    let record = cur.rollback_to(&earlier, version);
    let r = record.clone();
    ctx.store
        .run(move |s| s.update_app(&r, cur.version))
        .await?;
    ctx.lock_state().apps.remove(app.as_str());
    announce(ctx, &record, Some(&cur));
    Ok(begin(ctx, Some(&cur), &record, &ChangeOptions::default()).await)
}

/// Stores the version `app` had before its running deployment and turns the deployment
/// to rolling back. Call with the write lock held (`last`).
pub async fn begin_rollback(
    ctx: &Ctx,
    last: &mut Option<VersionId>,
    app: &AppId,
    reason: String,
) -> Result<(), ChangeError> {
    let Some(d) = ctx.deployments.active_for(app) else {
        return Ok(());
    };
    let Some(from) = d.from.clone() else {
        return Ok(());
    };
    let cur = {
        let app = app.clone();
        ctx.store.run(move |s| s.get_app(&app)).await?
    }
    .ok_or_else(|| ChangeError::Refused(format!("app {app} no longer exists")))?;
    let earlier = {
        let app = app.clone();
        ctx.store
            .run(move |s| s.get_version(&app, from.version))
            .await?
    }
    .ok_or_else(|| {
        ChangeError::Refused(format!(
            "version {} of {app} is no longer stored; cannot roll back",
            from.version
        ))
    })?;
    let version = next_version(last, Some(cur.version));
    let record = cur.rollback_to(&earlier, version);
    let r = record.clone();
    let expected = cur.version;
    ctx.store.run(move |s| s.update_app(&r, expected)).await?;
    // The earlier version comes back at once, not after the backoff the failing one
    // earned.
    ctx.lock_state().apps.remove(app.as_str());
    let updated = {
        let mut active = ctx.deployments.lock();
        active.get_mut(app).map(|t| {
            t.d.start_rollback(now_ms(), reason.clone());
            t.reset_failures(0);
            t.d.clone()
        })
    };
    if let Some(d) = updated {
        persist_or_report(ctx, &d).await;
        emit(
            ctx,
            EventKind::DeploymentStep,
            &d,
            d.steps
                .last()
                .map(|s| s.message.clone())
                .unwrap_or_default(),
        );
    }
    announce(ctx, &record, Some(&cur));
    Ok(())
}
