//! Consul KV: `/v1/kv/<key>` GET (`recurse`, `keys` with `separator`, `raw`, blocking
//! `index`/`wait`), PUT (`flags`, `cas`, `acquire`, `release`) and DELETE (`recurse`,
//! `cas`) on berth-kv's space `kv`. Flags, the holding session and the lock index are the
//! entry's attrs ([`crate::sessions::attr`]). The parameters are read from the query
//! only: the body is the value, whatever it looks like.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_kv::{Attrs, Cond, Entry, KvError, KvHandle, Op, Txn, TxnOutcome};
use serde_json::{Value, json};

use super::AppState;
use super::consul::{DEFAULT_WAIT, MAX_WAIT, index_response, parse_duration};
use super::params::{ApiError, Params, clip};
use crate::sessions::{self, LockError, LockOutcome, SessionStore, attr, kv_space};

/// Consul's default `kv_max_value_size`.
pub const MAX_VALUE: usize = 512 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/kv", get(get_root).put(put_root).delete(delete_root))
        .route("/v1/kv/", get(get_root).put(put_root).delete(delete_root))
        .route(
            "/v1/kv/{*key}",
            get(get_key).put(put_key).delete(delete_key),
        )
}

async fn get_root(s: State<AppState>, q: RawQuery) -> Result<Response, ApiError> {
    read(s, String::new(), q).await
}
async fn get_key(
    s: State<AppState>,
    Path(key): Path<String>,
    q: RawQuery,
) -> Result<Response, ApiError> {
    read(s, key, q).await
}
async fn put_root(s: State<AppState>, q: RawQuery, body: Bytes) -> Result<Response, ApiError> {
    write(s, String::new(), q, body).await
}
async fn put_key(
    s: State<AppState>,
    Path(key): Path<String>,
    q: RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(s, key, q, body).await
}
async fn delete_root(s: State<AppState>, q: RawQuery) -> Result<Response, ApiError> {
    remove(s, String::new(), q).await
}
async fn delete_key(
    s: State<AppState>,
    Path(key): Path<String>,
    q: RawQuery,
) -> Result<Response, ApiError> {
    remove(s, key, q).await
}

pub(crate) fn store(s: &AppState) -> Result<&SessionStore, ApiError> {
    s.sessions.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "Consul KV and sessions are off: a cluster needs a shared store (kv_postgres_url)",
        )
    })
}

/// Consul's HTTP server answers a path with `//` by a redirect to the cleaned path, so
/// no client can give a key that starts with `/`: refuse it by name instead.
fn check_key(key: &str) -> Result<(), ApiError> {
    if key.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "key '{}' starts with '/'; Consul keys do not (use /v1/kv/{})",
            clip(key),
            clip(key.trim_start_matches('/'))
        )));
    }
    Ok(())
}

fn query(q: RawQuery) -> Result<Params, ApiError> {
    Params::parse(q.0.as_deref().unwrap_or(""), b"")
}

pub(crate) fn kv_error(e: KvError) -> ApiError {
    let status = match &e {
        KvError::InvalidKey { .. } => StatusCode::BAD_REQUEST,
        KvError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError {
        status,
        message: e.to_string(),
    }
}

impl From<LockError> for ApiError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Kv(e) => kv_error(e),
            other => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: other.to_string(),
            },
        }
    }
}

fn missing_key() -> ApiError {
    ApiError::bad_request("Missing key name: give it in the path, /v1/kv/<key>")
}

pub(crate) fn too_large(size: usize) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "the value is {size} bytes, more than the {MAX_VALUE} bytes (512 KiB) a Consul KV value may hold (kv_max_value_size)"
        ),
    }
}

fn flags(e: &Entry) -> u64 {
    e.attrs
        .get(attr::FLAGS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An entry as Consul returns it; `with_value` false for the results of writes in a
/// transaction (Consul leaves their value out).
pub fn entry_json(e: &Entry, with_value: bool) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("LockIndex".into(), json!(sessions::lock_index(e)));
    out.insert("Key".into(), json!(e.key));
    out.insert("Flags".into(), json!(flags(e)));
    out.insert(
        "Value".into(),
        if with_value && !e.value.is_empty() {
            json!(base64_encode(&e.value))
        } else {
            Value::Null
        },
    );
    if let Some(holder) = sessions::holder(e) {
        out.insert("Session".into(), json!(holder));
    }
    out.insert("CreateIndex".into(), json!(e.create_index));
    out.insert("ModifyIndex".into(), json!(e.modify_index));
    Value::Object(out)
}

/// Waits, for a blocking read (`?index=N`), until a change to `key` (or under it, for
/// `prefix`) or the wait's end. Anything written since `N` that this process cannot
/// tell apart answers at once, as Consul's table index does.
/// Returns the index of the change that woke it (the feed announces a change just before
/// its watch moves, so the caller reports the greater of it and the current index).
async fn block(kv: &KvHandle, p: &Params, key: &str, prefix: bool) -> Result<u64, ApiError> {
    let Some(index) = p.u64("index")? else {
        return Ok(0);
    };
    let wait = wait_param(p)?;
    let mut changes = kv.subscribe();
    if index == 0 || kv.current_index() > index {
        return Ok(0);
    }
    let space = kv_space();
    let relevant = |c: &berth_kv::Change| match c {
        berth_kv::Change::Resync { .. } => true,
        berth_kv::Change::Written {
            space: s,
            keys,
            prefixes,
            ..
        } => {
            *s == space
                && if prefix {
                    keys.iter().any(|k| k.starts_with(key))
                        || prefixes
                            .iter()
                            .any(|p| p.starts_with(key) || key.starts_with(p.as_str()))
                } else {
                    c.affects(&space, key)
                }
        }
    };
    let woke = tokio::time::timeout(wait, async {
        loop {
            match changes.recv().await {
                Ok(c) if relevant(&c) => return c.index(),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return 0,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await
                }
            }
        }
    })
    .await;
    Ok(woke.unwrap_or(0))
}

pub(crate) fn wait_param(p: &Params) -> Result<Duration, ApiError> {
    Ok(match p.opt("wait") {
        None => DEFAULT_WAIT,
        Some(w) => parse_duration(w).ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter 'wait' must be a duration like \"10s\" or \"5m\", got '{}'",
                clip(w)
            ))
        })?,
    }
    .min(MAX_WAIT))
}

fn not_found(index: u64) -> Response {
    let mut r = index_response(index, Value::Null);
    *r.status_mut() = StatusCode::NOT_FOUND;
    *r.body_mut() = axum::body::Body::empty();
    r.headers_mut().remove(header::CONTENT_TYPE);
    r
}

async fn read(State(s): State<AppState>, key: String, q: RawQuery) -> Result<Response, ApiError> {
    let p = query(q)?;
    check_key(&key)?;
    let kv = store(&s)?.kv().clone();
    let (recurse, keys) = (p.has("recurse"), p.has("keys"));
    if key.is_empty() && !recurse && !keys {
        return Err(missing_key());
    }
    let woke = block(&kv, &p, &key, recurse || keys).await?;
    let index = kv.current_index().max(woke).max(1);
    let space = kv_space();
    if keys {
        let separator = p.opt("separator");
        let list = kv.keys(&space, &key, separator).await.map_err(kv_error)?;
        if list.is_empty() {
            return Ok(not_found(index));
        }
        return Ok(index_response(index, json!(list)));
    }
    if recurse {
        let list = kv.list(&space, &key, None).await.map_err(kv_error)?;
        if list.is_empty() {
            return Ok(not_found(index));
        }
        let body: Vec<Value> = list.iter().map(|e| entry_json(e, true)).collect();
        return Ok(index_response(index, Value::Array(body)));
    }
    let Some(entry) = kv.get(&space, &key).await.map_err(kv_error)? else {
        return Ok(not_found(index));
    };
    if p.has("raw") {
        let mut r = index_response(index, Value::Null);
        *r.body_mut() = axum::body::Body::from(entry.value);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }
    Ok(index_response(index, json!([entry_json(&entry, true)])))
}

fn answer(ok: bool) -> Response {
    axum::Json(json!(ok)).into_response()
}

async fn write(
    State(s): State<AppState>,
    key: String,
    q: RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = query(q)?;
    check_key(&key)?;
    let st = store(&s)?;
    if key.is_empty() {
        return Err(missing_key());
    }
    if body.len() > MAX_VALUE {
        return Err(too_large(body.len()));
    }
    let flags = p.u64("flags")?;
    let cas = p.u64("cas")?;
    let (acquire, release) = (p.opt("acquire"), p.opt("release"));
    if acquire.is_some() && release.is_some() {
        return Err(ApiError::bad_request(
            "parameters 'acquire' and 'release' conflict: give one",
        ));
    }
    if let Some(session) = acquire {
        let out = st.acquire(&key, session, body.to_vec(), flags).await?;
        return Ok(answer(matches!(out, LockOutcome::Done(_))));
    }
    if let Some(session) = release {
        let out = st.release(&key, session, body.to_vec(), flags).await?;
        return Ok(answer(matches!(out, LockOutcome::Done(_))));
    }
    let done = set(st.kv(), &key, body.to_vec(), flags.unwrap_or(0), cas).await?;
    Ok(answer(done))
}

/// Consul's set: replaces value and flags, keeps the lock (holder and lock index).
/// `cas`: only if the key is at that modify index (0: absent).
pub(crate) async fn set(
    kv: &KvHandle,
    key: &str,
    value: Vec<u8>,
    flags: u64,
    cas: Option<u64>,
) -> Result<bool, ApiError> {
    let space = kv_space();
    for _ in 0..16 {
        let current = kv.get(&space, key).await.map_err(kv_error)?;
        let at = current.as_ref().map_or(0, |e| e.modify_index);
        if cas.is_some_and(|c| c != at) {
            return Ok(false);
        }
        let op = set_op(key, value.clone(), flags, current.as_ref());
        let txn = Txn::new(space.clone()).op(op);
        match kv.txn(txn).await.map_err(kv_error)? {
            TxnOutcome::Committed(_) => return Ok(true),
            TxnOutcome::Failed(_) if cas.is_some() => return Ok(false),
            TxnOutcome::Failed(_) => {}
        }
    }
    Err(kv_error(KvError::Cancelled))
}

/// The put of a set over `current`, conditioned on it being unchanged.
pub(crate) fn set_op(key: &str, value: Vec<u8>, flags: u64, current: Option<&Entry>) -> Op {
    let mut attrs: Attrs = current.map(|e| e.attrs.clone()).unwrap_or_default();
    attrs.remove(attr::FLAGS);
    if flags != 0 {
        attrs.insert(attr::FLAGS.into(), flags.to_string());
    }
    Op::Put {
        key: key.to_string(),
        value,
        attrs,
        cond: Cond::ModifyIndex(current.map_or(0, |e| e.modify_index)),
    }
}

async fn remove(State(s): State<AppState>, key: String, q: RawQuery) -> Result<Response, ApiError> {
    let p = query(q)?;
    check_key(&key)?;
    let kv = store(&s)?.kv().clone();
    let recurse = p.has("recurse");
    let cas = p.u64("cas")?;
    if recurse && cas.is_some() {
        return Err(ApiError::bad_request(
            "parameter 'cas' applies to one key, not with 'recurse'",
        ));
    }
    if key.is_empty() && !recurse {
        return Err(missing_key());
    }
    let op = if recurse {
        Op::delete_prefix(key)
    } else {
        Op::delete_if(key, cas.map_or(Cond::Any, Cond::ModifyIndex))
    };
    let out = kv
        .txn(Txn::new(kv_space()).op(op))
        .await
        .map_err(kv_error)?;
    Ok(answer(matches!(out, TxnOutcome::Committed(_))))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not; `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: &[(&str, &str)], value: &[u8]) -> Entry {
        Entry {
            space: kv_space(),
            key: "a/b".into(),
            value: value.to_vec(),
            md5: String::new(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            create_index: 3,
            modify_index: 7,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn entries_have_consuls_shape() {
        let e = entry(&[], b"");
        assert_eq!(
            entry_json(&e, true),
            json!({"LockIndex":0,"Key":"a/b","Flags":0,"Value":null,"CreateIndex":3,"ModifyIndex":7})
        );
        let e = entry(
            &[("Flags", "42"), ("Session", "s"), ("LockIndex", "2")],
            b"hi",
        );
        assert_eq!(
            entry_json(&e, true),
            json!({"LockIndex":2,"Key":"a/b","Flags":42,"Value":"aGk=","Session":"s","CreateIndex":3,"ModifyIndex":7})
        );
        assert_eq!(entry_json(&e, false)["Value"], Value::Null);
    }

    #[test]
    fn base64_round_trips() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128],
        ] {
            let enc = base64_encode(s);
            assert_eq!(base64_decode(&enc).as_deref(), Some(s), "{enc}");
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_decode("Zm8"), Some(b"fo".to_vec()));
        assert_eq!(base64_decode("!!"), None);
        assert_eq!(base64_decode("Z"), None);
    }

    #[test]
    fn a_set_keeps_the_lock_and_replaces_flags() {
        let cur = entry(
            &[("Flags", "1"), ("Session", "s"), ("LockIndex", "2")],
            b"x",
        );
        let Op::Put { attrs, cond, .. } = set_op("a/b", b"y".to_vec(), 0, Some(&cur)) else {
            panic!()
        };
        assert_eq!(cond, Cond::ModifyIndex(7));
        assert_eq!(attrs.get("Flags"), None);
        assert_eq!(attrs.get("Session").map(String::as_str), Some("s"));
        assert_eq!(attrs.get("LockIndex").map(String::as_str), Some("2"));
    }
}
