//! The schema, created on open and versioned: each step runs once, recorded in
//! `kv_schema_migrations`, and a database from a newer berth is refused untouched.

use postgres::Client;

use super::{NOW_MS, Pg};
use crate::KvError;

/// Schema steps, applied in order; each runs once, recorded in `kv_schema_migrations`.
/// Tables are prefixed `kv_`: the database may be the one the server's store uses.
/// Keys are `COLLATE "C"` so they sort bytewise, as in SQLite, and a prefix scan is one
/// index range.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS kv_meta (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO kv_meta (name, value) VALUES ('index', 0) ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS kv_entries (
    space TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value BYTEA NOT NULL,
    md5 TEXT NOT NULL,
    attrs TEXT NOT NULL,
    create_index BIGINT NOT NULL,
    modify_index BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (space, key)
);
CREATE TABLE IF NOT EXISTS kv_history (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    space TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    op TEXT NOT NULL,
    value BYTEA NOT NULL,
    md5 TEXT NOT NULL,
    attrs TEXT NOT NULL,
    idx BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    author TEXT,
    source_ip TEXT
);
CREATE INDEX IF NOT EXISTS kv_history_by_key ON kv_history (space, key, id);
CREATE INDEX IF NOT EXISTS kv_history_by_time ON kv_history (at_ms);
"#];

/// Serialises the migrations of processes that open the store at the same moment (an
/// arbitrary constant key for `pg_advisory_xact_lock`, distinct from berth-store's).
const MIGRATION_LOCK: i64 = 0x6265_7274_686b_7601;

pub(super) fn migrate(client: &mut Client, target: &str) -> Result<(), KvError> {
    let pg = Pg(target);
    let e = |source| pg.err(source);
    let mut tx = client.transaction().map_err(e)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(e)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS kv_schema_migrations (
            version BIGINT PRIMARY KEY NOT NULL,
            applied_at_ms BIGINT NOT NULL
        )",
    )
    .map_err(e)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM kv_schema_migrations",
            &[],
        )
        .map_err(e)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(KvError::TooNew {
            target: target.to_string(),
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).map_err(e)?;
        tx.execute(
            &format!(
                "INSERT INTO kv_schema_migrations (version, applied_at_ms) VALUES ($1, {NOW_MS})"
            ),
            &[&(i as i64 + 1)],
        )
        .map_err(e)?;
    }
    tx.commit().map_err(e)
}
