//! Any request to any registry endpoint gets an answer below 500, never a panic.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use berth_registry::http::{AppState, router};
use berth_registry::model::BeatTimings;
use berth_registry::push::{PushOptions, PushService};
use berth_registry::{CoreOptions, Registry};
use proptest::prelude::*;
use tower::ServiceExt;

const PATHS: &[&str] = &[
    "/nacos/v1/ns/instance",
    "/nacos/v1/ns/instance/beat",
    "/nacos/v1/ns/instance/list",
    "/nacos/v1/ns/service",
    "/nacos/v1/ns/service/list",
    "/nacos/v1/ns/operator/metrics",
    "/nacos/v1/cs/configs",
    "/nacos/v1/cs/configs/listener",
    "/nacos/v1/cs/history",
    "/nacos/v1/cs/history/previous",
    "/nacos/v2/cs/config",
    "/nacos/v2/cs/history",
    "/nacos/v2/cs/history/list",
    "/nacos/v2/cs/history/previous",
    "/nacos/v2/cs/history/rollback",
    "/v1/agent/service/register",
    "/v1/agent/service/deregister/x",
    "/v1/agent/check/pass/service:x",
    "/v1/agent/services",
    "/v1/catalog/services",
    "/v1/catalog/service/x",
    "/v1/health/service/x",
    "/v1/kv/x",
    "/v1/kv/a/b",
    "/v1/kv/",
    "/v1/txn",
    "/v1/session/create",
    "/v1/session/info/x",
    "/v1/session/renew/x",
    "/v1/session/destroy/x",
    "/v1/session/list",
];

const KEYS: &[&str] = &[
    "serviceName",
    "ip",
    "port",
    "clusterName",
    "healthy",
    "enabled",
    "ephemeral",
    "weight",
    "metadata",
    "beat",
    "groupName",
    "namespaceId",
    "clusters",
    "healthyOnly",
    "udpPort",
    "clientIP",
    "pageNo",
    "pageSize",
    "protectThreshold",
    "index",
    "wait",
    "passing",
    "tag",
    "dataId",
    "group",
    "tenant",
    "content",
    "type",
    "search",
    "nid",
    "id",
    "recurse",
    "keys",
    "separator",
    "raw",
    "flags",
    "cas",
    "release",
    "casMd5",
    "Listening-Configs",
    "config_tags",
];

fn state(rt: &tokio::runtime::Runtime) -> AppState {
    rt.block_on(async {
        let registry = Registry::start(CoreOptions::default()).unwrap();
        let push: Arc<PushService> = PushService::bind(
            "127.0.0.1".parse().unwrap(),
            PushOptions::default(),
            BeatTimings::default(),
        )
        .await
        .unwrap();
        AppState {
            registry,
            push,
            beat: BeatTimings::default(),
            lists: Default::default(),
            http_addr: "127.0.0.1:8848".parse().unwrap(),
            cluster: None,
            configs: Arc::new(berth_registry::config_center::ConfigCenter::new(
                berth_kv::KvHandle::new(Arc::new(
                    berth_kv::SqliteKv::in_memory(berth_registry::config_center::kv_options(
                        berth_kv::KvOptions::default(),
                    ))
                    .unwrap(),
                )),
                berth_registry::config_center::DEFAULT_MAX_CONTENT,
            )),
            sessions: Some(berth_registry::sessions::SessionStore::new(
                berth_kv::KvHandle::new(Arc::new(
                    berth_kv::SqliteKv::in_memory(berth_registry::sessions::kv_options(
                        berth_kv::KvOptions::default(),
                    ))
                    .unwrap(),
                )),
            )),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn every_request_gets_a_client_answer(
        method in prop::sample::select(vec![Method::GET, Method::POST, Method::PUT, Method::DELETE]),
        path in prop::sample::select(PATHS.to_vec()),
        pairs in prop::collection::vec((prop::sample::select(KEYS.to_vec()), ".{0,40}"), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..200),
        form in any::<bool>(),
    ) {
        thread_local! {
            static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        }
        RT.with(|rt| {
            let app = router(state(rt));
            let mut query = String::new();
            for (k, v) in &pairs {
                // "wait" would make a valid blocking query hold; keep it short.
                let v = if *k == "wait" { "10ms" } else { v.as_str() };
                query.push_str(&format!("{k}={}&", urlencode(v)));
            }
            let uri = format!("{path}?{query}");
            let mut req = Request::builder().method(method).uri(uri);
            if form {
                req = req.header("content-type", "application/x-www-form-urlencoded");
            }
            let req = req.body(Body::from(body)).unwrap();
            let status = rt.block_on(async { app.oneshot(req).await.unwrap().status() });
            prop_assert!(status.as_u16() < 500, "status {status}");
            Ok(())
        })?;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
