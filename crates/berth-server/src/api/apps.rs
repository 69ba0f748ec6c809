//! `/v1/apps...`: desired state.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::validate::MAX_INSTANCES;
use berth_core::{AppId, AppSpec, VersionId};
use berth_store::{AppVersion, Change};
use serde::Serialize;
use serde_json::{Value, json};

use super::ApiError;
use crate::apps;
use crate::context::Ctx;
use crate::events::Event;
use crate::reconcile::plan::count_up;
use crate::state::{AppHealth, Instance};

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
    AppStatus {
        wanted: record.spec.instances,
        running,
        active,
        failures: health.failures,
        why: health.why,
    }
}

fn view(ctx: &Ctx, record: AppVersion, detail: bool) -> AppView {
    let status = status(ctx, &record);
    let (instances, events) = if detail {
        let id = record.spec.id.to_string();
        let state = ctx.lock_state();
        let instances = state.instances().filter(|i| i.app == id).cloned().collect();
        drop(state);
        let events = ctx
            .events
            .recent(20, |e| e.app.as_deref() == Some(id.as_str()));
        (Some(instances), Some(events))
    } else {
        (None, None)
    };
    AppView {
        record,
        status,
        instances,
        events,
    }
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

pub async fn list(State(ctx): State<Arc<Ctx>>) -> Result<Json<Value>> {
    let apps = apps::list(&ctx).await?;
    let views: Vec<AppView> = apps.into_iter().map(|a| view(&ctx, a, false)).collect();
    Ok(Json(json!({ "apps": views })))
}

pub async fn create(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let bytes = body(raw, ctx.config.max_body_bytes)?;
    let spec = parse_spec(&headers, &bytes)?;
    let record = apps::create(&ctx, spec).await?;
    Ok((StatusCode::CREATED, Json(view(&ctx, record, false))).into_response())
}

pub async fn put(
    State(ctx): State<Arc<Ctx>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
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
    let (record, created) = apps::put(&ctx, spec).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&ctx, record, false))).into_response())
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
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let bytes = body(raw, ctx.config.max_body_bytes)?;
    let (id, action) = path.rsplit_once('/').ok_or_else(|| {
        ApiError::not_found(format!(
            "no action in /v1/apps/{path}; use /v1/apps/ID/scale or /v1/apps/ID/restart"
        ))
    })?;
    let id = parse_id(id)?;
    let record = match action {
        "scale" => {
            let n = scale_count(&bytes)?;
            apps::modify(&ctx, &id, Change::Scaled, |s| s.instances = n).await?
        }
        "restart" => apps::modify(&ctx, &id, Change::Restarted, |_| {}).await?,
        other => {
            return Err(ApiError::not_found(format!(
                "unknown action {other:?}; use scale or restart"
            )));
        }
    };
    Ok(Json(view(&ctx, record, false)).into_response())
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
