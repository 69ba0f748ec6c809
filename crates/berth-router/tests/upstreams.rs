//! The dyups-style upstreams API on the status listener: create, weight, replace, list
//! and delete upstreams on a running router, JSON or nginx's text form, bad bodies named,
//! basic auth honoured, and upstreams kept across a restart with `upstreams_file`.

mod common;

use std::collections::BTreeMap;

use common::*;
use http::Request;

async fn put(status: std::net::SocketAddr, name: &str, content_type: &str, body: &str) -> Got {
    send(
        status,
        Request::put(format!("http://{status}/v1/upstreams/{name}"))
            .header("content-type", content_type),
        body,
    )
    .await
}

async fn names_seen(
    router: std::net::SocketAddr,
    host: &str,
    tries: usize,
) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..tries {
        let got = get(router, host, "/").await;
        assert_eq!(got.status, 200, "{}", got.body);
        *seen
            .entry(got.json()["name"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

#[tokio::test]
async fn upstreams_are_added_weighted_replaced_listed_and_deleted_live() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dir = berth_testkit::temp_dir();
    let r = start_router(dir, |_| {}).await;
    let status = r.handle.status_addr();
    assert_eq!(
        get(r.addr(), "api.test", "/").await.router_error(),
        Some("unknown_route")
    );

    let body = format!(
        r#"{{"routes": ["api.test"], "servers": [{{"address": "{}", "weight": 3}}, {{"address": "{}"}}]}}"#,
        a.addr, b.addr
    );
    let created = put(status, "api", "application/json", &body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    // Weighted round-robin: 3 to a for every 1 to b.
    let seen = names_seen(r.addr(), "api.test", 8).await;
    assert_eq!((seen["a"], seen["b"]), (6, 2), "{seen:?}");

    // nginx dyups' text body replaces it: b only.
    let replaced = put(
        status,
        "api?routes=api.test,api2.test/v2",
        "text/plain",
        &format!("server {} weight=1;", b.addr),
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(names_seen(r.addr(), "api.test", 3).await["b"], 3);
    assert_eq!(get(r.addr(), "api2.test", "/v2/x").await.status, 200);

    let listed = get(status, "status", "/v1/upstreams").await.json();
    assert_eq!(
        listed["upstreams"]["api"]["routes"],
        serde_json::json!(["api.test", "api2.test/v2"])
    );
    assert_eq!(
        listed["upstreams"]["api"]["servers"][0]["address"],
        b.addr.to_string()
    );
    let one = get(status, "status", "/v1/upstreams/api").await;
    assert_eq!(one.status, 200);
    assert!(
        get(status, "status", "/routes")
            .await
            .body
            .contains("api2.test/v2")
    );

    let deleted = send(
        status,
        Request::delete(format!("http://{status}/v1/upstreams/api")),
        "",
    )
    .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        get(r.addr(), "api.test", "/").await.router_error(),
        Some("unknown_route")
    );
    let again = send(
        status,
        Request::delete(format!("http://{status}/v1/upstreams/api")),
        "",
    )
    .await;
    assert_eq!(again.status, 404);
    assert_eq!(get(status, "status", "/v1/upstreams/api").await.status, 404);
}

#[tokio::test]
async fn bad_requests_name_the_field_and_change_nothing() {
    let a = backend("a").await;
    let r = start_router(berth_testkit::temp_dir(), |_| {}).await;
    let status = r.handle.status_addr();
    let good = format!(
        r#"{{"routes": ["ok.test"], "servers": [{{"address": "{}"}}]}}"#,
        a.addr
    );
    assert_eq!(
        put(status, "ok", "application/json", &good).await.status,
        201
    );
    let cases = [
        ("ok", r#"{"routes": []}"#, "routes"),
        ("ok", r#"{"routes": ["bad host!"]}"#, "routes[0]"),
        (
            "ok",
            r#"{"routes": ["a.test"], "servers": [{"address": "nowhere"}]}"#,
            "body",
        ),
        (
            "ok",
            r#"{"routes": ["a.test"], "servers": [{"address": "127.0.0.1:1", "weight": 0}]}"#,
            "servers[0].weight",
        ),
        ("ok", r#"{"routes": ["a.test"], "lb": "random"}"#, "lb"),
        ("ok", r#"{"routes": ["a.test"], "color": "red"}"#, "body"),
        ("bad%20name", r#"{"routes": ["a.test"]}"#, "name"),
    ];
    for (name, body, field) in cases {
        let got = put(status, name, "application/json", body).await;
        assert_eq!(got.status, 400, "{body}: {}", got.body);
        assert_eq!(got.json()["field"], field, "{body}: {}", got.body);
    }
    let text = put(
        status,
        "ok?routes=ok.test",
        "text/plain",
        "server localhost:80;",
    )
    .await;
    assert_eq!(
        (text.status, text.json()["field"].as_str()),
        (400, Some("servers[0].address"))
    );
    let huge = put(status, "ok", "application/json", &"x".repeat(300 * 1024)).await;
    assert_eq!(huge.status, 413);
    // The good upstream still serves.
    assert_eq!(get(r.addr(), "ok.test", "/").await.status, 200);
}

#[tokio::test]
async fn the_api_honours_basic_auth_and_upstreams_survive_a_restart() {
    let a = backend("a").await;
    let dir = berth_testkit::temp_dir();
    let file = dir.path().join("kept-upstreams.json");
    let r = start_router(dir, |c| {
        c.status_auth = Some(("ops".into(), "secret".into()));
        c.upstreams_file = Some(
            c.route_cache
                .clone()
                .unwrap()
                .with_file_name("kept-upstreams.json"),
        );
    })
    .await;
    let status = r.handle.status_addr();
    let body = format!(
        r#"{{"routes": ["kept.test"], "servers": [{{"address": "{}"}}]}}"#,
        a.addr
    );
    assert_eq!(
        put(status, "kept", "application/json", &body).await.status,
        401
    );
    let authed = send(
        status,
        Request::put(format!("http://{status}/v1/upstreams/kept"))
            .header("content-type", "application/json")
            .header("authorization", "Basic b3BzOnNlY3JldA=="),
        &body,
    )
    .await;
    assert_eq!(authed.status, 201, "{}", authed.body);
    assert!(file.exists());
    let copy = berth_testkit::temp_dir();
    std::fs::copy(&file, copy.path().join("upstreams.json")).unwrap();
    drop(r);

    // A new router on that file (and no route cache) serves the upstream at once.
    let second = start_router(copy, |c| c.route_cache = None).await;
    assert_eq!(get(second.addr(), "kept.test", "/").await.status, 200);

    // A broken file is refused with its path, not silently emptied.
    let broken = berth_testkit::temp_dir();
    std::fs::write(broken.path().join("upstreams.json"), "{not json").unwrap();
    let mut cfg = berth_router::RouterConfig::for_test(broken.path());
    cfg.route_cache = None;
    let err = berth_router::start(cfg, &berth_util::shutdown::Shutdown::new())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("upstreams.json"), "{err}");
}
