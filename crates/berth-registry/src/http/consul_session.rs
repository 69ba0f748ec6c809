//! Consul sessions: `/v1/session/create`, `destroy/:id`, `info/:id`, `list`,
//! `node/:node`, `renew/:id`, over [`crate::sessions::SessionStore`].

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::{Map, Value, json};

use super::AppState;
use super::consul::{NODE, field, index_response, parse_duration, str_field};
use super::consul_kv::{kv_error, store, wait_param};
use super::params::{ApiError, Params, clip};
use crate::sessions::{
    self, Behavior, CheckSource, DEFAULT_LOCK_DELAY, MAX_LOCK_DELAY, SERF_HEALTH, Session,
    SessionSpec, fmt_go_duration,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/session/create", put(create))
        .route("/v1/session/destroy/{id}", put(destroy))
        .route("/v1/session/renew/{id}", put(renew))
        .route("/v1/session/info/{id}", get(info))
        .route("/v1/session/node/{node}", get(node))
        .route("/v1/session/list", get(list))
}

pub fn session_json(s: &Session) -> Value {
    let spec = &s.spec;
    json!({
        "ID": spec.id,
        "Name": spec.name,
        "Node": spec.node,
        "LockDelay": u128::from(spec.lock_delay_ms) * 1_000_000,
        "Behavior": spec.behavior,
        "TTL": if spec.ttl_ms == 0 { String::new() } else { fmt_go_duration(Duration::from_millis(spec.ttl_ms)) },
        "NodeChecks": spec.node_checks,
        "ServiceChecks": if spec.service_checks.is_empty() {
            Value::Null
        } else {
            spec.service_checks.iter().map(|c| json!({"ID": c, "Namespace": ""})).collect()
        },
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

fn strings(obj: &Map<String, Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = field(obj, name) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request(format!("field '{name}' must be a list of check ids"));
    let items = v.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|i| match i {
            Value::String(s) => Ok(s.clone()),
            // ServiceChecks: [{"ID": "...", "Namespace": ""}]
            Value::Object(o) => str_field(o, "ID")?.ok_or_else(bad),
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Consul takes a lock delay as a duration string or a number: nanoseconds, or seconds
/// when below 1000.
fn lock_delay(obj: &Map<String, Value>) -> Result<Duration, ApiError> {
    let delay = match field(obj, "LockDelay") {
        None => DEFAULT_LOCK_DELAY,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(n) if n < 1000 => Duration::from_secs(n),
            Some(n) => Duration::from_nanos(n),
            None => {
                return Err(ApiError::bad_request(
                    "field 'LockDelay' must be a duration like \"15s\" or a non-negative number",
                ));
            }
        },
        Some(Value::String(s)) => parse_duration(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "field 'LockDelay' must be a duration like \"15s\", got '{}'",
                clip(s)
            ))
        })?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "field 'LockDelay' must be a duration like \"15s\"",
            ));
        }
    };
    if delay > MAX_LOCK_DELAY {
        return Err(ApiError::bad_request(format!(
            "field 'LockDelay' is {}; it must be at most 60s",
            fmt_go_duration(delay)
        )));
    }
    Ok(delay)
}

/// Reads a create request into a spec (checks not yet resolved).
pub fn parse_create(body: &[u8], id: String) -> Result<SessionSpec, ApiError> {
    let obj = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => o,
            Ok(Value::Null) => Map::new(),
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "Request decode failed: the body must be a JSON object",
                ));
            }
            Err(e) => return Err(ApiError::bad_request(format!("Request decode failed: {e}"))),
        }
    };
    let name = str_field(&obj, "Name")?.unwrap_or_default();
    let node = str_field(&obj, "Node")?.unwrap_or_else(|| NODE.to_string());
    let behavior = match str_field(&obj, "Behavior")?.as_deref() {
        None | Some("") | Some("release") => Behavior::Release,
        Some("delete") => Behavior::Delete,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field 'Behavior' must be release or delete, got '{}'",
                clip(other)
            )));
        }
    };
    let ttl = match str_field(&obj, "TTL")? {
        None => Duration::ZERO,
        Some(s) if s.is_empty() => Duration::ZERO,
        Some(s) => parse_duration(&s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "field 'TTL' must be a duration like \"30s\", got '{}'",
                clip(&s)
            ))
        })?,
    };
    sessions::check_ttl(ttl).map_err(|e| ApiError::bad_request(format!("field 'TTL': {e}")))?;
    let delay = lock_delay(&obj)?;
    let checks = strings(&obj, "Checks")?;
    let node_checks = strings(&obj, "NodeChecks")?;
    let service_checks = strings(&obj, "ServiceChecks")?;
    let mut spec = SessionSpec {
        id,
        name,
        node,
        lock_delay_ms: delay.as_millis() as u64,
        behavior,
        ttl_ms: ttl.as_millis() as u64,
        node_checks: node_checks.clone().unwrap_or_default(),
        service_checks: service_checks.unwrap_or_default(),
    };
    for c in checks.clone().unwrap_or_default() {
        let list = if c == SERF_HEALTH {
            &mut spec.node_checks
        } else {
            &mut spec.service_checks
        };
        if !list.contains(&c) {
            list.push(c);
        }
    }
    if checks.is_none() && node_checks.is_none() {
        spec.node_checks.insert(0, SERF_HEALTH.to_string());
    }
    Ok(spec)
}

async fn create(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let st = store(&s)?;
    let spec = parse_create(&body, sessions::new_id())?;
    if spec.node != NODE {
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "Missing node registration: node '{}' is unknown; this agent's node is '{NODE}' (leave Node out)",
                clip(&spec.node)
            ),
        });
    }
    if let Some(c) = spec.node_checks.iter().find(|c| *c != SERF_HEALTH) {
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!(
                "Missing check '{}' registration: the only node check is {SERF_HEALTH}",
                clip(c)
            ),
        });
    }
    let checks = super::consul::RegistryChecks(s.registry.clone());
    for c in &spec.service_checks {
        match checks.critical(c) {
            None => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: format!(
                        "Missing check '{}' registration: name a service check as service:<service id>",
                        clip(c)
                    ),
                });
            }
            Some(true) => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: format!("Check '{}' is in critical state", clip(c)),
                });
            }
            Some(false) => {}
        }
    }
    let session = st.create(spec).await.map_err(kv_error)?;
    Ok(index_response(
        session.modify_index,
        json!({"ID": session.spec.id}),
    ))
}

async fn destroy(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let st = store(&s)?;
    st.invalidate(&id, None).await.map_err(kv_error)?;
    Ok(axum::Json(json!(true)).into_response())
}

async fn renew(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let st = store(&s)?;
    match st.renew(&id).await.map_err(kv_error)? {
        Some(session) => Ok(index_response(
            session.modify_index,
            json!([session_json(&session)]),
        )),
        None => Err(ApiError::not_found(format!(
            "Session id '{}' not found",
            clip(&id)
        ))),
    }
}

/// A blocking read of sessions: waits for any write to the session space.
async fn block(s: &AppState, q: &RawQuery) -> Result<u64, ApiError> {
    let kv = store(s)?.kv().clone();
    let p = Params::parse(q.0.as_deref().unwrap_or(""), b"")?;
    let mut woke = 0;
    if let Some(index) = p.u64("index")? {
        let wait = wait_param(&p)?;
        let mut changes = kv.subscribe();
        if index > 0 && kv.current_index() <= index {
            let space = sessions::session_space();
            woke = tokio::time::timeout(wait, async {
                loop {
                    match changes.recv().await {
                        Ok(berth_kv::Change::Written { space: sp, .. }) if sp != space => {}
                        Ok(c) => return c.index(),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return 0,
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            })
            .await
            .unwrap_or(0);
        }
    }
    Ok(kv.current_index().max(woke).max(1))
}

async fn sessions_where(
    s: &AppState,
    q: RawQuery,
    keep: impl Fn(&Session) -> bool,
) -> Result<Response, ApiError> {
    let index = block(s, &q).await?;
    let all = store(s)?.list().await.map_err(kv_error)?;
    let body: Vec<Value> = all.iter().filter(|x| keep(x)).map(session_json).collect();
    Ok(index_response(index, Value::Array(body)))
}

async fn info(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: RawQuery,
) -> Result<Response, ApiError> {
    sessions_where(&s, q, |x| x.spec.id == id).await
}

async fn node(
    State(s): State<AppState>,
    Path(node): Path<String>,
    q: RawQuery,
) -> Result<Response, ApiError> {
    sessions_where(&s, q, |x| x.spec.node == node).await
}

async fn list(State(s): State<AppState>, q: RawQuery) -> Result<Response, ApiError> {
    sessions_where(&s, q, |_| true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_requests_parse_with_consuls_defaults() {
        let spec = parse_create(b"", "id".into()).unwrap();
        assert_eq!(spec.node, NODE);
        assert_eq!(spec.lock_delay_ms, 15_000);
        assert_eq!(spec.behavior, Behavior::Release);
        assert_eq!(spec.ttl_ms, 0);
        assert_eq!(spec.node_checks, vec![SERF_HEALTH.to_string()]);
        let spec = parse_create(
            br#"{"Name":"n","TTL":"30s","LockDelay":"1s","Behavior":"delete","Checks":["serfHealth","service:web"]}"#,
            "id".into(),
        )
        .unwrap();
        assert_eq!((spec.ttl_ms, spec.lock_delay_ms), (30_000, 1_000));
        assert_eq!(spec.behavior, Behavior::Delete);
        assert_eq!(spec.service_checks, vec!["service:web".to_string()]);
        let spec = parse_create(
            br#"{"LockDelay":5,"NodeChecks":[],"ServiceChecks":[{"ID":"x"}]}"#,
            "id".into(),
        )
        .unwrap();
        assert_eq!(spec.lock_delay_ms, 5_000);
        assert!(spec.node_checks.is_empty());
        assert_eq!(spec.service_checks, vec!["x".to_string()]);
    }

    #[test]
    fn bad_create_requests_name_the_field() {
        for (body, needle) in [
            (&br#"{"TTL":"5s"}"#[..], "TTL"),
            (br#"{"TTL":"86401s"}"#, "TTL"),
            (br#"{"TTL":"soon"}"#, "TTL"),
            (br#"{"Behavior":"explode"}"#, "Behavior"),
            (br#"{"LockDelay":"2m"}"#, "LockDelay"),
            (br#"{"Checks":"serfHealth"}"#, "Checks"),
            (br#"[1]"#, "decode"),
            (br#"{"#, "decode"),
        ] {
            let err = parse_create(body, "id".into()).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert!(
                err.message.contains(needle),
                "{}: {}",
                String::from_utf8_lossy(body),
                err.message
            );
        }
    }

    #[test]
    fn sessions_render_like_consul() {
        let s = Session {
            spec: parse_create(br#"{"TTL":"10s"}"#, "abc".into()).unwrap(),
            create_index: 4,
            modify_index: 5,
            renewed_ms: 0,
        };
        let v = session_json(&s);
        assert_eq!(v["ID"], "abc");
        assert_eq!(v["TTL"], "10s");
        assert_eq!(v["LockDelay"], json!(15_000_000_000u64));
        assert_eq!(v["Behavior"], "release");
        assert_eq!(v["ServiceChecks"], Value::Null);
        assert_eq!(v["CreateIndex"], 4);
    }
}
