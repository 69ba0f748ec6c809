//! The Nacos v2 open config API (`/nacos/v2/cs/config`): the namespace is `namespaceId`,
//! every answer is `{"code","message","data"}` and refusals carry Nacos's error codes
//! (10000 parameter missing, 20002 parameter validate error, 20004 resource not found,
//! 20005 resource conflict, 30000 server error) with a `data` naming the parameter.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use super::config::{Api, Failure, actor, config_key, publish_params, refuse_tag};
use super::params::{ApiError, Params};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/nacos/v2/cs/config",
        get(get_config).post(publish).delete(remove),
    )
}

/// A refusal in the v2 envelope.
#[derive(Debug)]
pub(super) struct V2Error(pub Failure);

impl From<Failure> for V2Error {
    fn from(f: Failure) -> Self {
        Self(f)
    }
}

impl From<ApiError> for V2Error {
    /// Parameter errors of the shared parsing (`pageNo`, ...) are validation errors.
    fn from(e: ApiError) -> Self {
        Self(Failure {
            status: e.status,
            code: 20002,
            kind: "parameter validate error",
            detail: e.message,
        })
    }
}

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        let body = json!({"code": self.0.code, "message": self.0.kind, "data": self.0.detail});
        (self.0.status, axum::Json(body)).into_response()
    }
}

pub(super) fn v2(e: crate::config_center::ConfigError) -> V2Error {
    V2Error(Failure::from_config(e, Api::V2))
}

/// `{"code":0,"message":"success","data":...}`.
pub(super) fn success(data: Value) -> Response {
    axum::Json(json!({"code": 0, "message": "success", "data": data})).into_response()
}

async fn get_config(State(s): State<AppState>, p: Params) -> Result<Response, V2Error> {
    refuse_tag(&p)?;
    let key = config_key(&p, Api::V2)?;
    let config = s.configs.get(&key).await.map_err(v2)?;
    let config = config.ok_or_else(|| Failure::not_found("config data not exist"))?;
    Ok(success(Value::String(config.content)))
}

async fn publish(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, V2Error> {
    refuse_tag(&p)?;
    let publish = publish_params(&p, &headers, Api::V2)?;
    s.configs
        .publish(
            &publish.key,
            &publish.content,
            &publish.meta,
            publish.cas_md5.as_deref(),
            actor(&p),
        )
        .await
        .map_err(v2)?;
    Ok(success(Value::Bool(true)))
}

async fn remove(State(s): State<AppState>, p: Params) -> Result<Response, V2Error> {
    refuse_tag(&p)?;
    let key = config_key(&p, Api::V2)?;
    s.configs.remove(&key, actor(&p)).await.map_err(v2)?;
    Ok(success(Value::Bool(true)))
}
