//! The gorouter-compatible NATS source against a real nats-server.

mod common;

use std::time::Duration;

use berth_router::sources::nats::NatsConfig;
use common::nats_server::NatsServer;
use common::*;
use futures::StreamExt;

fn nats_cfg(url: &str, threshold: Duration, interval: Duration) -> NatsConfig {
    NatsConfig {
        urls: vec![url.to_string()],
        prune_threshold: threshold,
        prune_interval: interval,
        minimum_register_interval: Duration::from_secs(20),
    }
}

fn register_json(port: u16, uris: &[&str]) -> String {
    serde_json::json!({
        "host": "127.0.0.1", "port": port, "uris": uris,
        "tags": {"component": "test"}, "app": "app-guid",
        "private_instance_id": format!("inst-{port}"), "private_instance_index": "0",
    })
    .to_string()
}

/// Starts a router on `nats` and waits for its `router.start` (so its subscriptions are
/// live: NATS drops messages published before a subscriber exists, which is why gorouter
/// emitters re-register periodically).
async fn router_on(nats: &NatsServer, threshold: Duration, interval: Duration) -> Running {
    let client = emitter(nats).await;
    let mut starts = client.subscribe("router.start").await.unwrap();
    client.flush().await.unwrap();
    let url = nats.url();
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.nats = Some(nats_cfg(&url, threshold, interval));
    })
    .await;
    tokio::time::timeout(WAIT, starts.next())
        .await
        .expect("router.start published");
    r
}

async fn emitter(nats: &NatsServer) -> async_nats::Client {
    async_nats::connect(nats.url()).await.unwrap()
}

#[tokio::test]
async fn register_and_unregister_follow_gorouter_messages() {
    let nats = NatsServer::start(None).await;
    let client = emitter(&nats).await;
    let mut starts = client.subscribe("router.start").await.unwrap();
    client.flush().await.unwrap();
    let url = nats.url();
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.nats = Some(nats_cfg(
            &url,
            Duration::from_secs(120),
            Duration::from_secs(30),
        ));
    })
    .await;

    let start = tokio::time::timeout(WAIT, starts.next())
        .await
        .unwrap()
        .unwrap();
    let start: serde_json::Value = serde_json::from_slice(&start.payload).unwrap();
    assert_eq!(start["hosts"][0], "127.0.0.1");
    assert_eq!(start["minimumRegisterIntervalInSeconds"], 20);
    assert_eq!(start["pruneThresholdInSeconds"], 120);
    assert!(start["id"].as_str().unwrap().starts_with("0-"));

    let (a, b) = (backend("a").await, backend("b").await);
    for be in [&a, &b] {
        let msg = register_json(be.addr.port(), &["app.vcap.me", "other.vcap.me/api"]);
        client.publish("router.register", msg.into()).await.unwrap();
    }
    wait_status(r.addr(), "app.vcap.me", 200).await;
    let got = get(r.addr(), "other.vcap.me", "/api/x").await;
    assert_eq!(got.status, 200);
    berth_testkit::wait_until("both endpoints registered", WAIT, || async {
        r.handle
            .store()
            .load()
            .view()
            .iter()
            .all(|v| v.endpoints.len() == 2)
    })
    .await;

    for be in [&a, &b] {
        let msg = register_json(be.addr.port(), &["app.vcap.me", "other.vcap.me/api"]);
        client
            .publish("router.unregister", msg.into())
            .await
            .unwrap();
    }
    wait_status(r.addr(), "app.vcap.me", 404).await;
    assert_eq!(get(r.addr(), "other.vcap.me", "/api").await.status, 404);
}

#[tokio::test]
async fn greet_is_answered_with_the_start_message() {
    let nats = NatsServer::start(None).await;
    let url = nats.url();
    let _r = start_router(berth_testkit::temp_dir(), |c| {
        c.nats = Some(nats_cfg(
            &url,
            Duration::from_secs(120),
            Duration::from_secs(30),
        ));
    })
    .await;
    let client = emitter(&nats).await;
    let reply = berth_testkit::wait_for("router.greet reply", WAIT, || {
        let client = client.clone();
        async move {
            tokio::time::timeout(
                Duration::from_millis(500),
                client.request("router.greet", "".into()),
            )
            .await
            .ok()?
            .ok()
        }
    })
    .await;
    let v: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["pruneThresholdInSeconds"], 120);
    assert!(v["id"].is_string());
}

#[tokio::test]
async fn malformed_messages_are_counted_and_never_fatal() {
    let nats = NatsServer::start(None).await;
    let url = nats.url();
    let r = start_router(berth_testkit::temp_dir(), |c| {
        c.nats = Some(nats_cfg(
            &url,
            Duration::from_secs(120),
            Duration::from_secs(30),
        ));
    })
    .await;
    let client = emitter(&nats).await;
    let b = backend("ok").await;
    let bad = [
        "not json at all".to_string(),
        r#"{"host":"web.internal","port":80,"uris":["x.vcap.me"]}"#.to_string(),
        r#"{"host":"127.0.0.1","port":80,"uris":["x.vcap.me"],"private_instance_index":7}"#
            .to_string(),
        r#"{"host":"127.0.0.1","uris":["x.vcap.me"]}"#.to_string(),
        "\u{0}\u{1}".to_string(),
    ];
    let metrics = r.handle.metrics().clone();
    // The source may still be connecting: keep sending until every bad message is counted.
    berth_testkit::wait_until("malformed messages counted", WAIT, || {
        let (client, bad, metrics) = (client.clone(), bad.clone(), metrics.clone());
        async move {
            if metrics.nats_malformed.get() >= bad.len() as u64 {
                return true;
            }
            for m in &bad {
                client
                    .publish("router.register", m.clone().into())
                    .await
                    .unwrap();
            }
            client.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            metrics.nats_malformed.get() >= bad.len() as u64
        }
    })
    .await;
    client
        .publish(
            "router.register",
            register_json(b.addr.port(), &["ok.vcap.me"]).into(),
        )
        .await
        .unwrap();
    wait_status(r.addr(), "ok.vcap.me", 200).await;
    assert_eq!(get(r.addr(), "x.vcap.me", "/").await.status, 404);
}

#[tokio::test]
async fn routes_expire_after_their_ttl_unless_refreshed() {
    let nats = NatsServer::start(None).await;
    let r = router_on(&nats, Duration::from_secs(1), Duration::from_millis(100)).await;
    let client = emitter(&nats).await;
    let (b, kept) = (backend("ttl").await, backend("kept").await);
    let kept_msg = register_json(kept.addr.port(), &["kept.vcap.me"]);
    client
        .publish(
            "router.register",
            register_json(b.addr.port(), &["ttl.vcap.me"]).into(),
        )
        .await
        .unwrap();
    client
        .publish("router.register", kept_msg.clone().into())
        .await
        .unwrap();
    wait_status(r.addr(), "ttl.vcap.me", 200).await;
    // The refreshed route outlives several TTLs while the other one is pruned.
    let refresher = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let _ = client
                    .publish("router.register", kept_msg.clone().into())
                    .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    wait_status(r.addr(), "ttl.vcap.me", 404).await;
    assert_eq!(get(r.addr(), "kept.vcap.me", "/").await.status, 200);
    assert!(r.handle.metrics().nats_pruned.get() >= 1);
    refresher.abort();
}

#[tokio::test]
async fn pruning_is_suspended_while_nats_is_down_and_timers_refresh_on_reconnect() {
    let mut nats = NatsServer::start(None).await;
    let ttl = Duration::from_secs(1);
    let r = router_on(&nats, ttl, Duration::from_millis(100)).await;
    let client = emitter(&nats).await;
    let b = backend("survivor").await;
    client
        .publish(
            "router.register",
            register_json(b.addr.port(), &["s.vcap.me"]).into(),
        )
        .await
        .unwrap();
    wait_status(r.addr(), "s.vcap.me", 200).await;

    let port = nats.port;
    nats.stop().await;
    let metrics = r.handle.metrics().clone();
    berth_testkit::wait_until("router notices NATS is down", WAIT, || {
        let m = metrics.clone();
        async move { m.nats_connected.get() == 0 }
    })
    .await;
    // Well past the TTL: the route must still be served (the backend is fine).
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(get(r.addr(), "s.vcap.me", "/").await.status, 200);
    assert_eq!(r.handle.metrics().nats_pruned.get(), 0);

    let nats = NatsServer::start(Some(port)).await;
    let watcher = emitter(&nats).await;
    let mut starts = watcher.subscribe("router.start").await.unwrap();
    watcher.flush().await.unwrap();
    berth_testkit::wait_until("router reconnects", WAIT, || {
        let m = metrics.clone();
        async move { m.nats_connected.get() == 1 }
    })
    .await;
    // Reconnected: the timer restarted, so the route is still there right now...
    assert_eq!(get(r.addr(), "s.vcap.me", "/").await.status, 200);
    // ...router.start was re-announced (it may have raced our subscription; ask via greet)...
    let announced = tokio::time::timeout(Duration::from_secs(2), starts.next())
        .await
        .is_ok()
        || watcher.request("router.greet", "".into()).await.is_ok();
    assert!(announced);
    // ...and without re-registration it is pruned one TTL later.
    wait_status(r.addr(), "s.vcap.me", 404).await;
}
