//! Which routes the audit trail covers, from the route table alone, and what an entry
//! holds for allowed and refused requests against a real server with ACLs on.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::audited;
use crate::api::auth::{Access, AppIn};
use crate::api::routes;
use crate::api::tests::Acl;
use berth_core::acl::Capability;

#[test]
fn the_route_table_alone_decides_what_is_audited() {
    for r in routes() {
        let expected = r.method != Method::GET
            || matches!(
                r.access,
                Access::App(
                    Capability::Logs | Capability::Diagnose | Capability::Exec,
                    _
                )
            );
        assert_eq!(
            audited(&r.method, r.access),
            expected,
            "{} {}",
            r.method,
            r.path
        );
    }
    // Exec is a GET (a WebSocket upgrade), audited for its capability.
    assert!(
        routes()
            .iter()
            .any(|r| r.path.starts_with("/v1/exec/") && audited(&r.method, r.access)),
        "the exec route is missing or not audited"
    );
    // A route added later with the exec capability is audited whatever its method.
    assert!(audited(
        &Method::GET,
        Access::App(Capability::Exec, AppIn::Query)
    ));
    assert!(audited(&Method::POST, Access::SomeApp(Capability::Read)));
    assert!(!audited(&Method::GET, Access::Management));
}

#[test]
fn every_route_has_one_well_formed_action_name() {
    let all = routes();
    let mut seen = std::collections::HashSet::new();
    for r in &all {
        assert!(
            !r.action.is_empty()
                && r.action
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || "._{},".contains(c)),
            "{} {}: {:?}",
            r.method,
            r.path,
            r.action
        );
        assert!(seen.insert(r.action), "{} is used twice", r.action);
    }
}

/// The audit entries `token` may read (as JSON), newest first.
async fn trail(s: &Acl, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = s
        .call(Method::GET, &format!("/v1/audit{query}"), Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn allowed_and_refused_requests_are_audited_with_who_what_and_outcome() {
    let s = Acl::start().await;
    let (_, boot) = s.call(Method::POST, "/v1/acl/bootstrap", None, None).await;
    let root = boot["secret_id"].as_str().unwrap().to_string();
    let root_accessor = boot["accessor_id"].as_str().unwrap().to_string();

    let spec = json!({"id": "demo/a", "cmd": "sleep 1000", "instances": 0, "cpus": 0.1, "mem": 16});
    let (status, body) = s
        .call(Method::POST, "/v1/apps?force=true", Some(&root), Some(spec))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
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
            Some(json!({"name":"reader","policies":["ro"]})),
        )
        .await;
    let ro_secret = ro["secret_id"].as_str().unwrap().to_string();
    let ro_accessor = ro["accessor_id"].as_str().unwrap().to_string();
    let (status, _) = s
        .call(Method::DELETE, "/v1/apps/demo/a", Some(&ro_secret), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = s
        .call(Method::POST, "/v1/apps/demo/a/scale", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Reads are not audited, and only management reads the trail.
    s.call(Method::GET, "/v1/apps", Some(&ro_secret), None)
        .await;
    let (status, _) = s
        .call(Method::GET, "/v1/audit", Some(&ro_secret), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let entries = trail(&s, &root, "").await;
    let summary: Vec<(String, String, Value, Value)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["decision"].as_str().unwrap().to_string(),
                e["status"].clone(),
                e["target"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "app.scale".into(),
                "denied".into(),
                json!(401),
                json!("app:demo/a")
            ),
            (
                "app.delete".into(),
                "denied".into(),
                json!(403),
                json!("app:demo/a")
            ),
            (
                "acl.token.create".into(),
                "allowed".into(),
                json!(200),
                Value::Null
            ),
            (
                "acl.policy.put".into(),
                "allowed".into(),
                json!(200),
                json!("policy:ro")
            ),
            (
                "app.create".into(),
                "allowed".into(),
                json!(201),
                json!("app:demo/a")
            ),
            (
                "acl.bootstrap".into(),
                "allowed".into(),
                json!(200),
                Value::Null
            ),
        ],
        "{entries:#?}"
    );
    let by = |action: &str| entries.iter().find(|e| e["action"] == action).unwrap();
    let create = by("app.create");
    assert_eq!(create["accessor_id"], root_accessor.as_str());
    assert_eq!(create["token_name"], "bootstrap");
    assert_eq!(create["params"], json!({"force": "true"}));
    assert!(
        create["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{create}"
    );
    let denied = by("app.delete");
    assert_eq!(denied["accessor_id"], ro_accessor.as_str());
    assert_eq!(denied["token_name"], "reader");
    assert_eq!(by("app.scale")["accessor_id"], Value::Null, "no token sent");
    let token = by("acl.token.create");
    assert_eq!(token["params"], json!({"name": "reader", "policies": "ro"}));
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [&root, &ro_secret] {
        assert!(!text.contains(secret.as_str()), "a secret in the trail");
    }

    // Diagnostics are audited with their parameters, whatever their answer (here no
    // agent runs the app: 404).
    let (status, _) = s
        .call(
            Method::GET,
            "/v1/diag/grep?app=demo/a&pattern=GET&ignore_case=true",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let diag = trail(&s, &root, "?action=diag.grep").await;
    assert_eq!(diag.len(), 1, "{diag:?}");
    assert_eq!(diag[0]["target"], "app:demo/a");
    assert_eq!(
        diag[0]["params"],
        json!({"app": "demo/a", "pattern": "GET", "ignore_case": "true"})
    );
    assert_eq!(diag[0]["status"], 404);

    // Filters: by accessor, by app, by action, a page and the next.
    let mine = trail(&s, &root, &format!("?accessor={ro_accessor}")).await;
    assert_eq!(mine.len(), 1);
    let app = trail(&s, &root, "?app=demo/a&action=app.create").await;
    assert_eq!(app[0]["action"], "app.create");
    assert_eq!(app.len(), 1);
    let (_, page) = s
        .call(Method::GET, "/v1/audit?limit=2", Some(&root), None)
        .await;
    let next = page["next"].as_u64().expect("a cursor after a full page");
    let rest = trail(&s, &root, &format!("?before={next}")).await;
    assert_eq!(
        rest.len(),
        entries.len() + 1 - 2,
        "the diag entry came on top"
    );
    s.shutdown.trigger();
}
