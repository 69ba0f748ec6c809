//! Black-box tests of `berth agent`: the real binary against a fake server (a real
//! tonic `AgentLink` service in the test), real processes as instances.

mod common;

use std::net::SocketAddr;

use berth_proto::agent::v1 as pb;
use berth_testkit::fake_server::FakeServer;
use berth_testkit::{BerthProcess, InstanceReaper, temp_dir, wait_for, wait_until};
use common::{BIN, WAIT_AGENT, berth, cli, http_get};

/// The fake server as the tests here see it: its id is `fake`, it asks for a heartbeat
/// every 200 ms.
async fn fake_server() -> (FakeServer, SocketAddr) {
    let server = FakeServer::start("fake", 200).await.with_wait(WAIT_AGENT);
    let addr = server.addr;
    (server, addr)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        })
        .unwrap_or(false)
}

async fn start_agent(dir: &std::path::Path, server: SocketAddr) -> BerthProcess {
    let server = server.to_string();
    let data = dir.display().to_string();
    BerthProcess::start(
        BIN,
        &[
            "agent",
            "--server",
            &server,
            "--registry",
            "127.0.0.1:9848",
            "--registry-http",
            "off",
            "--data-dir",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--labels",
            "rack=r1,disk=ssd",
            "--node-id",
            "bb-node",
        ],
    )
    .await
}

#[tokio::test]
async fn agent_runs_instances_and_they_outlive_an_agent_restart() {
    let dir = temp_dir();
    let _reaper = InstanceReaper::new([dir.path()]);
    let (server, addr) = fake_server().await;
    let agent = start_agent(dir.path(), addr).await;
    let status = agent.addr("http");
    let hello = server.wait_hellos(1).await;
    assert_eq!(hello.node_id, "bb-node");
    assert_eq!(hello.labels.get("disk").map(String::as_str), Some("ssd"));

    server
        .send(pb::server_message::Kind::Start(pb::StartInstance {
            instance_id: "web-1".into(),
            app_id: "shop/web".into(),
            app_version: 1,
            cmd: "exec python3 -m http.server $PORT --bind 127.0.0.1".into(),
            port_count: 1,
            ..Default::default()
        }))
        .await;
    let healthy = server.wait_event("web-1", pb::InstanceState::Healthy).await;
    let (code, body) = http_get(status, "/health").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"server_id\":\"fake\""), "{body}");
    let (_, metrics) = http_get(status, "/metrics").await;
    assert!(
        metrics.contains("berth_agent_instances{state=\"healthy\"} 1"),
        "{metrics}"
    );
    let (_, list) = http_get(status, "/v1/instances").await;
    assert!(list.contains("\"instance_id\":\"web-1\""), "{list}");

    // SIGTERM: the agent exits cleanly, the instance keeps serving.
    let exit = agent.terminate().await;
    assert!(exit.success(), "{exit:?}");
    assert!(alive(healthy.pid), "the instance died with the agent");
    let port = healthy.ports[0] as u16;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    );

    let again = start_agent(dir.path(), addr).await;
    let hello = server.wait_hellos(2).await;
    let adopted = hello
        .instances
        .iter()
        .find(|i| i.instance_id == "web-1")
        .expect("re-adopted instance in the Hello");
    assert_eq!(adopted.pid, healthy.pid, "not restarted");

    // A crashed agent (SIGKILL, no cleanup at all) loses nothing either.
    again.kill().await;
    assert!(alive(healthy.pid));
    let again = start_agent(dir.path(), addr).await;
    let hello = server.wait_hellos(3).await;
    assert!(
        hello
            .instances
            .iter()
            .any(|i| i.instance_id == "web-1" && i.pid == healthy.pid),
        "{hello:?}"
    );

    server
        .send(pb::server_message::Kind::Stop(pb::StopInstance {
            instance_id: "web-1".into(),
            drain_ms: 0,
            grace_ms: 2000,
            reason: "test over".into(),
        }))
        .await;
    wait_until("the instance is gone", WAIT_AGENT, || async {
        !alive(healthy.pid)
    })
    .await;
    assert!(again.terminate().await.success());
}

#[tokio::test]
async fn bad_flags_and_a_busy_data_folder_are_named() {
    let dir = temp_dir();
    let _reaper = InstanceReaper::new([dir.path()]);
    let data = dir.path().display().to_string();
    let out = berth(&[
        "agent",
        "--server",
        "127.0.0.1:1",
        "--data-dir",
        &data,
        "--labels",
        "rack",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--labels") && err.contains("k=v"), "{err}");

    let out = berth(&["agent", "--data-dir", &data]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));

    let out = berth(&[
        "agent",
        "--server",
        "127.0.0.1:1",
        "--data-dir",
        &data,
        "--port-range",
        "9-1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port_range"));

    let (_server, addr) = fake_server().await;
    let first = start_agent(dir.path(), addr).await;
    let out = berth(&[
        "agent",
        "--server",
        &addr.to_string(),
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&data), "names the locked folder: {err}");
    assert!(first.terminate().await.success());
}

/// The whole path with real roles: the server places instances on the agent, the agent
/// runs them, registers them in the registry once healthy and deregisters them when the
/// server scales the app down.
#[tokio::test]
async fn with_real_server_and_registry_healthy_instances_are_registered_then_withdrawn() {
    let dir = temp_dir();
    let _reaper = InstanceReaper::new([dir.path().join("agent")]);
    let path = |name: &str| dir.path().join(name).display().to_string();
    let registry = BerthProcess::start(
        BIN,
        &[
            "registry",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
            &path("registry"),
        ],
    )
    .await;
    let server = BerthProcess::start(
        BIN,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--data-dir",
            &path("server"),
            "--startup-grace",
            "500ms",
        ],
    )
    .await;
    let agent = BerthProcess::start(
        BIN,
        &[
            "agent",
            "--server",
            &server.addr("grpc").to_string(),
            "--registry",
            &registry.addr("grpc").to_string(),
            "--registry-http",
            &registry.addr("http").to_string(),
            "--data-dir",
            &path("agent"),
            "--listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let app = dir.path().join("app.toml");
    std::fs::write(
        &app,
        r#"
id = "bb/web"
cmd = "exec python3 -m http.server $PORT --bind 127.0.0.1"
instances = 2
cpus = 0.1
mem = 32
ports = 1
routes = ["web.bb.test"]
[[health_checks]]
protocol = "http"
path = "/"
interval_seconds = 1
timeout_seconds = 1
grace_period_seconds = 5
"#,
    )
    .unwrap();
    let api = server.addr("http");
    let deployed = cli(api, &["apps", "deploy", app.to_str().unwrap()]).await;
    assert!(deployed.ok, "berth apps deploy: {}", deployed.stderr);

    let list = "/nacos/v1/ns/instance/list?serviceName=bb.web";
    let hosts = wait_for("two registered instances", WAIT_AGENT, || async {
        let (_, body) = http_get(registry.addr("http"), list).await;
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        let hosts = value["hosts"].as_array()?.clone();
        (hosts.len() == 2).then_some(hosts)
    })
    .await;
    for host in &hosts {
        assert_eq!(host["metadata"]["berth.app"], "bb/web");
        assert_eq!(host["metadata"]["berth.routes"], "web.bb.test");
        let port = host["port"].as_u64().unwrap() as u16;
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        );
    }

    let scaled = cli(api, &["apps", "scale", "bb/web", "0"]).await;
    assert!(scaled.ok, "berth apps scale: {}", scaled.stderr);
    wait_until("the registry holds none", WAIT_AGENT, || async {
        let (_, body) = http_get(registry.addr("http"), list).await;
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["hosts"].as_array().map(|h| h.is_empty()))
            .unwrap_or(false)
    })
    .await;
    for process in [agent, server, registry] {
        assert!(process.terminate().await.success());
    }
}
