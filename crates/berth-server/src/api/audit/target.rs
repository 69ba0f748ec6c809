//! What an audited request asks, read the way its route reads it: the action's name, the
//! target (the app as the route's `Access` rule finds it, or the policy or token a path
//! names) and the operation's parameters, secrets left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::Route;
use crate::api::ApiError;
use crate::api::auth::{self, Access, AppIn};
use crate::context::Ctx;

/// An audited request's action, target and parameters.
pub(super) struct Asked {
    pub action: String,
    pub target: Option<String>,
    pub params: BTreeMap<String, String>,
}

/// Longest parameter value kept, and most parameters kept, so one request cannot make a
/// huge entry.
const MAX_VALUE: usize = 256;
const MAX_PARAMS: usize = 32;

/// Parameter names whose values are never stored (only that they were given).
const SECRET_WORDS: [&str; 6] = ["token", "secret", "password", "passwd", "auth", "key"];

/// Reads what `parts` asks. A body is read only where the target or the parameters are
/// in it (a create); it is handed back intact for the check and the handler.
pub(super) async fn read(
    ctx: &Arc<Ctx>,
    route: &Route,
    parts: &Parts,
    body: Body,
) -> Result<(Body, Asked), ApiError> {
    let path = auth::percent_decode(parts.uri.path());
    let mut params = query_params(parts);
    let needs_body =
        matches!(route.access, Access::App(_, AppIn::Body)) || route.action == TOKEN_CREATE;
    let (body, bytes) = if needs_body {
        let bytes = axum::body::to_bytes(body, ctx.config.max_body_bytes)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "the request body is larger than the {}-byte limit; send a smaller one (or raise max_body_bytes on the server)",
                        ctx.config.max_body_bytes
                    ),
                )
            })?;
        (Body::from(bytes.clone()), Some(bytes))
    } else {
        (body, None)
    };
    let target = match route.access {
        Access::App(_, place) => {
            let in_body = bytes
                .as_deref()
                .and_then(|b| auth::spec_id(&parts.headers, b));
            auth::app_of(ctx, place, parts, in_body)
                .await
                .map(|app| format!("app:{app}"))
        }
        _ => named_in_path(route.path, &path),
    };
    if route.action == TOKEN_CREATE
        && let Some(bytes) = &bytes
    {
        params.extend(token_create_params(bytes));
    }
    Ok((
        body,
        Asked {
            action: action(route.action, &path),
            target,
            params,
        },
    ))
}

/// The action whose parameters are in its body: the new token's name and policies (never
/// the answer's secret).
const TOKEN_CREATE: &str = "acl.token.create";

fn token_create_params(bytes: &[u8]) -> BTreeMap<String, String> {
    let Ok(serde_json::Value::Object(body)) = serde_json::from_slice(bytes) else {
        return BTreeMap::new();
    };
    let mut params = BTreeMap::new();
    if let Some(name) = body.get("name").and_then(|v| v.as_str()) {
        params.insert("name".to_string(), clip(name));
    }
    if let Some(policies) = body.get("policies").and_then(|v| v.as_array()) {
        let names: Vec<&str> = policies.iter().filter_map(|p| p.as_str()).collect();
        params.insert("policies".to_string(), clip(&names.join(",")));
    }
    if let Some(ttl) = body.get("ttl").and_then(|v| v.as_str()) {
        params.insert("ttl".to_string(), clip(ttl));
    }
    params
}

/// The action name of a route for this path: a template `app.{scale,restart}` becomes
/// `app.scale` when the path's last segment is `scale`, and `app.unknown` for a segment
/// it does not list (so a name in the trail is always one the route table knows).
pub(super) fn action(template: &str, path: &str) -> String {
    let Some((prefix, rest)) = template.split_once('{') else {
        return template.to_string();
    };
    let choices = rest.trim_end_matches('}');
    let last = path.rsplit('/').next().unwrap_or_default();
    let chosen = choices.split(',').find(|c| *c == last).unwrap_or("unknown");
    format!("{prefix}{chosen}")
}

/// The policy or token a path names: for a pattern ending `KIND/{param}`, `KIND:VALUE`.
pub(super) fn named_in_path(pattern: &str, path: &str) -> Option<String> {
    let (head, last) = pattern.rsplit_once('/')?;
    if !last.starts_with('{') {
        return None;
    }
    let kind = head.rsplit('/').next()?;
    let value = path.strip_prefix(head)?.strip_prefix('/')?;
    (!value.is_empty()).then(|| format!("{kind}:{}", clip(value)))
}

fn query_params(parts: &Parts) -> BTreeMap<String, String> {
    let Ok(Query(q)) = Query::<BTreeMap<String, String>>::try_from_uri(&parts.uri) else {
        return BTreeMap::new();
    };
    q.into_iter()
        .take(MAX_PARAMS)
        .map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            let value = if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                "(redacted)".to_string()
            } else {
                clip(&v)
            };
            (clip(&k), value)
        })
        .collect()
}

fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_VALUE) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_only_the_actions_they_list() {
        assert_eq!(action("app.create", "/v1/apps"), "app.create");
        assert_eq!(
            action("app.{scale,restart}", "/v1/apps/demo/web/scale"),
            "app.scale"
        );
        assert_eq!(
            action("app.{scale,restart}", "/v1/apps/demo/web/restart"),
            "app.restart"
        );
        assert_eq!(
            action("app.{scale,restart}", "/v1/apps/demo/web"),
            "app.unknown"
        );
        assert_eq!(
            action("diag.{grep,tail,ps,ports}", "/v1/diag/grep"),
            "diag.grep"
        );
    }

    #[test]
    fn policies_and_tokens_are_named_by_their_path() {
        assert_eq!(
            named_in_path("/v1/acl/policy/{name}", "/v1/acl/policy/ro"),
            Some("policy:ro".into())
        );
        assert_eq!(
            named_in_path("/v1/acl/token/{accessor}", "/v1/acl/token/ab-12"),
            Some("token:ab-12".into())
        );
        assert_eq!(named_in_path("/v1/acl/token", "/v1/acl/token"), None);
        assert_eq!(
            named_in_path("/v1/acl/bootstrap", "/v1/acl/bootstrap"),
            None
        );
    }

    #[test]
    fn secrets_never_reach_the_parameters() {
        let request = axum::http::Request::get(
            "/v1/diag/grep?app=a&pattern=GET&token=s3cr3t&api_key=k&X-Secret=v",
        )
        .body(())
        .unwrap();
        let (parts, ()) = request.into_parts();
        let params = query_params(&parts);
        assert_eq!(params["pattern"], "GET");
        for key in ["token", "api_key", "X-Secret"] {
            assert_eq!(params[key], "(redacted)", "{key}");
        }
        let body = br#"{"name": "ci", "policies": ["ro", "logs"], "secret_id": "no"}"#;
        let params = token_create_params(body);
        assert_eq!(
            params,
            BTreeMap::from([
                ("name".to_string(), "ci".to_string()),
                ("policies".to_string(), "ro,logs".to_string()),
            ])
        );
    }

    #[test]
    fn long_values_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_VALUE + 10);
        let clipped = clip(&long);
        assert_eq!(clipped.chars().count(), MAX_VALUE + 3);
        assert!(clipped.ends_with("..."));
    }
}
