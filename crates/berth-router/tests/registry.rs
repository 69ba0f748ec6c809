//! The registry watch source against an in-process gRPC registry.

mod common;

use std::time::Duration;

use berth_router::sources::registry::RegistryConfig;
use common::fake_registry::{FakeRegistry, instance, service};
use common::*;

fn reg_cfg(addr: std::net::SocketAddr) -> RegistryConfig {
    RegistryConfig {
        endpoint: format!("http://{addr}"),
        namespace: "public".into(),
        retry_max: Duration::from_millis(200),
        secret: None,
    }
}

#[tokio::test]
async fn snapshot_and_changes_become_routes() {
    let (a, b) = (backend("a").await, backend("b").await);
    let fake = FakeRegistry::default();
    fake.put(
        service(
            "web",
            vec![instance(a.addr, true, &[("berth.routes", "web.example")])],
        ),
        false,
    );
    let (reg_addr, _server) = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.registry = Some(reg_cfg(reg_addr))
    })
    .await;
    wait_status(r.addr(), "web.example", 200).await;
    assert_eq!(fake.requests.lock().unwrap()[0].from_revision, 0);

    // A second instance with a Consul-style tag adds a route and an endpoint.
    fake.put(
        service(
            "web",
            vec![
                instance(a.addr, true, &[("berth.routes", "web.example")]),
                instance(b.addr, true, &[("tags", "v2,urlprefix-web.example/beta")]),
            ],
        ),
        false,
    );
    // `/beta` also matches the root route (served by a) until the change lands.
    let router = r.addr();
    berth_testkit::wait_until("web.example/beta served by b", WAIT, || async move {
        let got = get(router, "web.example", "/beta/x").await;
        got.status == 200 && got.json()["name"] == "b"
    })
    .await;
    assert_eq!(get(router, "web.example", "/").await.json()["name"], "a");

    // All instances unhealthy: the route stays, without endpoints.
    fake.put(
        service(
            "web",
            vec![instance(a.addr, false, &[("berth.routes", "web.example")])],
        ),
        false,
    );
    wait_status(r.addr(), "web.example", 503).await;
    assert_eq!(
        get(r.addr(), "web.example", "/").await.router_error(),
        Some("no_endpoints")
    );

    // Service deleted: the route is gone.
    fake.put(service("web", vec![]), true);
    wait_status(r.addr(), "web.example", 404).await;
}

#[tokio::test]
async fn registry_outage_keeps_the_table_and_reconnect_resumes_from_the_last_revision() {
    let a = backend("a").await;
    let b = backend("b").await;
    let fake = FakeRegistry::default();
    fake.put(
        service(
            "web",
            vec![instance(a.addr, true, &[("berth.routes", "web.example")])],
        ),
        false,
    );
    let (reg_addr, server) = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.registry = Some(reg_cfg(reg_addr))
    })
    .await;
    wait_status(r.addr(), "web.example", 200).await;
    let applied = fake.revision();

    server.cancel();
    let metrics = r.handle.metrics().clone();
    berth_testkit::wait_until("router notices the registry is gone", WAIT, || {
        let m = metrics.clone();
        async move { m.registry_connected.get() == 0 }
    })
    .await;
    // Running services outlive the control plane.
    for _ in 0..5 {
        assert_eq!(get(r.addr(), "web.example", "/").await.status, 200);
    }

    // While it was down, a change happened; the reconnect must resume after `applied`.
    fake.put(
        service(
            "api",
            vec![instance(b.addr, true, &[("berth.routes", "api.example")])],
        ),
        false,
    );
    let (_, _server) = fake.serve(reg_addr).await;
    wait_status(r.addr(), "api.example", 200).await;
    assert_eq!(get(r.addr(), "web.example", "/").await.status, 200);
    let requests = fake.requests.lock().unwrap().clone();
    assert!(requests.len() >= 2, "{requests:?}");
    assert_eq!(requests.last().unwrap().from_revision, applied);
}
