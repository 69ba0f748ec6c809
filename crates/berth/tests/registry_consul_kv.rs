//! Black-box tests of the registry's Consul KV, transactions and sessions: the real
//! binary on loopback, driven by py-consul (`tests/registry_clients/consul_kv.py`).

mod common;

use std::time::Duration;

use berth_testkit::{BerthProcess, python, temp_dir};
use common::{BIN, run_client_script};

#[tokio::test]
async fn py_consul_kv_txn_sessions_and_locks() {
    let dir = temp_dir();
    let data = dir.path().to_str().expect("utf-8 temp path");
    let registry = BerthProcess::start(
        BIN,
        &[
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
        ],
    )
    .await;
    let addr = registry.addr("http").to_string();
    run_client_script(
        &python(),
        "consul_kv.py",
        &[addr],
        Duration::from_secs(120),
        Some(&registry),
    )
    .await;
    registry.terminate().await;
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    addr: std::net::SocketAddr,
    path: &str,
) -> (u16, Option<u64>, serde_json::Value) {
    let resp = http
        .request(method, format!("http://{addr}{path}"))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let index = resp
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp.text().await.unwrap_or_default();
    (
        status,
        index,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Three members on one PostgreSQL database: a lock taken through one member is held
/// through every member, a blocking read on one member wakes on a write through
/// another, and a session destroyed through a third frees the lock everywhere.
#[tokio::test]
async fn consul_kv_locks_and_blocking_reads_across_a_postgres_cluster() {
    use common::registry_cluster::{Cluster, ClusterOptions};
    use reqwest::Method;

    let pg = berth_testkit::postgres::TempPostgres::start();
    let url = pg.create_database("consul_kv");
    let cluster = Cluster::start_with(
        3,
        ClusterOptions {
            kv_postgres_url: Some(url),
            ..ClusterOptions::default()
        },
    )
    .await;
    let http = cluster.http.clone();
    let addr = |i: usize| cluster.nodes[i].http;

    let (status, _, body) = send(&http, Method::PUT, addr(0), "/v1/session/create").await;
    assert_eq!(status, 200, "{body}");
    let s0 = body["ID"].as_str().expect("session id").to_string();
    let (_, _, body) = send(&http, Method::PUT, addr(2), "/v1/session/create").await;
    let s2 = body["ID"].as_str().expect("session id").to_string();

    let path = format!("/v1/kv/lock/leader?acquire={s0}");
    let (status, _, body) = send(&http, Method::PUT, addr(0), &path).await;
    assert_eq!((status, body), (200, serde_json::json!(true)));
    for i in 0..3 {
        let (status, _, body) = send(&http, Method::GET, addr(i), "/v1/kv/lock/leader").await;
        assert_eq!(status, 200, "member {i}: {body}");
        assert_eq!(
            body[0]["Session"],
            serde_json::json!(s0),
            "member {i}: {body}"
        );
        assert_eq!(body[0]["LockIndex"], 1, "member {i}: {body}");
    }
    // A session of another member cannot take it through a third.
    let path = format!("/v1/kv/lock/leader?acquire={s2}");
    let (_, _, body) = send(&http, Method::PUT, addr(1), &path).await;
    assert_eq!(body, serde_json::json!(false));
    // Every member lists both sessions.
    for i in 0..3 {
        let (_, _, body) = send(&http, Method::GET, addr(i), "/v1/session/list").await;
        let ids: Vec<&str> = body
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|s| s["ID"].as_str())
            .collect();
        assert!(
            ids.contains(&s0.as_str()) && ids.contains(&s2.as_str()),
            "member {i}: {body}"
        );
    }

    // A blocking read on member 2 wakes on a write through member 1.
    let (status, index, _) = send(&http, Method::GET, addr(2), "/v1/kv/watched").await;
    assert_eq!(status, 404);
    let index = index.expect("X-Consul-Index on a 404");
    let waiter = {
        let http = http.clone();
        let a = addr(2);
        tokio::spawn(async move {
            let path = format!("/v1/kv/watched?index={index}&wait=20s");
            let got = send(&http, Method::GET, a, &path).await;
            (got, tokio::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiter.is_finished(),
        "the blocking read must hold until a change"
    );
    let written = tokio::time::Instant::now();
    let (_, _, body) = send(&http, Method::PUT, addr(1), "/v1/kv/watched").await;
    assert_eq!(body, serde_json::json!(true));
    let ((status, new_index, body), woke) = waiter.await.expect("waiter");
    let lag = woke.duration_since(written);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["Key"], "watched");
    assert!(new_index.expect("index") > index);
    eprintln!("blocking read on member 2 woke {lag:?} after the write through member 1");
    assert!(lag < Duration::from_secs(1), "woke {lag:?} after the write");

    // Destroying the holder through member 1 frees the lock on every member.
    let path = format!("/v1/session/destroy/{s0}");
    let (_, _, body) = send(&http, Method::PUT, addr(1), &path).await;
    assert_eq!(body, serde_json::json!(true));
    for i in 0..3 {
        let (_, _, body) = send(&http, Method::GET, addr(i), "/v1/kv/lock/leader").await;
        assert!(body[0].get("Session").is_none(), "member {i}: {body}");
    }
    drop(cluster);
    drop(pg);
}

/// With auth on, KV, transactions and sessions answer only a caller with a token (the
/// registry secret here, as `X-Consul-Token`), and say so to one without.
#[tokio::test]
async fn kv_txn_and_sessions_need_a_token_when_auth_is_on() {
    let dir = temp_dir();
    let secret = "a-registry-secret-of-at-least-32-bytes!";
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret).unwrap();
    let data = dir.path().join("data");
    let registry = BerthProcess::start(
        BIN,
        &[
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--auth-secret-file",
            secret_file.to_str().unwrap(),
        ],
    )
    .await;
    let base = format!("http://{}", registry.addr("http"));
    let http = reqwest::Client::new();
    let calls = [
        (reqwest::Method::PUT, "/v1/kv/app/a", "1"),
        (reqwest::Method::GET, "/v1/kv/app/a", ""),
        (
            reqwest::Method::PUT,
            "/v1/txn",
            r#"[{"KV":{"Verb":"get","Key":"app/a"}}]"#,
        ),
        (reqwest::Method::PUT, "/v1/session/create", "{}"),
        (reqwest::Method::GET, "/v1/session/list", ""),
    ];
    for (method, path, body) in &calls {
        let refused = http
            .request(method.clone(), format!("{base}{path}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "{method} {path} without a token");
        assert!(
            refused.text().await.unwrap().contains("token"),
            "{method} {path}: the refusal says what is missing"
        );
        let allowed = http
            .request(method.clone(), format!("{base}{path}"))
            .header("X-Consul-Token", secret)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            allowed.status().is_success(),
            "{method} {path} with the token: {}",
            allowed.status()
        );
    }
    registry.terminate().await;
}
