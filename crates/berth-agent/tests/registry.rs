//! Registration in a (fake) Nacos registry: only once healthy, with Berth's metadata,
//! kept alive by beats, withdrawn when a check fails, and deregistered before SIGTERM.

mod common;

use std::time::Duration;

use axum::http::Method;
use berth_agent::{AgentConfig, AgentHandle, start_with_token};
use berth_proto::agent::v1 as pb;
use common::fake_nacos::FakeNacos;
use common::fake_server::{FakeServer, stop_cmd};
use tokio_util::sync::CancellationToken;

async fn agent(
    dir: &std::path::Path,
    server: &FakeServer,
    nacos: &FakeNacos,
) -> (AgentHandle, CancellationToken) {
    let mut config = AgentConfig::for_test(dir, &[server.addr]);
    config.registry_http = Some(nacos.addr);
    config.registry_beat = Duration::from_millis(200);
    let token = CancellationToken::new();
    (
        start_with_token(config, token.clone()).await.unwrap(),
        token,
    )
}

fn start(id: &str, cmd: &str, checks: Vec<pb::HealthCheck>) -> pb::server_message::Kind {
    pb::server_message::Kind::Start(pb::StartInstance {
        instance_id: id.into(),
        app_id: "shop/web".into(),
        app_version: 4,
        cmd: cmd.into(),
        port_count: 1,
        routes: vec!["web.shop.test".into(), "shop.test/api".into()],
        health_checks: checks,
        ..Default::default()
    })
}

/// An HTTP server that starts listening only after a delay and, on SIGTERM, leaves a
/// marker file before it exits.
const SLOW_HTTP_APP: &str = r#"exec python3 -c '
import http.server, os, signal, sys, time
def term(*_):
    open("term.txt", "w").write("x")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
time.sleep(0.7)
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), http.server.SimpleHTTPRequestHandler).serve_forever()
'"#;

fn http_check() -> pb::HealthCheck {
    pb::HealthCheck {
        protocol: "http".into(),
        path: "/".into(),
        interval_seconds: 1,
        timeout_seconds: 1,
        grace_period_seconds: 10,
        ..Default::default()
    }
}

#[tokio::test]
async fn registers_once_healthy_beats_and_deregisters_before_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let server = FakeServer::start("s1", 200).await;
    let nacos = FakeNacos::start().await;
    let (_agent, _token) = agent(dir.path(), &server, &nacos).await;
    nacos.watch_marker(dir.path().join("instances/web-1/work/term.txt"));
    server.wait_hello().await;
    server
        .send(start("web-1", SLOW_HTTP_APP, vec![http_check()]))
        .await;
    let healthy = server.wait_event("web-1", pb::InstanceState::Healthy).await;
    common::wait_until("two beats", || {
        nacos.calls_of(Method::PUT, "/beat").len() >= 2
    })
    .await;

    let registers = nacos.calls_of(Method::POST, "/instance");
    assert_eq!(registers.len(), 1, "{registers:#?}");
    let register = &registers[0];
    assert!(register.serving, "registered before the instance served");
    let p = &register.params;
    assert_eq!(p["serviceName"], "shop.web");
    assert_eq!(p["groupName"], "DEFAULT_GROUP");
    assert_eq!(p["namespaceId"], "public");
    assert_eq!(p["ephemeral"], "true");
    assert_eq!(p["ip"], "127.0.0.1");
    assert_eq!(p["port"], healthy.ports[0].to_string());
    let metadata: serde_json::Value = serde_json::from_str(&p["metadata"]).unwrap();
    assert_eq!(metadata["berth.app"], "shop/web");
    assert_eq!(metadata["berth.instance"], "web-1");
    assert_eq!(metadata["berth.version"], "4");
    assert_eq!(metadata["berth.routes"], "web.shop.test,shop.test/api");
    let beat = &nacos.calls_of(Method::PUT, "/beat")[0].params;
    let body: serde_json::Value = serde_json::from_str(&beat["beat"]).unwrap();
    assert_eq!(body["port"], healthy.ports[0]);
    assert_eq!(body["serviceName"], "DEFAULT_GROUP@@shop.web");

    server.send(stop_cmd("web-1", 400, 3000)).await;
    let exited = server.wait_event("web-1", pb::InstanceState::Exited).await;
    let deregisters = nacos.calls_of(Method::DELETE, "/instance");
    assert_eq!(deregisters.len(), 1, "{:#?}", nacos.calls());
    assert!(
        !deregisters[0].terminated,
        "SIGTERM came before deregistration"
    );
    assert_eq!(deregisters[0].params["port"], healthy.ports[0].to_string());
    assert_eq!(
        exited.exit_code,
        Some(0),
        "the app exited on SIGTERM: {exited:?}"
    );
    assert!(dir.path().join("instances/web-1/work/term.txt").exists());
    // No beat after the deregistration.
    let last_delete = deregisters[0].at;
    assert!(
        nacos
            .calls_of(Method::PUT, "/beat")
            .iter()
            .all(|b| b.at < last_delete)
    );
}

#[tokio::test]
async fn a_failing_check_withdraws_the_instance_then_reports_it_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let server = FakeServer::start("s1", 200).await;
    let nacos = FakeNacos::start().await;
    let (_agent, _token) = agent(dir.path(), &server, &nacos).await;
    server.wait_hello().await;
    let check = pb::HealthCheck {
        protocol: "command".into(),
        command: vec!["/bin/sh".into(), "-c".into(), "test -f ok".into()],
        interval_seconds: 1,
        max_consecutive_failures: 2,
        ..Default::default()
    };
    server
        .send(start(
            "web-2",
            "touch ok; exec python3 -m http.server $PORT --bind 127.0.0.1",
            vec![check],
        ))
        .await;
    server.wait_event("web-2", pb::InstanceState::Healthy).await;
    common::wait_until("registered", || {
        nacos.calls_of(Method::POST, "/instance").len() == 1
    })
    .await;
    let ok = dir.path().join("instances/web-2/work/ok");
    std::fs::remove_file(&ok).unwrap();
    // One failure: out of the registry at once, not unhealthy yet.
    common::wait_until("deregistered", || {
        nacos.calls_of(Method::DELETE, "/instance").len() == 1
    })
    .await;
    let unhealthy = server
        .wait_event("web-2", pb::InstanceState::Unhealthy)
        .await;
    assert!(
        unhealthy.message.contains("2 times in a row"),
        "{}",
        unhealthy.message
    );
    let delete_at = nacos.calls_of(Method::DELETE, "/instance")[0].at;
    std::fs::write(&ok, "").unwrap();
    let mut healthy_again = None;
    common::wait_until("healthy and registered again", || {
        let registers = nacos.calls_of(Method::POST, "/instance");
        healthy_again = registers.into_iter().find(|c| c.at > delete_at);
        healthy_again.is_some()
    })
    .await;
    common::wait_until("healthy reported again", || {
        server
            .received()
            .iter()
            .filter(|m| matches!(&m.kind, Some(pb::agent_message::Kind::Event(e)) if e.instance.as_ref().is_some_and(|i| i.state == pb::InstanceState::Healthy as i32)))
            .count()
            >= 2
    })
    .await;
}

#[tokio::test]
async fn registration_survives_a_refusing_registry_and_a_forgetful_one() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let server = FakeServer::start("s1", 200).await;
    let nacos = FakeNacos::start().await;
    nacos.fail_next_registers(2);
    let (_agent, _token) = agent(dir.path(), &server, &nacos).await;
    server.wait_hello().await;
    server
        .send(start(
            "web-3",
            "exec python3 -m http.server $PORT --bind 127.0.0.1",
            vec![],
        ))
        .await;
    server.wait_event("web-3", pb::InstanceState::Healthy).await;
    common::wait_until("registered after two refusals, then beating", || {
        nacos.calls_of(Method::POST, "/instance").len() == 3
            && !nacos.calls_of(Method::PUT, "/beat").is_empty()
    })
    .await;
    // The registry lost the instance (restart, expiry): the next beat says so.
    nacos.forget_next_beats(1);
    common::wait_until("registered again after a not-found beat", || {
        nacos.calls_of(Method::POST, "/instance").len() == 4
    })
    .await;
}
