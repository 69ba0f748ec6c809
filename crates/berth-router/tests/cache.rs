//! The route cache: written on every swap, read at a cold start without sources.

mod common;

use std::time::Duration;

use berth_router::sources::registry::RegistryConfig;
use common::fake_registry::{FakeRegistry, instance, service};
use common::*;

#[tokio::test]
async fn cold_start_without_sources_serves_the_cached_table() {
    let b = backend("cached").await;
    let dir = berth_testkit::temp_dir();
    let cache = dir.path().join("routes.json");

    // First life: routes arrive from the registry and are cached.
    let fake = FakeRegistry::default();
    fake.put(
        service(
            "web",
            vec![instance(b.addr, true, &[("berth.routes", "c.example/app")])],
        ),
        false,
    );
    let (reg_addr, server) = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let registry = RegistryConfig {
        endpoint: format!("http://{reg_addr}"),
        namespace: "public".into(),
        retry_max: Duration::from_millis(200),
        secret: None,
    };
    let first = start_router(berth_testkit::temp_dir(), |c| {
        c.registry = Some(registry.clone());
        c.route_cache = Some(cache.clone());
    })
    .await;
    wait_status(first.addr(), "c.example/app", 200).await;
    berth_testkit::wait_until("cache written", WAIT, || {
        let cache = cache.clone();
        async move { std::fs::read_to_string(&cache).is_ok_and(|s| s.contains("c.example")) }
    })
    .await;
    drop(first);
    server.cancel();

    // Second life: the registry is unreachable, the cache carries the router.
    let second = start_router(berth_testkit::temp_dir(), |c| {
        c.registry = Some(registry);
        c.route_cache = Some(cache.clone());
    })
    .await;
    let got = get(second.addr(), "c.example", "/app/x").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json()["name"], "cached");
    assert_eq!(second.handle.metrics().registry_connected.get(), 0);
}

#[tokio::test]
async fn corrupt_cache_is_ignored_and_then_rewritten() {
    let b = backend("fresh").await;
    let dir = berth_testkit::temp_dir();
    let cache = dir.path().join("routes.json");
    std::fs::write(&cache, b"{ this is not json").unwrap();
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.route_cache = Some(cache.clone())
    })
    .await;
    assert_eq!(get(r.addr(), "x.example", "/").await.status, 404);
    r.handle.set_routes(vec![entry("x.example", &[b.addr])]);
    assert_eq!(get(r.addr(), "x.example", "/").await.status, 200);
    berth_testkit::wait_until("cache rewritten", WAIT, || {
        let cache = cache.clone();
        async move {
            berth_router::sources::cache::load(&cache)
                .is_ok_and(|s| s.is_some_and(|m| m.contains_key("static")))
        }
    })
    .await;
}
