//! SQLite: one file (the registry's `DATA_DIR/kv.sqlite3`), WAL journal with
//! `synchronous=FULL`, numbered schema steps.
//!
//! One connection behind a mutex, so writes are serialised in this process and the feed
//! is published in index order while the lock is held; writing transactions also begin
//! `IMMEDIATE`, so a second process on the same file (which the data folder's lock
//! prevents) would wait instead of interleaving. Only one process should write the
//! file: the feed of another process would not see its changes.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::apply::{Backend, Stamp, apply, validate};
use crate::entry::{prefix_upper, validate_key, validate_prefix};
use crate::history::NewHistory;
use crate::rows::{ENTRY_COLUMNS, EntryRow, HISTORY_COLUMNS, HistoryRow, encode_attrs};
use crate::{
    Entry, Feed, HistoryPage, HistoryRecord, KvError, KvOptions, KvStore, Space, Txn, TxnOutcome,
};

/// Schema steps, applied in order; each runs once, recorded in `kv_schema_migrations`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE IF NOT EXISTS kv_meta (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO kv_meta (name, value) VALUES ('index', 0) ON CONFLICT (name) DO NOTHING;
CREATE TABLE IF NOT EXISTS kv_entries (
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    md5 TEXT NOT NULL,
    attrs TEXT NOT NULL,
    create_index INTEGER NOT NULL,
    modify_index INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (space, key)
);
CREATE TABLE IF NOT EXISTS kv_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    op TEXT NOT NULL,
    value BLOB NOT NULL,
    md5 TEXT NOT NULL,
    attrs TEXT NOT NULL,
    idx INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    author TEXT,
    source_ip TEXT
);
CREATE INDEX IF NOT EXISTS kv_history_by_key ON kv_history (space, key, id);
CREATE INDEX IF NOT EXISTS kv_history_by_time ON kv_history (at_ms);
"#];

pub struct SqliteKv {
    conn: Mutex<Connection>,
    path: PathBuf,
    options: KvOptions,
    feed: Feed,
}

impl SqliteKv {
    /// Opens (or creates) the database file and brings its schema up to date.
    pub fn open(path: &Path, options: KvOptions) -> Result<Self, KvError> {
        let conn = Connection::open(path).map_err(|source| KvError::OpenSqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path, options)
    }

    /// A private in-memory database, for the tests of layers built on this crate.
    pub fn in_memory(options: KvOptions) -> Result<Self, KvError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| KvError::OpenSqlite {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, path, options)
    }

    fn init(mut conn: Connection, path: &Path, options: KvOptions) -> Result<Self, KvError> {
        let open = |source| KvError::OpenSqlite {
            path: path.to_path_buf(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(5)).map_err(open)?;
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .map_err(open)?;
        conn.execute_batch("PRAGMA synchronous=FULL;")
            .map_err(open)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv_schema_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                applied_at_ms INTEGER NOT NULL
            )",
        )
        .map_err(open)?;
        let current: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM kv_schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(open)?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(KvError::TooNew {
                target: path.display().to_string(),
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction().map_err(open)?;
            tx.execute_batch(sql).map_err(open)?;
            tx.execute(
                "INSERT INTO kv_schema_migrations (version, applied_at_ms) VALUES (?1, ?2)",
                params![i as i64 + 1, now_ms()],
            )
            .map_err(open)?;
            tx.commit().map_err(open)?;
        }
        let index = read_index(&conn).map_err(open)?;
        Ok(SqliteKv {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            feed: Feed::new(index, options.feed_capacity),
            options,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back when dropped), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> KvError + '_ {
        |source| KvError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }
}

fn read_index(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT value FROM kv_meta WHERE name = 'index'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|v| v as u64)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `key >= ?2 AND key < ?3`, or without the upper bound when there is none.
fn range_sql(upper: &Option<String>) -> &'static str {
    match upper {
        Some(_) => "key >= ?2 AND key < ?3",
        None => "key >= ?2 AND ?3 IS NULL",
    }
}

fn limit_sql(limit: Option<usize>) -> i64 {
    // SQLite reads a negative LIMIT as none.
    limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64)
}

fn entry_row(row: &Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok(EntryRow {
        key: row.get(0)?,
        value: row.get(1)?,
        md5: row.get(2)?,
        attrs: row.get(3)?,
        create_index: row.get(4)?,
        modify_index: row.get(5)?,
        updated_at_ms: row.get(6)?,
    })
}

fn history_row(row: &Row<'_>) -> rusqlite::Result<HistoryRow> {
    Ok(HistoryRow {
        id: row.get(0)?,
        key: row.get(1)?,
        op: row.get(2)?,
        value: row.get(3)?,
        md5: row.get(4)?,
        attrs: row.get(5)?,
        index: row.get(6)?,
        at_ms: row.get(7)?,
        author: row.get(8)?,
        source_ip: row.get(9)?,
    })
}

/// One open SQLite transaction on one space.
struct SqliteTx<'a> {
    conn: &'a Connection,
    space: &'a Space,
    path: &'a Path,
}

impl SqliteTx<'_> {
    fn err(&self, source: rusqlite::Error) -> KvError {
        KvError::Sqlite {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

impl Backend for SqliteTx<'_> {
    fn read(&mut self, key: &str) -> Result<Option<Entry>, KvError> {
        get_entry(self.conn, self.space, key)
            .map_err(|e| self.err(e))?
            .map(|row| row.decode(self.space))
            .transpose()
    }

    fn read_prefix(&mut self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        list_entries(self.conn, self.space, prefix, None)
            .map_err(|e| self.err(e))?
            .into_iter()
            .map(|row| row.decode(self.space))
            .collect()
    }

    fn write(&mut self, e: &Entry) -> Result<(), KvError> {
        self.conn
            .prepare_cached(&format!(
                "INSERT OR REPLACE INTO kv_entries (space, {ENTRY_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))
            .and_then(|mut s| {
                s.execute(params![
                    self.space.as_str(),
                    e.key,
                    e.value,
                    e.md5,
                    encode_attrs(&e.attrs),
                    e.create_index as i64,
                    e.modify_index as i64,
                    e.updated_at_ms
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), KvError> {
        self.conn
            .execute(
                "DELETE FROM kv_entries WHERE space = ?1 AND key = ?2",
                params![self.space.as_str(), key],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn remove_prefix(&mut self, prefix: &str) -> Result<u64, KvError> {
        let upper = prefix_upper(prefix);
        let sql = format!(
            "DELETE FROM kv_entries WHERE space = ?1 AND {}",
            range_sql(&upper)
        );
        let n = self
            .conn
            .execute(&sql, params![self.space.as_str(), prefix, upper])
            .map_err(|e| self.err(e))?;
        Ok(n as u64)
    }

    fn record(&mut self, h: &NewHistory<'_>) -> Result<(), KvError> {
        self.conn
            .prepare_cached(
                "INSERT INTO kv_history (space, key, op, value, md5, attrs, idx, at_ms, author, source_ip)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    self.space.as_str(),
                    h.key,
                    h.op.as_str(),
                    h.value,
                    h.md5,
                    encode_attrs(h.attrs),
                    h.index as i64,
                    h.at_ms,
                    h.actor.author,
                    h.actor.source_ip
                ])
            })
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

fn get_entry(conn: &Connection, space: &Space, key: &str) -> rusqlite::Result<Option<EntryRow>> {
    conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM kv_entries WHERE space = ?1 AND key = ?2"
    ))?
    .query_row(params![space.as_str(), key], entry_row)
    .optional()
}

fn list_entries(
    conn: &Connection,
    space: &Space,
    prefix: &str,
    limit: Option<usize>,
) -> rusqlite::Result<Vec<EntryRow>> {
    let upper = prefix_upper(prefix);
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM kv_entries WHERE space = ?1 AND {} ORDER BY key LIMIT ?4",
        range_sql(&upper)
    );
    conn.prepare_cached(&sql)?
        .query_map(
            params![space.as_str(), prefix, upper, limit_sql(limit)],
            entry_row,
        )?
        .collect()
}

impl KvStore for SqliteKv {
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, KvError> {
        let keep_history = validate(txn, &self.options)?;
        let err = self.err();
        let mut conn = self.conn();
        let behavior = if txn.writes() {
            TransactionBehavior::Immediate
        } else {
            TransactionBehavior::Deferred
        };
        let tx = conn.transaction_with_behavior(behavior).map_err(&err)?;
        let seen = read_index(&tx).map_err(&err)?;
        let stamp = Stamp {
            seen,
            next: seen + 1,
            now_ms: now_ms(),
        };
        let mut db = SqliteTx {
            conn: &tx,
            space: &txn.space,
            path: &self.path,
        };
        let applied = apply(&mut db, txn, stamp, keep_history)?;
        if matches!(applied.outcome, TxnOutcome::Failed(_)) || applied.changes.is_empty() {
            // Dropping the transaction rolls it back: nothing to keep, no index taken.
            return Ok(applied.outcome);
        }
        tx.execute(
            "UPDATE kv_meta SET value = ?1 WHERE name = 'index'",
            params![stamp.next as i64],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        // Still under the connection lock: changes are published in index order.
        self.feed
            .publish(applied.changes.into_change(stamp.next, txn.space.clone()));
        Ok(applied.outcome)
    }

    fn get(&self, space: &Space, key: &str) -> Result<Option<Entry>, KvError> {
        self.options.space_options(space)?;
        validate_key(key)?;
        get_entry(&self.conn(), space, key)
            .map_err(self.err())?
            .map(|row| row.decode(space))
            .transpose()
    }

    fn list(
        &self,
        space: &Space,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, KvError> {
        self.options.space_options(space)?;
        validate_prefix(prefix)?;
        list_entries(&self.conn(), space, prefix, limit)
            .map_err(self.err())?
            .into_iter()
            .map(|row| row.decode(space))
            .collect()
    }

    fn list_keys(
        &self,
        space: &Space,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<String>, KvError> {
        self.options.space_options(space)?;
        validate_prefix(prefix)?;
        let upper = prefix_upper(prefix);
        let sql = format!(
            "SELECT key FROM kv_entries WHERE space = ?1 AND {} ORDER BY key LIMIT ?4",
            range_sql(&upper)
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql).map_err(self.err())?;
        let keys = stmt
            .query_map(
                params![space.as_str(), prefix, upper, limit_sql(limit)],
                |r| r.get(0),
            )
            .and_then(|rows| rows.collect())
            .map_err(self.err())?;
        Ok(keys)
    }

    fn history(
        &self,
        space: &Space,
        key: &str,
        offset: u64,
        limit: u64,
    ) -> Result<HistoryPage, KvError> {
        self.options.space_options(space)?;
        validate_key(key)?;
        let conn = self.conn();
        let total: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM kv_history WHERE space = ?1 AND key = ?2",
                params![space.as_str(), key],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {HISTORY_COLUMNS} FROM kv_history WHERE space = ?1 AND key = ?2
                 ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            ))
            .and_then(|mut s| {
                s.query_map(
                    params![
                        space.as_str(),
                        key,
                        limit.min(i64::MAX as u64) as i64,
                        offset.min(i64::MAX as u64) as i64
                    ],
                    history_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(self.err())?;
        Ok(HistoryPage {
            total: total as u64,
            records: rows
                .into_iter()
                .map(|r| r.decode(space))
                .collect::<Result<_, _>>()?,
        })
    }

    fn history_record(&self, space: &Space, id: u64) -> Result<Option<HistoryRecord>, KvError> {
        self.options.space_options(space)?;
        self.conn()
            .query_row(
                &format!("SELECT {HISTORY_COLUMNS} FROM kv_history WHERE space = ?1 AND id = ?2"),
                params![space.as_str(), id.min(i64::MAX as u64) as i64],
                history_row,
            )
            .optional()
            .map_err(self.err())?
            .map(|r| r.decode(space))
            .transpose()
    }

    fn history_previous(
        &self,
        space: &Space,
        key: &str,
        id: u64,
    ) -> Result<Option<HistoryRecord>, KvError> {
        self.options.space_options(space)?;
        validate_key(key)?;
        self.conn()
            .query_row(
                &format!(
                    "SELECT {HISTORY_COLUMNS} FROM kv_history WHERE space = ?1 AND key = ?2 AND id < ?3
                     ORDER BY id DESC LIMIT 1"
                ),
                params![space.as_str(), key, id.min(i64::MAX as u64) as i64],
                history_row,
            )
            .optional()
            .map_err(self.err())?
            .map(|r| r.decode(space))
            .transpose()
    }

    fn prune_history(&self, older_than_ms: i64) -> Result<u64, KvError> {
        let n = self
            .conn()
            .execute(
                "DELETE FROM kv_history WHERE at_ms < ?1",
                params![older_than_ms],
            )
            .map_err(self.err())?;
        Ok(n as u64)
    }

    fn feed(&self) -> &Feed {
        &self.feed
    }
}

#[cfg(test)]
mod tests;
