use berth_core::{AppId, AppSpec, VersionId};
use rusqlite::{Connection, params};

use super::*;
use crate::{AppVersion, Store, testsuite};

#[test]
fn passes_the_conformance_suite_in_memory() {
    testsuite::run_all(&|| Box::new(SqliteStore::in_memory().unwrap()));
}

#[test]
fn passes_the_conformance_suite_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    testsuite::run_all(&|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(SqliteStore::open(&dir.path().join(format!("s{i}.db"))).unwrap())
    });
}

#[test]
fn survives_reopen_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let v = AppVersion::first(AppSpec::minimal("a", "x"), VersionId(7_000));
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create_app(&v).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.list_apps().unwrap(), vec![v]);
    let mode: String = s
        .conn()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let migrations: i64 = s
        .conn()
        .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(migrations, MIGRATIONS.len() as i64, "applied once");
}

#[test]
fn refuses_a_file_that_is_not_a_database_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let junk = b"this is not sqlite at all, but somebody's notes".repeat(100);
    std::fs::write(&path, &junk).unwrap();
    let err = SqliteStore::open(&path).err().expect("must refuse");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("left untouched"));
    assert_eq!(std::fs::read(&path).unwrap(), junk);
}

#[test]
fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute("INSERT INTO schema_migrations VALUES (99, 0)", [])
        .unwrap();
    let err = SqliteStore::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn corrupt_row_is_reported_and_kept() {
    let s = SqliteStore::in_memory().unwrap();
    let v = AppVersion::first(AppSpec::minimal("a", "x"), VersionId(1_000));
    s.create_app(&v).unwrap();
    s.conn()
        .execute(
            "UPDATE app_versions SET spec = ?1 WHERE app_id = 'a'",
            params!["{\"id\": \"a\", \"bogus\": 1"],
        )
        .unwrap();
    let err = s.get_app(&AppId::parse("a").unwrap()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(s.list_apps().is_err());
    let still: i64 = s
        .conn()
        .query_row("SELECT COUNT(*) FROM app_versions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, 1);
}

fn a_deployment() -> berth_core::Deployment {
    use berth_core::deployment::{DeploymentKind, Target};
    let t = |v| Target {
        version: VersionId(v),
        config_version: VersionId(v),
        instances: 3,
    };
    berth_core::Deployment::new(
        AppId::parse("a").unwrap(),
        DeploymentKind::Update,
        Some(t(1_000)),
        t(2_000),
        true,
        60_000,
        5,
    )
}

#[test]
fn a_running_deployment_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let d = a_deployment();
    {
        let s = SqliteStore::open(&path).unwrap();
        s.put_deployment(&d).unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.get_deployment(&d.id).unwrap(), Some(d));
}

#[test]
fn a_store_from_before_deployments_is_migrated_and_keeps_its_apps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.db");
    let v = AppVersion::first(AppSpec::minimal("a", "x"), VersionId(7_000));
    {
        let s = SqliteStore::open(&path).unwrap();
        s.create_app(&v).unwrap();
    }
    // Make it look like a database written by a berth that knew only the first step.
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "DROP TABLE deployments; DROP TABLE leases; DELETE FROM schema_migrations WHERE version >= 2;",
        )
        .unwrap();
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.list_apps().unwrap(), vec![v]);
    assert!(s.list_deployments().unwrap().is_empty());
    s.put_deployment(&a_deployment()).unwrap();
}

#[test]
fn a_corrupt_deployment_is_reported_and_kept() {
    let s = SqliteStore::in_memory().unwrap();
    let d = a_deployment();
    s.put_deployment(&d).unwrap();
    s.conn()
        .execute("UPDATE deployments SET body = '{\"nope\": 1}'", [])
        .unwrap();
    let err = s.get_deployment(&d.id).unwrap_err();
    assert!(matches!(err, StoreError::CorruptDeployment { .. }), "{err}");
    assert!(err.to_string().contains(d.id.as_str()), "{err}");
    assert!(s.list_deployments().is_err());
    let still: i64 = s
        .conn()
        .query_row("SELECT COUNT(*) FROM deployments", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, 1);
}
