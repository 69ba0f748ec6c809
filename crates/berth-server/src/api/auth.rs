//! Who is asking, and may they: the one check every API route passes through.
//!
//! Owns: [`Access`] (what a route needs: nothing, any valid token, management, or a
//! capability on the app or node the request names), the middleware [`check`] that each
//! route of `super::routes` is wrapped in (so a route cannot exist without a rule), the
//! token look-up (from `Authorization: Bearer` or `X-Berth-Token`, by the SHA-256 of the
//! secret, expiry checked), the slowdown of repeated failures per client address, and
//! [`Caller`], the authority handlers read to filter lists or check a target they only
//! learn from the body. A refusal (401, 403) carries [`Refused`] on its answer, so the
//! audit layer around the check can record who was refused. With `acl` off every request
//! is the unrestricted anonymous caller, exactly as before ACLs existed. The policy
//! language itself is `berth_core::acl`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_core::DeploymentId;
use berth_core::acl::{Authority, Capability, Kind, MANAGEMENT, Target};

use super::ApiError;
use crate::context::Ctx;

/// What a route needs from the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: `POST /v1/acl/bootstrap` only (the UI's static files are outside the API).
    Public,
    /// Any valid token (`/health`, `/v1/info`, `/v1/leader`, `/v1/acl/token/self`).
    AnyToken,
    /// The management capability.
    Management,
    /// The capability on at least one app; the handler filters (lists) or checks the app
    /// the body names (create).
    SomeApp(Capability),
    /// The capability on at least one node; the handler filters.
    SomeNode(Capability),
    /// The capability on the app the request names.
    App(Capability, AppIn),
}

/// Where a request names its app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppIn {
    /// `/v1/apps/ID` (PUT, DELETE).
    Path,
    /// `/v1/apps/ID/ACTION` (POST scale, restart).
    PathAction,
    /// `/v1/apps/ID`, `/v1/apps/ID/versions`, `/v1/apps/ID/versions/N` (GET).
    PathVersions,
    /// `/v1/deployments/ID[/rollback]`: the deployment's app.
    Deployment,
    /// `?app=ID` or `?instance=ID` (the app of the instance).
    Query,
    /// `/v1/exec/ID` (`berth exec`).
    ExecPath,
    /// The `id` of the app spec in the body (create): read here once, handed on intact.
    Body,
}

/// The caller's authority, in every request's extensions once [`check`] let it through.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Authority>);

impl std::ops::Deref for Caller {
    type Target = Authority;
    fn deref(&self) -> &Authority {
        &self.0
    }
}

impl Caller {
    fn anonymous() -> Self {
        Caller(Arc::new(Authority::unrestricted("anonymous", "anonymous")))
    }

    /// The 403 unless the caller has `cap` on `target`.
    pub fn require(&self, cap: Capability, target: Target<'_>) -> Result<(), ApiError> {
        if self.allows(cap, target) {
            Ok(())
        } else {
            Err(denied(self.denial(cap, target)))
        }
    }

    pub fn may_read_app(&self, app: &str) -> bool {
        self.allows(Capability::Read, Target::App(app))
    }
}

/// Wraps one route: authenticates (when ACLs are on), checks `access`, and hands the
/// caller to the handler.
pub async fn check(
    State((ctx, access)): State<(Arc<Ctx>, Access)>,
    request: Request,
    next: Next,
) -> Response {
    // Only the head is read (a body is not `Sync`, so it stays out of the awaits), but
    // for a create, whose app is named in the body: that is read whole (within the body
    // limit) and handed on unchanged.
    let (mut parts, mut body) = request.into_parts();
    let mut in_body = None;
    if ctx.config.acl && matches!(access, Access::App(_, AppIn::Body)) {
        match axum::body::to_bytes(body, ctx.config.max_body_bytes).await {
            Ok(bytes) => {
                in_body = spec_id(&parts.headers, &bytes);
                body = axum::body::Body::from(bytes);
            }
            Err(_) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the request body is larger than the {}-byte limit; send a smaller spec (or raise max_body_bytes on the server)",
                        ctx.config.max_body_bytes
                    ),
                )
                .into_response();
            }
        }
    }
    match authorize(&ctx, access, &parts, in_body).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// On the answer to a request refused with 401 or 403: who was refused (when the token
/// was valid), for the audit trail (`super::audit`).
#[derive(Debug, Clone)]
pub struct Refused(pub Option<Caller>);

/// A request not let through, and the caller when it was known.
struct Refusal {
    error: ApiError,
    caller: Option<Caller>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal {
            error,
            caller: None,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let refused = matches!(
            self.error.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        );
        let mut response = self.error.into_response();
        if refused {
            response.extensions_mut().insert(Refused(self.caller));
        }
        response
    }
}

async fn authorize(
    ctx: &Arc<Ctx>,
    access: Access,
    request: &Parts,
    in_body: Option<String>,
) -> Result<Caller, Refusal> {
    if !ctx.config.acl || access == Access::Public {
        return Ok(Caller::anonymous());
    }
    let caller = authenticate(ctx, request).await?;
    match permit(ctx, access, request, in_body, &caller).await {
        Ok(()) => Ok(caller),
        Err(error) => Err(Refusal {
            error,
            caller: Some(caller),
        }),
    }
}

async fn permit(
    ctx: &Arc<Ctx>,
    access: Access,
    request: &Parts,
    in_body: Option<String>,
    caller: &Caller,
) -> Result<(), ApiError> {
    match access {
        Access::Public | Access::AnyToken => {}
        Access::Management => caller.require(Capability::Management, Target::Global)?,
        Access::SomeApp(cap) => some(caller, cap, Kind::Apps)?,
        Access::SomeNode(cap) => some(caller, cap, Kind::Nodes)?,
        Access::App(cap, place) => match app_of(ctx, place, request, in_body).await {
            Some(app) => caller.require(cap, Target::App(&app))?,
            // Nothing named (the handler answers 400 or 404): still only for callers
            // who hold the capability somewhere, so nothing leaks to the others.
            None => some(caller, cap, Kind::Apps)?,
        },
    }
    Ok(())
}

fn some(caller: &Caller, cap: Capability, kind: Kind) -> Result<(), ApiError> {
    if caller.allows_some(cap, kind) {
        Ok(())
    } else {
        Err(denied(caller.denial_some(cap, kind)))
    }
}

fn denied(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "permission_denied", message)
}

const MISSING: &str = "this server has ACLs enabled: send a token (Authorization: Bearer <secret>, X-Berth-Token, or berth --token / BERTH_TOKEN); an operator creates one with `berth acl token create`, the first one comes from `berth acl bootstrap`";

/// The secret a request carries, if any.
pub fn token_of(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim());
        }
    }
    headers
        .get("x-berth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

async fn authenticate(ctx: &Arc<Ctx>, request: &Parts) -> Result<Caller, ApiError> {
    let Some(secret) = token_of(&request.headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "acl_token_missing",
            MISSING,
        ));
    };
    let client = request
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let hash = berth_identity::secret::hash_secret(secret);
    let now = crate::clock::unix_ms();
    if let Some(caller) = ctx.tokens.get(&hash, now) {
        ctx.auth_failures.succeeded(client);
        return Ok(caller);
    }
    let generation = ctx.tokens.generation();
    let lookup = hash.clone();
    let found = ctx.store.run(move |s| s.get_token_by_hash(&lookup)).await?;
    let token = found.filter(|t| {
        berth_identity::secret::constant_time_eq(t.secret_hash.as_bytes(), hash.as_bytes())
            && !t.expired(now)
    });
    let Some(token) = token else {
        let delay = ctx.auth_failures.failed(client);
        tokio::time::sleep(delay).await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "acl_token_invalid",
            "the token is unknown, revoked or expired; ask an operator for a new one (`berth acl token create`)",
        ));
    };
    ctx.auth_failures.succeeded(client);
    let names: Vec<String> = token
        .policies
        .iter()
        .filter(|p| p.as_str() != MANAGEMENT)
        .cloned()
        .collect();
    let policies = ctx
        .store
        .run(move |s| {
            let mut found = Vec::new();
            for name in &names {
                // A policy deleted since the token was made grants nothing.
                if let Some(p) = s.get_policy(name)? {
                    found.push(p);
                }
            }
            Ok(found)
        })
        .await?;
    let management = token.policies.iter().any(|p| p == MANAGEMENT);
    let caller = Caller(Arc::new(Authority::new(
        token.name,
        token.accessor_id,
        management,
        &policies,
    )));
    ctx.tokens
        .put(generation, hash, caller.clone(), token.expiration_time_ms);
    Ok(caller)
}

/// The app a request names, read the way its handler will read it.
pub(super) async fn app_of(
    ctx: &Arc<Ctx>,
    place: AppIn,
    request: &Parts,
    in_body: Option<String>,
) -> Option<String> {
    let path = percent_decode(request.uri.path());
    match place {
        AppIn::Body => in_body,
        AppIn::Path => path.strip_prefix("/v1/apps/").map(str::to_string),
        AppIn::ExecPath => path.strip_prefix("/v1/exec/").map(str::to_string),
        AppIn::PathAction => path
            .strip_prefix("/v1/apps/")
            .and_then(|p| p.rsplit_once('/'))
            .map(|(id, _)| id.to_string()),
        AppIn::PathVersions => {
            let rest = path.strip_prefix("/v1/apps/")?;
            let id = match rest.strip_suffix("/versions") {
                Some(id) => id,
                None => rest.rsplit_once("/versions/").map_or(rest, |(id, _)| id),
            };
            Some(id.to_string())
        }
        AppIn::Deployment => {
            let rest = path.strip_prefix("/v1/deployments/")?;
            let raw = rest.strip_suffix("/rollback").unwrap_or(rest);
            let id = DeploymentId::parse(raw)?;
            let d = crate::deploy::get(ctx, &id).await.ok()??;
            Some(d.app.to_string())
        }
        AppIn::Query => {
            let Query(q) = Query::<HashMap<String, String>>::try_from_uri(&request.uri).ok()?;
            if let Some(app) = q.get("app") {
                return Some(app.clone());
            }
            let instance = q.get("instance")?;
            let state = ctx.lock_state();
            state
                .instances()
                .find(|i| i.id.as_str() == instance)
                .map(|i| i.app.clone())
        }
    }
}

/// The id of a valid app spec (JSON, or TOML by content type); an invalid one names
/// none, and its handler lists the problems to callers who may deploy somewhere.
pub(super) fn spec_id(headers: &HeaderMap, bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("toml"));
    let spec = if is_toml {
        berth_core::AppSpec::from_toml(text)
    } else {
        berth_core::AppSpec::from_json(text)
    };
    spec.ok().map(|s| s.id.to_string())
}

/// `%XX` decoded, as axum's `Path` decodes what the handler sees.
pub(super) fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Failed token attempts per client address: each answer after a failure waits longer
/// (doubling from 100 ms, capped at 2 s) so guessing secrets is slow; a success or a
/// minute of quiet forgets the address. Bounded, so a flood of addresses cannot grow it.
#[derive(Default)]
pub struct Failures {
    by_client: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

const MAX_TRACKED: usize = 4096;
const FORGET_AFTER: Duration = Duration::from_secs(60);
const MAX_DELAY: Duration = Duration::from_secs(2);

impl Failures {
    /// Records a failure; returns how long to wait before answering it.
    pub fn failed(&self, client: Option<IpAddr>) -> Duration {
        let now = Instant::now();
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&client) {
            map.retain(|_, (_, at)| now.duration_since(*at) < FORGET_AFTER);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(client).or_insert((0, now));
        if now.duration_since(entry.1) >= FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        delay(entry.0)
    }

    pub fn succeeded(&self, client: Option<IpAddr>) {
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&client);
    }
}

/// The wait after the `n`th failure in a row: none for the first (a typo), then 100 ms
/// doubling, capped.
fn delay(n: u32) -> Duration {
    if n <= 1 {
        return Duration::ZERO;
    }
    let ms = 100u64.saturating_mul(1 << (n - 2).min(10));
    Duration::from_millis(ms).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_slow_down_growing_and_capped_per_client() {
        let f = Failures::default();
        let a = Some(IpAddr::from([127, 0, 0, 1]));
        let b = Some(IpAddr::from([127, 0, 0, 2]));
        assert_eq!(f.failed(a), Duration::ZERO);
        assert_eq!(f.failed(a), Duration::from_millis(100));
        assert_eq!(f.failed(a), Duration::from_millis(200));
        assert_eq!(f.failed(b), Duration::ZERO, "per address");
        for _ in 0..20 {
            assert!(f.failed(a) <= MAX_DELAY);
        }
        assert_eq!(f.failed(a), MAX_DELAY);
        f.succeeded(a);
        assert_eq!(f.failed(a), Duration::ZERO);
    }

    #[test]
    fn the_failure_map_is_bounded() {
        let f = Failures::default();
        for i in 0..(MAX_TRACKED as u32 + 10) {
            f.failed(Some(IpAddr::from(i.to_be_bytes())));
        }
        assert!(f.by_client.lock().unwrap().len() <= MAX_TRACKED);
    }

    #[test]
    fn tokens_come_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h), None);
        h.insert("x-berth-token", "s2".parse().unwrap());
        assert_eq!(token_of(&h), Some("s2"));
        h.insert(header::AUTHORIZATION, "Bearer s1".parse().unwrap());
        assert_eq!(token_of(&h), Some("s1"));
    }

    #[test]
    fn paths_are_decoded_like_handlers_decode_them() {
        assert_eq!(percent_decode("/v1/apps/demo%2Fx"), "/v1/apps/demo/x");
        assert_eq!(percent_decode("/v1/apps/a%zz"), "/v1/apps/a%zz");
        assert_eq!(percent_decode("/x%4"), "/x%4");
    }
}
