//! `/v1/deployments...`: list, get, cancel (DELETE: roll back; `force`: stop where it
//! stands) and roll back.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use berth_core::DeploymentId;
use serde_json::{Value, json};

use super::ApiError;
use super::apps::change_options;
use super::auth::Caller;
use crate::context::Ctx;
use crate::deploy;
use axum::extract::Extension;

type Result<T> = std::result::Result<T, ApiError>;
type Params = Query<HashMap<String, String>>;

fn parse_id(raw: &str) -> Result<DeploymentId> {
    DeploymentId::parse(raw).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{raw:?} is not a deployment id; ids look like d-1763800000000123 (see `berth deployments`)"
        ))
        .field("id")
    })
}

/// `GET /v1/deployments[?app=ID][&active=true]`, newest first.
pub async fn list(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
    Query(q): Params,
) -> Result<Json<Value>> {
    let app = q.get("app");
    let only_active = matches!(q.get("active").map(String::as_str), Some("true" | "1"));
    let list: Vec<_> = deploy::list(&ctx)
        .await?
        .into_iter()
        .filter(|d| caller.may_read_app(d.app.as_str()))
        .filter(|d| app.is_none_or(|a| d.app.as_str() == a))
        .filter(|d| !only_active || d.state.is_active())
        .collect();
    Ok(Json(json!({ "deployments": list })))
}

pub async fn get(State(ctx): State<Arc<Ctx>>, Path(raw): Path<String>) -> Result<Response> {
    let id = parse_id(&raw)?;
    match deploy::get(&ctx, &id).await? {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(deploy::ChangeError::NotFound(id).into()),
    }
}

/// `DELETE /v1/deployments/{id}[?force=true]`.
pub async fn delete(
    State(ctx): State<Arc<Ctx>>,
    Path(raw): Path<String>,
    Query(q): Params,
) -> Result<Response> {
    let id = parse_id(&raw)?;
    let force = change_options(&q)?.force;
    let d = deploy::cancel(&ctx, &id, force).await?;
    ctx.wake.notify_one();
    Ok(Json(d).into_response())
}

/// `POST /v1/deployments/{id}/rollback`.
pub async fn post_action(
    State(ctx): State<Arc<Ctx>>,
    Path(path): Path<String>,
) -> Result<Response> {
    let Some(raw) = path.strip_suffix("/rollback") else {
        return Err(ApiError::not_found(format!(
            "no action in /v1/deployments/{path}; use /v1/deployments/ID/rollback"
        )));
    };
    let id = parse_id(raw)?;
    let d = deploy::rollback(&ctx, &id).await?;
    ctx.wake.notify_one();
    Ok(Json(d).into_response())
}
