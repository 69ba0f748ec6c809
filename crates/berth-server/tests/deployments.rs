//! Deployments against fake agents speaking the real gRPC stream: steps and progress,
//! the deadline and crash-loop failures with rollback, DELETE (rollback) and force
//! (stop where it stands), rollback of a finished deployment, and the replacement of an
//! instance its agent found unhealthy.

mod common;

use berth_proto::agent::v1::InstanceState;
use berth_testkit::fake_agent::{FakeAgent, NodeSpec};
use berth_testkit::{wait_for, wait_until};
use common::{TestServer, WAIT};
use reqwest::Method;
use serde_json::{Value, json};

fn spec(cmd: &str) -> Value {
    json!({
        "id": "web", "cmd": cmd, "instances": 2,
        "backoff_seconds": 0.05, "backoff_factor": 1.0,
        "health_checks": [{"protocol": "tcp", "interval_seconds": 1, "timeout_seconds": 1}]
    })
}

async fn put(s: &TestServer, spec: &Value, query: &str) -> (u16, Value) {
    s.send(
        Method::PUT,
        &format!("/v1/apps/web{query}"),
        "application/json",
        spec.to_string(),
    )
    .await
}

/// Marks every running instance of `version` healthy, as a passing check would.
async fn heal(a: &FakeAgent, version: u64) {
    for i in a.running() {
        if i.app_version == version && i.state == InstanceState::Running as i32 {
            a.set_state(&i.instance_id, InstanceState::Healthy).await;
        }
    }
}

async fn deployment(s: &TestServer, id: &str) -> Value {
    let (code, d) = s.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(code, 200, "{d}");
    d
}

/// Waits for the deployment to reach `state`, healing instances of `heal_version`.
async fn wait_state(s: &TestServer, a: &FakeAgent, id: &str, state: &str, heal_version: u64) {
    wait_until(&format!("{id} {state}"), WAIT, || async {
        heal(a, heal_version).await;
        deployment(s, id).await["state"] == state
    })
    .await;
}

/// An app at version v1 with 2 healthy instances; returns (agent, v1).
async fn healthy_v1(s: &TestServer) -> (FakeAgent, u64) {
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("n1", 8.0, 4096)).await;
    let (code, body) = put(s, &spec("v1"), "").await;
    assert_eq!(code, 201, "{body}");
    let v1 = body["config_version"].as_u64().unwrap();
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["deployment"]["kind"], "create");
    wait_state(s, &a, &id, "succeeded", v1).await;
    (a, v1)
}

fn steps(d: &Value) -> Vec<String> {
    d["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["message"].as_str().unwrap().to_string())
        .collect()
}

fn versions_running(a: &FakeAgent) -> Vec<u64> {
    a.running().iter().map(|i| i.app_version).collect()
}

async fn event_types(s: &TestServer) -> Vec<String> {
    let (_, body) = s.get("/v1/events/recent?app=web&limit=500").await;
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_roll_reports_each_step_and_succeeds() {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let sse = reqwest::get(s.url(
        "/v1/events?app=web&types=deployment_started,deployment_step,deployment_succeeded,instance_health_changed",
    ))
    .await
    .unwrap();
    let mut sse = sse.bytes_stream();
    let (code, body) = put(&s, &spec("v2"), "").await;
    assert_eq!(code, 200, "{body}");
    let v2 = body["config_version"].as_u64().unwrap();
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["deployment"]["kind"], "update");
    assert_eq!(body["deployment"]["from"]["config_version"], v1);
    wait_state(&s, &a, &id, "succeeded", v2).await;

    let d = deployment(&s, &id).await;
    assert_eq!(
        d["progress"],
        json!({"wanted": 2, "ready": 2, "active": 2, "leaving": 0})
    );
    let steps = steps(&d);
    let has = |needle: &str| steps.iter().filter(|s| s.contains(needle)).count();
    assert_eq!(has("starting new instance"), 2, "{steps:#?}");
    assert!(has("is healthy (") == 2, "{steps:#?}");
    assert_eq!(has("draining instance"), 2, "{steps:#?}");
    assert_eq!(has(") stopped"), 2, "{steps:#?}");
    assert!(steps.last().unwrap().starts_with("succeeded"), "{steps:#?}");
    assert!(versions_running(&a).iter().all(|v| *v == v2));

    let types = event_types(&s).await;
    for t in [
        "deployment_started",
        "deployment_step",
        "deployment_succeeded",
        "instance_health_changed",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }
    // The same story on the SSE stream, in order.
    let mut text = String::new();
    while !text.contains("event: deployment_succeeded") {
        use futures::StreamExt;
        let chunk = tokio::time::timeout(WAIT, sse.next())
            .await
            .expect("SSE events")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"deployment_started"), "{text}");
    assert!(kinds.contains(&"deployment_step"), "{text}");
    assert!(kinds.contains(&"instance_health_changed"), "{text}");
    assert!(text.contains(&format!("{id}: web succeeded")), "{text}");

    let (_, list) = s.get("/v1/deployments?app=web").await;
    assert_eq!(list["deployments"].as_array().unwrap().len(), 2);
    assert_eq!(list["deployments"][0]["id"], id.as_str(), "newest first");
}

#[tokio::test]
async fn a_version_that_never_gets_healthy_fails_at_its_deadline_and_rolls_back() {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let old: Vec<String> = a.running().into_iter().map(|i| i.instance_id).collect();
    let (code, body) = put(&s, &spec("v2"), "?timeout=1s").await;
    assert_eq!(code, 200, "{body}");
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    // v2 instances start but never pass their checks.
    wait_state(&s, &a, &id, "rolled_back", v1).await;

    let d = deployment(&s, &id).await;
    assert!(
        d["reason"]
            .as_str()
            .unwrap()
            .contains("not done within 1 s"),
        "{d}"
    );
    let all = steps(&d);
    assert!(
        all.iter().any(|s| s.starts_with("rolling back to version")),
        "{all:#?}"
    );
    // The old instances served throughout and are still the ones running.
    let now: Vec<String> = a.running().into_iter().map(|i| i.instance_id).collect();
    assert_eq!(now, old);
    let (_, app) = s.get("/v1/apps/web").await;
    assert_eq!(app["config_version"], v1);
    assert_eq!(app["change"], "rolled_back");
    assert_eq!(app["spec"]["cmd"], "v1");
    let types = event_types(&s).await;
    assert!(types.iter().any(|t| t == "deployment_failed"), "{types:?}");
    assert!(
        types.iter().any(|t| t == "deployment_rolled_back"),
        "{types:?}"
    );
}

#[tokio::test]
async fn a_busy_app_refuses_changes_and_delete_rolls_back() {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let (_, body) = put(&s, &spec("v2"), "").await;
    let id = body["deployment"]["id"].as_str().unwrap().to_string();

    // A second change while v2 rolls: 409 naming the running deployment.
    let (code, err) = put(&s, &spec("v3"), "").await;
    assert_eq!(code, 409, "{err}");
    assert_eq!(err["code"], "deployment_running");
    assert_eq!(err["deployment"], id.as_str());
    let (code, err) = s
        .post_json("/v1/apps/web/scale", json!({"instances": 5}))
        .await;
    assert_eq!((code, err["deployment"].clone()), (409, json!(id)));
    let (code, err) = s.post_json("/v1/apps/web/restart", json!({})).await;
    assert_eq!(code, 409, "{err}");

    let (code, d) = s
        .send(Method::DELETE, &format!("/v1/deployments/{id}"), "", "")
        .await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["state"], "rolling_back");
    wait_state(&s, &a, &id, "rolled_back", v1).await;
    assert!(versions_running(&a).iter().all(|v| *v == v1));

    // Ended: deleting again is refused with what to do instead.
    let (code, err) = s
        .send(Method::DELETE, &format!("/v1/deployments/{id}"), "", "")
        .await;
    assert_eq!(code, 409, "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("already ended"),
        "{err}"
    );
    let (code, err) = s.get("/v1/deployments/d-12").await;
    assert_eq!(code, 404, "{err}");
    let (code, err) = s.get("/v1/deployments/nope").await;
    assert_eq!(code, 400, "{err}");
    let (code, err) = put(&s, &spec("v9"), "?timeout=soon").await;
    assert_eq!((code, err["field"].clone()), (400, json!("timeout")));
}

#[tokio::test]
async fn force_stops_a_deployment_where_it_stands() {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let (_, body) = put(&s, &spec("v2"), "").await;
    let v2 = body["config_version"].as_u64().unwrap();
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    wait_until("v2 instances started", WAIT, || async {
        versions_running(&a).iter().filter(|v| **v == v2).count() == 2
    })
    .await;
    let (code, d) = s
        .send(
            Method::DELETE,
            &format!("/v1/deployments/{id}?force=true"),
            "",
            "",
        )
        .await;
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["state"], "cancelled");
    assert!(d["reason"].as_str().unwrap().contains("force"), "{d}");
    // Nothing rolled back: the app stays at v2 and the old instances keep serving
    // while the new ones are not healthy.
    let (_, app) = s.get("/v1/apps/web").await;
    assert_eq!(app["config_version"], v2);
    assert!(app.get("deployment").is_none(), "{app}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(versions_running(&a).iter().filter(|v| **v == v1).count(), 2);
    // The app is free for the next change.
    let (code, body) = put(&s, &spec("v3"), "").await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn a_crash_looping_version_fails_before_its_deadline_and_says_why() {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let (_, body) = put(&s, &spec("v2"), "?timeout=60s").await;
    let v2 = body["config_version"].as_u64().unwrap();
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    wait_until("v2 fails three times", WAIT, || async {
        for i in a.running() {
            if i.app_version == v2 {
                a.fail(&i.instance_id).await;
            }
        }
        deployment(&s, &id).await["state"] != "running"
    })
    .await;
    wait_state(&s, &a, &id, "rolled_back", v1).await;
    let d = deployment(&s, &id).await;
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("keep failing"), "{reason}");
    assert!(reason.contains("exited with code 1"), "{reason}");
    assert!(
        steps(&d)
            .iter()
            .any(|s| s.contains("failed: exited with code 1")),
        "{d}"
    );
}

#[tokio::test]
async fn a_finished_deployment_can_be_rolled_back() {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let (_, body) = put(&s, &spec("v2"), "").await;
    let v2 = body["config_version"].as_u64().unwrap();
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    wait_state(&s, &a, &id, "succeeded", v2).await;
    let (code, back) = s
        .post_json(&format!("/v1/deployments/{id}/rollback"), json!({}))
        .await;
    assert_eq!(code, 200, "{back}");
    assert_eq!(back["kind"], "rollback");
    assert_eq!(back["to"]["config_version"], v1);
    let back_id = back["id"].as_str().unwrap().to_string();
    wait_state(&s, &a, &back_id, "succeeded", v1).await;
    assert!(versions_running(&a).iter().all(|v| *v == v1));
    let (_, app) = s.get("/v1/apps/web").await;
    assert_eq!(app["spec"]["cmd"], "v1");
    // Rolling back the first roll again: the app changed since, so it is refused.
    let (code, err) = s
        .post_json(&format!("/v1/deployments/{id}/rollback"), json!({}))
        .await;
    assert_eq!(code, 409, "{err}");
}

#[tokio::test]
async fn an_unhealthy_instance_is_replaced_after_its_backoff() {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let victim = a.running()[0].instance_id.clone();
    a.set_state(&victim, InstanceState::Unhealthy).await;
    wait_until(
        "the unhealthy instance is stopped and replaced",
        WAIT,
        || async {
            heal(&a, v1).await;
            let ids: Vec<String> = a.running().into_iter().map(|i| i.instance_id).collect();
            !ids.contains(&victim) && ids.len() == 2
        },
    )
    .await;
    let status = s.status("web").await;
    assert_eq!(status["failures"], 1, "{status}");
    assert!(
        status["last_failure"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unhealthy"),
        "{status}"
    );
    let (_, app) = s.get("/v1/apps/web").await;
    let health: Vec<&str> = app["health_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        health.iter().any(|m| m.contains("healthy -> unhealthy")),
        "{health:?}"
    );
    let stop = wait_for("the stop order", WAIT, || async {
        a.inner
            .lock()
            .unwrap()
            .stops
            .iter()
            .find(|s| s.instance_id == victim)
            .cloned()
    })
    .await;
    assert!(stop.reason.starts_with("unhealthy"), "{}", stop.reason);
}

#[tokio::test]
async fn a_restarted_server_goes_on_with_the_roll_it_had_started() {
    restarted_server_goes_on(std::time::Duration::ZERO).await;
}

/// The agent reconnects only after the restarted server's start-up grace: the server
/// re-sends the starts it does not see, and the roll still ends with every step said once.
#[tokio::test]
async fn a_restarted_server_goes_on_when_the_agent_comes_back_late() {
    restarted_server_goes_on(std::time::Duration::from_millis(1500)).await;
}

async fn restarted_server_goes_on(agent_late_by: std::time::Duration) {
    let s = TestServer::start().await;
    let (a, v1) = healthy_v1(&s).await;
    let (_, body) = put(&s, &spec("v2"), "").await;
    let v2 = body["config_version"].as_u64().unwrap();
    let id = body["deployment"]["id"].as_str().unwrap().to_string();
    wait_until("both v2 instances started and said so", WAIT, || async {
        let d = deployment(&s, &id).await;
        versions_running(&a).iter().filter(|v| **v == v2).count() == 2
            && steps(&d)
                .iter()
                .filter(|s| s.contains("starting new instance"))
                .count()
                == 2
    })
    .await;
    let running = a.running();
    drop(a);
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, |_| {}).await;
    // Simulates an agent that is slow to come back; nothing to wait for here.
    tokio::time::sleep(agent_late_by).await;
    let mut node = NodeSpec::new("n1", 8.0, 4096);
    node.running = running;
    let a = FakeAgent::connect(s.agent_addr(), node).await;
    assert_eq!(deployment(&s, &id).await["state"], "running");
    wait_state(&s, &a, &id, "succeeded", v2).await;
    assert!(versions_running(&a).iter().all(|v| *v == v2));
    assert!(!versions_running(&a).contains(&v1));
    let steps = steps(&deployment(&s, &id).await);
    // What was said before the restart is not said again.
    let started = steps.iter().filter(|s| s.contains("starting new instance"));
    assert_eq!(started.count(), 2, "{steps:#?}");
}
