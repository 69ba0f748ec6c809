//! The REST API. App ids contain `/`, so app routes use a wildcard and the action is the
//! last segment (`scale`, `restart`, `versions` are reserved in app ids for this reason).
//! Every route is listed once in [`routes`] with what its caller needs (see `auth`).

mod acl;
mod apps;
pub mod auth;
mod deployments;
mod diag;
mod error;
mod exec;
mod logs;
mod ui;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use crate::context::Ctx;
use crate::leader::Leadership;
pub use auth::Access;
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

/// One API route: where, which method, what the caller needs, and its handler. The router
/// is built from [`routes`] alone and wraps each handler in [`auth::check`] with its
/// access, so no route exists without a rule (a test walks the list).
pub struct RouteSpec {
    /// Read by the route test (the handler carries its own method filter).
    #[cfg_attr(not(test), allow(dead_code))]
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    handler: MethodRouter<Arc<Ctx>>,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> RouteSpec
where
    H: Handler<T, Arc<Ctx>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    RouteSpec {
        method,
        path,
        access,
        handler: on(filter, handler),
    }
}

/// Every API route. The UI's static files (`/`, `/ui/...`) hold no data and are added
/// apart; everything else is here.
pub fn routes() -> Vec<RouteSpec> {
    use Method as M;
    use auth::AppIn;
    use berth_core::acl::Capability::{Deploy, Diagnose, Exec, Logs, Read};
    vec![
        route(M::GET, "/v1/apps", Access::SomeApp(Read), apps::list),
        route(
            M::POST,
            "/v1/apps",
            Access::App(Deploy, AppIn::Body),
            apps::create,
        ),
        route(
            M::GET,
            "/v1/apps/{*path}",
            Access::App(Read, AppIn::PathVersions),
            apps::get_path,
        ),
        route(
            M::PUT,
            "/v1/apps/{*path}",
            Access::App(Deploy, AppIn::Path),
            apps::put,
        ),
        route(
            M::DELETE,
            "/v1/apps/{*path}",
            Access::App(Deploy, AppIn::Path),
            apps::delete,
        ),
        route(
            M::POST,
            "/v1/apps/{*path}",
            Access::App(Deploy, AppIn::PathAction),
            apps::post_action,
        ),
        route(
            M::GET,
            "/v1/deployments",
            Access::SomeApp(Read),
            deployments::list,
        ),
        route(
            M::GET,
            "/v1/deployments/{*path}",
            Access::App(Read, AppIn::Deployment),
            deployments::get,
        ),
        route(
            M::DELETE,
            "/v1/deployments/{*path}",
            Access::App(Deploy, AppIn::Deployment),
            deployments::delete,
        ),
        route(
            M::POST,
            "/v1/deployments/{*path}",
            Access::App(Deploy, AppIn::Deployment),
            deployments::post_action,
        ),
        route(
            M::GET,
            "/v1/instances",
            Access::SomeApp(Read),
            views::instances,
        ),
        route(M::GET, "/v1/nodes", Access::SomeNode(Read), views::nodes),
        route(
            M::GET,
            "/v1/logs",
            Access::App(Logs, AppIn::Query),
            logs::logs,
        ),
        route(
            M::GET,
            "/v1/diag/{op}",
            Access::App(Diagnose, AppIn::Query),
            diag::diag,
        ),
        route(
            M::GET,
            "/v1/exec/{*path}",
            Access::App(Exec, AppIn::ExecPath),
            exec::exec,
        ),
        route(M::GET, "/v1/info", Access::AnyToken, views::info),
        route(M::GET, "/v1/events", Access::SomeApp(Read), views::events),
        route(
            M::GET,
            "/v1/events/recent",
            Access::SomeApp(Read),
            views::recent_events,
        ),
        route(
            M::GET,
            "/v1/debug/state",
            Access::Management,
            views::debug_state,
        ),
        route(M::GET, "/health", Access::AnyToken, views::health),
        route(M::GET, "/metrics", Access::Management, views::metrics),
        route(M::GET, "/v1/leader", Access::AnyToken, views::leader),
        route(M::POST, "/v1/acl/bootstrap", Access::Public, acl::bootstrap),
        route(
            M::GET,
            "/v1/acl/policies",
            Access::Management,
            acl::list_policies,
        ),
        route(
            M::PUT,
            "/v1/acl/policy/{name}",
            Access::Management,
            acl::put_policy,
        ),
        route(
            M::GET,
            "/v1/acl/policy/{name}",
            Access::Management,
            acl::get_policy,
        ),
        route(
            M::DELETE,
            "/v1/acl/policy/{name}",
            Access::Management,
            acl::delete_policy,
        ),
        route(
            M::POST,
            "/v1/acl/token",
            Access::Management,
            acl::create_token,
        ),
        route(
            M::GET,
            "/v1/acl/tokens",
            Access::Management,
            acl::list_tokens,
        ),
        route(
            M::GET,
            "/v1/acl/token/self",
            Access::AnyToken,
            acl::token_self,
        ),
        route(
            M::GET,
            "/v1/acl/token/{accessor}",
            Access::Management,
            acl::get_token,
        ),
        route(
            M::DELETE,
            "/v1/acl/token/{accessor}",
            Access::Management,
            acl::delete_token,
        ),
    ]
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    let limit = ctx.config.max_body_bytes;
    // Methods of one path share one entry of the router.
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<Ctx>>)> = Vec::new();
    for spec in routes() {
        let guarded = spec
            .handler
            .route_layer(axum::middleware::from_fn_with_state(
                (ctx.clone(), spec.access),
                auth::check,
            ));
        match by_path.iter_mut().find(|(p, _)| *p == spec.path) {
            Some((_, methods)) => *methods = std::mem::take(methods).merge(guarded),
            None => by_path.push((spec.path, guarded)),
        }
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    router
        .merge(ui::routes())
        .fallback(views::not_found)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            leader_gate,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ctx)
}

#[cfg(test)]
mod tests;
