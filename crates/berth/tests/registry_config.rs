//! Black-box tests of the registry's config center: the real binary on loopback, driven
//! by nacos-sdk-python 1.0.0 (`tests/registry_clients/nacos1_config.py`) and by
//! `berth config`.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use berth_testkit::postgres::TempPostgres;
use berth_testkit::{BerthProcess, python, temp_dir};
use common::registry_cluster::{Cluster, ClusterOptions};
use common::{BIN, run_client_script};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SECRET: &str = "0123456789abcdef0123456789abcdef-secret";

async fn start_registry(data_dir: &Path, extra: &[&str]) -> BerthProcess {
    let dir = data_dir.to_str().expect("utf-8 temp path");
    let mut args = vec![
        "registry",
        "--listen",
        "127.0.0.1:0",
        "--grpc-listen",
        "127.0.0.1:0",
        "--data-dir",
        dir,
    ];
    args.extend_from_slice(extra);
    BerthProcess::start(BIN, &args).await
}

/// `berth config --registry-http ADDR ARGS...` with `stdin` as its input.
async fn cli(
    registry: &BerthProcess,
    args: &[&str],
    stdin: Option<&str>,
    token: Option<&str>,
) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .arg("config")
        .args(["--registry-http", &registry.addr("http").to_string()])
        .args(args)
        .env_remove("BERTH_REGISTRY_HTTP")
        .env_remove("BERTH_REGISTRY_TOKEN")
        .env("USER", "tester")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("BERTH_REGISTRY_TOKEN", token);
    }
    let mut child = command.spawn().expect("run berth config");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("berth config finishes")
        .expect("berth config output")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth config failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "berth config should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn nacos_sdk1_publishes_watches_and_reads_history_and_the_v2_api() {
    let dir = temp_dir();
    let registry = start_registry(dir.path(), &["--config-max-content", "4096"]).await;
    let addr = registry.addr("http").to_string();
    run_client_script(
        &python(),
        "nacos1_config.py",
        &[addr],
        Duration::from_secs(60),
        Some(&registry),
    )
    .await;
    registry.terminate().await;
}

/// Reads `lines` until one satisfies `want`, for at most 10 s.
async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    what: &str,
    want: impl Fn(&str) -> bool,
) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = lines.next_line().await.expect("read line") {
            if want(&line) {
                return;
            }
        }
        panic!("the stream ended before {what}");
    })
    .await;
    assert!(found.is_ok(), "timed out waiting for {what}");
}

#[tokio::test]
async fn config_cli_puts_gets_watches_rolls_back_and_removes() {
    let dir = temp_dir();
    let registry = start_registry(&dir.path().join("data"), &[]).await;
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, "port: 8080\n").unwrap();
    let file = file.to_str().unwrap();

    let out = cli(&registry, &["put", "app.yaml", file], None, None).await;
    assert!(ok(&out).contains("published app.yaml"));
    assert_eq!(
        ok(&cli(&registry, &["get", "app.yaml"], None, None).await),
        "port: 8080\n"
    );
    // From stdin, with a compare-and-set that no longer holds: refused, naming the md5.
    let err = failed(
        &cli(
            &registry,
            &["put", "app.yaml", "--cas-md5", "0123", "-"],
            Some("port: 1\n"),
            None,
        )
        .await,
    );
    assert!(err.contains("does not match the current md5"), "{err}");
    ok(&cli(
        &registry,
        &["put", "app.yaml", "--group", "WEB"],
        Some("port: 9090\n"),
        None,
    )
    .await);
    assert_eq!(
        ok(&cli(
            &registry,
            &["get", "app.yaml", "--group", "WEB"],
            None,
            None
        )
        .await),
        "port: 9090\n"
    );

    // watch: every change printed, a deletion as a line of its own.
    let mut watch = tokio::process::Command::new(BIN)
        .args([
            "config",
            "--registry-http",
            &registry.addr("http").to_string(),
            "watch",
            "app.yaml",
        ])
        .env_remove("BERTH_REGISTRY_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run berth config watch");
    let mut stderr = BufReader::new(watch.stderr.take().unwrap()).lines();
    let mut stdout = BufReader::new(watch.stdout.take().unwrap()).lines();
    read_until(&mut stderr, "the watch to start", |l| {
        l.contains("watching app.yaml")
    })
    .await;
    ok(&cli(&registry, &["put", "app.yaml"], Some("port: 8081\n"), None).await);
    read_until(&mut stdout, "the new content", |l| l == "port: 8081").await;
    ok(&cli(&registry, &["rm", "app.yaml"], None, None).await);
    read_until(&mut stdout, "the deletion", |l| {
        l.contains("app.yaml was deleted")
    })
    .await;
    watch.kill().await.expect("stop the watch");

    // history: newest first, with who and from where.
    let table = ok(&cli(&registry, &["history", "app.yaml"], None, None).await);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (row, op) in rows.iter().zip(["D", "U", "I"]) {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], op, "{table}");
        assert_eq!(&cols[4], &"127.0.0.1", "{table}");
    }
    assert!(
        rows[1].contains("tester"),
        "the author is the local user: {table}"
    );
    let page: Value = serde_json::from_str(&ok(&cli(
        &registry,
        &["-o", "json", "history", "app.yaml"],
        None,
        None,
    )
    .await))
    .unwrap();
    assert_eq!(page["totalCount"], 3);
    let first = page["pageItems"][2]["id"].as_str().unwrap().to_string();
    ok(&cli(&registry, &["rollback", "app.yaml", &first], None, None).await);
    assert_eq!(
        ok(&cli(&registry, &["get", "app.yaml"], None, None).await),
        "port: 8080\n"
    );

    ok(&cli(&registry, &["rm", "app.yaml"], None, None).await);
    let err = failed(&cli(&registry, &["get", "app.yaml"], None, None).await);
    assert!(err.contains("config data not exist"), "{err}");
    let err = failed(&cli(&registry, &["get", "bad/name"], None, None).await);
    assert!(err.contains("'dataId'"), "{err}");
    registry.terminate().await;
}

#[tokio::test]
async fn config_cli_sends_the_registry_token_when_auth_is_on() {
    let dir = temp_dir();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let registry = start_registry(
        &dir.path().join("data"),
        &["--auth-secret-file", secret.to_str().unwrap()],
    )
    .await;
    let err = failed(&cli(&registry, &["put", "a.txt"], Some("x"), None).await);
    assert!(err.contains("403") && err.contains("auth is on"), "{err}");
    ok(&cli(&registry, &["put", "a.txt"], Some("x"), Some(SECRET)).await);
    assert_eq!(
        ok(&cli(&registry, &["get", "a.txt"], None, Some(SECRET)).await),
        "x"
    );
    // The v2 API refuses in its own envelope.
    let url = format!(
        "http://{}/nacos/v2/cs/config?dataId=a.txt",
        registry.addr("http")
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 10001, "{body}");
    registry.terminate().await;
}

#[tokio::test]
async fn a_cluster_without_a_shared_store_refuses_configs_naming_the_setting() {
    let dir = temp_dir();
    let secret = dir.path().join("cluster.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let registry = start_registry(
        &dir.path().join("data"),
        &[
            "--peers",
            "127.0.0.1:1",
            "--cluster-secret-file",
            secret.to_str().unwrap(),
        ],
    )
    .await;
    let err = failed(&cli(&registry, &["get", "a.txt"], None, None).await);
    assert!(
        err.contains("503") && err.contains("kv_postgres_url"),
        "{err}"
    );
    let url = format!(
        "http://{}/nacos/v1/cs/configs?dataId=a.txt",
        registry.addr("http")
    );
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("kv_postgres_url"));
    // Consul KV, transactions and sessions share the store, and its absence.
    let http = reqwest::Client::new();
    let base = format!("http://{}", registry.addr("http"));
    for (method, path) in [
        (reqwest::Method::GET, "/v1/kv/a"),
        (reqwest::Method::PUT, "/v1/kv/a"),
        (reqwest::Method::PUT, "/v1/txn"),
        (reqwest::Method::PUT, "/v1/session/create"),
        (reqwest::Method::GET, "/v1/session/list"),
    ] {
        let response = http
            .request(method, format!("{base}{path}"))
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503, "{path}");
        assert!(
            response.text().await.unwrap().contains("kv_postgres_url"),
            "{path}"
        );
    }
    registry.terminate().await;
}

/// nacos-sdk-python 1.0.0 against three members sharing PostgreSQL: a publish through one
/// member is read through another and heard by a watcher on the third.
#[tokio::test]
async fn nacos_sdk1_config_across_a_three_member_cluster() {
    let pg = TempPostgres::start();
    let url = pg.create_database("configs_v1");
    let cluster = Cluster::start_with(
        3,
        ClusterOptions {
            kv_postgres_url: Some(url),
            ..ClusterOptions::default()
        },
    )
    .await;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http.to_string()).collect();
    let stdout = run_client_script(
        &python(),
        "nacos1_config_cluster.py",
        &[addrs.join(",")],
        Duration::from_secs(60),
        None,
    )
    .await;
    eprintln!("{stdout}");
}
