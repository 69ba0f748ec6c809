//! A config's history over HTTP: Nacos v1 (`/nacos/v1/cs/history`, `/history/previous`),
//! the v2 open API (`/nacos/v2/cs/history/list`, `/history`, `/history/previous`) and
//! Berth's own rollback (`POST /nacos/v2/cs/history/rollback`; Nacos has none in its
//! APIs). Every record holds the content as its change left it (a deletion: the content
//! it removed); list pages leave content out, as Nacos does.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::config::{Api, Failure, actor, config_key, page_json, paging};
use super::config_v2::{V2Error, success, v2};
use super::params::{ApiError, Params};
use crate::config_center::{ConfigError, ConfigKey, HistoryEntry};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/nacos/v1/cs/history", get(v1_history))
        .route("/nacos/v1/cs/history/previous", get(v1_previous))
        .route("/nacos/v2/cs/history/list", get(v2_list))
        .route("/nacos/v2/cs/history", get(v2_entry))
        .route("/nacos/v2/cs/history/previous", get(v2_previous))
        .route("/nacos/v2/cs/history/rollback", post(v2_rollback))
}

fn iso_time(ms: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

fn or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_string())
    }
}

/// A record as Nacos's `ConfigHistoryInfo`: `id` a string, `opType` `I`/`U`/`D`.
pub fn history_json(h: &HistoryEntry, with_content: bool) -> Value {
    json!({
        "id": h.id.to_string(),
        "lastId": -1,
        "dataId": h.key.data_id,
        "group": h.key.group,
        "tenant": h.key.tenant_for_clients(),
        "appName": h.meta.app_name,
        "type": h.meta.kind,
        "md5": h.md5,
        "content": if with_content { Value::String(h.content.clone()) } else { Value::Null },
        "srcIp": or_null(&h.source_ip),
        "srcUser": or_null(&h.author),
        "opType": h.op,
        "publishType": "formal",
        "createdTime": iso_time(h.at_ms),
        "lastModifiedTime": iso_time(h.at_ms),
    })
}

/// A record id parameter (`nid`, `id`), required.
fn record_id(p: &Params, name: &str) -> Result<u64, ApiError> {
    p.u64(name)?
        .ok_or_else(|| ApiError::from(Failure::missing(name)))
}

async fn page(s: &AppState, p: &Params, api: Api) -> Result<Value, Failure> {
    let key = config_key(p, api)?;
    let (page_no, page_size) = paging(p).map_err(|e| Failure::invalid("pageNo", e.message))?;
    let (total, records) = s
        .configs
        .history(&key, page_no, page_size)
        .await
        .map_err(|e| Failure::from_config(e, api))?;
    let items = records.iter().map(|h| history_json(h, false)).collect();
    Ok(page_json(total, page_no, page_size, items))
}

/// One record by id, `Err(None)` when it belongs to another config.
async fn entry(
    s: &AppState,
    key: &ConfigKey,
    id: u64,
) -> Result<Option<HistoryEntry>, Option<ConfigError>> {
    match s.configs.history_entry(id).await {
        Ok(Some(h)) if &h.key != key => Err(None),
        Ok(found) => Ok(found),
        Err(e) => Err(Some(e)),
    }
}

fn previous_missing(key: &ConfigKey, id: u64) -> Failure {
    Failure::not_found(format!("no history record of {key} before record {id}"))
}

/// `?nid=N`: one record with its content (Nacos: an unknown id is a 200 with an empty
/// body, another config's a 403); else `search=accurate` pages, newest first.
async fn v1_history(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    if p.opt("nid").is_none() {
        if p.opt("search").is_some_and(|v| v != "accurate") {
            return Err(ApiError::bad_request(
                "parameter 'search' must be accurate (or give nid for one record)",
            ));
        }
        return Ok(axum::Json(page(&s, &p, Api::V1).await?).into_response());
    }
    let id = record_id(&p, "nid")?;
    let key = config_key(&p, Api::V1)?;
    match entry(&s, &key, id).await {
        Ok(Some(h)) => Ok(axum::Json(history_json(&h, true)).into_response()),
        Ok(None) => Ok(StatusCode::OK.into_response()),
        Err(None) => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: "Please check dataId, group or namespaceId.".into(),
        }),
        Err(Some(e)) => Err(Failure::v1(e)),
    }
}

/// The record of the config before record `id`.
async fn v1_previous(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let id = record_id(&p, "id")?;
    let key = config_key(&p, Api::V1)?;
    let found = s
        .configs
        .history_previous(&key, id)
        .await
        .map_err(Failure::v1)?;
    match found {
        Some(h) => Ok(axum::Json(history_json(&h, true)).into_response()),
        None => Err(previous_missing(&key, id).into()),
    }
}

async fn v2_list(State(s): State<AppState>, p: Params) -> Result<Response, V2Error> {
    Ok(success(page(&s, &p, Api::V2).await?))
}

async fn v2_entry(State(s): State<AppState>, p: Params) -> Result<Response, V2Error> {
    let id = record_id(&p, "nid")?;
    let key = config_key(&p, Api::V2)?;
    match entry(&s, &key, id).await {
        Ok(Some(h)) => Ok(success(history_json(&h, true))),
        Ok(None) => Err(Failure::from_config(ConfigError::HistoryNotFound(id), Api::V2).into()),
        Err(None) => Err(V2Error(Failure {
            status: StatusCode::BAD_REQUEST,
            code: 20009,
            kind: "parameter mismatch",
            detail: format!(
                "history record {id} belongs to another config: check dataId, group and namespaceId"
            ),
        })),
        Err(Some(e)) => Err(v2(e)),
    }
}

async fn v2_previous(State(s): State<AppState>, p: Params) -> Result<Response, V2Error> {
    let id = record_id(&p, "id")?;
    let key = config_key(&p, Api::V2)?;
    match s.configs.history_previous(&key, id).await.map_err(v2)? {
        Some(h) => Ok(success(history_json(&h, true))),
        None => Err(previous_missing(&key, id).into()),
    }
}

/// Berth's: puts the config back as record `nid` left it, as a new publish (so it has a
/// history record of its own and wakes listeners).
async fn v2_rollback(State(s): State<AppState>, p: Params) -> Result<Response, V2Error> {
    let id = record_id(&p, "nid")?;
    let key = config_key(&p, Api::V2)?;
    s.configs.rollback(&key, id, actor(&p)).await.map_err(v2)?;
    Ok(success(Value::Bool(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_center::ConfigMeta;

    #[test]
    fn records_render_as_nacos_history() {
        let h = HistoryEntry {
            id: 7,
            key: ConfigKey::new("", "", "a").unwrap(),
            op: "U",
            content: "x".into(),
            md5: "m".into(),
            meta: ConfigMeta::default(),
            at_ms: 0,
            author: String::new(),
            source_ip: "10.0.0.1".into(),
        };
        let v = history_json(&h, false);
        assert_eq!(v["id"], "7");
        assert_eq!(v["tenant"], "");
        assert_eq!(v["content"], Value::Null);
        assert_eq!(v["srcUser"], Value::Null);
        assert_eq!(v["srcIp"], "10.0.0.1");
        assert_eq!(v["createdTime"], "1970-01-01T00:00:00.000Z");
        assert_eq!(history_json(&h, true)["content"], "x");
    }
}
