//! The registry's durable key/value core: what the Nacos config center and Consul KV
//! store, without knowing either.
//!
//! Owns: the [`KvStore`] trait and its types, two engines ([`SqliteKv`], one file in the
//! registry's data folder; [`PostgresKv`], shared by the processes of a registry
//! cluster), the async [`KvHandle`], and a conformance suite (`testsuite`, compiled for
//! this crate's tests only) every engine passes. Must never depend on roles' crates.
//!
//! # Model
//!
//! A [`Space`] ("config", "kv") partitions keys. A key (UTF-8, at most 1024 bytes, no NUL)
//! holds an [`Entry`]: a value of bytes (at most [`KvOptions::max_value_bytes`], 512 KiB
//! by default), attrs (string metadata owned by the layer above), its create and modify
//! index and when it was last written. Every write goes through a [`Txn`]: ops on one
//! space (put, delete, delete-prefix, get, get-prefix, check), each with an optional
//! [`Cond`] (absent, modify index, value md5), applied all or nothing. A failed condition
//! is an outcome, not an error: [`TxnOutcome::Failed`] names the op and the entry it saw.
//!
//! # The index
//!
//! One counter per store, shared by all spaces, goes up by one with every transaction
//! that writes something; every entry written takes it as its modify index (and create
//! index when new). Indexes are assigned in commit order: in SQLite because writes are
//! serialised; in PostgreSQL because every writing transaction first bumps the counter
//! row with `UPDATE ... RETURNING`, which holds that row's lock until it commits, so the
//! next writer gets the next index only after this one is visible. So a reader that has
//! seen index N, and waits for "index > N", can never miss a change with index <= N that
//! commits later. The [`Feed`] carries the index (a watch, for blocking readers) and
//! what changed (a broadcast, for subscribers); its module says how a lagging
//! subscriber resyncs.
//!
//! # Durability
//!
//! A transaction is acknowledged only once committed: in SQLite in WAL mode with
//! `synchronous=FULL` (the WAL is fsynced at every commit; `NORMAL` would lose the last
//! commits on power loss, and a publish the user was told succeeded must not vanish);
//! in PostgreSQL once the server acknowledged the commit (its `synchronous_commit`
//! setting decides how far that goes; the default, `on`, means flushed to its WAL).
//!
//! # How the APIs map onto it
//!
//! | Concept | Nacos config center | Consul KV |
//! |---|---|---|
//! | space | `config`, with history | `kv`, without |
//! | key | `tenant` + `group` + `dataId`, joined by the layer | the key path |
//! | value | the content | the value |
//! | attrs | `type`, `appName`, `config_tags`, `desc` | `Flags`, `Session`, `LockIndex` |
//! | md5 | the config's md5, `casMd5` as [`Cond::ValueMd5`] | - |
//! | indexes | - | `CreateIndex`, `ModifyIndex`, `?cas=` as [`Cond::ModifyIndex`] |
//! | txn | publish/remove (one op) | `PUT /v1/txn` (check-index, check-not-exists, delete-tree as `DeletePrefix`, get-tree as `GetPrefix`; lock/unlock as a read then a put with [`Cond::ModifyIndex`]) |
//! | history | `/v1/cs/history` (list, detail, previous), rollback as a put of an old value | - |
//! | feed | long-polling listeners wait on the broadcast for their keys | `?index=N` blocking reads wait on the watch; `X-Consul-Index` from [`Committed::index`] or the index taken before a read |
//! | keys | - | `?keys&separator=/` as [`KvStore::keys`] |

mod apply;
mod entry;
mod error;
mod feed;
mod handle;
mod history;
mod postgres;
mod rows;
mod sqlite;
#[cfg(test)]
mod testsuite;
mod txn;

pub use entry::{
    Attrs, DEFAULT_MAX_VALUE_BYTES, Entry, KvOptions, MAX_KEY_BYTES, Space, SpaceOptions, md5_hex,
};
pub use error::KvError;
pub use feed::{Change, Feed};
pub use handle::KvHandle;
pub use history::{HistoryOp, HistoryPage, HistoryRecord};
pub use postgres::PostgresKv;
pub use sqlite::SqliteKv;
pub use txn::{Actor, Committed, Cond, CondFailed, Op, OpResult, Txn, TxnOutcome};

use tokio::sync::{broadcast, watch};

/// The store. Calls are blocking and short; async callers use [`KvHandle`] (or run them
/// on a blocking thread themselves). Listings are in key order, bytewise.
pub trait KvStore: Send + Sync + 'static {
    /// Runs a transaction. `Err` only for a request that is wrong in itself (bad key,
    /// value too large, unknown space) or an engine failure; a condition that does not
    /// hold is [`TxnOutcome::Failed`].
    fn txn(&self, txn: &Txn) -> Result<TxnOutcome, KvError>;

    fn get(&self, space: &Space, key: &str) -> Result<Option<Entry>, KvError>;

    /// Entries whose key starts with `prefix` (`""`: all), at most `limit` of them.
    fn list(
        &self,
        space: &Space,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Entry>, KvError>;

    /// The keys [`KvStore::list`] would return, without reading values.
    fn list_keys(
        &self,
        space: &Space,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<Vec<String>, KvError>;

    /// A key's history, newest first: `limit` records after skipping `offset`, and how
    /// many there are in all. Empty in spaces that keep none.
    fn history(
        &self,
        space: &Space,
        key: &str,
        offset: u64,
        limit: u64,
    ) -> Result<HistoryPage, KvError>;

    fn history_record(&self, space: &Space, id: u64) -> Result<Option<HistoryRecord>, KvError>;

    /// The record of `key` just before record `id` (Nacos's "previous"), whether or not
    /// `id` itself still exists.
    fn history_previous(
        &self,
        space: &Space,
        key: &str,
        id: u64,
    ) -> Result<Option<HistoryRecord>, KvError>;

    /// Deletes history records older than `older_than_ms` (Unix ms) in every space;
    /// returns how many went. Entries are never touched.
    fn prune_history(&self, older_than_ms: i64) -> Result<u64, KvError>;

    fn feed(&self) -> &Feed;

    /// Keys under `prefix`, folded at `separator` like Consul's `?keys&separator=`.
    fn keys(
        &self,
        space: &Space,
        prefix: &str,
        separator: Option<&str>,
    ) -> Result<Vec<String>, KvError> {
        let keys = self.list_keys(space, prefix, None)?;
        Ok(apply::fold_keys(keys, prefix, separator))
    }

    /// Puts unconditionally; returns the entry as written.
    fn put(
        &self,
        space: &Space,
        key: &str,
        value: Vec<u8>,
        attrs: Attrs,
    ) -> Result<Entry, KvError> {
        let txn = Txn::new(space.clone()).op(Op::Put {
            key: key.to_string(),
            value,
            attrs,
            cond: Cond::Any,
        });
        match self.txn(&txn)?.committed()?.results.pop() {
            Some(OpResult::Put(entry)) => Ok(entry),
            other => unreachable!("a put returns its entry, not {other:?}"),
        }
    }

    /// Deletes unconditionally; returns the entry that was there.
    fn delete(&self, space: &Space, key: &str) -> Result<Option<Entry>, KvError> {
        let txn = Txn::new(space.clone()).op(Op::delete(key));
        match self.txn(&txn)?.committed()?.results.pop() {
            Some(OpResult::Deleted(entry)) => Ok(entry),
            other => unreachable!("a delete returns what it removed, not {other:?}"),
        }
    }

    /// The newest index this process knows of; see [`Feed::current_index`].
    fn current_index(&self) -> u64 {
        self.feed().current_index()
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.feed().subscribe()
    }

    fn watch_index(&self) -> watch::Receiver<u64> {
        self.feed().watch_index()
    }
}
