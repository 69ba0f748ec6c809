//! Every route of [`super::routes`] against a real server with ACLs on: 401 without a
//! token, 403 with a valid token that lacks the route's capability. The router is built
//! from that list alone, so a route added later is in this test the moment it exists.

use std::time::Duration;

use berth_util::shutdown::Shutdown;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Access, routes};
use crate::ServerConfig;

/// A concrete URL path for a route pattern, naming the app `demo/x` where one is named.
fn sample(method: &Method, path: &str, access: Access) -> String {
    let concrete = path
        .replace("/v1/apps/{*path}", "/v1/apps/demo/x")
        .replace("{*path}", "d-1763800000000123")
        .replace("{op}", "ps")
        .replace("{name}", "p1")
        .replace("{accessor}", "a1");
    let concrete = if path == "/v1/apps/{*path}" && method == Method::POST {
        format!("{concrete}/scale")
    } else {
        concrete
    };
    match access {
        Access::App(_, super::auth::AppIn::Query) => format!("{concrete}?app=demo/x"),
        _ => concrete,
    }
}

/// A server with ACLs on, in this process (the audit tests use it too).
pub(super) struct Acl {
    pub(super) base: String,
    http: reqwest::Client,
    pub(super) shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

impl Acl {
    pub(super) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::for_test(dir.path());
        config.acl = true;
        config.registry_http = None;
        let shutdown = Shutdown::new();
        let handle = crate::start(config, &shutdown)
            .await
            .expect("server starts");
        Acl {
            base: format!("http://{}", handle.http_addr()),
            http: reqwest::Client::new(),
            shutdown,
            _dir: dir,
        }
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = tokio::time::timeout(Duration::from_secs(20), r.send())
            .await
            .expect("answers")
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn every_route_refuses_no_token_and_a_token_without_the_capability() {
    let s = Acl::start().await;
    let (status, boot) = s.call(Method::POST, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, StatusCode::OK, "{boot}");
    let root = boot["secret_id"].as_str().unwrap().to_string();
    // A token whose only rule grants nothing any route needs.
    let (status, body) = s
        .call(
            Method::PUT,
            "/v1/acl/policy/nothing",
            Some(&root),
            Some(json!({"rules":[{"nodes":"no-such-node","capabilities":["node-write"]}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, weak) = s
        .call(
            Method::POST,
            "/v1/acl/token",
            Some(&root),
            Some(json!({"name":"weak","policies":["nothing"]})),
        )
        .await;
    let weak = weak["secret_id"].as_str().unwrap().to_string();

    let all = routes();
    let public: Vec<_> = all
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| (r.method.clone(), r.path))
        .collect();
    assert_eq!(
        public,
        [(Method::POST, "/v1/acl/bootstrap")],
        "only bootstrap is public"
    );
    for r in &all {
        if r.access == Access::Public {
            continue;
        }
        let path = sample(&r.method, r.path, r.access);
        let (status, body) = s.call(r.method.clone(), &path, None, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{} {path} without a token: {body}",
            r.method
        );
        assert_eq!(body["code"], "acl_token_missing", "{} {path}", r.method);
        let (status, body) = s.call(r.method.clone(), &path, Some(&weak), None).await;
        if r.access == Access::AnyToken {
            assert!(
                status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                "{} {path} refused a valid token: {status} {body}",
                r.method
            );
        } else {
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{} {path} with a weak token: {body}",
                r.method
            );
            assert_eq!(body["code"], "permission_denied");
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("token weak (accessor "), "{message}");
        }
    }
    s.shutdown.trigger();
}

#[tokio::test]
async fn a_reader_is_refused_deploys_and_sees_only_its_apps() {
    let s = Acl::start().await;
    let (_, boot) = s.call(Method::POST, "/v1/acl/bootstrap", None, None).await;
    let root = boot["secret_id"].as_str().unwrap().to_string();
    for id in ["demo/a", "prod/b"] {
        let spec = json!({"id": id, "cmd": "sleep 1000", "instances": 0, "cpus": 0.1, "mem": 16});
        let (status, body) = s
            .call(Method::POST, "/v1/apps", Some(&root), Some(spec))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    s.call(
        Method::PUT,
        "/v1/acl/policy/ro",
        Some(&root),
        Some(json!({"rules":[{"apps":"demo/*","capabilities":["read"]}]})),
    )
    .await;
    let (_, ro) = s
        .call(
            Method::POST,
            "/v1/acl/token",
            Some(&root),
            Some(json!({"name":"ro","policies":["ro"]})),
        )
        .await;
    let ro = ro["secret_id"].as_str().unwrap().to_string();
    let (status, body) = s.call(Method::GET, "/v1/apps", Some(&ro), None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<_> = body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["spec"]["id"]
                .as_str()
                .or(a["id"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["demo/a"], "{body}");
    let (status, _) = s
        .call(Method::GET, "/v1/apps/demo/a", Some(&ro), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .call(Method::GET, "/v1/apps/prod/b", Some(&ro), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("lacks the read capability on app prod/b"),
        "{body}"
    );
    let spec = json!({"id": "demo/new", "cmd": "sleep 1", "instances": 0, "cpus": 0.1, "mem": 16});
    let (status, body) = s
        .call(Method::POST, "/v1/apps", Some(&ro), Some(spec))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = s
        .call(Method::DELETE, "/v1/apps/demo/a", Some(&ro), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.shutdown.trigger();
}
