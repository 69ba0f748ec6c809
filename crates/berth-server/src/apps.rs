//! Changes to desired state: each one a new stored version, an event, and a wake-up for
//! the reconciler.

use std::sync::Arc;

use berth_core::{AppId, AppSpec, Deployment, VersionId};
use berth_store::{AppVersion, Change, StoreError};

use crate::context::Ctx;
use crate::deploy::{self, ChangeError, ChangeOptions};
use crate::events::{EventKind, NewEvent};

pub async fn get(ctx: &Ctx, id: &AppId) -> Result<Option<AppVersion>, StoreError> {
    let id = id.clone();
    ctx.store.run(move |s| s.get_app(&id)).await
}

pub async fn list(ctx: &Ctx) -> Result<Vec<AppVersion>, StoreError> {
    ctx.store.run(|s| s.list_apps()).await
}

pub async fn versions(ctx: &Ctx, id: &AppId) -> Result<Vec<AppVersion>, StoreError> {
    let id = id.clone();
    ctx.store.run(move |s| s.list_versions(&id)).await
}

pub async fn version(
    ctx: &Ctx,
    id: &AppId,
    v: VersionId,
) -> Result<Option<AppVersion>, StoreError> {
    let id = id.clone();
    ctx.store.run(move |s| s.get_version(&id, v)).await
}

/// A stored change and the deployment that follows it (none when nothing changed).
pub struct Changed {
    pub record: AppVersion,
    pub deployment: Option<Deployment>,
    pub created: bool,
}

/// Creates the app; fails if it exists.
pub async fn create(
    ctx: &Arc<Ctx>,
    spec: AppSpec,
    options: &ChangeOptions,
) -> Result<Changed, ChangeError> {
    let mut last = ctx.write_lock.lock().await;
    let version = next_version(&mut last, None);
    let record = AppVersion::first(spec, version);
    let r = record.clone();
    ctx.store.run(move |s| s.create_app(&r)).await?;
    announce(ctx, &record, None);
    let d = deploy::begin(ctx, None, &record, options).await;
    Ok(Changed {
        record,
        deployment: Some(d),
        created: true,
    })
}

/// Creates or updates.
pub async fn put(
    ctx: &Arc<Ctx>,
    spec: AppSpec,
    options: &ChangeOptions,
) -> Result<Changed, ChangeError> {
    let mut last = ctx.write_lock.lock().await;
    let id = spec.id.clone();
    let current = {
        let id = id.clone();
        ctx.store.run(move |s| s.get_app(&id)).await?
    };
    match current {
        None => {
            let version = next_version(&mut last, None);
            let record = AppVersion::first(spec, version);
            let r = record.clone();
            ctx.store.run(move |s| s.create_app(&r)).await?;
            announce(ctx, &record, None);
            let d = deploy::begin(ctx, None, &record, options).await;
            Ok(Changed {
                record,
                deployment: Some(d),
                created: true,
            })
        }
        // Deploying the same spec again is not a change: no new version, nothing moves.
        Some(cur) if cur.spec == spec => Ok(Changed {
            deployment: ctx.deployments.active_for(&cur.spec.id),
            record: cur,
            created: false,
        }),
        Some(cur) => {
            deploy::check_free(ctx, &id, options.force)?;
            let version = next_version(&mut last, Some(cur.version));
            let change = if cur.spec.needs_new_instances(&spec) {
                Change::Updated
            } else {
                Change::Scaled
            };
            let record = cur.next(spec, version, change);
            let r = record.clone();
            let expected = cur.version;
            ctx.store.run(move |s| s.update_app(&r, expected)).await?;
            announce(ctx, &record, Some(&cur));
            let d = deploy::begin(ctx, Some(&cur), &record, options).await;
            Ok(Changed {
                record,
                deployment: Some(d),
                created: false,
            })
        }
    }
}

/// Applies `edit` to the current spec as a new version.
pub async fn modify(
    ctx: &Arc<Ctx>,
    id: &AppId,
    change: Change,
    options: &ChangeOptions,
    edit: impl FnOnce(&mut AppSpec),
) -> Result<Changed, ChangeError> {
    let mut last = ctx.write_lock.lock().await;
    let cur = {
        let id = id.clone();
        ctx.store.run(move |s| s.get_app(&id)).await?
    }
    .ok_or_else(|| StoreError::NotFound(id.clone()))?;
    deploy::check_free(ctx, id, options.force)?;
    let mut spec = cur.spec.clone();
    edit(&mut spec);
    let version = next_version(&mut last, Some(cur.version));
    let record = cur.next(spec, version, change);
    let r = record.clone();
    let expected = cur.version;
    ctx.store.run(move |s| s.update_app(&r, expected)).await?;
    announce(ctx, &record, Some(&cur));
    let d = deploy::begin(ctx, Some(&cur), &record, options).await;
    Ok(Changed {
        record,
        deployment: Some(d),
        created: false,
    })
}

/// Deleting is always allowed: a running deployment of the app ends where it stands.
pub async fn delete(ctx: &Arc<Ctx>, id: &AppId) -> Result<bool, StoreError> {
    let _last = ctx.write_lock.lock().await;
    let id2 = id.clone();
    let deleted = ctx.store.run(move |s| s.delete_app(&id2)).await?;
    if deleted {
        deploy::app_deleted(ctx, id).await;
        ctx.events.emit(
            EventKind::AppDeleted,
            NewEvent::app(id),
            format!("{id} deleted; its instances will be stopped"),
        );
        ctx.lock_state().apps.remove(id.as_str());
        ctx.wake.notify_one();
    }
    Ok(deleted)
}

pub(crate) fn next_version(last: &mut Option<VersionId>, current: Option<VersionId>) -> VersionId {
    let prev = (*last).max(current);
    let v = VersionId::next(prev, crate::clock::unix_ms());
    *last = Some(v);
    v
}

pub(crate) fn announce(ctx: &Ctx, record: &AppVersion, before: Option<&AppVersion>) {
    let id = &record.spec.id;
    let (kind, message) = match (record.change, before) {
        (Change::Created, _) => (
            EventKind::AppCreated,
            format!(
                "{id} created at version {} with {} instance(s)",
                record.version, record.spec.instances
            ),
        ),
        (Change::Scaled, Some(b)) => (
            EventKind::AppScaled,
            format!(
                "{id} scaled from {} to {} instance(s) (version {})",
                b.spec.instances, record.spec.instances, record.version
            ),
        ),
        (Change::RolledBack, _) => (
            EventKind::AppRolledBack,
            format!(
                "{id} rolled back to the spec of version {} (version {})",
                record.config_version, record.version
            ),
        ),
        (Change::Restarted, _) => (
            EventKind::AppRestarted,
            format!(
                "{id} restarting: every instance is replaced (version {})",
                record.version
            ),
        ),
        _ => (
            EventKind::AppUpdated,
            format!(
                "{id} updated to version {}; instances are replaced",
                record.version
            ),
        ),
    };
    ctx.events.emit(kind, NewEvent::app(id), message);
    // A deliberate change deserves a fresh start, not the delay earned by old failures.
    if record.config_version == record.version {
        ctx.lock_state().apps.remove(id.as_str());
    }
    ctx.wake.notify_one();
}
