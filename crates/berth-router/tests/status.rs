//! The status listener and the drain sequence.

mod common;

use std::time::Duration;

use common::*;
use http::Request;

#[tokio::test]
async fn health_routes_varz_and_metrics_report_the_router() {
    let b = backend("b").await;
    let r = start_router(berth_testkit::temp_dir(), |_| {}).await;
    r.handle.set_routes(vec![entry("s.example/app", &[b.addr])]);
    assert_eq!(get(r.addr(), "s.example", "/app").await.status, 200);
    assert_eq!(get(r.addr(), "nope.example", "/").await.status, 404);
    let status = r.handle.status_addr();

    let health = get(status, "status", "/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let routes = get(status, "status", "/routes").await.json();
    let route = &routes["routes"][0];
    assert_eq!(route["route"], "s.example/app");
    assert_eq!(route["lb"], "round-robin");
    assert_eq!(route["endpoints"][0]["addr"], b.addr.to_string());
    assert_eq!(route["endpoints"][0]["requests"], 1);
    assert_eq!(route["endpoints"][0]["failing"], false);

    let varz = get(status, "status", "/varz").await.json();
    assert_eq!(varz["requests"], 2);
    assert_eq!(varz["responses"]["2xx"], 1);
    assert_eq!(varz["responses"]["4xx"], 1);
    assert_eq!(varz["routes"], 1);
    assert_eq!(varz["endpoints"], 1);
    assert!(varz["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(varz["mem_bytes"].as_u64().unwrap() > 0);

    let metrics = get(status, "status", "/metrics").await;
    assert!(
        metrics.body.contains("berth_router_requests_total 2"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("berth_router_errors_total{reason=\"unknown_route\"} 1"),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("berth_router_routes 1"),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn status_basic_auth_guards_everything_but_health() {
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.status_auth = Some(("ops".into(), "s3cret".into()));
    })
    .await;
    let status = r.handle.status_addr();
    assert_eq!(get(status, "s", "/health").await.status, 200);
    for path in ["/routes", "/varz", "/metrics"] {
        assert_eq!(get(status, "s", path).await.status, 401, "{path}");
    }
    let ok = send(
        status,
        Request::get(format!("http://{status}/routes"))
            .header("host", "s")
            .header("authorization", "Basic b3BzOnMzY3JldA=="),
        "",
    )
    .await;
    assert_eq!(ok.status, 200);
    let wrong = send(
        status,
        Request::get(format!("http://{status}/varz"))
            .header("host", "s")
            .header("authorization", "Basic b3BzOndyb25n"),
        "",
    )
    .await;
    assert_eq!(wrong.status, 401);
}

#[tokio::test]
async fn drain_reports_unhealthy_first_then_finishes_in_flight_requests() {
    let b = backend("slow").await;
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.drain_wait = Duration::from_millis(500);
        c.drain_timeout = Duration::from_secs(5);
    })
    .await;
    r.handle.set_routes(vec![entry("d.example", &[b.addr])]);
    let addr = r.addr();
    let status = r.handle.status_addr();
    let in_flight = tokio::spawn(get(addr, "d.example", "/hold"));
    let store = r.handle.store().clone();
    berth_testkit::wait_until("request in flight", WAIT, || {
        let store = store.clone();
        async move { store.load().view()[0].endpoints[0].in_flight == 1 }
    })
    .await;

    r.shutdown.trigger();
    assert_eq!(get(status, "s", "/health").await.status, 503);
    assert!(r.handle.is_draining());
    // The entry listener closes after drain_wait; the in-flight request is unaffected.
    berth_testkit::wait_until("listener closed", WAIT, || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    b.release.notify_one();
    let done = in_flight.await.unwrap();
    assert_eq!(done.status, 200);
    r.shutdown
        .drain(Duration::from_secs(10))
        .await
        .expect("router drains");
}
