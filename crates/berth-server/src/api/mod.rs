//! The REST API. App ids contain `/`, so app routes use a wildcard and the action is the
//! last segment (`scale`, `restart`, `versions` are reserved in app ids for this reason).
//! Every route is listed once in [`routes`] with what its caller needs (see `auth`).

mod acl;
mod apps;
mod audit;
pub mod auth;
mod deployments;
mod diag;
mod error;
mod exec;
mod logs;
pub mod token_cache;
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
/// access and in the audit layers, so no route exists without a rule or escapes the
/// audit trail (tests walk the list).
pub struct RouteSpec {
    /// Read by the route test (the handler carries its own method filter).
    #[cfg_attr(not(test), allow(dead_code))]
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// The action's stable name in the audit trail (see [`routes`]).
    pub action: &'static str,
    handler: MethodRouter<Arc<Ctx>>,
}

fn route<H, T>(
    method: Method,
    path: &'static str,
    access: Access,
    action: &'static str,
    handler: H,
) -> RouteSpec
where
    H: Handler<T, Arc<Ctx>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    RouteSpec {
        method,
        path,
        access,
        action,
        handler: on(filter, handler),
    }
}

/// Every API route, with its access rule and its action: the stable name the audit trail
/// records (`app.create`). A template `app.{scale,restart}` names the action by the
/// path's last segment. Which routes are audited follows from method and access
/// (`audit::audited`), never from a list.
pub fn routes() -> Vec<RouteSpec> {
    use Method as M;
    use auth::AppIn;
    use berth_core::acl::Capability::{Deploy, Diagnose, Exec, Logs, Read};
    let app = |cap, place| Access::App(cap, place);
    vec![
        route(
            M::GET,
            "/v1/apps",
            Access::SomeApp(Read),
            "app.list",
            apps::list,
        ),
        route(
            M::POST,
            "/v1/apps",
            app(Deploy, AppIn::Body),
            "app.create",
            apps::create,
        ),
        route(
            M::GET,
            "/v1/apps/{*path}",
            app(Read, AppIn::PathVersions),
            "app.get",
            apps::get_path,
        ),
        route(
            M::PUT,
            "/v1/apps/{*path}",
            app(Deploy, AppIn::Path),
            "app.put",
            apps::put,
        ),
        route(
            M::DELETE,
            "/v1/apps/{*path}",
            app(Deploy, AppIn::Path),
            "app.delete",
            apps::delete,
        ),
        route(
            M::POST,
            "/v1/apps/{*path}",
            app(Deploy, AppIn::PathAction),
            "app.{scale,restart}",
            apps::post_action,
        ),
        route(
            M::GET,
            "/v1/deployments",
            Access::SomeApp(Read),
            "deployment.list",
            deployments::list,
        ),
        route(
            M::GET,
            "/v1/deployments/{*path}",
            app(Read, AppIn::Deployment),
            "deployment.get",
            deployments::get,
        ),
        route(
            M::DELETE,
            "/v1/deployments/{*path}",
            app(Deploy, AppIn::Deployment),
            "deployment.cancel",
            deployments::delete,
        ),
        route(
            M::POST,
            "/v1/deployments/{*path}",
            app(Deploy, AppIn::Deployment),
            "deployment.{rollback}",
            deployments::post_action,
        ),
        route(
            M::GET,
            "/v1/instances",
            Access::SomeApp(Read),
            "instance.list",
            views::instances,
        ),
        route(
            M::GET,
            "/v1/nodes",
            Access::SomeNode(Read),
            "node.list",
            views::nodes,
        ),
        route(
            M::GET,
            "/v1/logs",
            app(Logs, AppIn::Query),
            "logs.read",
            logs::logs,
        ),
        route(
            M::GET,
            "/v1/diag/{op}",
            app(Diagnose, AppIn::Query),
            "diag.{grep,tail,ps,ports}",
            diag::diag,
        ),
        route(
            M::GET,
            "/v1/exec/{*path}",
            app(Exec, AppIn::ExecPath),
            "exec",
            exec::exec,
        ),
        route(M::GET, "/v1/info", Access::AnyToken, "info", views::info),
        route(
            M::GET,
            "/v1/events",
            Access::SomeApp(Read),
            "event.stream",
            views::events,
        ),
        route(
            M::GET,
            "/v1/events/recent",
            Access::SomeApp(Read),
            "event.recent",
            views::recent_events,
        ),
        route(
            M::GET,
            "/v1/debug/state",
            Access::Management,
            "debug.state",
            views::debug_state,
        ),
        route(M::GET, "/health", Access::AnyToken, "health", views::health),
        route(
            M::GET,
            "/metrics",
            Access::Management,
            "metrics",
            views::metrics,
        ),
        route(
            M::GET,
            "/v1/leader",
            Access::AnyToken,
            "leader",
            views::leader,
        ),
        route(
            M::GET,
            "/v1/audit",
            Access::Management,
            "audit.list",
            audit::list,
        ),
        route(
            M::POST,
            "/v1/acl/bootstrap",
            Access::Public,
            "acl.bootstrap",
            acl::bootstrap,
        ),
        route(
            M::GET,
            "/v1/acl/policies",
            Access::Management,
            "acl.policy.list",
            acl::list_policies,
        ),
        route(
            M::PUT,
            "/v1/acl/policy/{name}",
            Access::Management,
            "acl.policy.put",
            acl::put_policy,
        ),
        route(
            M::GET,
            "/v1/acl/policy/{name}",
            Access::Management,
            "acl.policy.get",
            acl::get_policy,
        ),
        route(
            M::DELETE,
            "/v1/acl/policy/{name}",
            Access::Management,
            "acl.policy.delete",
            acl::delete_policy,
        ),
        route(
            M::POST,
            "/v1/acl/token",
            Access::Management,
            "acl.token.create",
            acl::create_token,
        ),
        route(
            M::GET,
            "/v1/acl/tokens",
            Access::Management,
            "acl.token.list",
            acl::list_tokens,
        ),
        route(
            M::GET,
            "/v1/acl/token/self",
            Access::AnyToken,
            "acl.token.self",
            acl::token_self,
        ),
        route(
            M::GET,
            "/v1/acl/token/{accessor}",
            Access::Management,
            "acl.token.get",
            acl::get_token,
        ),
        route(
            M::DELETE,
            "/v1/acl/token/{accessor}",
            Access::Management,
            "acl.token.revoke",
            acl::delete_token,
        ),
    ]
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    let limit = ctx.config.max_body_bytes;
    // Methods of one path share one entry of the router.
    let mut by_path: Vec<(&'static str, MethodRouter<Arc<Ctx>>)> = Vec::new();
    for spec in routes() {
        let audit_route = audit::Route {
            method: spec.method.clone(),
            path: spec.path,
            access: spec.access,
            action: spec.action,
        };
        // Inside out: the audit entry before the handler, the check, and around both
        // the audit layer that notes the request and records refusals.
        let guarded = spec
            .handler
            .route_layer(axum::middleware::from_fn_with_state(
                ctx.clone(),
                audit::record,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                (ctx.clone(), spec.access),
                auth::check,
            ))
            .route_layer(axum::middleware::from_fn_with_state(
                (ctx.clone(), audit_route),
                audit::draft,
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
