//! The proxy engine against real loopback backends.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_router::proxy::ProxyConfig;
use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn routes_by_host_then_longest_path_prefix() {
    let (web, api) = (backend("web").await, backend("api").await);
    let r = router(fast_config()).await;
    r.store.set_source(
        "static",
        vec![
            entry("shop.example", &[web.addr]),
            entry("shop.example/api", &[api.addr]),
        ],
    );
    assert_eq!(get(r.addr, "shop.example", "/").await.json()["name"], "web");
    assert_eq!(
        get(r.addr, "Shop.Example:8080", "/api/x?q=1").await.json()["name"],
        "api"
    );
    let got = get(r.addr, "shop.example", "/api/v1?q=1").await;
    assert_eq!(got.json()["path"], "/api/v1");
    assert_eq!(
        get(r.addr, "shop.example", "/apiary").await.json()["name"],
        "web"
    );
}

#[tokio::test]
async fn unknown_route_is_404_with_reason() {
    let r = router(fast_config()).await;
    let got = get(r.addr, "nowhere.example", "/").await;
    assert_eq!(got.status, 404);
    assert_eq!(got.router_error(), Some("unknown_route"));
    assert!(got.body.contains("nowhere.example"), "{}", got.body);
    assert!(got.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn route_without_endpoints_is_503_no_endpoints() {
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("empty.example", &[])]);
    let got = get(r.addr, "empty.example", "/").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.router_error(), Some("no_endpoints"));
}

#[tokio::test]
async fn missing_host_is_400_empty_host() {
    let r = router(fast_config()).await;
    let answer = raw(r.addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 400") || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-berth-router-error: empty_host"),
        "{answer}"
    );
}

#[tokio::test]
async fn only_dead_endpoints_is_502_endpoint_failure() {
    let dead = dead_addr().await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("dead.example", &[dead])]);
    let got = get(r.addr, "dead.example", "/").await;
    assert_eq!(got.status, 502);
    assert_eq!(got.router_error(), Some("endpoint_failure"));
    assert_eq!(r.metrics.bad_gateways.get(), 1);
}

#[tokio::test]
async fn refused_connections_are_retried_on_another_endpoint() {
    let live = backend("live").await;
    let (d1, d2) = (dead_addr().await, dead_addr().await);
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("mixed.example", &[d1, live.addr, d2])]);
    for i in 0..12 {
        let got = send(
            r.addr,
            Request::post(format!("http://{}/p", r.addr)).header("host", "mixed.example"),
            &format!("payload-{i}"),
        )
        .await;
        assert_eq!(got.status, 200, "request {i}: {}", got.body);
        assert_eq!(got.json()["body"], format!("payload-{i}"));
    }
    assert_eq!(live.hits.load(Ordering::SeqCst), 12);
    assert!(r.metrics.retries.get() >= 1);
    // Passive health: the dead endpoints are marked and skipped afterwards.
    let routes = r.store.load().view();
    let failing: Vec<bool> = routes[0].endpoints.iter().map(|e| e.failing).collect();
    assert_eq!(failing.iter().filter(|f| **f).count(), 2, "{failing:?}");
}

#[tokio::test]
async fn retries_never_exceed_the_attempt_limit() {
    let dead: Vec<_> = futures::future::join_all((0..5).map(|_| dead_addr())).await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("dead.example", &dead)]);
    let got = get(r.addr, "dead.example", "/").await;
    assert_eq!(got.status, 502);
    assert_eq!(r.metrics.retries.get(), 2, "3 attempts = 2 retries");
}

#[tokio::test]
async fn a_backend_status_is_never_retried() {
    let (a, b) = (backend("a").await, backend("b").await);
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("s.example", &[a.addr, b.addr])]);
    let got = get(r.addr, "s.example", "/status500").await;
    assert_eq!(got.status, 500);
    assert_eq!(got.router_error(), None);
    assert_eq!(
        a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
        1
    );
    assert_eq!(r.metrics.retries.get(), 0);
}

#[tokio::test]
async fn connection_limit_returns_503_connection_limit() {
    let b = backend("slow").await;
    let r = router(ProxyConfig {
        max_conns_per_backend: 1,
        ..fast_config()
    })
    .await;
    r.store
        .set_source("static", vec![entry("l.example", &[b.addr])]);
    let first = tokio::spawn(get(r.addr, "l.example", "/hold"));
    let store = r.store.clone();
    berth_wait(|| store.load().view()[0].endpoints[0].in_flight == 1).await;
    let got = get(r.addr, "l.example", "/").await;
    assert_eq!(got.status, 503);
    assert_eq!(got.router_error(), Some("connection_limit"));
    b.release.notify_one();
    assert_eq!(first.await.unwrap().status, 200);
    berth_wait(|| store.load().view()[0].endpoints[0].in_flight == 0).await;
    assert_eq!(get(r.addr, "l.example", "/").await.status, 200);
}

#[tokio::test]
async fn slow_response_headers_time_out_as_502() {
    let b = backend("sleepy").await;
    let cfg = ProxyConfig {
        response_header_timeout: Duration::from_millis(200),
        ..fast_config()
    };
    let r = router(cfg).await;
    r.store
        .set_source("static", vec![entry("t.example", &[b.addr])]);
    let got = get(r.addr, "t.example", "/sleep").await;
    assert_eq!(got.status, 502);
    assert_eq!(got.router_error(), Some("endpoint_failure"));
}

#[tokio::test]
async fn forwarding_headers_and_hop_by_hop_stripping() {
    let b = backend("h").await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("h.example", &[b.addr])]);
    let got = send(
        r.addr,
        Request::get(format!("http://{}/", r.addr))
            .header("host", "h.example")
            .header("x-forwarded-for", "10.1.2.3")
            .header("x-request-id", "req-42")
            .header("connection", "x-client-hop")
            .header("x-client-hop", "1")
            .header("proxy-authorization", "Basic eA=="),
        "",
    )
    .await;
    let seen = &got.json()["headers"];
    assert_eq!(seen["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "h.example");
    assert_eq!(seen["x-request-id"], "req-42");
    assert_eq!(seen["host"], "h.example");
    assert!(
        seen["x-request-start"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert!(seen.get("x-client-hop").is_none(), "{seen}");
    assert!(seen.get("proxy-authorization").is_none(), "{seen}");
    // Response side: the backend's hop-by-hop headers do not reach the client.
    assert!(!got.headers.contains_key("x-hop"));
    assert!(!got.headers.contains_key("keep-alive"));
    assert_eq!(got.headers["x-request-id"], "req-42");

    let generated = get(r.addr, "h.example", "/").await;
    let id = generated.json()["headers"]["x-request-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(generated.headers["x-request-id"], id.as_str());
}

#[tokio::test]
async fn response_bodies_stream_through() {
    let b = backend("s").await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("s.example", &[b.addr])]);
    let resp = client()
        .request(
            Request::get(format!("http://{}/stream", r.addr))
                .header("host", "s.example")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    // The first chunk arrives while the backend is still holding the second one back.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first;");
    b.release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"second");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let b = backend("ws").await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("ws.example", &[b.addr])]);
    let mut s = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in ["hello", "again"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 5 + msg.len()];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, format!("echo:{msg}").as_bytes());
    }
}

#[tokio::test]
async fn http2_clients_are_served_by_prior_knowledge() {
    let b = backend("h2").await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("h2.example", &[b.addr])]);
    let stream = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://h2.example/two")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["path"], "/two");
    assert_eq!(json["headers"]["host"], "h2.example");
}

#[tokio::test]
async fn sticky_sessions_pin_to_the_instance() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let r = router(fast_config()).await;
    r.store.set_source(
        "static",
        vec![entry("st.example", &[a.addr, b.addr, c.addr])],
    );
    let login = get(r.addr, "st.example", "/login").await;
    let pinned = login.json()["name"].as_str().unwrap().to_string();
    let cookie = login
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("__VCAP_ID="))
        .expect("sticky cookie set")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    for _ in 0..6 {
        let got = send(
            r.addr,
            Request::get(format!("http://{}/", r.addr))
                .header("host", "st.example")
                .header("cookie", format!("JSESSIONID=abc; {cookie}")),
            "",
        )
        .await;
        assert_eq!(got.json()["name"], pinned.as_str());
    }
}

#[tokio::test]
async fn in_flight_counters_survive_a_table_swap() {
    let b = backend("f").await;
    let r = router(fast_config()).await;
    r.store
        .set_source("static", vec![entry("f.example", &[b.addr])]);
    let held = tokio::spawn(get(r.addr, "f.example", "/hold"));
    let store = r.store.clone();
    berth_wait(|| store.load().view()[0].endpoints[0].in_flight == 1).await;
    let other = backend("g").await;
    r.store
        .set_source("static", vec![entry("f.example", &[b.addr, other.addr])]);
    let view = r.store.load().view();
    let e = view[0].endpoints.iter().find(|e| e.addr == b.addr).unwrap();
    assert_eq!(e.in_flight, 1);
    b.release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
}

/// Polls a condition (the router crate cannot use the shared test kit from here).
async fn berth_wait(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 5s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
