//! Stored rows as both engines read them, decoded in one place so a corrupt row is
//! reported the same way (as [`KvError::Corrupt`], kept as is) by either.

use crate::{Attrs, Entry, HistoryOp, HistoryRecord, KvError, Space};

/// Columns in the order [`EntryRow`] is read from.
pub(crate) const ENTRY_COLUMNS: &str =
    "key, value, md5, attrs, create_index, modify_index, updated_at_ms";
/// Columns in the order [`HistoryRow`] is read from.
pub(crate) const HISTORY_COLUMNS: &str =
    "id, key, op, value, md5, attrs, idx, at_ms, author, source_ip";

pub(crate) struct EntryRow {
    pub key: String,
    pub value: Vec<u8>,
    pub md5: String,
    pub attrs: String,
    pub create_index: i64,
    pub modify_index: i64,
    pub updated_at_ms: i64,
}

impl EntryRow {
    pub fn decode(self, space: &Space) -> Result<Entry, KvError> {
        Ok(Entry {
            attrs: decode_attrs(&self.attrs, || format!("entry {space}/{}", self.key))?,
            space: space.clone(),
            key: self.key,
            value: self.value,
            md5: self.md5,
            create_index: self.create_index as u64,
            modify_index: self.modify_index as u64,
            updated_at_ms: self.updated_at_ms,
        })
    }
}

pub(crate) struct HistoryRow {
    pub id: i64,
    pub key: String,
    pub op: String,
    pub value: Vec<u8>,
    pub md5: String,
    pub attrs: String,
    pub index: i64,
    pub at_ms: i64,
    pub author: Option<String>,
    pub source_ip: Option<String>,
}

impl HistoryRow {
    pub fn decode(self, space: &Space) -> Result<HistoryRecord, KvError> {
        let id = self.id;
        Ok(HistoryRecord {
            id: id as u64,
            space: space.clone(),
            op: HistoryOp::parse(&self.op, id)?,
            attrs: decode_attrs(&self.attrs, || format!("history record {id}"))?,
            key: self.key,
            value: self.value,
            md5: self.md5,
            index: self.index as u64,
            at_ms: self.at_ms,
            author: self.author,
            source_ip: self.source_ip,
        })
    }
}

fn decode_attrs(raw: &str, what: impl FnOnce() -> String) -> Result<Attrs, KvError> {
    serde_json::from_str(raw).map_err(|e| KvError::Corrupt {
        what: what(),
        reason: format!("attrs are not a JSON object of strings: {e}"),
    })
}

pub(crate) fn encode_attrs(attrs: &Attrs) -> String {
    // A map of strings always serialises; the fallback is never taken.
    serde_json::to_string(attrs).unwrap_or_else(|_| "{}".to_string())
}
