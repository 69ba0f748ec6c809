//! History of the spaces that keep it: one record per put or delete, so the config
//! center can list a config's changes, show who made them, diff against the previous
//! one and roll back (a rollback is a put of an old record's value, recorded in turn).

use crate::{Actor, Attrs, KvError, Space};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRecord {
    /// Increasing in write order and never reused, pruned or not (Nacos's `nid`).
    pub id: u64,
    pub space: Space,
    pub key: String,
    pub op: HistoryOp,
    /// The value written, or for a delete the value deleted.
    pub value: Vec<u8>,
    pub md5: String,
    /// The attrs written, or for a delete the attrs deleted.
    pub attrs: Attrs,
    /// The index of the transaction that made the change.
    pub index: u64,
    pub at_ms: i64,
    pub author: Option<String>,
    pub source_ip: Option<String>,
}

/// Create and update are told apart (Nacos's op types I and U): the core knows whether
/// the key existed, the layer above could only guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryOp {
    Create,
    Update,
    Delete,
}

impl HistoryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryOp::Create => "create",
            HistoryOp::Update => "update",
            HistoryOp::Delete => "delete",
        }
    }

    pub(crate) fn parse(raw: &str, id: i64) -> Result<Self, KvError> {
        match raw {
            "create" => Ok(HistoryOp::Create),
            "update" => Ok(HistoryOp::Update),
            "delete" => Ok(HistoryOp::Delete),
            other => Err(KvError::Corrupt {
                what: format!("history record {id}"),
                reason: format!("unknown op {other:?}"),
            }),
        }
    }
}

/// One page of a key's history, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    /// Records of the key in all, for a pager.
    pub total: u64,
    pub records: Vec<HistoryRecord>,
}

/// A record about to be written; the engine assigns the id.
pub(crate) struct NewHistory<'a> {
    pub key: &'a str,
    pub op: HistoryOp,
    pub value: &'a [u8],
    pub md5: &'a str,
    pub attrs: &'a Attrs,
    pub index: u64,
    pub at_ms: i64,
    pub actor: &'a Actor,
}
