//! Black-box: ACLs on the real `berth server` process. It refuses to listen off loopback
//! without them; with `--acl` the first token comes from one bootstrap (a second needs
//! the reset file), every call needs a token, a token does only what its policies grant,
//! and a revoked or expired token, or a narrowed policy, is refused on its next request.

mod common;

use berth_testkit::wait_until;
use common::{WAIT, acl_server, acl_token, api_call, berth, loopback_server};
use reqwest::Method;
use serde_json::json;

#[test]
fn refuses_to_listen_off_loopback_without_acls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // The refusal comes before any socket is bound, so nothing listens on 0.0.0.0.
    for (listen, agent) in [("0.0.0.0:0", "127.0.0.1:0"), ("127.0.0.1:0", "0.0.0.0:0")] {
        let out = berth(&[
            "server",
            "--listen",
            listen,
            "--agent-listen",
            agent,
            "--data-dir",
            data,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {listen} / {agent}");
        assert!(
            stderr.contains("without ACLs: set acl = true (--acl)"),
            "{stderr}"
        );
        assert!(stderr.contains("berth acl bootstrap"), "{stderr}");
    }
}

#[tokio::test]
async fn bootstrap_once_then_401_and_403_per_capability() {
    let dir = tempfile::tempdir().unwrap();
    let server = acl_server(dir.path(), &[]).await;
    let api = server.addr("http");

    let (status, body) = api_call(api, Method::GET, "/v1/apps", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "acl_token_missing");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("berth acl bootstrap"),
        "{body}"
    );

    let (status, boot) = api_call(api, Method::POST, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 200, "{boot}");
    assert_eq!(boot["policies"], json!(["management"]));
    assert!(
        boot["accessor_id"].is_string() && boot["create_time_ms"].is_u64(),
        "{boot}"
    );
    let root = boot["secret_id"].as_str().unwrap().to_string();
    assert!(root.len() >= 32, "at least 128 bits");

    // A second bootstrap is refused, naming the reset file; the file allows one more.
    let (status, body) = api_call(api, Method::POST, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "acl_bootstrap_done");
    let reset = dir.path().join("acl-bootstrap-reset");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(reset.to_str().unwrap()),
        "{body}"
    );
    std::fs::write(&reset, "").unwrap();
    let (status, again) = api_call(api, Method::POST, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 200, "{again}");
    assert!(!reset.exists(), "the reset file is consumed");
    let (status, _) = api_call(api, Method::POST, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 409);

    let (status, body) = api_call(api, Method::GET, "/v1/apps", Some("wrong"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("acl_token_invalid"))
    );
    let (status, _) = api_call(api, Method::GET, "/v1/apps", Some(&root), None).await;
    assert_eq!(status, 200);

    // Policies: bad ones are refused naming the field.
    let (status, body) = api_call(
        api,
        Method::PUT,
        "/v1/acl/policy/bad",
        Some(&root),
        Some(json!({"rules":[{"apps":"demo/*","capabilities":["reed"]}]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "rules[0].capabilities[0]", "{body}");
    for (name, rules) in [
        ("ro", json!([{"apps":"demo/*","capabilities":["read"]}])),
        (
            "deployer",
            json!([{"apps":"demo/*","capabilities":["read","deploy"]}]),
        ),
    ] {
        let (status, body) = api_call(
            api,
            Method::PUT,
            &format!("/v1/acl/policy/{name}"),
            Some(&root),
            Some(json!({ "rules": rules })),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let ro = acl_token(api, &root, "ro", &["ro"], None).await;
    let deployer = acl_token(api, &root, "deployer", &["deployer"], None).await;

    let spec =
        |id: &str| json!({"id": id, "cmd": "sleep 1000", "instances": 0, "cpus": 0.1, "mem": 16});
    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&ro),
        Some(spec("demo/x")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "permission_denied");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("token ro (accessor ")
            && message.ends_with("lacks the deploy capability on app demo/x"),
        "{message}"
    );
    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&deployer),
        Some(spec("demo/x")),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&deployer),
        Some(spec("prod/y")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().ends_with("on app prod/y"),
        "{body}"
    );
    let (status, _) = api_call(
        api,
        Method::POST,
        "/v1/apps",
        Some(&root),
        Some(spec("prod/y")),
    )
    .await;
    assert_eq!(status, 201);

    // The read-only token sees only its apps, and nothing of ACLs or debug views.
    let (status, body) = api_call(api, Method::GET, "/v1/apps", Some(&ro), None).await;
    assert_eq!(status, 200);
    let ids: Vec<_> = body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["spec"]["id"].clone())
        .collect();
    assert_eq!(ids, [json!("demo/x")], "{body}");
    let (status, _) = api_call(api, Method::GET, "/v1/apps", Some(&root), None).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/acl/tokens",
        "/v1/debug/state",
        "/metrics",
        "/v1/apps/prod/y",
    ] {
        let (status, body) = api_call(api, Method::GET, path, Some(&ro), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (status, me) = api_call(api, Method::GET, "/v1/acl/token/self", Some(&ro), None).await;
    assert_eq!((status, me["name"].as_str()), (200, Some("ro")), "{me}");
    assert!(
        me.get("secret_id").is_none() && me.get("secret_hash").is_none(),
        "{me}"
    );
    let (_, tokens) = api_call(api, Method::GET, "/v1/acl/tokens", Some(&root), None).await;
    assert!(
        !tokens.to_string().contains(&ro),
        "a list never carries secrets"
    );
    drop(server);
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = acl_server(dir.path(), &[]).await;
    let api = server.addr("http");
    let (_, boot) = api_call(api, Method::POST, "/v1/acl/bootstrap", None, None).await;
    let root = boot["secret_id"].as_str().unwrap().to_string();
    let (status, _) = api_call(
        api,
        Method::PUT,
        "/v1/acl/policy/ro",
        Some(&root),
        Some(json!({"rules":[{"apps":"*","capabilities":["read"]}]})),
    )
    .await;
    assert_eq!(status, 200);

    let ro = acl_token(api, &root, "ro", &["ro"], None).await;
    let (status, me) = api_call(api, Method::GET, "/v1/acl/token/self", Some(&ro), None).await;
    assert_eq!(status, 200);
    let accessor = me["accessor_id"].as_str().unwrap().to_string();
    let (status, _) = api_call(api, Method::GET, "/v1/apps", Some(&ro), None).await;
    assert_eq!(status, 200);
    let (status, _) = api_call(
        api,
        Method::DELETE,
        &format!("/v1/acl/token/{accessor}"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = api_call(api, Method::GET, "/v1/apps", Some(&ro), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("acl_token_invalid")),
        "revoked"
    );

    let short = acl_token(api, &root, "short", &["ro"], Some("1s")).await;
    let (status, _) = api_call(api, Method::GET, "/v1/apps", Some(&short), None).await;
    assert_eq!(status, 200, "valid before its expiry");
    wait_until("the 1s token expires", WAIT, || async {
        api_call(api, Method::GET, "/v1/apps", Some(&short), None)
            .await
            .0
            == 401
    })
    .await;

    // A policy change applies from the next request on, to tokens already in use.
    let narrow = acl_token(api, &root, "narrow", &["ro"], None).await;
    let (status, body) = api_call(api, Method::GET, "/v1/apps/demo/x", Some(&narrow), None).await;
    assert_eq!(status, 404, "may read, nothing there: {body}");
    let (status, _) = api_call(
        api,
        Method::PUT,
        "/v1/acl/policy/ro",
        Some(&root),
        Some(json!({"rules":[{"apps":"other/*","capabilities":["read"]}]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = api_call(api, Method::GET, "/v1/apps/demo/x", Some(&narrow), None).await;
    assert_eq!(status, 403, "the narrowed policy: {body}");
    drop(server);
}

#[tokio::test]
async fn without_acls_everything_is_open_and_the_acl_endpoints_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = loopback_server(dir.path(), &["--registry-http", "off"]).await;
    let api = server.addr("http");
    let (status, _) = api_call(api, Method::GET, "/v1/apps", None, None).await;
    assert_eq!(status, 200);
    let (status, body) = api_call(api, Method::POST, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "acl_disabled");
    assert!(
        body["message"].as_str().unwrap().contains("--acl"),
        "{body}"
    );
    drop(server);
}
