//! Nacos 1.x long polling: `POST /nacos/v1/cs/configs/listener`. A client names the
//! configs it holds with their md5 (`Listening-Configs`) and waits; the answer names the
//! ones whose md5 differs, at once when some already do, else when one changes, else an
//! empty body when the hold ends. Encoding as Nacos's `MD5Util`: records end with
//! `\u{1}`, fields are separated by `\u{2}`, and the answer is URL-encoded as Java's
//! `URLEncoder` does, followed by a newline.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::config::{Failure, no_cache};
use super::params::{ApiError, Params, clip};
use crate::config_center::{ConfigKey, listen};

/// Most configs one long-poll may watch (Nacos's own limit).
pub const MAX_LISTENED: usize = 10_000;
const PARAM: &str = "Listening-Configs";
const TIMEOUT_HEADER: &str = "Long-Pulling-Timeout";
const NO_HANGUP_HEADER: &str = "Long-Pulling-Timeout-No-Hangup";
/// Nacos holds at least this long, so a client asking for less does not spin.
const MIN_HOLD: Duration = Duration::from_secs(10);
/// Nacos answers this much before the client's timeout, so the answer beats it.
const EARLY: Duration = Duration::from_millis(500);
/// How far past the client's timeout a hold may run: Nacos's 10 s floor would otherwise
/// hold a client that asked for 1 s for ten times that.
const SLACK: Duration = Duration::from_millis(500);
/// No request is held longer, whatever the client asks.
const MAX_HOLD: Duration = Duration::from_secs(120);

/// One watched config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Listened {
    pub key: ConfigKey,
    /// The md5 the client holds (`""`: it has none).
    pub md5: String,
    /// The tenant as the client sent it, echoed back in that form (`""` and `public`
    /// are the same namespace, but a client matches the answer against what it sent).
    pub tenant: String,
}

fn bad(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("parameter '{PARAM}' {what}"))
}

/// Parses `dataId \u{2} group \u{2} md5 [\u{2} tenant] \u{1}`, repeated.
pub fn parse_listening(raw: &str) -> Result<Vec<Listened>, ApiError> {
    let body = raw.strip_suffix('\u{1}').ok_or_else(|| {
        bad("must end with \\u0001 after its last record (dataId \\u0002 group \\u0002 md5 [\\u0002 tenant] \\u0001)")
    })?;
    let records: Vec<&str> = body.split('\u{1}').collect();
    if records.len() > MAX_LISTENED {
        return Err(bad(format!(
            "names {} configs, more than the {MAX_LISTENED} one request may watch",
            records.len()
        )));
    }
    records
        .iter()
        .enumerate()
        .map(|(i, record)| parse_record(record).map_err(|e| bad(format!("record {}: {e}", i + 1))))
        .collect()
}

fn parse_record(record: &str) -> Result<Listened, String> {
    let fields: Vec<&str> = record.split('\u{2}').collect();
    let (data_id, group, md5, tenant) = match fields.as_slice() {
        [d, g, m] => (*d, *g, *m, ""),
        [d, g, m, t] => (*d, *g, *m, *t),
        _ => {
            return Err(format!(
                "{:?} has {} fields; expected dataId, group, md5 and an optional tenant separated by \\u0002",
                clip(record),
                fields.len()
            ));
        }
    };
    let key = ConfigKey::new(tenant, group, data_id.trim()).map_err(|e| e.to_string())?;
    Ok(Listened {
        key,
        md5: md5.to_string(),
        tenant: tenant.to_string(),
    })
}

/// The answer naming `changed`: `dataId \u{2} group [\u{2} tenant] \u{1}` each, URL-encoded,
/// then a newline; empty when nothing changed.
pub fn encode_changed<'a>(changed: impl IntoIterator<Item = &'a Listened>) -> String {
    let mut plain = String::new();
    let mut seen = HashSet::new();
    for l in changed {
        if !seen.insert((&l.key, &l.tenant)) {
            continue;
        }
        plain.push_str(&l.key.data_id);
        plain.push('\u{2}');
        plain.push_str(&l.key.group);
        if !l.tenant.is_empty() {
            plain.push('\u{2}');
            plain.push_str(&l.tenant);
        }
        plain.push('\u{1}');
    }
    if plain.is_empty() {
        return plain;
    }
    let mut out = java_url_encode(&plain);
    out.push('\n');
    out
}

/// Java's `URLEncoder.encode(s, "UTF-8")`: letters, digits and `.-*_` stay, a space is
/// `+`, every other byte `%XX` in upper case.
pub fn java_url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char);
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// How long to hold, from the request's headers: `None` answers at once (no
/// `Long-Pulling-Timeout`, or `Long-Pulling-Timeout-No-Hangup: true`). Nacos holds
/// `max(10 s, timeout - 0.5 s)`; Berth also stops at the client's timeout plus 0.5 s
/// and at 120 s.
pub fn hold_for(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).unwrap_or("?"))
    };
    let Some(raw) = header_text(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let timeout = raw.parse::<u64>().map(Duration::from_millis).map_err(|_| {
        ApiError::bad_request(format!(
            "header '{TIMEOUT_HEADER}' must be milliseconds (a non-negative integer), got '{}'",
            clip(raw)
        ))
    })?;
    if header_text(NO_HANGUP_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let nacos = MIN_HOLD.max(timeout.saturating_sub(EARLY));
    Ok(Some(nacos.min(timeout.saturating_add(SLACK)).min(MAX_HOLD)))
}

pub(super) async fn listener(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Params,
) -> Result<Response, ApiError> {
    let raw = p
        .raw(PARAM)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::from(Failure::missing(PARAM)))?;
    let listened = parse_listening(raw)?;
    let hold = hold_for(&headers)?;
    let watched: Vec<(ConfigKey, String)> = listened
        .iter()
        .map(|l| (l.key.clone(), l.md5.clone()))
        .collect();
    let stats = s.configs.stats();
    let changed = match hold {
        None => listen::changed(&s.configs, &watched).await,
        Some(hold) => {
            let _held = stats.hold_listener();
            listen::wait_for_change(&s.configs, &watched, hold).await
        }
    }
    .map_err(Failure::v1)?;
    if !changed.is_empty() {
        stats.listener_wakeups.fetch_add(1, Ordering::Relaxed);
    }
    let changed: HashSet<&ConfigKey> = changed.iter().collect();
    let body = encode_changed(listened.iter().filter(|l| changed.contains(&l.key)));
    let mut response = ([(header::CONTENT_TYPE, "text/plain;charset=UTF-8")], body).into_response();
    no_cache(response.headers_mut(), "0");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use proptest::prelude::*;

    #[test]
    fn records_with_and_without_tenant() {
        let parsed =
            parse_listening("app.yaml\u{2}DEFAULT_GROUP\u{2}abc\u{1}db\u{2}G\u{2}\u{2}dev\u{1}")
                .unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].key, ConfigKey::new("", "", "app.yaml").unwrap());
        assert_eq!(
            (parsed[0].md5.as_str(), parsed[0].tenant.as_str()),
            ("abc", "")
        );
        assert_eq!(parsed[1].key, ConfigKey::new("dev", "G", "db").unwrap());
        assert_eq!(
            (parsed[1].md5.as_str(), parsed[1].tenant.as_str()),
            ("", "dev")
        );
        // nacos-sdk-python 1.0.0 always sends four fields, an empty tenant included.
        let sdk1 = parse_listening("a\u{2}DEFAULT_GROUP\u{2}\u{2}\u{1}").unwrap();
        assert_eq!(sdk1[0].key.tenant, "public");
        assert_eq!(sdk1[0].tenant, "");
    }

    #[test]
    fn malformed_input_is_a_400_naming_the_parameter() {
        for raw in [
            "\u{1}",
            "a\u{2}b\u{2}c",
            "a\u{1}",
            "a\u{2}b\u{2}c\u{2}d\u{2}e\u{1}",
            "a/b\u{2}G\u{2}m\u{1}",
            "a\u{2}G G\u{2}m\u{1}",
        ] {
            let err = parse_listening(raw).unwrap_err();
            assert_eq!(err.status.as_u16(), 400, "{raw:?}");
            assert!(
                err.message.contains("'Listening-Configs'"),
                "{raw:?}: {}",
                err.message
            );
        }
        let many = "a\u{2}G\u{2}m\u{1}".repeat(MAX_LISTENED + 1);
        assert!(
            parse_listening(&many)
                .unwrap_err()
                .message
                .contains("10000")
        );
    }

    #[test]
    fn answers_are_url_encoded_like_java_with_the_tenant_only_when_sent() {
        let plain = Listened {
            key: ConfigKey::new("", "", "app.yaml").unwrap(),
            md5: String::new(),
            tenant: String::new(),
        };
        assert_eq!(encode_changed([&plain]), "app.yaml%02DEFAULT_GROUP%01\n");
        let ns = Listened {
            key: ConfigKey::new("ns1", "G", "配置").unwrap(),
            md5: String::new(),
            tenant: "ns1".into(),
        };
        assert_eq!(
            encode_changed([&ns, &ns]),
            "%E9%85%8D%E7%BD%AE%02G%02ns1%01\n",
            "UTF-8 bytes, each key once"
        );
        assert_eq!(encode_changed([]), "");
        assert_eq!(java_url_encode("a b+c*~"), "a+b%2Bc*%7E");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hold_is_nacos_but_bounded_by_the_client_and_two_minutes() {
        let hold = |v| hold_for(&headers(&[(TIMEOUT_HEADER, v)])).unwrap();
        assert_eq!(hold("30000"), Some(Duration::from_millis(29_500)));
        assert_eq!(hold("5000"), Some(Duration::from_millis(5_500)));
        assert_eq!(hold("9800"), Some(MIN_HOLD));
        assert_eq!(hold("0"), Some(SLACK));
        assert_eq!(hold("600000"), Some(MAX_HOLD));
        assert_eq!(hold_for(&HeaderMap::new()).unwrap(), None);
        let no_hangup = headers(&[(TIMEOUT_HEADER, "30000"), (NO_HANGUP_HEADER, "true")]);
        assert_eq!(hold_for(&no_hangup).unwrap(), None);
        let err = hold_for(&headers(&[(TIMEOUT_HEADER, "soon")])).unwrap_err();
        assert!(
            err.message.contains("'Long-Pulling-Timeout'"),
            "{}",
            err.message
        );
    }

    proptest! {
        #[test]
        fn any_listening_configs_parses_or_errors(raw in "[a-z.\u{1}\u{2} /]{0,80}|.{0,80}") {
            match parse_listening(&raw) {
                Ok(listened) => prop_assert!(!listened.is_empty()),
                Err(e) => prop_assert!(e.message.contains(PARAM)),
            }
        }
    }
}
