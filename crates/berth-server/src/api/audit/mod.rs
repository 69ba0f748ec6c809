//! The audit trail of the API: every mutating request, every read of logs and every
//! diagnostics or exec operation, allowed or refused, lands in the store.
//!
//! Owns: which routes are audited (decided from the route table by [`audited`], so no
//! route can opt out), the two layers each route is wrapped in around `auth::check`, and
//! `GET /v1/audit` (`list`). The outer layer ([`draft`]) notes what is asked (action,
//! target, client, parameters) before the check and appends refusals (401/403) after it;
//! the inner one ([`record`]) runs only for a request the check let through: it appends
//! the entry before the handler runs and refuses with 503 when it cannot, so no action
//! happens unaudited, then records the handler's status on it.

mod list;
mod target;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_core::acl::Capability;
use berth_store::{AuditRecord, Decision};

pub use list::list;

use super::ApiError;
use super::auth::{Access, Caller, Refused};
use crate::context::Ctx;

/// What the route table says about one route, for its audit layers.
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// Its stable name (see `super::routes`).
    pub action: &'static str,
}

/// Whether requests of a route are audited: every route but GETs, and every route that
/// needs the logs, diagnose or exec capability (reads that reach into running instances).
pub fn audited(method: &Method, access: Access) -> bool {
    let capability = match access {
        Access::SomeApp(cap) | Access::SomeNode(cap) | Access::App(cap, _) => Some(cap),
        Access::Public | Access::AnyToken | Access::Management => None,
    };
    method != Method::GET
        || matches!(
            capability,
            Some(Capability::Logs | Capability::Diagnose | Capability::Exec)
        )
}

/// What a request asks, noted before the check (in the request's extensions).
#[derive(Debug, Clone)]
struct Draft {
    time_ms: u64,
    client: String,
    action: String,
    target: Option<String>,
    params: BTreeMap<String, String>,
}

impl Draft {
    fn record(
        &self,
        caller: Option<&Caller>,
        decision: Decision,
        status: Option<u16>,
    ) -> AuditRecord {
        AuditRecord {
            time_ms: self.time_ms,
            accessor_id: caller.map(|c| c.accessor.clone()),
            token_name: caller.map(|c| c.name.clone()),
            client: self.client.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            decision,
            status,
            params: self.params.clone(),
        }
    }
}

/// The outer layer: notes the request, and appends the entry of a refusal.
pub async fn draft(
    State((ctx, route)): State<(Arc<Ctx>, Route)>,
    request: Request,
    next: Next,
) -> Response {
    if !audited(&route.method, route.access) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let (body, asked) = match target::read(&ctx, &route, &parts, body).await {
        Ok(read) => read,
        Err(refusal) => return refusal.into_response(),
    };
    let draft = Draft {
        time_ms: crate::clock::unix_ms(),
        client: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.to_string()),
        action: asked.action,
        target: asked.target,
        params: asked.params,
    };
    parts.extensions.insert(draft.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    if let Some(Refused(caller)) = response.extensions().get::<Refused>() {
        let status = response.status().as_u16();
        let entry = draft.record(caller.as_ref(), Decision::Denied, Some(status));
        // The request is refused either way; a refusal that cannot be recorded is
        // reported loudly rather than turned into a different answer.
        if let Err(e) = ctx.store.run(move |s| s.append_audit(&entry)).await {
            tracing::error!(
                action = %draft.action,
                client = %draft.client,
                "AUDIT: a refused request ({status}) could not be recorded in the audit trail: {e}"
            );
        }
    }
    response
}

/// The inner layer, for a request the check let through: the entry first, then the
/// action, then its outcome.
pub async fn record(State(ctx): State<Arc<Ctx>>, request: Request, next: Next) -> Response {
    let Some(draft) = request.extensions().get::<Draft>().cloned() else {
        return next.run(request).await;
    };
    let entry = draft.record(
        request.extensions().get::<Caller>(),
        Decision::Allowed,
        None,
    );
    let id = match ctx.store.run(move |s| s.append_audit(&entry)).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(
                action = %draft.action,
                client = %draft.client,
                "AUDIT: refusing a request because its audit entry cannot be written: {e}"
            );
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                format!(
                    "the audit trail in the store cannot be written ({e}), so nothing was done; retry once the store accepts writes again"
                ),
            )
            .into_response();
        }
    };
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if let Err(e) = ctx
        .store
        .run(move |s| s.set_audit_outcome(id, status))
        .await
    {
        // The action has happened: its entry stays, without an outcome.
        tracing::error!(
            action = %draft.action,
            audit_id = id,
            status,
            "AUDIT: the outcome of an audited action could not be recorded: {e}"
        );
    }
    response
}

#[cfg(test)]
mod tests;
