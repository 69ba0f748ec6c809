//! Deployments: every change that affects running instances gets one. At most one runs
//! per app; the reconciler moves instances, and each of its passes follows the
//! deployments too ([`progress`]): it records steps and progress from real state and
//! ends each deployment: succeeded, failed (deadline, crash loop) and rolled back, or
//! cancelled.
//!
//! Deployments are stored on every change, so a restarted server goes on following a
//! roll it had started.

pub mod progress;
mod rollback;
pub mod track;

pub use rollback::{begin_rollback, cancel, rollback};

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use berth_core::deployment::{Deployment, DeploymentKind, DeploymentState, Target};
use berth_core::{AppId, DeploymentId};
use berth_store::{AppVersion, Change, StoreError};

use crate::context::Ctx;
use crate::events::{EventKind, NewEvent};
use track::Tracked;

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

    /// Adopts the active deployments found in the store (newest first), for apps that
    /// have none in memory.
    pub fn load(&self, stored: Vec<Deployment>) {
        let mut active = self.lock();
        for d in stored.into_iter().filter(|d| d.state.is_active()) {
            active
                .entry(d.app.clone())
                .or_insert_with(|| Tracked::loaded(d));
        }
    }

    /// Forgets every deployment: this server no longer leads, another one follows them.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Replaces what is tracked with what the store holds: a server that becomes leader
    /// takes over the rolls its predecessor had in progress.
    pub fn reload(&self, stored: Vec<Deployment>) {
        self.lock().clear();
        self.load(stored);
    }

    pub fn active_for(&self, app: &AppId) -> Option<Deployment> {
        self.lock().get(app).map(|t| t.d.clone())
    }

    pub fn all_active(&self) -> Vec<Deployment> {
        self.lock().values().map(|t| t.d.clone()).collect()
    }
}

pub(super) fn now_ms() -> u64 {
    crate::clock::unix_ms()
}

pub(super) async fn persist(ctx: &Ctx, d: &Deployment) -> Result<(), StoreError> {
    let d = d.clone();
    ctx.store.run(move |s| s.put_deployment(&d)).await
}

/// Stores `d`; a failure is reported, not fatal: the deployment goes on in memory.
pub(crate) async fn persist_or_report(ctx: &Ctx, d: &Deployment) {
    if let Err(e) = persist(ctx, d).await {
        ctx.events.emit(
            EventKind::StoreError,
            NewEvent::app(&d.app),
            format!("cannot store deployment {}: {e}", d.id),
        );
    }
}

pub(crate) fn emit(ctx: &Ctx, kind: EventKind, d: &Deployment, message: String) {
    let note = progress::note(kind, d, &message);
    ctx.events.emit(note.kind, note.about, note.message);
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
            EventKind::DeploymentCancelled,
            &old.d,
            format!("superseded by {}", d.id),
        );
    }
    persist_or_report(ctx, &d).await;
    emit(
        ctx,
        EventKind::DeploymentStarted,
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
            EventKind::DeploymentCancelled,
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
    ctx.store.run(move |s| s.get_deployment(&id)).await
}

/// Every deployment, newest first, active ones as followed in memory.
pub async fn list(ctx: &Ctx) -> Result<Vec<Deployment>, StoreError> {
    let mut stored = ctx.store.run(|s| s.list_deployments()).await?;
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
