//! The agent's small HTTP listener: `/health`, `/metrics`, `/v1/instances` (what the
//! agent runs, for people and scripts) and the log intake whose address instances get in
//! `BERTH_LOG_ADDR`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_core::InstanceId;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::link::LinkStatus;
use crate::record::RecordStore;
use crate::supervisor::Supervisor;

#[derive(Clone)]
pub struct StatusState {
    pub node_id: String,
    pub supervisor: Supervisor,
    pub link: watch::Receiver<LinkStatus>,
    pub registry: Arc<Registry>,
    pub store: RecordStore,
    /// Ends streaming responses (log followers) when the agent stops.
    pub stop: tokio_util::sync::CancellationToken,
}

/// Largest body one log push may carry.
pub const LOG_PUSH_LIMIT: usize = 1024 * 1024;

pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/instances", get(instances))
        .route(
            "/v1/instances/{id}/logs",
            post(push_logs)
                .layer(DefaultBodyLimit::max(LOG_PUSH_LIMIT))
                .get(read_logs),
        )
        .with_state(state)
}

async fn health(State(state): State<StatusState>) -> Response {
    let link = state.link.borrow().clone();
    let body = serde_json::json!({
        "status": "ok",
        "node_id": state.node_id,
        "server": link.connected_to,
        "server_id": link.server_id,
        "last_error": link.last_error,
        "instances": state.supervisor.statuses().len(),
    });
    axum::Json(body).into_response()
}

async fn metrics(State(state): State<StatusState>) -> Response {
    let metrics = state.supervisor.metrics();
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    for status in state.supervisor.statuses() {
        let name = status
            .state()
            .as_str_name()
            .trim_start_matches("INSTANCE_STATE_");
        *counts.entry(name.to_ascii_lowercase()).or_default() += 1;
    }
    // Set, not add: concurrent scrapes must not double count; states with no instance
    // left read 0 rather than vanish.
    for state_name in [
        "starting",
        "running",
        "healthy",
        "unhealthy",
        "stopping",
        "exited",
        "failed",
    ] {
        let count = counts.get(state_name).copied().unwrap_or(0);
        metrics
            .instances
            .get_or_create(&vec![("state", state_name.to_string())])
            .set(count);
    }
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn instances(State(state): State<StatusState>) -> Response {
    let list: Vec<serde_json::Value> = state
        .supervisor
        .statuses()
        .into_iter()
        .map(|s| {
            serde_json::json!({
                "instance_id": s.instance_id,
                "app_id": s.app_id,
                "app_version": s.app_version,
                "state": s.state().as_str_name().trim_start_matches("INSTANCE_STATE_").to_ascii_lowercase(),
                "ports": s.ports,
                "pid": s.pid,
                "started_at_ms": s.started_at_ms,
                "updated_at_ms": s.updated_at_ms,
                "exit_code": s.exit_code,
                "message": s.message,
                "stderr_tail": s.stderr_tail,
            })
        })
        .collect();
    axum::Json(list).into_response()
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    stream: Option<String>,
    lines: Option<usize>,
    follow: Option<bool>,
}

/// Most lines one read returns; older lines stay in the files.
const MAX_LOG_LINES: usize = 10_000;

/// The last `lines` lines (default 100) of an instance's `stdout` (default) or `stderr`;
/// with `follow=true`, then every byte the program writes, until the instance is gone or
/// the reader hangs up.
async fn read_logs(
    State(state): State<StatusState>,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let error = |status: StatusCode, message: String| {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    let query = match query {
        Ok(axum::extract::Query(query)) => query,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{err}: use ?stream=stdout|stderr&lines=N&follow=true|false"),
            );
        }
    };
    let Ok(id) = InstanceId::try_from(id.clone()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an instance id"),
        );
    };
    if !state
        .supervisor
        .statuses()
        .iter()
        .any(|s| s.instance_id == id.as_str())
    {
        return error(
            StatusCode::NOT_FOUND,
            format!("no instance {id} on this node"),
        );
    }
    let logs = state.store.logs(&id);
    let path = match query.stream.as_deref().unwrap_or("stdout") {
        "stdout" => logs.stdout,
        "stderr" => logs.stderr,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("stream {other:?} does not exist: use stdout or stderr"),
            );
        }
    };
    let lines = query.lines.unwrap_or(100);
    if lines == 0 || lines > MAX_LOG_LINES {
        return error(
            StatusCode::BAD_REQUEST,
            format!("lines={lines} is out of range: ask for 1 to {MAX_LOG_LINES}"),
        );
    }
    if query.follow.unwrap_or(false) {
        let body = crate::logfollow::follow(
            path,
            lines,
            id,
            state.supervisor.clone(),
            state.stop.clone(),
        );
        return (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response();
    }
    let text = tokio::task::spawn_blocking(move || {
        let mut text = crate::driver::log_tail(&path, lines, 4 * 1024 * 1024);
        if !text.is_empty() {
            text.push('\n');
        }
        text
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Appends pushed lines to the instance's stdout log (O_APPEND keeps whole writes
/// together with the program's own output).
async fn push_logs(
    State(state): State<StatusState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let error = |status: StatusCode, message: String| {
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    };
    let Ok(id) = InstanceId::try_from(id.clone()) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an instance id; use the value of BERTH_INSTANCE_ID"),
        );
    };
    let known = state
        .supervisor
        .statuses()
        .iter()
        .any(|s| s.instance_id == id.as_str());
    if !known {
        return error(
            StatusCode::NOT_FOUND,
            format!("no instance {id} on this node"),
        );
    }
    let mut bytes = body.to_vec();
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    let path = state.store.logs(&id).stdout;
    let result = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        crate::driver::LogFiles::open_for_append(&path)?.write_all(&bytes)
    })
    .await;
    match result {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(err)) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}
