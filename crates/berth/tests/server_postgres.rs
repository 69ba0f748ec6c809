//! Black-box: `berth server` keeping desired state in a real PostgreSQL server. Apps
//! outlive the server and are seen by another server with its own data folder; a database
//! outage makes reads and writes fail with a clear 503 while the server stays up, and it
//! recovers by itself once the database is back.

mod common;

use std::time::Duration;

use berth_testkit::postgres::TempPostgres;
use berth_testkit::{temp_dir, wait_until};
use common::{BIN, cli, postgres_server};
use tokio::process::Command;

#[tokio::test]
async fn apps_live_in_postgres_and_an_outage_is_a_clear_503() {
    let pg = TempPostgres::start();
    let dir = temp_dir();
    let url_file = dir.path().join("postgres-url");
    std::fs::write(&url_file, format!("{}\n", pg.create_database("berth"))).unwrap();
    let spec = dir.path().join("app.toml");
    std::fs::write(
        &spec,
        "id = \"pg/app\"\ncmd = \"sleep 300\"\ninstances = 2\n",
    )
    .unwrap();

    let first = postgres_server(&dir.path().join("s1"), &url_file, &[]).await;
    let out = cli(
        first.addr("http"),
        &["apps", "deploy", "--detach", spec.to_str().unwrap()],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    assert!(first.terminate().await.success());

    // Another server, another data folder, same database: the app is there.
    let second = postgres_server(&dir.path().join("s2"), &url_file, &[]).await;
    let out = cli(
        second.addr("http"),
        &["-o", "json", "apps", "show", "pg/app"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    let shown = &out.stdout;
    assert!(shown.contains("\"instances\": 2"), "{shown}");

    // The database goes away: a clear 503, the server keeps serving what it can.
    pg.stop();
    let url = format!("http://{}/v1/apps", second.addr("http"));
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "store_unavailable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("PostgreSQL"),
        "{body}"
    );
    let health = reqwest::get(format!("http://{}/health", second.addr("http")))
        .await
        .unwrap();
    assert!(health.status().is_success());

    // Unable to renew its lease, the server stops leading before the lease could have
    // passed to another server: it refuses to act rather than risk two leaders.
    let leader_url = format!("http://{}/v1/leader", second.addr("http"));
    wait_until("leadership given up", Duration::from_secs(20), || async {
        let view: serde_json::Value = reqwest::get(&leader_url)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        view["role"] == "unknown"
    })
    .await;
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "no_leader", "{body}");

    // It comes back; so does the server, without a restart.
    pg.restart();
    wait_until("apps readable again", Duration::from_secs(20), || async {
        reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    // A change goes through (with force: with no agent here, the deployment of the first
    // version never finishes, and a change would otherwise wait its turn).
    let scaled = reqwest::Client::new()
        .post(format!(
            "http://{}/v1/apps/pg/app/scale?force=true",
            second.addr("http")
        ))
        .json(&serde_json::json!({"instances": 3}))
        .send()
        .await
        .unwrap();
    assert!(
        scaled.status().is_success(),
        "{}",
        scaled.text().await.unwrap()
    );
}

#[tokio::test]
async fn an_unusable_postgres_url_stops_the_server_with_the_reason() {
    let dir = temp_dir();
    let url_file = dir.path().join("postgres-url");
    let nowhere = temp_dir();
    std::fs::write(
        &url_file,
        format!(
            "host={} user=berth dbname=berth connect_timeout=1",
            nowhere.path().display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("s"))
        .arg("--postgres-url-file")
        .arg(&url_file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("postgres_url"), "{stderr}");
    assert!(stderr.contains("cannot reach PostgreSQL"), "{stderr}");

    std::fs::write(&url_file, "postgres://berth@[broken").unwrap();
    let out = Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("s"))
        .arg("--postgres-url-file")
        .arg(&url_file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a PostgreSQL URL"), "{stderr}");
}
