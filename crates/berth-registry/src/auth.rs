//! Optional auth (on whenever a listener leaves loopback). A client proves itself with a
//! token only: the shared secret itself, or a token from `/nacos/v1/auth/login`. Nothing
//! else (User-Agent and friends) ever grants access.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::http::params::{ApiError, Params};

const TOKEN_TTL: Duration = Duration::from_secs(18_000);

/// Issued tokens and the secret.
pub struct Auth {
    secret: Option<String>,
    tokens: Mutex<HashMap<String, Instant>>,
}

pub fn same(a: &str, b: &str) -> bool {
    // Length leaks nothing useful here; content is compared without early exit.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    pub fn new(secret: Option<String>) -> Self {
        Self {
            secret,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    pub fn verify(&self, token: &str) -> bool {
        let Some(secret) = &self.secret else {
            return true;
        };
        if same(token, secret) {
            return true;
        }
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        tokens.retain(|_, expires| *expires > now);
        tokens.contains_key(token)
    }

    /// A fresh token when `password` is the secret.
    pub fn login(&self, password: &str) -> Option<String> {
        let secret = self.secret.as_ref()?;
        if !same(password, secret) {
            return None;
        }
        let bytes: [u8; 24] = rand::rng().random();
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), Instant::now() + TOKEN_TTL);
        Some(token)
    }
}

async fn login(State(auth): State<Arc<Auth>>, p: Params) -> Result<Response, ApiError> {
    if !auth.enabled() {
        return Err(ApiError::not_found(
            "auth is off (every listener is on loopback); no login needed",
        ));
    }
    let username = p.required("username")?.to_string();
    let password = p.required("password")?;
    match auth.login(password) {
        Some(token) => Ok(axum::Json(json!({
            "accessToken": token,
            "tokenTtl": TOKEN_TTL.as_secs(),
            "globalAdmin": true,
            "username": username,
        }))
        .into_response()),
        None => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "unknown user or wrong password".into(),
        }),
    }
}

pub fn routes(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/nacos/v1/auth/login", post(login))
        .route("/nacos/v1/auth/users/login", post(login))
        .with_state(auth)
}

fn header_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    for name in ["x-consul-token", "accesstoken"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().to_string());
        }
    }
    None
}

fn query_token(query: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "accessToken" || k == "token")
        .map(|(_, v)| v)
}

/// Refuses HTTP requests without a valid token when auth is on.
pub async fn http_guard(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if !auth.enabled() || req.uri().path().starts_with("/nacos/v1/auth/") {
        return next.run(req).await;
    }
    let token =
        header_token(req.headers()).or_else(|| query_token(req.uri().query().unwrap_or("")));
    let v2 = req.uri().path().starts_with("/nacos/v2/");
    match token {
        Some(t) if auth.verify(&t) => next.run(req).await,
        Some(_) => refuse(
            v2,
            "token invalid or expired; log in again at /nacos/v1/auth/login",
        ),
        None => refuse(
            v2,
            "auth is on: send a token (accessToken, Authorization: Bearer or X-Consul-Token)",
        ),
    }
}

/// A 403: Nacos's v2 envelope (code 10001) on its v2 API, the text body elsewhere.
fn refuse(v2: bool, message: &str) -> Response {
    if v2 {
        let body = json!({"code": 10001, "message": "access denied", "data": message});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: message.into(),
    }
    .into_response()
}

/// The same check for the gRPC watch (`authorization: Bearer <token>`).
pub fn grpc_interceptor(
    auth: Arc<Auth>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |req: tonic::Request<()>| {
        if !auth.enabled() {
            return Ok(req);
        }
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match token {
            Some(t) if auth.verify(t) => Ok(req),
            _ => Err(tonic::Status::unauthenticated(
                "auth is on: send metadata authorization: Bearer <token>",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_come_only_from_the_secret() {
        let off = Auth::new(None);
        assert!(off.verify("anything"));
        let on = Auth::new(Some("s".repeat(32)));
        assert!(!on.verify("nope"));
        assert!(on.verify(&"s".repeat(32)));
        assert!(on.login("wrong").is_none());
        let t = on.login(&"s".repeat(32)).unwrap();
        assert!(on.verify(&t));
    }
}
