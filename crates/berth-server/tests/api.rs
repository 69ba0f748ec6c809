//! The REST API in process: apps lifecycle, versions, validation errors, limits.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::json;

const SPEC_TOML: &str = r#"
id = "shop/web"
cmd = "exec ./web --port $PORT"
instances = 2
mem = 64
"#;

#[tokio::test]
async fn app_lifecycle_creates_versions() {
    let s = TestServer::start().await;
    let (code, body) = s
        .send(Method::POST, "/v1/apps", "application/toml", SPEC_TOML)
        .await;
    assert_eq!(code, 201, "{body}");
    let v1 = body["version"].as_u64().unwrap();
    assert_eq!(body["change"], "created");

    let (code, body) = s
        .send(Method::POST, "/v1/apps", "application/toml", SPEC_TOML)
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "already_exists");

    let (code, body) = s.get("/v1/apps/shop/web").await;
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["instances"], 2);
    assert_eq!(body["status"]["wanted"], 2);
    assert!(
        body["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "app_created")
    );

    // No agent runs the instances, so the create's deployment is still running: a
    // second change is refused, naming it, until forced.
    let first = body_deployment(&s, "shop/web").await;
    let (code, body) = s
        .post_json("/v1/apps/shop/web/scale", json!({"instances": 5}))
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["code"], "deployment_running");
    assert_eq!(body["deployment"], first);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(first.as_str().unwrap()),
        "{body}"
    );
    let (code, body) = s
        .post_json(
            "/v1/apps/shop/web/scale?force=true",
            json!({"instances": 5}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["change"], "scaled");
    assert_eq!(body["deployment"]["kind"], "scale");
    assert_eq!(body["deployment"]["state"], "running");
    let (_, old) = s
        .get(&format!("/v1/deployments/{}", first.as_str().unwrap()))
        .await;
    assert_eq!(old["state"], "cancelled", "{old}");
    assert!(
        old["reason"].as_str().unwrap().contains("superseded"),
        "{old}"
    );
    assert_eq!(
        body["config_version"].as_u64().unwrap(),
        v1,
        "scale keeps instances"
    );

    let (code, body) = s
        .post_json("/v1/apps/shop/web/restart?force=true", json!({}))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["change"], "restarted");
    assert!(body["config_version"].as_u64().unwrap() > v1);
    assert_eq!(body["spec"]["instances"], 5);

    let updated = json!({"id": "shop/web", "cmd": "exec ./web2", "instances": 1});
    let (code, body) = s
        .send(
            Method::PUT,
            "/v1/apps/shop/web?force=1",
            "application/json",
            updated.to_string(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["change"], "updated");

    let (code, body) = s.get("/v1/apps/shop/web/versions").await;
    assert_eq!(code, 200);
    let versions = body["versions"].as_array().unwrap();
    let changes: Vec<_> = versions
        .iter()
        .map(|v| v["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["updated", "restarted", "scaled", "created"]);
    let (code, body) = s.get(&format!("/v1/apps/shop/web/versions/{v1}")).await;
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["instances"], 2);

    let (_, list) = s.get("/v1/apps").await;
    assert_eq!(list["apps"].as_array().unwrap().len(), 1);

    let (code, _) = s
        .send(Method::DELETE, "/v1/apps/shop/web", "application/json", "")
        .await;
    assert_eq!(code, 200);
    let (code, body) = s.get("/v1/apps/shop/web").await;
    assert_eq!(code, 404);
    assert_eq!(body["code"], "not_found");
    let (code, _) = s
        .send(Method::DELETE, "/v1/apps/shop/web", "application/json", "")
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn bad_spec_names_every_field_and_changes_nothing() {
    let s = TestServer::start().await;
    s.deploy(json!({"id": "a", "cmd": "sleep 1", "instances": 1}))
        .await;
    let bad = json!({
        "id": "a",
        "cmd": "x",
        "args": ["y"],
        "cpus": -1,
        "mem": "lots",
        "colour": "red",
        "health_checks": [{"protocol": "http", "interval_seconds": 0}],
    });
    let (code, body) = s
        .send(
            Method::PUT,
            "/v1/apps/a",
            "application/json",
            bad.to_string(),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["code"], "invalid_spec");
    let fields: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_string())
        .collect();
    for f in [
        "cmd",
        "cpus",
        "mem",
        "colour",
        "health_checks[0].path",
        "health_checks[0].interval_seconds",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| !e["fix"].as_str().unwrap().is_empty())
    );
    let (_, versions) = s.get("/v1/apps/a/versions").await;
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        1,
        "nothing stored"
    );

    let (code, body) = s
        .send(Method::POST, "/v1/apps", "application/json", "{not json")
        .await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = s
        .send(
            Method::POST,
            "/v1/apps",
            "application/toml",
            "id = \"x\"\ncmd = ",
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("TOML"));
}

#[tokio::test]
async fn wrong_requests_get_clear_errors() {
    let s = TestServer::start().await;
    s.deploy(json!({"id": "a", "cmd": "sleep 1"})).await;
    let (code, body) = s
        .send(
            Method::PUT,
            "/v1/apps/b",
            "application/json",
            json!({"id": "a", "cmd": "x"}).to_string(),
        )
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["field"], "id");
    let (code, body) = s
        .post_json("/v1/apps/a/scale", json!({"instances": -1}))
        .await;
    assert_eq!(code, 400);
    assert_eq!(body["field"], "instances");
    let (code, body) = s.post_json("/v1/apps/a/scale", json!({})).await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = s
        .post_json("/v1/apps/zzz/scale", json!({"instances": 1}))
        .await;
    assert_eq!(code, 404);
    let (code, body) = s.post_json("/v1/apps/a/explode", json!({})).await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = s.get("/v1/apps/Bad_Id").await;
    assert_eq!(code, 400);
    assert_eq!(body["field"], "id");
    let (code, body) = s.get("/v1/nope").await;
    assert_eq!(code, 404);
    assert!(body["message"].as_str().unwrap().contains("/v1/nope"));
    let (code, _) = s.get("/v1/apps/a/versions/abc").await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn oversized_body_gets_413_with_reason() {
    let s = TestServer::start_in(tempfile::tempdir().unwrap(), |c| c.max_body_bytes = 1000).await;
    let big = json!({"id": "a", "cmd": "x".repeat(5000)}).to_string();
    let (code, body) = s
        .send(Method::POST, "/v1/apps", "application/json", big)
        .await;
    assert_eq!(code, 413);
    assert_eq!(body["code"], "body_too_large");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("1000-byte limit")
    );
    let (_, list) = s.get("/v1/apps").await;
    assert!(list["apps"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn desired_state_survives_restart() {
    let s = TestServer::start().await;
    s.deploy(json!({"id": "keep/me", "cmd": "sleep 1", "instances": 4}))
        .await;
    s.post_json("/v1/apps/keep/me/scale?force=true", json!({"instances": 2}))
        .await;
    let running = body_deployment(&s, "keep/me").await;
    let dir = s.stop().await;
    let s = TestServer::start_in(dir, |_| {}).await;
    // The server goes on following the deployment it had started.
    assert_eq!(body_deployment(&s, "keep/me").await, running);
    let (_, all) = s.get("/v1/deployments?app=keep/me").await;
    let states: Vec<_> = all["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["running", "cancelled"], "{all}");
    let (code, body) = s.get("/v1/apps/keep/me").await;
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["instances"], 2);
    let (_, v) = s.get("/v1/apps/keep/me/versions").await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    // A new change gets a version above the stored ones.
    let (_, body) = s
        .post_json("/v1/apps/keep/me/scale?force=true", json!({"instances": 3}))
        .await;
    assert!(body["version"].as_u64() > v["versions"][0]["version"].as_u64());
}

#[tokio::test]
async fn service_endpoints_answer() {
    let s = TestServer::start().await;
    let (code, body) = s.get("/health").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let (code, info) = s.get("/v1/info").await;
    assert_eq!(code, 200);
    assert_eq!(info["role"], "server");
    let text = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("berth_server_reconcile_passes"), "{text}");
    let (code, state) = s.get("/v1/debug/state").await;
    assert_eq!(code, 200);
    assert!(state["nodes"].is_object());
}

#[tokio::test]
async fn redeploying_the_same_spec_makes_no_version() {
    let s = TestServer::start().await;
    let spec = json!({"id": "same", "cmd": "sleep 1", "instances": 2});
    let first = s.deploy(spec.clone()).await;
    let again = s.deploy(spec).await;
    assert_eq!(first["version"], again["version"]);
    let (_, v) = s.get("/v1/apps/same/versions").await;
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
}

/// The id of the app's running deployment, from the app view.
async fn body_deployment(s: &TestServer, app: &str) -> serde_json::Value {
    let (code, body) = s.get(&format!("/v1/apps/{app}")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["deployment"]["state"], "running", "{body}");
    body["deployment"]["id"].clone()
}
