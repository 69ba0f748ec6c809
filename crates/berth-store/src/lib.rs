//! Berth's desired-state store: apps, every version of them, deployments, the ACL
//! state (tokens by the hash of their secret, policies, whether ACLs were bootstrapped)
//! and the audit trail of the server's API.
//!
//! Owns: the [`Store`] trait, its records, two engines ([`SqliteStore`], the default, one
//! file in the data folder; [`PostgresStore`], for servers that share one database) and a
//! conformance suite (`testsuite`, compiled for this crate's tests only) every engine
//! passes. The trait speaks only in domain
//! types and assumes nothing about the engine. Real state (nodes, instances) never lands
//! here: it lives in the server's memory and is rebuilt from agents.
//! Must never depend on roles' crates.

mod acl;
mod audit;
mod error;
mod postgres;
mod record;
mod sqlite;
#[cfg(test)]
mod testsuite;

pub use acl::AclToken;
pub use audit::{AuditEntry, AuditFilter, AuditRecord, Decision};
pub use error::StoreError;
pub use postgres::PostgresStore;
pub use record::{AppVersion, Change, Lease};
pub use sqlite::SqliteStore;

use berth_core::acl::Policy;
use berth_core::{AppId, Deployment, DeploymentId, VersionId};

/// Desired state. Calls are blocking and short; async callers run them on a blocking
/// thread.
pub trait Store: Send + Sync + 'static {
    /// Stores the first version of a new app. Fails with [`StoreError::AlreadyExists`].
    fn create_app(&self, version: &AppVersion) -> Result<(), StoreError>;

    /// Stores a new version of an existing app and makes it current. `expected` is the
    /// version the change was based on; if another change landed in between, fails with
    /// [`StoreError::Conflict`] so no change is silently lost.
    fn update_app(&self, version: &AppVersion, expected: VersionId) -> Result<(), StoreError>;

    /// Deletes an app and its versions. `false` when it did not exist.
    fn delete_app(&self, id: &AppId) -> Result<bool, StoreError>;

    /// The current version of an app.
    fn get_app(&self, id: &AppId) -> Result<Option<AppVersion>, StoreError>;

    /// The current version of every app, ordered by id.
    fn list_apps(&self) -> Result<Vec<AppVersion>, StoreError>;

    /// Every stored version of an app, newest first.
    fn list_versions(&self, id: &AppId) -> Result<Vec<AppVersion>, StoreError>;

    fn get_version(&self, id: &AppId, version: VersionId)
    -> Result<Option<AppVersion>, StoreError>;

    /// Takes the lease `name` for `ttl`, or renews it, when it is free, expired or already
    /// `holder`'s; otherwise leaves it. Either way returns who holds it afterwards. Expiry
    /// is judged by the store's clock, so servers whose clocks differ still agree. Servers
    /// sharing one store elect their leader with this.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        info: &str,
        ttl: std::time::Duration,
    ) -> Result<Lease, StoreError>;

    /// Gives the lease up at once if `holder` has it (a clean shutdown), so another server
    /// need not wait for it to expire.
    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Stores a deployment, replacing the one with the same id. Deployments are kept
    /// so that a restarted server goes on tracking a roll it had started.
    fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError>;

    fn get_deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError>;

    /// Every stored deployment, newest first.
    fn list_deployments(&self) -> Result<Vec<Deployment>, StoreError>;

    /// Removes finished deployments of `app` beyond the newest `keep` finished ones.
    /// Active ones are never removed. Returns how many went.
    fn prune_deployments(&self, app: &AppId, keep: usize) -> Result<usize, StoreError>;

    /// Stores a policy, replacing the one with the same name.
    fn put_policy(&self, policy: &Policy) -> Result<(), StoreError>;

    fn get_policy(&self, name: &str) -> Result<Option<Policy>, StoreError>;

    /// Every stored policy, ordered by name.
    fn list_policies(&self) -> Result<Vec<Policy>, StoreError>;

    /// `false` when it did not exist.
    fn delete_policy(&self, name: &str) -> Result<bool, StoreError>;

    /// Stores a new token. Fails with [`StoreError::TokenExists`] when its accessor id or
    /// secret hash is taken.
    fn create_token(&self, token: &AclToken) -> Result<(), StoreError>;

    fn get_token(&self, accessor_id: &str) -> Result<Option<AclToken>, StoreError>;

    /// The token whose secret hashes to `secret_hash`: how a request's token is found.
    fn get_token_by_hash(&self, secret_hash: &str) -> Result<Option<AclToken>, StoreError>;

    /// Every token, oldest first.
    fn list_tokens(&self) -> Result<Vec<AclToken>, StoreError>;

    /// Revokes a token. `false` when it did not exist.
    fn delete_token(&self, accessor_id: &str) -> Result<bool, StoreError>;

    /// Creates the first management token, once: in one transaction, when no bootstrap
    /// was recorded (or `reset`, which clears the record first), records it and stores
    /// `token` (`true`); otherwise changes nothing (`false`). Two servers bootstrapping
    /// at once on one database get one `true` between them.
    fn bootstrap(&self, token: &AclToken, reset: bool) -> Result<bool, StoreError>;

    /// Appends an audit entry; returns its id, greater than every id before it (ids
    /// are never reused, pruned or not).
    fn append_audit(&self, record: &AuditRecord) -> Result<u64, StoreError>;

    /// Records the final HTTP status of entry `id`. Fails with
    /// [`StoreError::AuditEntryMissing`] when there is none.
    fn set_audit_outcome(&self, id: u64, status: u16) -> Result<(), StoreError>;

    /// The entries `filter` selects, newest (highest id) first.
    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError>;

    /// Deletes the entries older than `older_than_ms` (Unix ms); returns how many went.
    fn prune_audit(&self, older_than_ms: u64) -> Result<usize, StoreError>;
}
