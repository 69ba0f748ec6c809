//! `berth router` as a black box: the real binary, a real nats-server, a loopback backend.

mod common;

use std::net::SocketAddr;

use berth_testkit::nats::NatsServer;
use berth_testkit::{BerthProcess, wait_until};
use common::{BIN, WAIT, raw_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-line HTTP backend that says its name.
async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = format!("hello from {name}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn router_binary_routes_nats_registrations_and_exits_cleanly() {
    let nats = NatsServer::start(None).await;
    let dir = berth_testkit::temp_dir();
    let cache = dir.path().join("routes.json");
    let cache_arg = cache.display().to_string();
    let router = BerthProcess::start(
        BIN,
        &[
            "router",
            "--listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
            "--nats",
            &nats.url(),
            "--route-cache",
            &cache_arg,
        ],
    )
    .await;
    let http = router.addr("http");
    let status = router.addr("status");
    assert!(
        raw_get(status, "s", "/health")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        raw_get(http, "app.example", "/")
            .await
            .contains("x-berth-router-error: unknown_route")
    );

    let be = backend("nats-app").await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let msg = format!(
        r#"{{"host":"127.0.0.1","port":{},"uris":["app.example"],"app":"guid","private_instance_id":"i-1","private_instance_index":"0"}}"#,
        be.port()
    );
    // NATS drops messages sent before the router subscribed; emitters re-register, so do we.
    wait_until("route registered over NATS", WAIT, || {
        let (client, msg) = (client.clone(), msg.clone());
        async move {
            client.publish("router.register", msg.into()).await.unwrap();
            client.flush().await.unwrap();
            raw_get(http, "app.example", "/")
                .await
                .contains("hello from nats-app")
        }
    })
    .await;
    let routes = raw_get(status, "s", "/routes").await;
    assert!(
        routes.contains("app.example") && routes.contains(&be.to_string()),
        "{routes}"
    );
    wait_until("route cache written", WAIT, || {
        let cache = cache.clone();
        async move { std::fs::read_to_string(&cache).is_ok_and(|s| s.contains("app.example")) }
    })
    .await;

    let exit = router.terminate().await;
    assert!(exit.success(), "router exit status {exit:?}");

    // Cold start from the cache with NATS gone.
    drop(nats);
    let again = BerthProcess::start(
        BIN,
        &[
            "router",
            "--listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
            "--nats",
            "nats://127.0.0.1:1",
            "--route-cache",
            &cache_arg,
        ],
    )
    .await;
    let answer = raw_get(again.addr("http"), "app.example", "/").await;
    assert!(answer.contains("hello from nats-app"), "{answer}");
    assert!(again.terminate().await.success());
}

#[tokio::test]
async fn bad_settings_are_rejected_with_the_key_named() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "router",
            "--listen",
            "not-an-address",
            "--status-listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen") && err.contains("not-an-address"),
        "{err}"
    );

    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tokio::process::Command::new(BIN)
        .args([
            "router",
            "--listen",
            &addr,
            "--status-listen",
            "127.0.0.1:0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");
}
