//! The REST API. App ids contain `/`, so app routes use a wildcard and the action is the
//! last segment (`scale`, `restart`, `versions` are reserved in app ids for this reason).

mod apps;
mod deployments;
mod diag;
mod error;
mod logs;
mod ui;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::get;

use crate::context::Ctx;
use crate::leader::Leadership;
pub use error::ApiError;

/// Only the leader answers the API: a standby redirects (307 keeps the method and body) to
/// the leader, and while nobody is known to lead the answer is 503. `/health`,
/// `/metrics` and `/v1/leader` are every server's own.
async fn leader_gate(
    State(ctx): State<Arc<Ctx>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    // The UI goes to the leader too: its calls are same-origin, so a standby's redirect
    // to another origin would fail there.
    let leader_only = path.starts_with("/v1/") || path == "/" || path.starts_with("/ui");
    if !leader_only || path == "/v1/leader" {
        return next.run(request).await;
    }
    match ctx.leadership() {
        Leadership::Leader { .. } => next.run(request).await,
        Leadership::Standby { leader } if !leader.api_url.is_empty() => {
            let target = format!(
                "{}{}",
                leader.api_url.trim_end_matches('/'),
                request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or(path)
            );
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, target)],
            )
                .into_response()
        }
        other => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no_leader",
            other.refusal(),
        )
        .into_response(),
    }
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    let limit = ctx.config.max_body_bytes;
    Router::new()
        .route("/v1/apps", get(apps::list).post(apps::create))
        .route(
            "/v1/apps/{*path}",
            get(apps::get_path)
                .put(apps::put)
                .delete(apps::delete)
                .post(apps::post_action),
        )
        .route("/v1/deployments", get(deployments::list))
        .route(
            "/v1/deployments/{*path}",
            get(deployments::get)
                .delete(deployments::delete)
                .post(deployments::post_action),
        )
        .route("/v1/instances", get(views::instances))
        .route("/v1/nodes", get(views::nodes))
        .route("/v1/logs", get(logs::logs))
        .route("/v1/diag/{op}", get(diag::diag))
        .route("/v1/info", get(views::info))
        .route("/v1/events", get(views::events))
        .route("/v1/events/recent", get(views::recent_events))
        .route("/v1/debug/state", get(views::debug_state))
        .route("/health", get(views::health))
        .route("/metrics", get(views::metrics))
        .route("/v1/leader", get(views::leader))
        .merge(ui::routes())
        .fallback(views::not_found)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            leader_gate,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ctx)
}
