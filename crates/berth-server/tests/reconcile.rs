//! The reconciler against fake agents speaking the real gRPC stream.

mod common;

use std::time::Duration;

use berth_testkit::fake_agent::{FakeAgent, NodeSpec};
use berth_testkit::{wait_for, wait_until};
use common::{TestServer, WAIT};
use serde_json::json;

async fn agents(s: &TestServer, n: usize, mem: u64) -> Vec<FakeAgent> {
    let mut out = Vec::new();
    for i in 1..=n {
        out.push(
            FakeAgent::connect(s.agent_addr(), NodeSpec::new(&format!("n{i}"), 4.0, mem)).await,
        );
    }
    out
}

fn total(agents: &[FakeAgent], app: &str) -> usize {
    agents.iter().map(|a| a.running_of(app)).sum()
}

#[tokio::test]
async fn deploys_spreads_and_scales() {
    let s = TestServer::start().await;
    let a = agents(&s, 2, 1024).await;
    s.deploy(json!({"id": "shop/web", "cmd": "x", "instances": 3, "mem": 100}))
        .await;
    wait_until("3 running", WAIT, || async { total(&a, "shop/web") == 3 }).await;
    assert!(
        a.iter().all(|x| x.running_of("shop/web") >= 1),
        "spread over both nodes"
    );
    wait_until("status shows 3", WAIT, || async {
        s.status("shop/web").await["running"] == 3
    })
    .await;

    s.post_json(
        "/v1/apps/shop/web/scale?force=true",
        json!({"instances": 1}),
    )
    .await;
    wait_until("scaled down to 1", WAIT, || async {
        total(&a, "shop/web") == 1
    })
    .await;
    s.post_json(
        "/v1/apps/shop/web/scale?force=true",
        json!({"instances": 4}),
    )
    .await;
    wait_until("scaled up to 4", WAIT, || async {
        total(&a, "shop/web") == 4
    })
    .await;
    // Level-triggered state settles: no extra starts once satisfied.
    let starts: usize = a.iter().map(|x| x.starts()).sum();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.iter().map(|x| x.starts()).sum::<usize>(), starts);

    let (_, inst) = s.get("/v1/instances?app=shop/web").await;
    assert_eq!(inst["instances"].as_array().unwrap().len(), 4);
    let (_, nodes) = s.get("/v1/nodes").await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 2);
    assert!(
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "ready")
    );

    s.send(
        reqwest::Method::DELETE,
        "/v1/apps/shop/web",
        "application/json",
        "",
    )
    .await;
    wait_until("deleted app stopped", WAIT, || async {
        total(&a, "shop/web") == 0
    })
    .await;
}

#[tokio::test]
async fn failed_instance_is_replaced_with_backoff() {
    let s = TestServer::start().await;
    let a = agents(&s, 1, 1024).await;
    s.deploy(
        json!({"id": "crashy", "cmd": "x", "backoff_seconds": 0.2, "max_launch_delay_seconds": 1}),
    )
    .await;
    wait_until("running", WAIT, || async { a[0].running_of("crashy") == 1 }).await;
    for round in 1..=3 {
        let id = a[0].running()[0].instance_id.clone();
        a[0].fail(&id).await;
        wait_until("replaced", WAIT, || async {
            a[0].running()
                .iter()
                .any(|i| i.app_id == "crashy" && i.instance_id != id)
        })
        .await;
        assert_eq!(a[0].starts(), round + 1);
    }
    let status = s.status("crashy").await;
    assert_eq!(status["failures"], 3, "{status}");
    let (_, ev) = s.get("/v1/events/recent?app=crashy").await;
    let kinds: Vec<_> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.iter().any(|k| k == "launch_delayed"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "instance_state"), "{kinds:?}");
}

#[tokio::test]
async fn lost_node_instances_move_elsewhere() {
    let s = TestServer::start().await;
    let a = agents(&s, 2, 1024).await;
    s.deploy(json!({"id": "web", "cmd": "x", "instances": 2}))
        .await;
    wait_until("2 running on 2 nodes", WAIT, || async {
        a[0].running_of("web") == 1 && a[1].running_of("web") == 1
    })
    .await;
    a[0].vanish();
    wait_until("both on n2", WAIT, || async { a[1].running_of("web") == 2 }).await;
    let (_, nodes) = s.get("/v1/nodes").await;
    let n1 = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n1")
        .unwrap()
        .clone();
    assert_eq!(n1["status"], "lost");
    let (_, ev) = s.get("/v1/events/recent").await;
    assert!(
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "node_lost")
    );
}

#[tokio::test]
async fn unplaceable_app_says_why() {
    let s = TestServer::start().await;
    let _a = agents(&s, 1, 300).await;
    s.deploy(json!({"id": "big", "cmd": "x", "mem": 512})).await;
    let why = wait_for("why", WAIT, || async {
        s.status("big").await["why"].as_str().map(str::to_string)
    })
    .await;
    assert!(
        why.contains("no node has 512 MiB memory free; largest free is 300 MiB on n1"),
        "{why}"
    );
}

#[tokio::test]
async fn unique_constraint_is_respected() {
    let s = TestServer::start().await;
    let a = agents(&s, 2, 1024).await;
    s.deploy(
        json!({"id": "uniq", "cmd": "x", "instances": 3, "constraints": [["hostname", "UNIQUE"]]}),
    )
    .await;
    let why = wait_for("why", WAIT, || async {
        s.status("uniq").await["why"].as_str().map(str::to_string)
    })
    .await;
    assert!(why.contains("hostname UNIQUE"), "{why}");
    wait_until("2 running", WAIT, || async { total(&a, "uniq") == 2 }).await;
    assert!(a.iter().all(|x| x.running_of("uniq") == 1));
}

#[tokio::test]
async fn labels_constraints_place_on_matching_nodes() {
    let s = TestServer::start().await;
    let mut n1 = NodeSpec::new("n1", 4.0, 1024);
    n1.labels.push(("rack".into(), "r1".into()));
    let mut n2 = NodeSpec::new("n2", 4.0, 1024);
    n2.labels.push(("rack".into(), "r2".into()));
    let a1 = FakeAgent::connect(s.agent_addr(), n1).await;
    let a2 = FakeAgent::connect(s.agent_addr(), n2).await;
    s.deploy(
        json!({"id": "r", "cmd": "x", "instances": 3, "constraints": [["rack", "LIKE", "r2"]]}),
    )
    .await;
    wait_until("3 on r2", WAIT, || async { a2.running_of("r") == 3 }).await;
    assert_eq!(a1.running_of("r"), 0);
}

#[tokio::test]
async fn restart_replaces_every_instance_without_gap() {
    let s = TestServer::start().await;
    let a = agents(&s, 1, 1024).await;
    let body = s
        .deploy(json!({"id": "r", "cmd": "x", "instances": 2}))
        .await;
    let v1 = body["config_version"].as_u64().unwrap();
    wait_until("2 running", WAIT, || async { a[0].running_of("r") == 2 }).await;
    let (_, body) = s
        .post_json("/v1/apps/r/restart?force=true", json!({}))
        .await;
    let v2 = body["config_version"].as_u64().unwrap();
    assert!(v2 > v1);
    wait_until("all on new version", WAIT, || async {
        let r = a[0].running();
        assert!(r.len() >= 2, "capacity dropped during the restart: {r:?}");
        r.len() == 2 && r.iter().all(|i| i.app_version == v2)
    })
    .await;
    assert_eq!(a[0].stops(), 2);
}

#[tokio::test]
async fn server_restart_adopts_running_instances() {
    let s = TestServer::start().await;
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("n1", 4.0, 1024)).await;
    s.deploy(json!({"id": "stay", "cmd": "x", "instances": 2}))
        .await;
    wait_until("2 running", WAIT, || async { a.running_of("stay") == 2 }).await;
    let running = a.running();
    drop(a);
    let dir = s.stop().await;

    // The new server waits for agents; the agent comes back with what it runs.
    let s = TestServer::start_in(dir, |c| c.startup_grace = Duration::from_millis(500)).await;
    let mut spec = NodeSpec::new("n1", 4.0, 1024);
    spec.running = running;
    let a = FakeAgent::connect(s.agent_addr(), spec).await;
    wait_until("status 2 running", WAIT, || async {
        s.status("stay").await["running"] == 2
    })
    .await;
    wait_until("reconciler active", WAIT, || async {
        s.get("/v1/info").await.1["reconciler"] == "active"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.starts(), 0, "nothing restarted");
    assert_eq!(a.stops(), 0, "nothing stopped");
}

#[tokio::test]
async fn surplus_reported_instances_are_stopped_youngest_first() {
    let s = TestServer::start().await;
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("n1", 4.0, 1024)).await;
    s.deploy(json!({"id": "many", "cmd": "x", "instances": 3}))
        .await;
    wait_until("3 running", WAIT, || async { a.running_of("many") == 3 }).await;
    let mut by_age = a.running();
    by_age.sort_by_key(|i| i.started_at_ms);
    s.post_json("/v1/apps/many/scale?force=true", json!({"instances": 1}))
        .await;
    wait_until("1 left", WAIT, || async { a.running_of("many") == 1 }).await;
    let left = &a.running()[0];
    assert!(left.started_at_ms <= by_age.last().unwrap().started_at_ms);
    assert_eq!(left.instance_id, by_age[0].instance_id, "the oldest stays");
}

#[tokio::test]
async fn unreadable_store_never_stops_running_instances() {
    let s = TestServer::start().await;
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("n1", 4.0, 1024)).await;
    s.deploy(json!({"id": "precious", "cmd": "x", "instances": 2}))
        .await;
    wait_until("2 running", WAIT, || async {
        a.running_of("precious") == 2
    })
    .await;

    // Damage the stored spec behind the server's back.
    let db = rusqlite::Connection::open(s.dir.path().join("server.db")).unwrap();
    db.execute("UPDATE app_versions SET spec = '{broken'", [])
        .unwrap();
    drop(db);
    wait_until("store error reported", WAIT, || async {
        let (_, ev) = s.get("/v1/events/recent").await;
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "store_error")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(a.stops(), 0, "a failing store is not read as 'no apps'");
    assert_eq!(a.running_of("precious"), 2);
    let (code, body) = s.get("/v1/apps").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("precious"),
        "{body}"
    );
}

#[tokio::test]
async fn silent_node_that_resumes_is_usable_again() {
    let s = TestServer::start().await;
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("n1", 4.0, 1024)).await;
    a.inner.lock().unwrap().silent = true;
    wait_until("lost", WAIT, || async {
        s.get("/v1/nodes").await.1["nodes"][0]["status"] == "lost"
    })
    .await;
    a.inner.lock().unwrap().silent = false;
    wait_until("ready", WAIT, || async {
        s.get("/v1/nodes").await.1["nodes"][0]["status"] == "ready"
    })
    .await;
    s.deploy(json!({"id": "after", "cmd": "x"})).await;
    wait_until("placed on the resumed node", WAIT, || async {
        a.running_of("after") == 1
    })
    .await;
}

#[tokio::test]
async fn instances_reported_without_resources_still_hold_their_share() {
    let s = TestServer::start().await;
    let body = s
        .deploy(json!({"id": "other", "cmd": "x", "instances": 2, "mem": 128}))
        .await;
    let version = body["config_version"].as_u64().unwrap();
    let mut spec = NodeSpec::new("n1", 4.0, 300);
    for i in 0..2 {
        spec.running.push(berth_proto::agent::v1::InstanceStatus {
            instance_id: format!("other.{i}"),
            app_id: "other".into(),
            app_version: version,
            state: berth_proto::agent::v1::InstanceState::Running as i32,
            resources: None,
            ..Default::default()
        });
    }
    let a = FakeAgent::connect(s.agent_addr(), spec).await;
    s.deploy(json!({"id": "b", "cmd": "x", "mem": 100})).await;
    let why = wait_for("why", WAIT, || async {
        s.status("b").await["why"].as_str().map(str::to_string)
    })
    .await;
    assert!(why.contains("largest free is 44 MiB on n1"), "{why}");
    assert_eq!(a.starts(), 0);
}

#[tokio::test]
async fn update_replaces_old_instances_only_once_new_ones_are_healthy() {
    use berth_proto::agent::v1::InstanceState;
    let s = TestServer::start().await;
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("n1", 4.0, 1024)).await;
    let checks = json!([{"protocol": "tcp", "interval_seconds": 1, "timeout_seconds": 1}]);
    let v1 = s
        .deploy(json!({"id": "hc", "cmd": "v1", "instances": 2, "health_checks": checks}))
        .await["config_version"]
        .as_u64()
        .unwrap();
    wait_until("2 started", WAIT, || async { a.running_of("hc") == 2 }).await;
    for i in a.running() {
        a.set_state(&i.instance_id, InstanceState::Healthy).await;
    }
    // Only one extra instance at a time: maximum_over_capacity 0.5 of 2.
    let v2 = s
        .deploy(
            json!({"id": "hc", "cmd": "v2", "instances": 2, "health_checks": checks,
                       "upgrade_strategy": {"maximum_over_capacity": 0.5}}),
        )
        .await["config_version"]
        .as_u64()
        .unwrap();
    wait_until("one new started", WAIT, || async {
        a.running().iter().filter(|i| i.app_version == v2).count() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old_left = a.running().iter().filter(|i| i.app_version == v1).count();
    assert_eq!(
        old_left, 2,
        "running but not healthy: no old instance may go"
    );
    assert_eq!(
        a.running().iter().filter(|i| i.app_version == v2).count(),
        1,
        "capped"
    );

    // Each new instance that turns healthy lets one old one go and the next new one start.
    for _ in 0..2 {
        let fresh = wait_for("a new unhealthy-yet instance", WAIT, || async {
            a.running()
                .into_iter()
                .find(|i| i.app_version == v2 && i.state == InstanceState::Running as i32)
        })
        .await;
        a.set_state(&fresh.instance_id, InstanceState::Healthy)
            .await;
    }
    wait_until("all new and healthy, old gone", WAIT, || async {
        let r = a.running();
        r.len() == 2 && r.iter().all(|i| i.app_version == v2)
    })
    .await;
}
