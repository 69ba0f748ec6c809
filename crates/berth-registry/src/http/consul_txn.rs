//! Consul transactions, `PUT /v1/txn`: the KV verbs (`set`, `cas`, `get`, `get-tree`,
//! `check-index`, `check-session`, `check-not-exists`, `delete`, `delete-tree`,
//! `delete-cas`, `lock`, `unlock`) run as one berth-kv [`Txn`] on space `kv`, all or
//! nothing.
//!
//! Verbs that depend on a key's current state beyond a modify index (`set` keeps the
//! lock, `lock`/`unlock`/`check-session` look at the holder, `get` needs the key) read
//! the keys first and make their writes conditional on the modify index they read; if
//! another writer got in between, the whole transaction is built again and retried. So
//! such a verb sees the store as it was before the transaction, not the effect of the
//! transaction's earlier ops on the same key.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use berth_kv::{Cond, Entry, KvHandle, Op, OpResult, Txn, TxnOutcome};
use serde_json::{Value, json};

use super::AppState;
use super::consul::{field, index_response};
use super::consul_kv::{MAX_VALUE, base64_decode, entry_json, kv_error, set_op, store, too_large};
use super::params::{ApiError, clip};
use crate::sessions::{self, SessionStore, kv_space};

/// Consul's limit on operations in one transaction.
pub const MAX_OPS: usize = 128;
const ATTEMPTS: usize = 16;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/txn", put(txn))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verb {
    Set,
    Cas,
    Get,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
    Lock,
    Unlock,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvOp {
    pub verb: Verb,
    pub key: String,
    pub value: Vec<u8>,
    pub flags: u64,
    pub index: u64,
    pub session: String,
}

fn op_error(i: usize, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("op {i}: {message}"))
}

/// Parses the body into KV ops; errors name the op index and the field.
pub fn parse_ops(body: &[u8]) -> Result<Vec<KvOp>, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Failed to parse body: {e}")))?;
    let Value::Array(items) = value else {
        return Err(ApiError::bad_request(
            "Failed to parse body: expected a JSON array of operations",
        ));
    };
    if items.len() > MAX_OPS {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "Transaction contains too many operations ({} > {MAX_OPS})",
                items.len()
            ),
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_op(i, v))
        .collect()
}

fn parse_op(i: usize, v: &Value) -> Result<KvOp, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| op_error(i, "must be an object like {\"KV\": {...}}"))?;
    let Some(kv) = field(obj, "KV") else {
        let kind = obj.keys().next().map_or("nothing", String::as_str);
        return Err(op_error(
            i,
            format!("only KV operations are supported, got {}", clip(kind)),
        ));
    };
    let kv = kv
        .as_object()
        .ok_or_else(|| op_error(i, "field 'KV' must be an object"))?;
    let s = |name: &str| -> Result<Option<String>, ApiError> {
        match field(kv, name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(op_error(i, format!("field '{name}' must be a string"))),
        }
    };
    let n = |name: &str| -> Result<u64, ApiError> {
        match field(kv, name) {
            None => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| {
                op_error(i, format!("field '{name}' must be a non-negative integer"))
            }),
        }
    };
    let verb_text = s("Verb")?.ok_or_else(|| op_error(i, "field 'Verb' is required"))?;
    let verb = match verb_text.as_str() {
        "set" => Verb::Set,
        "cas" => Verb::Cas,
        "get" => Verb::Get,
        "get-tree" => Verb::GetTree,
        "check-index" => Verb::CheckIndex,
        "check-session" => Verb::CheckSession,
        "check-not-exists" => Verb::CheckNotExists,
        "delete" => Verb::Delete,
        "delete-tree" => Verb::DeleteTree,
        "delete-cas" => Verb::DeleteCas,
        "lock" => Verb::Lock,
        "unlock" => Verb::Unlock,
        other => {
            return Err(op_error(
                i,
                format!("field 'Verb': unknown KV verb '{}'", clip(other)),
            ));
        }
    };
    let key = s("Key")?.unwrap_or_default();
    if key.is_empty() && !matches!(verb, Verb::GetTree | Verb::DeleteTree) {
        return Err(op_error(
            i,
            format!("field 'Key' is required for {verb_text}"),
        ));
    }
    let value = match s("Value")? {
        None => Vec::new(),
        Some(b64) => {
            base64_decode(&b64).ok_or_else(|| op_error(i, "field 'Value' must be base64"))?
        }
    };
    if value.len() > MAX_VALUE {
        let mut e = too_large(value.len());
        e.message = format!("op {i}: field 'Value': {}", e.message);
        return Err(e);
    }
    let session = s("Session")?.unwrap_or_default();
    if matches!(verb, Verb::Lock | Verb::Unlock | Verb::CheckSession) && session.is_empty() {
        return Err(op_error(
            i,
            format!("field 'Session' is required for {verb_text}"),
        ));
    }
    Ok(KvOp {
        verb,
        key,
        value,
        flags: n("Flags")?,
        index: n("Index")?,
        session,
    })
}

/// How the results of one Consul op are read from the berth ops it became.
enum Out {
    /// No result (deletes, check-not-exists).
    None,
    /// The entry of this berth op, without its value.
    Entry(usize),
    /// With its value (get).
    WithValue(usize),
    /// Every entry (get-tree).
    Tree(usize),
}

struct Plan {
    ops: Vec<Op>,
    outs: Vec<Out>,
    /// Per berth op: the Consul op it came from, and whether its condition is the
    /// user's (a failure is an answer) or ours (a failure means retry).
    origin: Vec<(usize, bool)>,
}

/// Builds the berth ops; `Err((op, what))` when an op fails on what was read.
async fn plan(st: &SessionStore, ops: &[KvOp]) -> Result<Result<Plan, (usize, String)>, ApiError> {
    let kv: &KvHandle = st.kv();
    let space = kv_space();
    let mut p = Plan {
        ops: Vec::new(),
        outs: Vec::new(),
        origin: Vec::new(),
    };
    let now = sessions::now_ms();
    for (i, op) in ops.iter().enumerate() {
        let needs_read = matches!(
            op.verb,
            Verb::Set | Verb::Cas | Verb::Get | Verb::Lock | Verb::Unlock | Verb::CheckSession
        );
        let current: Option<Entry> = if needs_read {
            kv.get(&space, &op.key).await.map_err(kv_error)?
        } else {
            None
        };
        let at = p.ops.len();
        let mut push = |o: Op, user: bool| {
            p.ops.push(o);
            p.origin.push((i, user));
        };
        let out = match op.verb {
            Verb::Set => {
                push(
                    set_op(&op.key, op.value.clone(), op.flags, current.as_ref()),
                    false,
                );
                Out::Entry(at)
            }
            Verb::Cas => {
                let seen = current.as_ref().map_or(0, |e| e.modify_index);
                if seen != op.index {
                    return Ok(Err((
                        i,
                        format!(
                            "failed to set key {:?}, index is stale (it is at {seen}, not {})",
                            op.key, op.index
                        ),
                    )));
                }
                push(
                    set_op(&op.key, op.value.clone(), op.flags, current.as_ref()),
                    true,
                );
                Out::Entry(at)
            }
            Verb::Get => {
                let Some(e) = &current else {
                    return Ok(Err((i, format!("key {:?} doesn't exist", op.key))));
                };
                push(Op::check(&op.key, Cond::ModifyIndex(e.modify_index)), false);
                push(Op::get(&op.key), false);
                Out::WithValue(at + 1)
            }
            Verb::GetTree => {
                push(Op::get_prefix(&op.key), false);
                Out::Tree(at)
            }
            Verb::CheckIndex => {
                push(Op::check(&op.key, Cond::ModifyIndex(op.index.max(1))), true);
                push(Op::get(&op.key), false);
                Out::Entry(at + 1)
            }
            Verb::CheckSession => {
                let Some(e) = current
                    .as_ref()
                    .filter(|e| sessions::holder(e) == Some(op.session.as_str()))
                else {
                    return Ok(Err((
                        i,
                        format!(
                            "failed session check for key {:?}, it is not held by session {:?}",
                            op.key, op.session
                        ),
                    )));
                };
                push(Op::check(&op.key, Cond::ModifyIndex(e.modify_index)), false);
                push(Op::get(&op.key), false);
                Out::Entry(at + 1)
            }
            Verb::CheckNotExists => {
                push(Op::check(&op.key, Cond::Absent), true);
                Out::None
            }
            Verb::Delete => {
                push(Op::delete(&op.key), false);
                Out::None
            }
            Verb::DeleteTree => {
                push(Op::delete_prefix(&op.key), false);
                Out::None
            }
            Verb::DeleteCas => {
                push(
                    Op::delete_if(&op.key, Cond::ModifyIndex(op.index.max(1))),
                    true,
                );
                Out::None
            }
            Verb::Lock => {
                if st.get(&op.session).await.map_err(kv_error)?.is_none() {
                    return Ok(Err((i, format!("invalid session {:?}", op.session))));
                }
                let Some(o) = sessions::acquire_op(
                    &op.key,
                    &op.session,
                    op.value.clone(),
                    Some(op.flags),
                    current.as_ref(),
                    now,
                ) else {
                    return Ok(Err((
                        i,
                        format!(
                            "failed to lock key {:?}, lock is already held or in its lock delay",
                            op.key
                        ),
                    )));
                };
                push(o, false);
                Out::Entry(at)
            }
            Verb::Unlock => {
                let Some(o) = sessions::release_op(
                    &op.key,
                    &op.session,
                    op.value.clone(),
                    Some(op.flags),
                    current.as_ref(),
                ) else {
                    return Ok(Err((
                        i,
                        format!(
                            "failed to unlock key {:?}, lock isn't held, or is held by another session",
                            op.key
                        ),
                    )));
                };
                push(o, false);
                Out::Entry(at)
            }
        };
        p.outs.push(out);
    }
    Ok(Ok(p))
}

fn failed(op: usize, what: String) -> Response {
    let mut r = axum::Json(json!({
        "Results": null,
        "Errors": [{"OpIndex": op, "What": what}],
    }))
    .into_response();
    *r.status_mut() = StatusCode::CONFLICT;
    r
}

fn results(outs: &[Out], results: &[OpResult]) -> Vec<Value> {
    let mut out = Vec::new();
    for o in outs {
        let (i, with_value) = match o {
            Out::None => continue,
            Out::Entry(i) => (*i, false),
            Out::WithValue(i) => (*i, true),
            Out::Tree(i) => {
                if let Some(OpResult::GotPrefix(list)) = results.get(*i) {
                    out.extend(list.iter().map(|e| json!({"KV": entry_json(e, true)})));
                }
                continue;
            }
        };
        let entry = match results.get(i) {
            Some(OpResult::Put(e)) => Some(e),
            Some(OpResult::Got(e)) => e.as_ref(),
            _ => None,
        };
        if let Some(e) = entry {
            out.push(json!({"KV": entry_json(e, with_value)}));
        }
    }
    out
}

async fn txn(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let st = store(&s)?;
    let ops = parse_ops(&body)?;
    for _ in 0..ATTEMPTS {
        let p = match plan(st, &ops).await? {
            Ok(p) => p,
            Err((op, what)) => return Ok(failed(op, what)),
        };
        let txn = Txn::new(kv_space());
        let txn = p.ops.iter().cloned().fold(txn, Txn::op);
        match st.kv().txn(txn).await.map_err(kv_error)? {
            TxnOutcome::Committed(c) => {
                let body = json!({"Results": results(&p.outs, &c.results), "Errors": null});
                return Ok(index_response(c.index, body));
            }
            TxnOutcome::Failed(f) => {
                let (op, user) = p.origin[f.op];
                if user {
                    let what = match ops[op].verb {
                        Verb::CheckNotExists => format!("key {:?} exists", f.key),
                        _ => match &f.current {
                            None => format!("key {:?} doesn't exist", f.key),
                            Some(e) => format!(
                                "current modify index {} != {}",
                                e.modify_index, ops[op].index
                            ),
                        },
                    };
                    return Ok(failed(op, what));
                }
            }
        }
    }
    Err(kv_error(berth_kv::KvError::Cancelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_parse_with_consuls_fields() {
        let ops = parse_ops(
            br#"[{"KV":{"Verb":"set","Key":"a","Value":"aGk=","Flags":3}},
                 {"KV":{"Verb":"check-index","Key":"a","Index":7}},
                 {"KV":{"Verb":"delete-tree","Key":""}},
                 {"KV":{"Verb":"lock","Key":"l","Session":"s"}}]"#,
        )
        .unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(
            (ops[0].verb.clone(), ops[0].value.as_slice(), ops[0].flags),
            (Verb::Set, &b"hi"[..], 3)
        );
        assert_eq!(ops[1].index, 7);
        assert_eq!(ops[2].verb, Verb::DeleteTree);
        assert_eq!(ops[3].session, "s");
    }

    #[test]
    fn bad_ops_name_the_op_and_field() {
        for (body, needle) in [
            (&br#"[{"KV":{"Key":"a"}}]"#[..], "op 0: field 'Verb'"),
            (
                br#"[{"KV":{"Verb":"set","Key":"a"}},{"KV":{"Verb":"fly","Key":"a"}}]"#,
                "op 1: field 'Verb'",
            ),
            (br#"[{"KV":{"Verb":"set"}}]"#, "op 0: field 'Key'"),
            (
                br#"[{"KV":{"Verb":"set","Key":"a","Value":"%%%"}}]"#,
                "op 0: field 'Value'",
            ),
            (
                br#"[{"KV":{"Verb":"cas","Key":"a","Index":-1}}]"#,
                "op 0: field 'Index'",
            ),
            (
                br#"[{"KV":{"Verb":"lock","Key":"a"}}]"#,
                "op 0: field 'Session'",
            ),
            (br#"[{"Node":{"Verb":"get"}}]"#, "op 0: only KV"),
            (br#"{"KV":{}}"#, "array"),
            (br#"nope"#, "Failed to parse body"),
        ] {
            let err = parse_ops(body).unwrap_err();
            assert!(
                err.message.contains(needle),
                "{}: {}",
                String::from_utf8_lossy(body),
                err.message
            );
        }
        let many = format!(
            "[{}]",
            vec![r#"{"KV":{"Verb":"get","Key":"a"}}"#; 129].join(",")
        );
        let err = parse_ops(many.as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("128"));
    }
}
