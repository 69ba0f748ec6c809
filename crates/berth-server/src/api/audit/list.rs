//! `GET /v1/audit`: the audit trail, newest first, filtered by the query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use berth_store::AuditFilter;
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::context::Ctx;

const PARAMS: [&str; 8] = [
    "since", "until", "accessor", "target", "app", "action", "limit", "before",
];
const MAX_LIMIT: usize = 1000;

pub async fn list(
    State(ctx): State<Arc<Ctx>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = filter(&q, crate::clock::unix_ms())?;
    let limit = filter.limit;
    let entries = ctx.store.run(move |s| s.list_audit(&filter)).await?;
    // A full page may have more behind it: the cursor of the next one.
    let next = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({ "entries": entries, "next": next })))
}

/// The store's filter for a query; `now_ms` anchors relative times (`since=1h`).
fn filter(q: &HashMap<String, String>, now_ms: u64) -> Result<AuditFilter, ApiError> {
    if let Some(key) = q.keys().find(|k| !PARAMS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown parameter {key:?}: use {}",
            PARAMS.join(", ")
        ))
        .field(key.clone()));
    }
    if q.contains_key("app") && q.contains_key("target") {
        return Err(ApiError::bad_request(
            "give app=APP (the same as target=app:APP) or target=PREFIX, not both",
        )
        .field("app"));
    }
    let limit = match q.get("limit") {
        None => 100,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit={raw:?} is not a number from 1 to {MAX_LIMIT}"
                ))
                .field("limit"));
            }
        },
    };
    let before = match q.get("before") {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "before={raw:?} is not an entry id (use the `next` of the previous page)"
            ))
            .field("before")
        })?),
    };
    let text = |key: &str| q.get(key).filter(|v| !v.is_empty()).cloned();
    Ok(AuditFilter {
        since_ms: time(q, "since", now_ms)?,
        until_ms: time(q, "until", now_ms)?,
        accessor_id: text("accessor"),
        target_prefix: text("app").map(|a| format!("app:{a}")).or(text("target")),
        action: text("action"),
        before,
        limit,
    })
}

/// A time parameter: Unix milliseconds, or a duration (`90m`, `1h`, `7d`) meaning that
/// long before now.
fn time(q: &HashMap<String, String>, key: &str, now_ms: u64) -> Result<Option<u64>, ApiError> {
    let Some(raw) = q.get(key) else {
        return Ok(None);
    };
    if let Ok(ms) = raw.parse::<u64>() {
        return Ok(Some(ms));
    }
    match <Duration as berth_util::config::FromConfigValue>::parse_value(raw) {
        Some(ago) => Ok(Some(now_ms.saturating_sub(ago.as_millis() as u64))),
        None => Err(ApiError::bad_request(format!(
            "{key}={raw:?} is neither a duration (30m, 1h, 7d: that long ago) nor Unix milliseconds"
        ))
        .field(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queries_become_filters() {
        let f = filter(
            &query(&[("since", "1h"), ("until", "5000000"), ("app", "demo/")]),
            10_000_000,
        )
        .unwrap();
        assert_eq!(f.since_ms, Some(10_000_000 - 3_600_000));
        assert_eq!(f.until_ms, Some(5_000_000));
        assert_eq!(f.target_prefix.as_deref(), Some("app:demo/"));
        assert_eq!(f.limit, 100);
        let f = filter(
            &query(&[("target", "token:ab"), ("limit", "5"), ("before", "9")]),
            0,
        )
        .unwrap();
        assert_eq!(f.target_prefix.as_deref(), Some("token:ab"));
        assert_eq!((f.limit, f.before), (5, Some(9)));
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (pairs, field) in [
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "5000")], "limit"),
            (vec![("since", "yesterday")], "since"),
            (vec![("before", "x")], "before"),
            (vec![("app", "a"), ("target", "app:a")], "app"),
            (vec![("apps", "a")], "apps"),
        ] {
            let err = filter(&query(&pairs), 0).unwrap_err();
            assert_eq!(
                err.field.as_deref(),
                Some(field),
                "{pairs:?}: {}",
                err.message
            );
        }
    }
}
