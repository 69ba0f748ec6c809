//! The REST API. App ids contain `/`, so app routes use a wildcard and the action is the
//! last segment (`scale`, `restart`, `versions` are reserved in app ids for this reason).

mod apps;
mod deployments;
mod error;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;

use crate::context::Ctx;
pub use error::ApiError;

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
        .route("/v1/info", get(views::info))
        .route("/v1/events", get(views::events))
        .route("/v1/events/recent", get(views::recent_events))
        .route("/v1/debug/state", get(views::debug_state))
        .route("/health", get(views::health))
        .route("/metrics", get(views::metrics))
        .fallback(views::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ctx)
}
