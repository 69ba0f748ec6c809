use std::path::PathBuf;

use crate::txn::CondFailed;

/// Everything that can go wrong. Engine errors keep the driver's error as their source;
/// each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("invalid key {key:?}: {reason}; keys are 1 to 1024 bytes of UTF-8 without NUL")]
    InvalidKey { key: String, reason: &'static str },
    #[error(
        "invalid space name {name:?}: {reason}; a space is 1 to 64 characters of a-z, 0-9, '-', '_' or '.'"
    )]
    InvalidSpace { name: String, reason: &'static str },
    #[error("space {space} is not declared; declare it in KvOptions::space (declared: {known})")]
    UnknownSpace { space: String, known: String },
    #[error(
        "the value of {key:?} is {size} bytes, over the store's limit of {limit} bytes; store less, or raise max_value_bytes"
    )]
    ValueTooLarge {
        key: String,
        size: usize,
        limit: usize,
    },
    /// A condition did not hold; only [`crate::TxnOutcome::committed`] turns this into an
    /// error, [`crate::KvStore::txn`] reports it as an outcome.
    #[error("{0}")]
    ConditionFailed(Box<CondFailed>),
    #[error(
        "cannot open the key/value store at {path}: {source}; check the file is a Berth key/value SQLite database and the folder is writable (the file was left untouched)"
    )]
    OpenSqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("key/value store {path}: {source}; check the disk and the file's permissions")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "not a PostgreSQL URL ({source}); use postgres://USER@HOST:PORT/DB or host=... user=... dbname=..."
    )]
    PostgresUrl {
        #[source]
        source: postgres::Error,
    },
    #[error(
        "cannot open the PostgreSQL key/value store at {target}: {}; check the URL, that PostgreSQL runs and that this user may create tables there",
        crate::postgres::describe_error(source)
    )]
    OpenPostgres {
        target: String,
        #[source]
        source: postgres::Error,
    },
    #[error(
        "PostgreSQL key/value store at {target}: {}{}",
        crate::postgres::describe_error(source),
        if *.broken { "; the connection broke and is reopened on the next call" } else { "" }
    )]
    Postgres {
        target: String,
        #[source]
        source: postgres::Error,
        broken: bool,
    },
    #[error(
        "the key/value store at {target} has schema version {found}, newer than this berth understands ({known}); run a newer berth"
    )]
    TooNew {
        target: String,
        found: i64,
        known: i64,
    },
    #[error(
        "stored {what} cannot be read: {reason}; the row is kept as is, fix or delete it by hand"
    )]
    Corrupt { what: String, reason: String },
    #[error(
        "cannot start the key/value change listener thread: {source}; the system is out of threads or memory"
    )]
    Thread {
        #[source]
        source: std::io::Error,
    },
    #[error("the key/value call was cancelled because the runtime is shutting down")]
    Cancelled,
}
