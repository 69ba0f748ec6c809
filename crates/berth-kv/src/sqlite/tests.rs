use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::*;
use crate::testsuite::{self, kv, options};
use crate::{Attrs, KvHandle, Op};

fn on_disk(dir: &tempfile::TempDir, name: &str) -> SqliteKv {
    SqliteKv::open(&dir.path().join(name), options()).unwrap()
}

#[test]
fn passes_the_conformance_suite_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    testsuite::run_all(&|opts| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(SqliteKv::open(&dir.path().join(format!("s{i}.sqlite3")), opts).unwrap())
    });
}

#[test]
fn passes_the_conformance_suite_in_memory() {
    testsuite::run_all(&|opts| Box::new(SqliteKv::in_memory(opts).unwrap()));
}

#[test]
fn concurrent_cas_increments_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KvStore> = Arc::new(on_disk(&dir, "kv.sqlite3"));
    testsuite::concurrent_cas_increments(vec![store], 8, 25);
}

#[test]
fn survives_reopen_with_wal_and_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let written = {
        let s = on_disk(&dir, "kv.sqlite3");
        s.put(&kv(), "a", b"1".to_vec(), Attrs::new()).unwrap();
        s.put(&kv(), "b", b"2".to_vec(), Attrs::new()).unwrap()
    };
    let s = on_disk(&dir, "kv.sqlite3");
    assert_eq!(s.get(&kv(), "b").unwrap(), Some(written.clone()));
    assert_eq!(
        s.current_index(),
        written.modify_index,
        "the feed starts at the stored index"
    );
    let next = s.put(&kv(), "c", b"3".to_vec(), Attrs::new()).unwrap();
    assert_eq!(next.modify_index, written.modify_index + 1);
    let conn = s.conn();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let sync: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "FULL");
    let steps: i64 = conn
        .query_row("SELECT COUNT(*) FROM kv_schema_migrations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(steps, MIGRATIONS.len() as i64, "applied once");
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    drop(SqliteKv::open(&path, options()).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute("INSERT INTO kv_schema_migrations VALUES (99, 0)", [])
        .unwrap();
    let err = SqliteKv::open(&path, options()).err().unwrap();
    assert!(matches!(err, KvError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer berth"), "{err}");
}

#[test]
fn refuses_a_file_that_is_not_a_database_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let junk = b"not a database, somebody's notes".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let err = SqliteKv::open(&path, options()).err().expect("must refuse");
    assert!(matches!(err, KvError::OpenSqlite { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the driver's error"
    );
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn a_corrupt_row_is_reported_and_kept() {
    let s = SqliteKv::in_memory(options()).unwrap();
    s.put(&kv(), "a", b"1".to_vec(), Attrs::new()).unwrap();
    s.conn()
        .execute("UPDATE kv_entries SET attrs = '[1'", [])
        .unwrap();
    let err = s.get(&kv(), "a").unwrap_err();
    assert!(matches!(err, KvError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("kv/a"), "{err}");
    let rows: i64 = s
        .conn()
        .query_row("SELECT COUNT(*) FROM kv_entries", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn the_handle_runs_calls_off_the_runtime_and_waits_past_an_index() {
    let store: Arc<dyn KvStore> = Arc::new(SqliteKv::in_memory(options()).unwrap());
    let handle = KvHandle::new(store);
    let start = handle.current_index();
    // Nothing happens: the wait ends at its timeout with the index unchanged.
    assert_eq!(
        handle.wait_past(start, Duration::from_millis(50)).await,
        start
    );
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move { handle.wait_past(start, Duration::from_secs(30)).await })
    };
    let outcome = handle
        .txn(Txn::new(kv()).op(Op::put("a/b", "1")))
        .await
        .unwrap()
        .committed()
        .unwrap();
    assert_eq!(waiter.await.unwrap(), outcome.index, "woken by the write");
    assert_eq!(handle.get(&kv(), "a/b").await.unwrap().unwrap().value, b"1");
    assert_eq!(handle.list(&kv(), "a", None).await.unwrap().len(), 1);
    assert_eq!(handle.keys(&kv(), "", Some("/")).await.unwrap(), ["a/"]);
    let page = handle
        .run(|s| s.history(&testsuite::config(), "x", 0, 10))
        .await
        .unwrap();
    assert_eq!(page.total, 0);
}
