//! Deployments: every change that affects running instances gets one. At most one runs
//! per app; the reconciler moves instances, and after each of its passes [`tick`] looks
//! at real state, records steps and progress, and ends each deployment: succeeded,
//! failed (deadline, crash loop) and rolled back, or cancelled.
//!
//! Deployments are stored on every change, so a restarted server goes on following a
//! roll it had started.

pub mod track;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_core::deployment::{Deployment, DeploymentKind, DeploymentState, Target};
use berth_core::{AppId, DeploymentId, VersionId};
use berth_store::{AppVersion, Change, StoreError};

use crate::apps::{announce, blocking, next_version};
use crate::context::Ctx;
use crate::events::NewEvent;
use track::{Tracked, Verdict};

/// Finished deployments kept per app.
pub const HISTORY: usize = 20;

/// How a change is deployed, from the request.
#[derive(Debug, Clone, Default)]
pub struct ChangeOptions {
    /// Supersede a running deployment instead of refusing the change.
    pub force: bool,
    /// Deadline of the deployment; the server's `deployment_timeout` when absent.
    pub timeout: Option<Duration>,
    /// Do not roll back when the deployment fails.
    pub no_rollback: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "app {app} has deployment {id} {state}; wait for it (`berth deployments show {id}`), roll it back (`berth deployments rollback {id}`), or send the change with force=true to supersede it"
    )]
    Busy {
        app: AppId,
        id: DeploymentId,
        state: DeploymentState,
    },
    #[error("deployment {0} does not exist; list them with `berth deployments`")]
    NotFound(DeploymentId),
    #[error("{0}")]
    Refused(String),
}

/// Deployments being followed, one per app at most.
#[derive(Default)]
pub struct Deployments {
    active: Mutex<HashMap<AppId, Tracked>>,
}

impl Deployments {
    pub fn lock(&self) -> MutexGuard<'_, HashMap<AppId, Tracked>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adopts the active deployments found in the store at start.
    pub fn load(&self, stored: Vec<Deployment>) {
        let mut active = self.lock();
        for d in stored.into_iter().filter(|d| d.state.is_active()) {
            active.insert(d.app.clone(), Tracked::loaded(d));
        }
    }

    pub fn active_for(&self, app: &AppId) -> Option<Deployment> {
        self.lock().get(app).map(|t| t.d.clone())
    }

    pub fn all_active(&self) -> Vec<Deployment> {
        self.lock().values().map(|t| t.d.clone()).collect()
    }
}

fn now_ms() -> u64 {
    crate::clock::unix_ms()
}

async fn persist(ctx: &Ctx, d: &Deployment) -> Result<(), StoreError> {
    let d = d.clone();
    blocking(ctx, move |s| s.put_deployment(&d)).await
}

/// Stores `d`; a failure is reported, not fatal: the deployment goes on in memory.
async fn persist_or_report(ctx: &Ctx, d: &Deployment) {
    if let Err(e) = persist(ctx, d).await {
        ctx.events.emit(
            "store_error",
            NewEvent::app(&d.app),
            format!("cannot store deployment {}: {e}", d.id),
        );
    }
}

fn emit(ctx: &Ctx, kind: &'static str, d: &Deployment, message: String) {
    ctx.events
        .emit(kind, NewEvent::app(&d.app), format!("{}: {message}", d.id));
}

/// Checks that `app` may change now. With `force`, a running deployment is superseded
/// once the change is stored (see [`begin`]). Call with the write lock held.
pub fn check_free(ctx: &Ctx, app: &AppId, force: bool) -> Result<(), ChangeError> {
    match ctx.deployments.active_for(app) {
        Some(d) if !force => Err(ChangeError::Busy {
            app: app.clone(),
            id: d.id,
            state: d.state,
        }),
        _ => Ok(()),
    }
}

fn kind_of(change: Change) -> DeploymentKind {
    match change {
        Change::Created => DeploymentKind::Create,
        Change::Updated => DeploymentKind::Update,
        Change::Scaled => DeploymentKind::Scale,
        Change::Restarted => DeploymentKind::Restart,
        Change::RolledBack => DeploymentKind::Rollback,
    }
}

pub fn target_of(v: &AppVersion) -> Target {
    Target {
        version: v.version,
        config_version: v.config_version,
        instances: v.spec.instances,
    }
}

/// Starts following the change from `before` to `record` (already stored); supersedes
/// a running deployment of the app. Call with the write lock held.
pub async fn begin(
    ctx: &Ctx,
    before: Option<&AppVersion>,
    record: &AppVersion,
    options: &ChangeOptions,
) -> Deployment {
    let now = now_ms();
    let timeout = options.timeout.unwrap_or(ctx.config.deployment_timeout);
    let d = Deployment::new(
        record.spec.id.clone(),
        kind_of(record.change),
        before.map(target_of),
        target_of(record),
        !options.no_rollback,
        timeout.as_millis() as u64,
        now,
    );
    let superseded = ctx.deployments.lock().remove(&d.app);
    if let Some(mut old) = superseded {
        old.d.finish(
            DeploymentState::Cancelled,
            now,
            Some(format!("superseded by {} (a forced change)", d.id)),
        );
        persist_or_report(ctx, &old.d).await;
        emit(
            ctx,
            "deployment_cancelled",
            &old.d,
            format!("superseded by {}", d.id),
        );
    }
    persist_or_report(ctx, &d).await;
    emit(
        ctx,
        "deployment_started",
        &d,
        d.steps
            .first()
            .map(|s| s.message.clone())
            .unwrap_or_default(),
    );
    let failures = ctx
        .lock_state()
        .apps
        .get(record.spec.id.as_str())
        .map(|h| h.failures)
        .unwrap_or(0);
    ctx.deployments
        .lock()
        .insert(d.app.clone(), Tracked::new(d.clone(), failures));
    d
}

/// The app was deleted: its deployment ends where it stands. Call with the write lock.
pub async fn app_deleted(ctx: &Ctx, app: &AppId) {
    let removed = ctx.deployments.lock().remove(app);
    if let Some(mut t) = removed {
        t.d.finish(
            DeploymentState::Cancelled,
            now_ms(),
            Some("the app was deleted".into()),
        );
        persist_or_report(ctx, &t.d).await;
        emit(
            ctx,
            "deployment_cancelled",
            &t.d,
            "the app was deleted".into(),
        );
    }
}

/// Reads a deployment: the followed copy if active, else the stored one.
pub async fn get(ctx: &Ctx, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
    if let Some(d) = ctx
        .deployments
        .all_active()
        .into_iter()
        .find(|d| &d.id == id)
    {
        return Ok(Some(d));
    }
    let id = id.clone();
    blocking(ctx, move |s| s.get_deployment(&id)).await
}

/// Every deployment, newest first, active ones as followed in memory.
pub async fn list(ctx: &Ctx) -> Result<Vec<Deployment>, StoreError> {
    let mut stored = blocking(ctx, |s| s.list_deployments()).await?;
    let active = ctx.deployments.all_active();
    for d in stored.iter_mut() {
        if let Some(a) = active.iter().find(|a| a.id == d.id) {
            *d = a.clone();
        }
    }
    for a in active {
        if !stored.iter().any(|d| d.id == a.id) {
            stored.push(a);
        }
    }
    stored.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
    Ok(stored)
}

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
        blocking(ctx, move |s| s.get_app(&app)).await?
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
        blocking(ctx, move |s| s.get_version(&app, from.version)).await?
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
    blocking(ctx, move |s| s.update_app(&r, cur.version)).await?;
    ctx.lock_state().apps.remove(app.as_str());
    announce(ctx, &record, Some(&cur));
    Ok(begin(ctx, Some(&cur), &record, &ChangeOptions::default()).await)
}

/// Stores the version `app` had before its running deployment and turns the deployment
/// to rolling back. Call with the write lock held (`last`).
async fn begin_rollback(
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
        blocking(ctx, move |s| s.get_app(&app)).await?
    }
    .ok_or_else(|| ChangeError::Refused(format!("app {app} no longer exists")))?;
    let earlier = {
        let app = app.clone();
        blocking(ctx, move |s| s.get_version(&app, from.version)).await?
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
    blocking(ctx, move |s| s.update_app(&r, expected)).await?;
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
            "deployment_step",
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

/// Ends the app's active deployment in `state`, stores it and tells.
async fn finish(
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
