//! `/v1/acl/...`: bootstrap, policies and tokens (management only, but for bootstrap and
//! `token/self`). Secrets are made here, returned once in the creating answer, and only
//! their hash is stored; no other answer and no log line ever carries one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::acl::{MANAGEMENT, Policy};
use berth_store::AclToken;
use serde_json::{Value, json};

use super::ApiError;
use super::auth::Caller;
use crate::context::Ctx;

type Result<T> = std::result::Result<T, ApiError>;

/// The file an operator creates in the data folder to allow one more bootstrap.
pub const RESET_FILE: &str = "acl-bootstrap-reset";

fn enabled(ctx: &Ctx) -> Result<()> {
    if ctx.config.acl {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "acl_disabled",
            "this server runs without ACLs; start it with --acl",
        ))
    }
}

fn reset_file(ctx: &Ctx) -> PathBuf {
    ctx.config.data_dir.join(RESET_FILE)
}

/// A random accessor id shaped like a UUID, so operators can tell it from a secret.
fn accessor_id() -> String {
    let hex = berth_identity::secret::generate_secret();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A new token and its secret (the only time the secret exists outside the client).
fn new_token(
    name: String,
    policies: Vec<String>,
    expiration_time_ms: Option<u64>,
) -> (AclToken, String) {
    let secret = berth_identity::secret::generate_secret();
    let token = AclToken {
        accessor_id: accessor_id(),
        secret_hash: berth_identity::secret::hash_secret(&secret),
        name,
        policies,
        create_time_ms: crate::clock::unix_ms(),
        expiration_time_ms,
    };
    (token, secret)
}

fn created(token: &AclToken, secret: &str) -> Response {
    let mut body = serde_json::to_value(token).unwrap_or_else(|_| json!({}));
    body["secret_id"] = Value::String(secret.to_string());
    Json(body).into_response()
}

/// `POST /v1/acl/bootstrap`: the first management token, once.
pub async fn bootstrap(State(ctx): State<Arc<Ctx>>) -> Result<Response> {
    enabled(&ctx)?;
    let reset_path = reset_file(&ctx);
    let reset = reset_path.exists();
    let (token, secret) = new_token("bootstrap".into(), vec![MANAGEMENT.into()], None);
    let stored = token.clone();
    let done = ctx.store.run(move |s| s.bootstrap(&stored, reset)).await?;
    if !done {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "acl_bootstrap_done",
            format!(
                "ACLs are already bootstrapped; to bootstrap again (the management token was lost), create the file {} on the server and retry: the next bootstrap consumes it",
                reset_path.display()
            ),
        ));
    }
    if reset && let Err(e) = std::fs::remove_file(&reset_path) {
        tracing::warn!(path = %reset_path.display(), "cannot remove the bootstrap reset file: {e}; remove it by hand, or the next bootstrap is allowed too");
    }
    tracing::info!(accessor = %token.accessor_id, reset, "ACL bootstrap token created");
    Ok(created(&token, &secret))
}

fn text(raw: std::result::Result<Bytes, BytesRejection>) -> Result<String> {
    let bytes = raw.map_err(|e| ApiError::bad_request(format!("cannot read the body: {e}")))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::bad_request("the body is not UTF-8 text; send JSON or TOML"))
}

fn invalid(e: berth_core::acl::PolicyErrors) -> ApiError {
    let mut err = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_policy",
        e.to_string(),
    );
    err.field = e.0.first().map(|f| f.field.clone());
    err.errors = e.0;
    err
}

/// `PUT /v1/acl/policy/NAME`: JSON, or TOML with `content-type: application/toml`.
pub async fn put_policy(
    State(ctx): State<Arc<Ctx>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    enabled(&ctx)?;
    let body = text(raw)?;
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("toml"));
    let policy = if is_toml {
        Policy::from_toml(&name, &body)
    } else {
        Policy::from_json(&name, &body)
    }
    .map_err(invalid)?;
    let stored = policy.clone();
    ctx.store.run(move |s| s.put_policy(&stored)).await?;
    ctx.tokens.clear();
    Ok(Json(policy).into_response())
}

fn builtin_management() -> Value {
    json!({
        "name": MANAGEMENT,
        "description": "built in: every capability on every app and node, ACLs and audit",
        "rules": [],
        "builtin": true,
    })
}

pub async fn list_policies(State(ctx): State<Arc<Ctx>>) -> Result<Response> {
    enabled(&ctx)?;
    let policies = ctx.store.run(|s| s.list_policies()).await?;
    let mut all = vec![builtin_management()];
    all.extend(policies.iter().map(|p| json!(p)));
    Ok(Json(json!({ "policies": all })).into_response())
}

pub async fn get_policy(State(ctx): State<Arc<Ctx>>, Path(name): Path<String>) -> Result<Response> {
    enabled(&ctx)?;
    if name == MANAGEMENT {
        return Ok(Json(builtin_management()).into_response());
    }
    let lookup = name.clone();
    match ctx.store.run(move |s| s.get_policy(&lookup)).await? {
        Some(p) => Ok(Json(p).into_response()),
        None => Err(ApiError::not_found(format!(
            "no policy {name}; see `berth acl policy list`"
        ))),
    }
}

pub async fn delete_policy(
    State(ctx): State<Arc<Ctx>>,
    Path(name): Path<String>,
) -> Result<Response> {
    enabled(&ctx)?;
    if name == MANAGEMENT {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "reserved",
            "`management` is the built-in policy and cannot be removed; revoke the tokens that hold it instead",
        )
        .field("name"));
    }
    let lookup = name.clone();
    if ctx.store.run(move |s| s.delete_policy(&lookup)).await? {
        ctx.tokens.clear();
        Ok(Json(json!({ "deleted": name })).into_response())
    } else {
        Err(ApiError::not_found(format!("no policy {name}")))
    }
}

fn unprocessable(field: &str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_token", message).field(field)
}

/// `POST /v1/acl/token` `{"name","policies",["ttl"]}`.
pub async fn create_token(
    State(ctx): State<Arc<Ctx>>,
    raw: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    enabled(&ctx)?;
    let body = text(raw)?;
    let value: HashMap<String, Value> = serde_json::from_str(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a JSON object: {e}; send {{\"name\":\"ro\",\"policies\":[\"ro\"],\"ttl\":\"24h\"}}"
        ))
    })?;
    if let Some(key) = value
        .keys()
        .find(|k| !["name", "policies", "ttl"].contains(&k.as_str()))
    {
        return Err(unprocessable(
            key,
            format!("unknown field `{key}`; a token takes name, policies and ttl"),
        ));
    }
    let name = match value.get("name") {
        Some(Value::String(n)) if !n.trim().is_empty() && n.len() <= 128 => n.clone(),
        _ => {
            return Err(unprocessable(
                "name",
                "name must be a string of 1 to 128 characters, like \"ci-deployer\"".into(),
            ));
        }
    };
    let policies: Vec<String> = match value.get("policies") {
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut names = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let Some(p) = item.as_str() else {
                    return Err(unprocessable(
                        &format!("policies[{i}]"),
                        format!("{item} is not a policy name"),
                    ));
                };
                if !names.iter().any(|n| n == p) {
                    names.push(p.to_string());
                }
            }
            names
        }
        _ => {
            return Err(unprocessable(
                "policies",
                "policies must name at least one policy, like [\"ro\"] (or [\"management\"])"
                    .into(),
            ));
        }
    };
    let expiration_time_ms = match value.get("ttl") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => match humantime::parse_duration(raw) {
            Ok(d) if !d.is_zero() => Some(crate::clock::unix_ms() + d.as_millis() as u64),
            _ => {
                return Err(unprocessable(
                    "ttl",
                    format!("ttl {raw:?} is not a duration; use one like \"24h\" or \"30m\""),
                ));
            }
        },
        Some(other) => {
            return Err(unprocessable(
                "ttl",
                format!("ttl {other} is not a duration string; use one like \"24h\""),
            ));
        }
    };
    let wanted = policies.clone();
    let missing = ctx
        .store
        .run(move |s| {
            let mut missing = Vec::new();
            for (i, p) in wanted.iter().enumerate() {
                if p != MANAGEMENT && s.get_policy(p)?.is_none() {
                    missing.push((i, p.clone()));
                }
            }
            Ok(missing)
        })
        .await?;
    if let Some((i, p)) = missing.first() {
        return Err(unprocessable(
            &format!("policies[{i}]"),
            format!("no policy {p}; create it first (`berth acl policy apply {p} FILE`)"),
        ));
    }
    let (token, secret) = new_token(name, policies, expiration_time_ms);
    let stored = token.clone();
    ctx.store.run(move |s| s.create_token(&stored)).await?;
    tracing::info!(accessor = %token.accessor_id, name = %token.name, "ACL token created");
    Ok(created(&token, &secret))
}

pub async fn list_tokens(State(ctx): State<Arc<Ctx>>) -> Result<Response> {
    enabled(&ctx)?;
    let tokens = ctx.store.run(|s| s.list_tokens()).await?;
    Ok(Json(json!({ "tokens": tokens })).into_response())
}

async fn token(ctx: &Ctx, accessor: String) -> Result<Response> {
    let lookup = accessor.clone();
    match ctx.store.run(move |s| s.get_token(&lookup)).await? {
        Some(t) => Ok(Json(t).into_response()),
        None => Err(ApiError::not_found(format!(
            "no token with accessor {accessor}; see `berth acl token list`"
        ))),
    }
}

pub async fn get_token(
    State(ctx): State<Arc<Ctx>>,
    Path(accessor): Path<String>,
) -> Result<Response> {
    enabled(&ctx)?;
    token(&ctx, accessor).await
}

/// `GET /v1/acl/token/self`: the token the request carries.
pub async fn token_self(
    State(ctx): State<Arc<Ctx>>,
    Extension(caller): Extension<Caller>,
) -> Result<Response> {
    enabled(&ctx)?;
    token(&ctx, caller.accessor.clone()).await
}

pub async fn delete_token(
    State(ctx): State<Arc<Ctx>>,
    Path(accessor): Path<String>,
) -> Result<Response> {
    enabled(&ctx)?;
    let lookup = accessor.clone();
    if ctx.store.run(move |s| s.delete_token(&lookup)).await? {
        ctx.tokens.clear();
        tracing::info!(%accessor, "ACL token revoked");
        Ok(Json(json!({ "deleted": accessor })).into_response())
    } else {
        Err(ApiError::not_found(format!(
            "no token with accessor {accessor}"
        )))
    }
}
