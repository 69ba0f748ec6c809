//! `/v1/apps...`: desired state.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::validate::MAX_INSTANCES;
use berth_core::{AppId, AppSpec, VersionId};
use berth_store::{AppVersion, Change};
use serde::Serialize;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use crate::apps::{self, Changed};
use crate::context::Ctx;
use crate::deploy::ChangeOptions;
use crate::events::{Event, EventKind};
use crate::reconcile::plan::count_up;
use crate::state::{AppHealth, Instance, LastFailure};
use axum::extract::Extension;
use berth_core::Deployment;
use berth_core::acl::{Capability, Target};
use std::collections::HashMap;

type Result<T> = std::result::Result<T, ApiError>;

#[derive(Serialize)]
pub struct AppStatus {
    /// Instances wanted by the current version.
    pub wanted: u32,
    /// Instances of the current version running or healthy.
    pub running: usize,
    /// Instances of the current version ordered, starting or running.
    pub active: usize,
    pub failures: u32,
    /// Why instances cannot be placed, if they cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Time until the next launch is allowed, while the app is in backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// The last failed instance: exit code, message, stderr tail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<LastFailure>,
}

#[derive(Serialize)]
struct AppView {
    #[serde(flatten)]
    record: AppVersion,
    status: AppStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<Vec<Instance>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<Event>>,
    /// Health transitions of the app's instances, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    health_events: Option<Vec<Event>>,
    /// The running deployment, or the one this change started.
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<Deployment>,
}

fn status(ctx: &Ctx, record: &AppVersion) -> AppStatus {
    let state = ctx.lock_state();
    let id = record.spec.id.as_str();
    let (running, active) = count_up(&state, id, record.config_version.0);
    let health = state
        .apps
        .get(id)
        .cloned()
        .unwrap_or_else(AppHealth::default);
    let backoff_ms =
        crate::reconcile::plan::backoff_wait(&state, record, tokio::time::Instant::now())
            .map(|d| d.as_millis() as u64);
    AppStatus {
        backoff_ms,
        last_failure: health.last_failure_info,
        wanted: record.spec.instances,
        running,
        active,
        failures: health.failures,
        why: health.why,
    }
}

fn view(ctx: &Ctx, record: AppVersion, detail: bool) -> AppView {
    let status = status(ctx, &record);
    let deployment = ctx.deployments.active_for(&record.spec.id);
    let (instances, events, health_events) = if detail {
        let id = record.spec.id.to_string();
        let state = ctx.lock_state();
        let instances = state.instances().filter(|i| i.app == id).cloned().collect();
        drop(state);
        let events = ctx
            .events
            .recent(20, |e| e.app.as_deref() == Some(id.as_str()));
        let health = ctx.events.recent(10, |e| {
            e.kind == EventKind::InstanceHealthChanged && e.app.as_deref() == Some(id.as_str())
        });
        (Some(instances), Some(events), Some(health))
    } else {
        (None, None, None)
    };
    AppView {
        record,
        status,
        instances,
        events,
        health_events,
        deployment,
    }
}

fn changed_view(ctx: &Ctx, changed: Changed) -> AppView {
    let mut v = view(ctx, changed.record, false);
    if changed.deployment.is_some() {
        v.deployment = changed.deployment;
    }
    v
}

/// `?force=true&timeout=90s&rollback=false` of a change.
pub fn change_options(q: &HashMap<String, String>) -> Result<ChangeOptions> {
    let flag = |key: &str| -> Result<Option<bool>> {
        match q.get(key).map(String::as_str) {
            None => Ok(None),
            Some("" | "true" | "1" | "yes") => Ok(Some(true)),
            Some("false" | "0" | "no") => Ok(Some(false)),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key}={other:?} is not a boolean; use {key}=true or {key}=false"
            ))
            .field(key)),
        }
    };
    let timeout = match q.get("timeout") {
        None => None,
        Some(raw) => {
            let d = <std::time::Duration as berth_util::config::FromConfigValue>::parse_value(raw)
                .filter(|d| !d.is_zero() && d.as_secs() <= 24 * 3600)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "timeout={raw:?} is not a usable deadline; use a duration from 1s to 24h, like timeout=90s"
                    ))
                    .field("timeout")
                })?;
            Some(d)
        }
    };
    Ok(ChangeOptions {
        force: flag("force")?.unwrap_or(false),
        timeout,
        no_rollback: !flag("rollback")?.unwrap_or(true),
    })
}

/// Reads a body, turning a too-large one into a clear 413.
fn body(body: std::result::Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than the {limit}-byte limit; send a smaller spec (or raise max_body_bytes on the server)"),
            )
        } else {
            ApiError::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

/// TOML when the content type says so, JSON otherwise.
fn parse_spec(headers: &HeaderMap, bytes: &[u8]) -> Result<AppSpec> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ApiError::bad_request("the body is not UTF-8 text; send a JSON or TOML app spec")
    })?;
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("toml"));
    let spec = if is_toml {
        AppSpec::from_toml(text)
    } else {
        AppSpec::from_json(text)
    }?;
    Ok(spec)
}

fn parse_id(raw: &str) -> Result<AppId> {
    AppId::parse(raw)
        .map_err(|e| ApiError::bad_request(format!("{} ({})", e.message, e.fix)).field("id"))
}

pub async fn list(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>> {
    let apps = apps::list(&ctx).await?;
    let views: Vec<AppView> = apps
        .into_iter()
        .filter(|a| caller.may_read_app(a.spec.id.as_str()))
        .map(|a| view(&ctx, a, false))
        .collect();
    Ok(Json(json!({ "apps": views })))
}

pub async fn create(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let options = change_options(&q)?;
    let bytes = body(raw, ctx.config.max_body_bytes)?;
    let spec = parse_spec(&headers, &bytes)?;
    // The route checked the body's id already; this keeps the handler safe on its own.
    caller.require(Capability::Deploy, Target::App(spec.id.as_str()))?;
    let changed = apps::create(&ctx, spec, &options).await?;
    Ok((StatusCode::CREATED, Json(changed_view(&ctx, changed))).into_response())
}

pub async fn put(
    State(ctx): State<Arc<Ctx>>,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let options = change_options(&q)?;
    // The body first: a bad spec gets every problem listed, its id included.
    let bytes = body(raw, ctx.config.max_body_bytes)?;
    let spec = parse_spec(&headers, &bytes)?;
    if spec.id.as_str() != path {
        return Err(ApiError::bad_request(format!(
            "the spec's id {} differs from the URL's {path}; make them equal",
            spec.id
        ))
        .field("id"));
    }
    let changed = apps::put(&ctx, spec, &options).await?;
    let status = if changed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(changed_view(&ctx, changed))).into_response())
}

pub async fn delete(State(ctx): State<Arc<Ctx>>, Path(path): Path<String>) -> Result<Response> {
    let id = parse_id(&path)?;
    if apps::delete(&ctx, &id).await? {
        Ok((StatusCode::OK, Json(json!({ "deleted": id }))).into_response())
    } else {
        Err(ApiError::not_found(format!("app {id} does not exist")))
    }
}

/// `GET /v1/apps/{id}`, `/v1/apps/{id}/versions`, `/v1/apps/{id}/versions/{v}`.
pub async fn get_path(State(ctx): State<Arc<Ctx>>, Path(path): Path<String>) -> Result<Response> {
    if let Some(id) = path.strip_suffix("/versions") {
        let id = parse_id(id)?;
        let versions = apps::versions(&ctx, &id).await?;
        if versions.is_empty() {
            return Err(ApiError::not_found(format!("app {id} does not exist")));
        }
        return Ok(Json(json!({ "versions": versions })).into_response());
    }
    if let Some((id, v)) = path.rsplit_once("/versions/") {
        let id = parse_id(id)?;
        let v: u64 = v.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "version {v:?} is not a number; use one listed by /v1/apps/{id}/versions"
            ))
            .field("version")
        })?;
        return match apps::version(&ctx, &id, VersionId(v)).await? {
            Some(record) => Ok(Json(record).into_response()),
            None => Err(ApiError::not_found(format!("app {id} has no version {v}"))),
        };
    }
    let id = parse_id(&path)?;
    match apps::get(&ctx, &id).await? {
        Some(record) => Ok(Json(view(&ctx, record, true)).into_response()),
        None => Err(ApiError::not_found(format!("app {id} does not exist"))),
    }
}

/// `POST /v1/apps/{id}/scale` `{"instances": N}` and `POST /v1/apps/{id}/restart`.
pub async fn post_action(
    State(ctx): State<Arc<Ctx>>,
    Path(path): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let options = change_options(&q)?;
    let bytes = body(raw, ctx.config.max_body_bytes)?;
    let (id, action) = path.rsplit_once('/').ok_or_else(|| {
        ApiError::not_found(format!(
            "no action in /v1/apps/{path}; use /v1/apps/ID/scale or /v1/apps/ID/restart"
        ))
    })?;
    let id = parse_id(id)?;
    let changed = match action {
        "scale" => {
            let n = scale_count(&bytes)?;
            apps::modify(&ctx, &id, Change::Scaled, &options, |s| s.instances = n).await?
        }
        "restart" => apps::modify(&ctx, &id, Change::Restarted, &options, |_| {}).await?,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown action {other:?}; use scale or restart"
            )));
        }
    };
    Ok(Json(changed_view(&ctx, changed)).into_response())
}

fn scale_count(bytes: &[u8]) -> Result<u32> {
    let fix = format!("send {{\"instances\": N}} with N from 0 to {MAX_INSTANCES}");
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}; {fix}")))?;
    let n = v.get("instances").ok_or_else(|| {
        ApiError::bad_request(format!("instances is missing; {fix}")).field("instances")
    })?;
    n.as_u64()
        .filter(|n| *n <= u64::from(MAX_INSTANCES))
        .map(|n| n as u32)
        .ok_or_else(|| {
            ApiError::bad_request(format!("instances {n} is not allowed; {fix}")).field("instances")
        })
}
