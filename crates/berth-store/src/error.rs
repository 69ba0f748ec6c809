use std::path::PathBuf;

use berth_core::{AppId, VersionId};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("app {0} already exists; update it (PUT) instead, or pick another id")]
    AlreadyExists(AppId),
    #[error("app {0} does not exist; create it first")]
    NotFound(AppId),
    #[error(
        "app {app} changed meanwhile (now at version {current}, change was based on {expected}); reload it and retry"
    )]
    Conflict {
        app: AppId,
        expected: VersionId,
        current: VersionId,
    },
    #[error(
        "cannot open the store at {path}: {reason}; check the file is a Berth SQLite database and the folder is writable (the file was left untouched)"
    )]
    Open { path: PathBuf, reason: String },
    #[error(
        "cannot open the PostgreSQL store at {target}: {reason}; check postgres_url, that PostgreSQL runs and that this user may create tables there (nothing was changed)"
    )]
    OpenPostgres { target: String, reason: String },
    #[error(
        "the store at {path} has schema version {found}, newer than this berth understands ({known}); run a newer berth"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "stored version {version} of app {app} cannot be read: {reason}; the row is kept as is, fix or delete it by hand"
    )]
    Corrupt {
        app: String,
        version: i64,
        reason: String,
    },
    #[error(
        "stored deployment {id} cannot be read: {reason}; the row is kept as is, fix or delete it by hand"
    )]
    CorruptDeployment { id: String, reason: String },
    #[error(
        "stored ACL {what} cannot be read: {reason}; the row is kept as is, fix or delete it by hand"
    )]
    CorruptAcl { what: String, reason: String },
    #[error(
        "stored audit entry {id} cannot be read: {reason}; the row is kept as is, fix or delete it by hand"
    )]
    CorruptAudit { id: i64, reason: String },
    #[error("audit entry {0} does not exist (pruned meanwhile?)")]
    AuditEntryMissing(u64),
    #[error("ACL token {0} already exists")]
    TokenExists(String),
    #[error("store failure: {0}")]
    Engine(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}
