//! Against a real PostgreSQL server started for the test (`berth_testkit::postgres`).

use std::sync::atomic::{AtomicUsize, Ordering};

use berth_core::{AppSpec, VersionId};
use berth_testkit::postgres::TempPostgres;

use super::*;
use crate::testsuite;

#[test]
fn passes_the_conformance_suite() {
    let pg = TempPostgres::start();
    let n = AtomicUsize::new(0);
    testsuite::run_all(&|| {
        let url = pg.create_database(&format!("suite{}", n.fetch_add(1, Ordering::SeqCst)));
        Box::new(PostgresStore::open(&url).unwrap())
    });
}

#[test]
fn two_servers_on_one_database_see_each_others_changes_and_conflicts() {
    let pg = TempPostgres::start();
    let url = pg.create_database("shared");
    let a = PostgresStore::open(&url).unwrap();
    let b = PostgresStore::open(&url).unwrap();
    let v1 = AppVersion::first(AppSpec::minimal("shop/web", "x"), VersionId(1_000));
    a.create_app(&v1).unwrap();
    assert_eq!(b.get_app(&v1.spec.id).unwrap(), Some(v1.clone()));
    assert!(matches!(
        b.create_app(&v1),
        Err(StoreError::AlreadyExists(_))
    ));
    // Both change the app from version 1; the second to commit is told, not merged.
    let mut spec = v1.spec.clone();
    spec.instances = 3;
    let from_a = v1.next(spec.clone(), VersionId(2_000), crate::Change::Scaled);
    let from_b = v1.next(spec, VersionId(3_000), crate::Change::Scaled);
    a.update_app(&from_a, v1.version).unwrap();
    assert!(matches!(
        b.update_app(&from_b, v1.version),
        Err(StoreError::Conflict { current, .. }) if current == from_a.version
    ));
}

#[test]
fn a_database_restart_costs_only_the_calls_made_while_it_was_down() {
    let pg = TempPostgres::start();
    let url = pg.create_database("restarts");
    let store = PostgresStore::open(&url).unwrap();
    let v = AppVersion::first(AppSpec::minimal("a", "x"), VersionId(7_000));
    store.create_app(&v).unwrap();
    pg.stop();
    let err = store.list_apps().unwrap_err();
    assert!(
        err.to_string().contains("PostgreSQL") || err.to_string().contains("connection"),
        "{err}"
    );
    pg.restart();
    assert_eq!(store.list_apps().unwrap(), vec![v]);
}

#[test]
fn bad_urls_and_unreachable_servers_are_named() {
    let err = PostgresStore::open("postgres://berth@[bad").err().unwrap();
    assert!(err.to_string().contains("postgres://"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let nobody = format!(
        "host={} user=berth dbname=x connect_timeout=1",
        dir.path().display()
    );
    let err = PostgresStore::open(&nobody).err().unwrap();
    assert!(err.to_string().contains("cannot reach PostgreSQL"), "{err}");
}

#[test]
fn refuses_a_newer_schema_and_keeps_it() {
    let pg = TempPostgres::start();
    let url = pg.create_database("newer");
    drop(PostgresStore::open(&url).unwrap());
    let mut client = postgres::Client::connect(&url, NoTls).unwrap();
    client
        .execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (99, 0)",
            &[],
        )
        .unwrap();
    let err = PostgresStore::open(&url).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("99"), "{err}");
    let left: i64 = client
        .query_one("SELECT MAX(version) FROM schema_migrations", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 99);
}

#[test]
fn corrupt_rows_are_reported_not_dropped() {
    let pg = TempPostgres::start();
    let url = pg.create_database("corrupt");
    let store = PostgresStore::open(&url).unwrap();
    let v = AppVersion::first(AppSpec::minimal("a", "x"), VersionId(7_000));
    store.create_app(&v).unwrap();
    let mut client = postgres::Client::connect(&url, NoTls).unwrap();
    client
        .execute(
            "UPDATE app_versions SET spec = '{not json' WHERE app_id = 'a'",
            &[],
        )
        .unwrap();
    let err = store.get_app(&v.spec.id).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    let rows: i64 = client
        .query_one("SELECT COUNT(*) FROM app_versions", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}
