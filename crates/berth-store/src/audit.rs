//! The records of the audit trail: who did (or tried) what to which target, from where,
//! and how it ended. An entry is appended before the action runs and its outcome (the
//! HTTP status) set after, so an entry without a status is an action that was let
//! through but whose end was never recorded. Entries never hold secrets: the server
//! leaves them out before appending.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::StoreError;

/// Whether the request was let through to its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    /// Refused before the action (401 or 403).
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        }
    }

    fn parse(raw: &str) -> Option<Decision> {
        match raw {
            "allowed" => Some(Decision::Allowed),
            "denied" => Some(Decision::Denied),
            _ => None,
        }
    }
}

/// One audited request, as appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub time_ms: u64,
    /// The token's accessor id and name; `None` when no valid token was sent.
    pub accessor_id: Option<String>,
    pub token_name: Option<String>,
    /// The client's address (`IP:PORT`).
    pub client: String,
    /// The route's stable name, e.g. `app.create`, `diag.grep`.
    pub action: String,
    /// What the action is on, kind first: `app:demo/web`, `policy:ro`, `token:ACCESSOR`.
    pub target: Option<String>,
    pub decision: Decision,
    /// The final HTTP status; for a denial, 401 or 403 at once.
    pub status: Option<u16>,
    /// The operation's parameters (query parameters, secrets left out).
    pub params: BTreeMap<String, String>,
}

/// A stored entry: its record and the id the store gave it (increasing; the cursor of
/// [`AuditFilter::before`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: u64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// Which entries [`crate::Store::list_audit`] returns: all conditions given must hold.
/// Newest first, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFilter {
    /// At or after (Unix ms).
    pub since_ms: Option<u64>,
    /// Before (Unix ms, exclusive).
    pub until_ms: Option<u64>,
    pub accessor_id: Option<String>,
    /// Targets starting with this (`app:demo/` for every app of `demo/`).
    pub target_prefix: Option<String>,
    pub action: Option<String>,
    /// Only entries with a smaller id: the last id of the previous page.
    pub before: Option<u64>,
    pub limit: usize,
}

impl Default for AuditFilter {
    fn default() -> Self {
        AuditFilter {
            since_ms: None,
            until_ms: None,
            accessor_id: None,
            target_prefix: None,
            action: None,
            before: None,
            limit: 100,
        }
    }
}

/// The columns of an audit row, in the order every engine selects them.
pub(crate) const AUDIT_COLUMNS: &str =
    "id, time_ms, accessor_id, token_name, client, action, target, decision, status, params";

pub(crate) fn encode_params(params: &BTreeMap<String, String>) -> Result<String, StoreError> {
    serde_json::to_string(params).map_err(|e| StoreError::Engine(e.to_string()))
}

/// An audit row as every engine reads it.
pub(crate) struct AuditRow {
    pub id: i64,
    pub time_ms: i64,
    pub accessor_id: Option<String>,
    pub token_name: Option<String>,
    pub client: String,
    pub action: String,
    pub target: Option<String>,
    pub decision: String,
    pub status: Option<i64>,
    pub params: String,
}

impl AuditRow {
    pub(crate) fn decode(self) -> Result<AuditEntry, StoreError> {
        let corrupt = |reason: String| StoreError::CorruptAudit {
            id: self.id,
            reason,
        };
        let decision = Decision::parse(&self.decision)
            .ok_or_else(|| corrupt(format!("decision {:?}", self.decision)))?;
        let params = serde_json::from_str(&self.params)
            .map_err(|e| corrupt(format!("params column: {e}")))?;
        let status = match self.status {
            None => None,
            Some(s) => Some(u16::try_from(s).map_err(|_| corrupt(format!("status {s}")))?),
        };
        Ok(AuditEntry {
            id: self.id as u64,
            record: AuditRecord {
                time_ms: self.time_ms as u64,
                accessor_id: self.accessor_id,
                token_name: self.token_name,
                client: self.client,
                action: self.action,
                target: self.target,
                decision,
                status,
                params,
            },
        })
    }
}

/// An optional `u64` as the engines' signed 64-bit column type.
pub(crate) fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}
