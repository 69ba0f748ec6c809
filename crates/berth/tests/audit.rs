//! The audit trail with the real binary: a deploy and a refusal land in it with who,
//! from where, what, on which target and how it ended; `berth audit` shows them; only
//! management reads it; and when the audit entry cannot be written, the action is refused
//! (503) and not done.

mod common;

use std::path::Path;

use common::{acl_bootstrap, acl_server, acl_token, api_call, cli, loopback_server, token_file};
use reqwest::Method;
use serde_json::{Value, json};

fn spec(id: &str) -> Value {
    json!({"id": id, "cmd": "sleep 1000", "instances": 0, "cpus": 0.1, "mem": 16})
}

/// The accessor id of the token with secret `secret`.
async fn accessor(api: std::net::SocketAddr, secret: &str) -> String {
    let (status, me) = api_call(api, Method::GET, "/v1/acl/token/self", Some(secret), None).await;
    assert_eq!(status, 200, "{me}");
    me["accessor_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn deploys_and_refusals_are_audited_and_berth_audit_shows_them() {
    let data = tempfile::tempdir().unwrap();
    let server = acl_server(&data.path().join("server"), &[]).await;
    let api = server.addr("http");
    let root = acl_bootstrap(api).await;
    let root_accessor = accessor(api, &root).await;
    let (status, body) = api_call(
        api,
        Method::PUT,
        "/v1/acl/policy/ro",
        Some(&root),
        Some(json!({"rules": [{"apps": "demo/*", "capabilities": ["read"]}]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reader = acl_token(api, &root, "reader", &["ro"], None).await;
    let reader_accessor = accessor(api, &reader).await;

    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&root),
        Some(spec("demo/a")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = api_call(api, Method::DELETE, "/v1/apps/demo/a", Some(&reader), None).await;
    assert_eq!(status, 403);
    let (status, body) = api_call(api, Method::GET, "/v1/audit", Some(&reader), None).await;
    assert_eq!(status, 403, "only management reads the trail: {body}");

    let root_file = token_file(data.path(), "root.token", &root);
    let out = cli(api, &["--token-file", &root_file, "audit"]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    let line = |action: &str| {
        out.stdout
            .lines()
            .find(|l| l.contains(&format!(" {action} ")))
            .unwrap_or_else(|| panic!("no {action} in:\n{}", out.stdout))
            .to_string()
    };
    let create = line("app.create");
    for part in [
        format!("bootstrap ({root_accessor})"),
        "127.0.0.1:".into(),
        "app:demo/a".into(),
        "allowed 201".into(),
    ] {
        assert!(create.contains(&part), "{part:?} not in {create:?}");
    }
    let delete = line("app.delete");
    for part in [
        format!("reader ({reader_accessor})"),
        "app:demo/a".into(),
        "denied 403".into(),
    ] {
        assert!(delete.contains(&part), "{part:?} not in {delete:?}");
    }
    assert!(!out.stdout.contains(&root) && !out.stdout.contains(&reader));

    let out = cli(
        api,
        &[
            "--token-file",
            &root_file,
            "audit",
            "--app",
            "demo/",
            "--accessor",
            &reader_accessor,
            "--since",
            "1h",
            "--json",
        ],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{v}");
    assert_eq!(entries[0]["action"], "app.delete");
    assert_eq!(entries[0]["decision"], "denied");
    assert_eq!(entries[0]["token_name"], "reader");

    let reader_file = token_file(data.path(), "reader.token", &reader);
    let out = cli(api, &["--token-file", &reader_file, "audit"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("management"), "{}", out.stderr);
}

/// Runs `sql` on the server's SQLite store beside the running server (as an operator's
/// broken disk or a full database would, the store then refuses audit writes).
fn store_sql(data: &Path, sql: &str) {
    let conn = rusqlite::Connection::open(data.join("server.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute_batch(sql).unwrap();
}

#[tokio::test]
async fn an_audit_entry_that_cannot_be_written_refuses_the_action() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("server");
    let server = acl_server(&dir, &[]).await;
    let api = server.addr("http");
    let root = acl_bootstrap(api).await;

    store_sql(
        &dir,
        "CREATE TRIGGER audit_full BEFORE INSERT ON audit_log
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&root),
        Some(spec("demo/a")),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "audit_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("audit trail"),
        "{body}"
    );
    let (status, apps) = api_call(api, Method::GET, "/v1/apps", Some(&root), None).await;
    assert_eq!(status, 200);
    assert_eq!(apps["apps"], json!([]), "the app was not created");
    // A refusal stays a refusal when it cannot be recorded.
    let (status, _) = api_call(api, Method::POST, "/v1/apps", None, Some(spec("demo/b"))).await;
    assert_eq!(status, 401);

    // The entry written but its outcome not: the action has happened and is answered,
    // its entry stays without a status.
    store_sql(
        &dir,
        "DROP TRIGGER audit_full;
         CREATE TRIGGER audit_stuck BEFORE UPDATE ON audit_log
         BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
    );
    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&root),
        Some(spec("demo/a")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, trail) = api_call(
        api,
        Method::GET,
        "/v1/audit?action=app.create",
        Some(&root),
        None,
    )
    .await;
    let entries = trail["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{trail}");
    assert_eq!(entries[0]["decision"], "allowed");
    assert_eq!(entries[0]["status"], Value::Null, "{trail}");
}

#[tokio::test]
async fn without_acls_entries_name_the_anonymous_caller() {
    let data = tempfile::tempdir().unwrap();
    let server = loopback_server(&data.path().join("server"), &["--registry-http", "off"]).await;
    let api = server.addr("http");
    let (status, body) = api_call(api, Method::POST, "/v1/apps", None, Some(spec("demo/a"))).await;
    assert_eq!(status, 201, "{body}");
    let (status, trail) = api_call(api, Method::GET, "/v1/audit", None, None).await;
    assert_eq!(status, 200, "{trail}");
    let entry = &trail["entries"][0];
    assert_eq!(entry["action"], "app.create");
    assert_eq!(entry["accessor_id"], "anonymous");
    assert_eq!(entry["target"], "app:demo/a");
    assert_eq!(entry["status"], 201);
}

/// `sql` on PostgreSQL at `url`, as its administrator. On a thread of its own: the
/// blocking client starts a runtime, which it may not do inside the test's.
fn pg_sql(url: &str, sql: &str) -> Option<i64> {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        if sql.starts_with("SELECT") {
            Some(client.query_one(&sql, &[]).unwrap().get(0))
        } else {
            client.batch_execute(&sql).unwrap();
            None
        }
    })
    .join()
    .unwrap()
}

/// With PostgreSQL, the database refusing the server's role INSERT on the audit table (an
/// operator's mistake, or a trail made append-only elsewhere) refuses every audited
/// action with 503, and none is done.
#[tokio::test]
async fn postgres_refusing_the_audit_insert_refuses_the_action() {
    use berth_testkit::postgres::TempPostgres;
    let pg = TempPostgres::start();
    let admin = pg.create_database("audited");
    // The server connects as an ordinary role (a superuser would bypass the REVOKE).
    pg_sql(
        &admin,
        "CREATE ROLE berth_server LOGIN;
         ALTER DATABASE audited OWNER TO berth_server;
         GRANT ALL ON SCHEMA public TO berth_server;",
    );
    let dir = berth_testkit::temp_dir();
    let url_file = dir.path().join("postgres-url");
    std::fs::write(
        &url_file,
        format!("{}\n", admin.replace("user=berth", "user=berth_server")),
    )
    .unwrap();
    let server = common::postgres_server(
        &dir.path().join("server"),
        &url_file,
        &["--acl", "--registry-http", "off"],
    )
    .await;
    let api = server.addr("http");
    let root = acl_bootstrap(api).await;

    pg_sql(&admin, "REVOKE INSERT ON audit_log FROM berth_server");
    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&root),
        Some(spec("pg/a")),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "audit_unavailable", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "the store's reason is named: {body}"
    );
    let apps = pg_sql(&admin, "SELECT COUNT(*) FROM apps");
    assert_eq!(apps, Some(0), "the app was not created");

    pg_sql(&admin, "GRANT INSERT ON audit_log TO berth_server");
    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&root),
        Some(spec("pg/a")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let rows = pg_sql(
        &admin,
        "SELECT COUNT(*) FROM audit_log WHERE action = 'app.create' AND status = 201",
    );
    assert_eq!(rows, Some(1));
}
