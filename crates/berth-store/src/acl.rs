//! The records of the server's ACL state: tokens (stored by the hash of their secret,
//! never the secret) and the rows every engine keeps them in. Policies are berth-core's
//! [`Policy`], stored as their JSON document and validated again when read.

use berth_core::acl::Policy;
use serde::Serialize;

use crate::StoreError;

/// One ACL token as stored. The secret itself is shown once at creation and never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclToken {
    /// The public id of the token: how operators name it to show or revoke it.
    pub accessor_id: String,
    /// SHA-256 of the secret, hex (see `berth_identity::secret::hash_secret`).
    #[serde(skip)]
    pub secret_hash: String,
    pub name: String,
    /// Policy names, `management` included when granted.
    pub policies: Vec<String>,
    pub create_time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_time_ms: Option<u64>,
}

impl AclToken {
    /// Whether the token has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expiration_time_ms.is_some_and(|t| t <= now_ms)
    }
}

pub(crate) fn encode_policy(p: &Policy) -> Result<String, StoreError> {
    serde_json::to_string(p).map_err(|e| StoreError::Engine(e.to_string()))
}

pub(crate) fn decode_policy(name: &str, body: &str) -> Result<Policy, StoreError> {
    Policy::from_json(name, body).map_err(|e| StoreError::CorruptAcl {
        what: format!("policy {name}"),
        reason: e.to_string(),
    })
}

pub(crate) fn encode_policies(names: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(names).map_err(|e| StoreError::Engine(e.to_string()))
}

/// The columns of a token row, in the order every engine selects them.
pub(crate) const TOKEN_COLUMNS: &str =
    "accessor_id, secret_hash, name, policies, create_time_ms, expiration_time_ms";

pub(crate) struct TokenRow {
    pub accessor_id: String,
    pub secret_hash: String,
    pub name: String,
    pub policies: String,
    pub create_time_ms: i64,
    pub expiration_time_ms: Option<i64>,
}

impl TokenRow {
    pub(crate) fn decode(self) -> Result<AclToken, StoreError> {
        let policies: Vec<String> =
            serde_json::from_str(&self.policies).map_err(|e| StoreError::CorruptAcl {
                what: format!("token {}", self.accessor_id),
                reason: format!("policies column: {e}"),
            })?;
        Ok(AclToken {
            accessor_id: self.accessor_id,
            secret_hash: self.secret_hash,
            name: self.name,
            policies,
            create_time_ms: self.create_time_ms as u64,
            expiration_time_ms: self.expiration_time_ms.map(|t| t as u64),
        })
    }
}
