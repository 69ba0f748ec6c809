//! Against a real PostgreSQL server started for the test (`berth_testkit::postgres`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_testkit::postgres::TempPostgres;
use berth_testkit::wait_until;
use tokio::sync::broadcast;

use super::*;
use crate::testsuite::{self, kv, options};
use crate::{Attrs, Change};

fn open(url: &str) -> PostgresKv {
    PostgresKv::open(url, options()).unwrap()
}

/// Runs `f` on a runtime of its own: the waits are async, while the store's calls must
/// stay outside any runtime (the sync driver runs one of its own).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

/// Takes every change already delivered into `seen`.
fn drain(feed: &mut broadcast::Receiver<Change>, seen: &mut Vec<Change>) {
    while let Ok(change) = feed.try_recv() {
        seen.push(change);
    }
}

#[test]
fn passes_the_conformance_suite() {
    let pg = TempPostgres::start();
    let n = AtomicUsize::new(0);
    testsuite::run_all(&|opts| {
        let url = pg.create_database(&format!("suite{}", n.fetch_add(1, Ordering::SeqCst)));
        Box::new(PostgresKv::open(&url, opts).unwrap())
    });
}

/// Three processes' stores on one database, two threads each: increments by CAS all
/// survive, and a fourth store's subscriber sees every index once, in order, with no
/// gap: the counter row hands indexes out in commit order, and notifications follow it.
#[test]
fn concurrent_cas_across_stores_loses_nothing_and_notifies_in_index_order() {
    let pg = TempPostgres::start();
    let url = pg.create_database("cas");
    let watcher = open(&url);
    let mut feed = watcher.subscribe();
    let stores: Vec<Arc<dyn KvStore>> = (0..3)
        .map(|_| Arc::new(open(&url)) as Arc<dyn KvStore>)
        .collect();
    testsuite::concurrent_cas_increments(stores, 6, 15);
    let total = 6 * 15;
    let mut seen = Vec::new();
    block_on(wait_until(
        "the watcher's feed to reach the last increment",
        Duration::from_secs(5),
        || {
            drain(&mut feed, &mut seen);
            let done = seen.last().map(Change::index) == Some(total);
            async move { done }
        },
    ));
    let indexes: Vec<u64> = seen.iter().map(Change::index).collect();
    assert_eq!(indexes, (1..=total).collect::<Vec<_>>());
    assert!(
        seen.iter()
            .all(|c| matches!(c, Change::Written { keys, .. } if keys == &["counter"])),
        "{seen:?}"
    );
    assert_eq!(watcher.current_index(), total);
}

#[test]
fn a_write_in_one_process_reaches_the_others_subscribers_within_a_second() {
    let pg = TempPostgres::start();
    let url = pg.create_database("shared");
    let a = open(&url);
    let b = open(&url);
    let mut feed = b.subscribe();
    let watch = b.watch_index();
    let written = a.put(&kv(), "x/y", b"1".to_vec(), Attrs::new()).unwrap();
    let mut seen = Vec::new();
    block_on(wait_until(
        "b's subscriber to hear of a's write",
        Duration::from_secs(1),
        || {
            drain(&mut feed, &mut seen);
            let heard = !seen.is_empty() && *watch.borrow() == written.modify_index;
            async move { heard }
        },
    ));
    assert_eq!(
        seen,
        vec![Change::Written {
            index: written.modify_index,
            space: kv(),
            keys: vec!["x/y".into()],
            prefixes: vec![],
        }]
    );
    assert_eq!(b.get(&kv(), "x/y").unwrap(), Some(written.clone()));
    // And back: b's write reaches a.
    let mut a_feed = a.subscribe();
    let second = b.put(&kv(), "z", b"2".to_vec(), Attrs::new()).unwrap();
    let mut heard = Vec::new();
    block_on(wait_until(
        "a's subscriber to hear of b's write",
        Duration::from_secs(1),
        || {
            drain(&mut a_feed, &mut heard);
            let done = heard.iter().any(|c| c.index() == second.modify_index);
            async move { done }
        },
    ));
}

/// What a subscriber of `b` sees after `b`'s listener lost its connection while `a`
/// wrote: a resync, a watch that caught up, then ordinary changes again.
fn resyncs_after_the_listener_comes_back(
    a: &PostgresKv,
    b: &PostgresKv,
    feed: &mut broadcast::Receiver<Change>,
    missed_index: u64,
) {
    let watch = b.watch_index();
    let mut seen = Vec::new();
    block_on(wait_until(
        "b's listener to reconnect and resync",
        Duration::from_secs(15),
        || {
            drain(feed, &mut seen);
            let resynced = seen.iter().any(|c| matches!(c, Change::Resync { .. }))
                && *watch.borrow() >= missed_index;
            async move { resynced }
        },
    ));
    assert!(
        seen.iter().any(|c| c.affects(&kv(), "anything")),
        "a resync affects every key: {seen:?}"
    );
    let later = a.put(&kv(), "later", b"1".to_vec(), Attrs::new()).unwrap();
    block_on(wait_until(
        "b's subscriber to hear of a write after the reconnect",
        Duration::from_secs(2),
        || {
            drain(feed, &mut seen);
            let heard = seen.iter().any(|c| {
                matches!(c, Change::Written { index, keys, .. }
                    if *index == later.modify_index && keys == &["later"])
            });
            async move { heard }
        },
    ));
}

#[test]
fn a_listener_whose_connection_is_killed_reconnects_and_resyncs() {
    let pg = TempPostgres::start();
    let url = pg.create_database("killed");
    let a = open(&url);
    let b = open(&url);
    let mut feed = b.subscribe();
    let mut admin = postgres::Client::connect(&url, NoTls).unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'berth-kv-listen') t",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(killed, 2, "a listener per store");
    // Likely made while b's listener is down: its notification is lost to b.
    let missed = a.put(&kv(), "missed", b"1".to_vec(), Attrs::new()).unwrap();
    resyncs_after_the_listener_comes_back(&a, &b, &mut feed, missed.modify_index);
}

#[test]
fn a_database_restart_costs_only_the_calls_made_while_it_was_down() {
    let pg = TempPostgres::start();
    let url = pg.create_database("restarts");
    let a = open(&url);
    let b = open(&url);
    let mut feed = b.subscribe();
    let before = a.put(&kv(), "k", b"1".to_vec(), Attrs::new()).unwrap();
    pg.stop();
    let err = a.get(&kv(), "k").unwrap_err();
    assert!(matches!(err, KvError::Postgres { .. }), "{err}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "keeps the driver's error"
    );
    pg.restart();
    assert_eq!(a.get(&kv(), "k").unwrap(), Some(before));
    let after = a.put(&kv(), "k", b"2".to_vec(), Attrs::new()).unwrap();
    resyncs_after_the_listener_comes_back(&a, &b, &mut feed, after.modify_index);
}

#[test]
fn bad_urls_and_unreachable_servers_are_named() {
    let err = PostgresKv::open("postgres://berth@[bad", options())
        .err()
        .unwrap();
    assert!(err.to_string().contains("postgres://"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!(
        "host={} user=berth dbname=x connect_timeout=1",
        dir.path().display()
    );
    let err = PostgresKv::open(&nobody, options()).err().unwrap();
    assert!(matches!(err, KvError::OpenPostgres { .. }), "{err}");
    assert!(err.to_string().contains("PostgreSQL runs"), "{err}");
}

#[test]
fn refuses_a_newer_schema_and_keeps_it() {
    let pg = TempPostgres::start();
    let url = pg.create_database("newer");
    drop(open(&url));
    let mut client = postgres::Client::connect(&url, NoTls).unwrap();
    client
        .execute(
            "INSERT INTO kv_schema_migrations (version, applied_at_ms) VALUES (99, 0)",
            &[],
        )
        .unwrap();
    let err = PostgresKv::open(&url, options()).err().unwrap();
    assert!(matches!(err, KvError::TooNew { found: 99, .. }), "{err}");
    let left: i64 = client
        .query_one("SELECT MAX(version) FROM kv_schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 99);
}

#[test]
fn shares_a_database_with_other_tables_named_schema_migrations() {
    // The server's store keeps its own `schema_migrations` in the same database when an
    // operator points both at one; the key/value store must neither read nor touch it.
    let pg = TempPostgres::start();
    let url = pg.create_database("both");
    let mut client = postgres::Client::connect(&url, NoTls).unwrap();
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT);
             INSERT INTO schema_migrations VALUES (5, 0);",
        )
        .unwrap();
    let s = open(&url);
    s.put(&kv(), "a", b"1".to_vec(), Attrs::new()).unwrap();
    let max: i64 = client
        .query_one("SELECT MAX(version) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(max, 5);
}
