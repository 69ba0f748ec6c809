//! PostgreSQL: one database shared by the processes of a registry cluster. Same schema
//! and semantics as SQLite; the conformance suite runs against both.
//!
//! Index order: every writing transaction starts with `UPDATE kv_meta ... RETURNING`
//! on the counter row. The row lock it takes is held until commit, so writers across all
//! processes run one at a time, each sees every earlier writer's commit (read committed:
//! each statement takes a fresh snapshot after the lock was granted), and indexes are
//! handed out in commit order with no gaps (a transaction that rolls back gives its
//! number back). Read-only transactions take no lock: they read in one repeatable-read
//! snapshot and report the counter in it.
//!
//! Notification: the writer calls `pg_notify('berth_kv', ...)` inside its transaction;
//! PostgreSQL delivers it only on commit, and delivers notifications in commit order.
//! Each store's listener ([`listener`]) turns them into the feed's changes, for local
//! writes as for other processes' (so the broadcast is in index order in every
//! process); a local commit also moves the watch at once, so a caller sees its own write
//! without waiting for the round trip.
//!
//! One connection for calls, used by one call at a time; a broken one is replaced on the
//! next call, so a database restart costs the calls made while it was down. A connection
//! that breaks during `COMMIT` leaves the outcome unknown (the error says the connection
//! broke): the caller reads the key again before retrying, as with any lost reply.

mod listener;
mod schema;

pub(crate) use berth_util::pg::describe_error;
use berth_util::pg::describe_target;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, IsolationLevel, NoTls, Row, Transaction};

use crate::apply::{Backend, Stamp, apply, validate};
use crate::entry::{prefix_upper, validate_key, validate_prefix};
use crate::history::NewHistory;
use crate::rows::{ENTRY_COLUMNS, EntryRow, HISTORY_COLUMNS, HistoryRow, encode_attrs};
use crate::{
    Entry, Feed, HistoryPage, HistoryRecord, KvError, KvOptions, KvStore, Space, Txn, TxnOutcome,
};

/// The notification channel.
const CHANNEL: &str = "berth_kv";

/// The database's clock in Unix ms: every process stamps with the same clock.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

pub struct PostgresKv {
    config: postgres::Config,
    /// Where the database is, for messages (never the password).
    target: String,
    options: KvOptions,
    conn: Mutex<Option<Client>>,
    feed: Arc<Feed>,
    /// Stops the listener thread when the store goes.
    _listener: listener::Listener,
}

/// The sync client runs a runtime of its own to close its connection, which panics on a
/// thread that already drives one: where async callers drop the last handle to the
/// store (a tokio worker at shutdown). A plain thread closes it there instead.
impl Drop for PostgresKv {
    fn drop(&mut self) {
        let client = self
            .conn
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(client) = client else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Not dropped here even when the thread cannot start.
            let client = std::mem::ManuallyDrop::new(client);
            let closing = std::thread::Builder::new()
                .name("berth-kv-close".into())
                .spawn(move || drop(std::mem::ManuallyDrop::into_inner(client)));
            if let Err(err) = closing {
                // Leaked rather than panicking: the process is most likely exiting.
                tracing::debug!("cannot start a thread to close the database connection: {err}");
            }
        } else {
            drop(client);
        }
    }
}

impl PostgresKv {
    /// Connects, brings the schema up to date and starts listening for changes (before
    /// returning, so no change committed after `open` is missed). `url` is a
    /// `postgres://` URL or libpq `key=value` settings.
    pub fn open(url: &str, options: KvOptions) -> Result<Self, KvError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|source| KvError::PostgresUrl { source })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        // A listener on a dead network path would otherwise wait forever for
        // notifications; keepalives make the kernel notice.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("berth-kv");
        let target = describe_target(&config);
        let open = |source| KvError::OpenPostgres {
            target: target.clone(),
            source,
        };
        let mut client = config.connect(NoTls).map_err(open)?;
        schema::migrate(&mut client, &target).map_err(|e| match e {
            KvError::Postgres { source, .. } => open(source),
            other => other,
        })?;
        let index = read_index(&mut client).map_err(open)?;
        let feed = Arc::new(Feed::new(index, options.feed_capacity));
        let listener = listener::Listener::start(config.clone(), target.clone(), feed.clone())?;
        Ok(PostgresKv {
            config,
            target,
            options,
            conn: Mutex::new(Some(client)),
            feed,
            _listener: listener,
        })
    }

    /// The open connection, reconnecting if there is none or it broke.
    fn connection(&self) -> Result<MutexGuard<'_, Option<Client>>, KvError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let client = self
                .config
                .connect(NoTls)
                .map_err(|source| KvError::Postgres {
                    target: self.target.clone(),
                    source,
                    broken: false,
                })?;
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// Runs `f` on the connection; an error that broke the connection drops it, so the
    /// next call starts afresh.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client, &Pg) -> Result<T, KvError>,
    ) -> Result<T, KvError> {
        let mut guard = self.connection()?;
        let Some(client) = guard.as_mut() else {
            unreachable!("connection() leaves a client")
        };
        let result = f(client, &Pg(&self.target));
        if client.is_closed() {
            *guard = None;
            return result.map_err(|e| match e {
                KvError::Postgres { target, source, .. } => KvError::Postgres {
                    target,
                    source,
                    broken: true,
                },
                other => other,
            });
        }
        result
    }
}

/// Turns driver errors into [`KvError::Postgres`] naming the database.
struct Pg<'a>(&'a str);

impl Pg<'_> {
    fn err(&self, source: postgres::Error) -> KvError {
        KvError::Postgres {
            target: self.0.to_string(),
            source,
            broken: false,
        }
    }
}

fn read_index(client: &mut impl postgres::GenericClient) -> Result<u64, postgres::Error> {
    let row = client.query_one("SELECT value FROM kv_meta WHERE name = 'index'", &[])?;
    Ok(row.get::<_, i64>(0) as u64)
}

fn entry_row(row: &Row) -> EntryRow {
    EntryRow {
        key: row.get(0),
        value: row.get(1),
        md5: row.get(2),
        attrs: row.get(3),
        create_index: row.get(4),
        modify_index: row.get(5),
        updated_at_ms: row.get(6),
    }
}

fn history_row(row: &Row) -> HistoryRow {
    HistoryRow {
        id: row.get(0),
        key: row.get(1),
        op: row.get(2),
        value: row.get(3),
        md5: row.get(4),
        attrs: row.get(5),
        index: row.get(6),
        at_ms: row.get(7),
        author: row.get(8),
        source_ip: row.get(9),
    }
}

/// `key >= $2 AND key < $3`, or without the upper bound when there is none (two texts
/// rather than `$3 IS NULL OR ...`, which the planner cannot turn into an index range).
fn range_sql(upper: &Option<String>) -> &'static str {
    match upper {
        Some(_) => "key >= $2 AND key < $3",
        None => "key >= $2 AND $3::TEXT IS NULL",
    }
}

fn opt_limit(limit: Option<usize>) -> Option<i64> {
    // `LIMIT NULL` is no limit.
    limit.map(|l| l.min(i64::MAX as usize) as i64)
}

fn list_entries(
    client: &mut impl postgres::GenericClient,
    space: &Space,
    prefix: &str,
    limit: Option<usize>,
) -> Result<Vec<Row>, postgres::Error> {
    let upper = prefix_upper(prefix);
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM kv_entries WHERE space = $1 AND {} ORDER BY key LIMIT $4",
        range_sql(&upper)
    );
    client.query(&sql, &[&space.as_str(), &prefix, &upper, &opt_limit(limit)])
}

/// One open PostgreSQL transaction on one space.
struct PgTx<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    space: &'a Space,
    pg: &'a Pg<'a>,
}

impl Backend for PgTx<'_, '_> {
    fn read(&mut self, key: &str) -> Result<Option<Entry>, KvError> {
        self.tx
            .query_opt(
                &format!("SELECT {ENTRY_COLUMNS} FROM kv_entries WHERE space = $1 AND key = $2"),
                &[&self.space.as_str(), &key],
            )
            .map_err(|e| self.pg.err(e))?
            .map(|row| entry_row(&row).decode(self.space))
            .transpose()
    }

    fn read_prefix(&mut self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        list_entries(self.tx, self.space, prefix, None)
            .map_err(|e| self.pg.err(e))?
            .iter()
            .map(|row| entry_row(row).decode(self.space))
            .collect()
    }

    fn write(&mut self, e: &Entry) -> Result<(), KvError> {
        self.tx
            .execute(
                &format!(
                    "INSERT INTO kv_entries (space, {ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (space, key) DO UPDATE SET value = EXCLUDED.value, md5 = EXCLUDED.md5,
                        attrs = EXCLUDED.attrs, create_index = EXCLUDED.create_index,
                        modify_index = EXCLUDED.modify_index, updated_at_ms = EXCLUDED.updated_at_ms"
                ),
                &[
                    &self.space.as_str(),
                    &e.key,
                    &e.value,
                    &e.md5,
                    &encode_attrs(&e.attrs),
                    &(e.create_index as i64),
                    &(e.modify_index as i64),
                    &e.updated_at_ms,
                ],
            )
            .map_err(|e| self.pg.err(e))?;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<(), KvError> {
        self.tx
            .execute(
                "DELETE FROM kv_entries WHERE space = $1 AND key = $2",
                &[&self.space.as_str(), &key],
            )
            .map_err(|e| self.pg.err(e))?;
        Ok(())
    }

    fn remove_prefix(&mut self, prefix: &str) -> Result<u64, KvError> {
        let upper = prefix_upper(prefix);
        let sql = format!(
            "DELETE FROM kv_entries WHERE space = $1 AND {}",
            range_sql(&upper)
        );
        self.tx
            .execute(&sql, &[&self.space.as_str(), &prefix, &upper])
            .map_err(|e| self.pg.err(e))
    }

    fn record(&mut self, h: &NewHistory<'_>) -> Result<(), KvError> {
        self.tx
            .execute(
                "INSERT INTO kv_history (space, key, op, value, md5, attrs, idx, at_ms, author, source_ip)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                &[
                    &self.space.as_str(),
                    &h.key,
                    &h.op.as_str(),
                    &h.value,
                    &h.md5,
                    &encode_attrs(h.attrs),
                    &(h.index as i64),
                    &h.at_ms,
                    &h.actor.author,
                    &h.actor.source_ip,
                ],
            )
            .map_err(|e| self.pg.err(e))?;
        Ok(())
    }
}

impl KvStore for PostgresKv {
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, KvError> {
        let keep_history = validate(txn, &self.options)?;
        let (outcome, written) = self.with(|client, pg| {
            if !txn.writes() {
                let mut tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .map_err(|e| pg.err(e))?;
                let seen = read_index(&mut tx).map_err(|e| pg.err(e))?;
                let stamp = Stamp {
                    seen,
                    next: seen + 1,
                    now_ms: 0,
                };
                let mut db = PgTx {
                    tx: &mut tx,
                    space: &txn.space,
                    pg,
                };
                let applied = apply(&mut db, txn, stamp, keep_history)?;
                tx.commit().map_err(|e| pg.err(e))?;
                return Ok((applied.outcome, None));
            }
            let mut tx = client.transaction().map_err(|e| pg.err(e))?;
            // Takes the counter row's lock until commit: see the module's doc.
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE kv_meta SET value = value + 1 WHERE name = 'index' RETURNING value, {NOW_MS}"
                    ),
                    &[],
                )
                .map_err(|e| pg.err(e))?;
            let next = row.get::<_, i64>(0) as u64;
            let stamp = Stamp {
                seen: next - 1,
                next,
                now_ms: row.get(1),
            };
            let mut db = PgTx {
                tx: &mut tx,
                space: &txn.space,
                pg,
            };
            let applied = apply(&mut db, txn, stamp, keep_history)?;
            if matches!(applied.outcome, TxnOutcome::Failed(_)) || applied.changes.is_empty() {
                // Gives the index back: indexes stay gapless, which the listener relies on.
                tx.rollback().map_err(|e| pg.err(e))?;
                return Ok((applied.outcome, None));
            }
            let payload = listener::encode(next, &txn.space, &applied.changes);
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .map_err(|e| pg.err(e))?;
            tx.commit().map_err(|e| pg.err(e))?;
            Ok((applied.outcome, Some(next)))
        })?;
        if let Some(index) = written {
            self.feed.advance(index);
        }
        Ok(outcome)
    }

    fn get(&self, space: &Space, key: &str) -> Result<Option<Entry>, KvError> {
        self.options.space_options(space)?;
        validate_key(key)?;
        self.with(|client, pg| {
            client
                .query_opt(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM kv_entries WHERE space = $1 AND key = $2"
                    ),
                    &[&space.as_str(), &key],
                )
                .map_err(|e| pg.err(e))?
                .map(|row| entry_row(&row).decode(space))
                .transpose()
        })
    }

    fn list(
        &self,
        space: &Space,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, KvError> {
        self.options.space_options(space)?;
        validate_prefix(prefix)?;
        self.with(|client, pg| {
            list_entries(client, space, prefix, limit)
                .map_err(|e| pg.err(e))?
                .iter()
                .map(|row| entry_row(row).decode(space))
                .collect()
        })
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
            "SELECT key FROM kv_entries WHERE space = $1 AND {} ORDER BY key LIMIT $4",
            range_sql(&upper)
        );
        self.with(|client, pg| {
            Ok(client
                .query(&sql, &[&space.as_str(), &prefix, &upper, &opt_limit(limit)])
                .map_err(|e| pg.err(e))?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
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
        self.with(|client, pg| {
            // One snapshot for the count and the page, so they agree.
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(|e| pg.err(e))?;
            let total: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM kv_history WHERE space = $1 AND key = $2",
                    &[&space.as_str(), &key],
                )
                .map_err(|e| pg.err(e))?
                .get(0);
            let rows = tx
                .query(
                    &format!(
                        "SELECT {HISTORY_COLUMNS} FROM kv_history WHERE space = $1 AND key = $2
                         ORDER BY id DESC LIMIT $3 OFFSET $4"
                    ),
                    &[
                        &space.as_str(),
                        &key,
                        &(limit.min(i64::MAX as u64) as i64),
                        &(offset.min(i64::MAX as u64) as i64),
                    ],
                )
                .map_err(|e| pg.err(e))?;
            tx.commit().map_err(|e| pg.err(e))?;
            Ok(HistoryPage {
                total: total as u64,
                records: rows
                    .iter()
                    .map(|r| history_row(r).decode(space))
                    .collect::<Result<_, _>>()?,
            })
        })
    }

    fn history_record(&self, space: &Space, id: u64) -> Result<Option<HistoryRecord>, KvError> {
        self.options.space_options(space)?;
        self.with(|client, pg| {
            client
                .query_opt(
                    &format!(
                        "SELECT {HISTORY_COLUMNS} FROM kv_history WHERE space = $1 AND id = $2"
                    ),
                    &[&space.as_str(), &(id.min(i64::MAX as u64) as i64)],
                )
                .map_err(|e| pg.err(e))?
                .map(|r| history_row(&r).decode(space))
                .transpose()
        })
    }

    fn history_previous(
        &self,
        space: &Space,
        key: &str,
        id: u64,
    ) -> Result<Option<HistoryRecord>, KvError> {
        self.options.space_options(space)?;
        validate_key(key)?;
        self.with(|client, pg| {
            client
                .query_opt(
                    &format!(
                        "SELECT {HISTORY_COLUMNS} FROM kv_history WHERE space = $1 AND key = $2 AND id < $3
                         ORDER BY id DESC LIMIT 1"
                    ),
                    &[&space.as_str(), &key, &(id.min(i64::MAX as u64) as i64)],
                )
                .map_err(|e| pg.err(e))?
                .map(|r| history_row(&r).decode(space))
                .transpose()
        })
    }

    fn prune_history(&self, older_than_ms: i64) -> Result<u64, KvError> {
        self.with(|client, pg| {
            client
                .execute("DELETE FROM kv_history WHERE at_ms < $1", &[&older_than_ms])
                .map_err(|e| pg.err(e))
        })
    }

    fn feed(&self) -> &Feed {
        &self.feed
    }
}

#[cfg(test)]
mod tests;
