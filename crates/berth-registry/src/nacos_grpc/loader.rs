//! Nacos's connection loader API on the HTTP listener: which gRPC connections this member
//! holds, and asking some of them to move (`ConnectReset`), which is how an operator
//! evens the load out after a member joined or before taking one down.
//!
//! - `GET /nacos/v2/core/loader/current`: every connection by id, with its client's
//!   address, version, app, namespace and when it was last heard from.
//! - `GET|POST /nacos/v2/core/loader/reloadCurrent?count=N`: moves N connections away
//!   (default all); answers how many were asked.

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::NacosGrpc;

pub fn routes(nacos: NacosGrpc) -> Router {
    Router::new()
        .route("/nacos/v2/core/loader/current", get(current))
        .route(
            "/nacos/v2/core/loader/reloadCurrent",
            get(reload).post(reload),
        )
        .with_state(nacos)
}

async fn current(State(nacos): State<NacosGrpc>) -> Response {
    let inner = &nacos.inner;
    let mut out = Map::new();
    for c in inner.connections.all() {
        out.insert(
            c.id.to_string(),
            json!({
                "metaInfo": {
                    "connectionId": &*c.id,
                    "clientIp": c.remote.ip().to_string(),
                    "remotePort": c.remote.port(),
                    "version": c.client_version,
                    "appName": c.app,
                    "namespaceId": c.tenant,
                    "idleMillis": inner.connections.idle(&c).as_millis() as u64,
                    "instances": c.held().len(),
                    "subscriptions": c.subscribed().len(),
                },
            }),
        );
    }
    axum::Json(Value::Object(out)).into_response()
}

#[derive(Deserialize)]
struct ReloadParams {
    count: Option<String>,
}

async fn reload(State(nacos): State<NacosGrpc>, Query(params): Query<ReloadParams>) -> Response {
    let count = match params.count.as_deref().map(str::trim) {
        None | Some("") => usize::MAX,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    format!("parameter 'count' must be a whole number of connections, not {raw:?}"),
                )
                    .into_response();
            }
        },
    };
    let moved = nacos.reset_some(count).await;
    axum::Json(json!({"code": 0, "message": "success", "data": moved})).into_response()
}
