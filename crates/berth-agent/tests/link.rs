//! The agent against fake servers over real gRPC: Hello, heartbeats, events, commands,
//! failover between servers, and instances that outlive the agent.

mod common;

use berth_agent::{AgentConfig, AgentHandle, start_with_token};
use berth_proto::agent::v1 as pb;
use common::fake_server::{FakeServer, start_cmd, stop_cmd};
use tokio_util::sync::CancellationToken;

async fn agent(dir: &std::path::Path, servers: &[&FakeServer]) -> (AgentHandle, CancellationToken) {
    let addrs: Vec<_> = servers.iter().map(|s| s.addr).collect();
    let mut config = AgentConfig::for_test(dir, &addrs);
    config.labels.insert("rack".into(), "r1".into());
    let token = CancellationToken::new();
    let handle = start_with_token(config, token.clone()).await.unwrap();
    (handle, token)
}

const HTTP_APP: &str = "exec python3 -m http.server $PORT --bind 127.0.0.1";

#[tokio::test]
async fn hello_heartbeats_events_and_idempotent_commands() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let server = FakeServer::start("s1", 100).await;
    let (agent, _token) = agent(dir.path(), &[&server]).await;
    let hello = server.wait_hello().await;
    assert_eq!(hello.node_id, agent.node_id());
    assert_eq!(hello.drivers, vec!["process".to_string()]);
    assert_eq!(hello.labels.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(hello.address, "127.0.0.1");
    let total = hello.total.unwrap();
    assert!(total.cpus >= 1.0 && total.mem_mib > 0, "{total:?}");
    assert!(hello.instances.is_empty());
    // The node id is kept for the next start.
    let kept = std::fs::read_to_string(dir.path().join("node_id")).unwrap();
    assert_eq!(kept.trim(), agent.node_id());

    server.send(start_cmd("web-1", HTTP_APP, 1)).await;
    let running = server.wait_event("web-1", pb::InstanceState::Running).await;
    let healthy = server.wait_event("web-1", pb::InstanceState::Healthy).await;
    assert_eq!(healthy.pid, running.pid);
    // Level-triggered: heartbeats carry the full list.
    server
        .wait_for("a heartbeat listing web-1 healthy", |m| match &m.kind {
            Some(pb::agent_message::Kind::Heartbeat(h)) => h
                .instances
                .iter()
                .any(|i| i.instance_id == "web-1" && i.state == pb::InstanceState::Healthy as i32)
                .then_some(()),
            _ => None,
        })
        .await;
    // A repeated start (a server retrying) runs nothing new.
    server.send(start_cmd("web-1", HTTP_APP, 1)).await;
    server.send(stop_cmd("web-1", 0, 2000)).await;
    let exited = server.wait_event("web-1", pb::InstanceState::Exited).await;
    assert_eq!(exited.pid, running.pid);
    let all = agent.instances();
    assert_eq!(all.len(), 1, "{all:?}");
    // The failure of a bad request reaches the server with the field named.
    let mut bad = pb::StartInstance {
        instance_id: "bad-1".into(),
        app_id: "shop/web".into(),
        ..Default::default()
    };
    bad.args = vec![];
    server.send(pb::server_message::Kind::Start(bad)).await;
    let failed = server.wait_event("bad-1", pb::InstanceState::Failed).await;
    assert!(failed.message.contains("cmd"), "{}", failed.message);
}

#[tokio::test]
async fn fails_over_to_the_second_server_and_keeps_instances_running() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let first = FakeServer::start("s1", 100).await;
    let second = FakeServer::start("s2", 100).await;
    let (agent, _token) = agent(dir.path(), &[&first, &second]).await;
    first.wait_hello().await;
    first.send(start_cmd("web-1", "exec sleep 300", 0)).await;
    let healthy = first.wait_event("web-1", pb::InstanceState::Healthy).await;

    first.kill();
    let hello = second.wait_hello().await;
    let carried = hello
        .instances
        .iter()
        .find(|i| i.instance_id == "web-1")
        .expect("the Hello to the second server lists the instance");
    assert_eq!(carried.pid, healthy.pid, "the instance was not restarted");
    assert_eq!(carried.state, pb::InstanceState::Healthy as i32);
    common::wait_until("link status names the second server", || {
        agent.link_status().server_id.as_deref() == Some("s2")
    })
    .await;

    second.send(stop_cmd("web-1", 0, 1000)).await;
    second.wait_event("web-1", pb::InstanceState::Exited).await;
}

#[tokio::test]
async fn keeps_retrying_an_unreachable_server_until_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let config = AgentConfig::for_test(dir.path(), &[addr]);
    let token = CancellationToken::new();
    let agent = start_with_token(config, token.clone()).await.unwrap();
    common::wait_until("the link reports the failure", || {
        agent
            .link_status()
            .last_error
            .is_some_and(|e| e.contains(&addr.to_string()))
    })
    .await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = FakeServer::serve(listener, "late", 100);
    server.wait_hello().await;
}

#[tokio::test]
async fn instances_outlive_the_agent_and_the_next_agent_re_adopts_them() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let server = FakeServer::start("s1", 100).await;
    let (agent, token) = agent(dir.path(), &[&server]).await;
    let node_id = agent.node_id().to_string();
    server.wait_hello().await;
    server.send(start_cmd("web-1", "exec sleep 300", 0)).await;
    let healthy = server.wait_event("web-1", pb::InstanceState::Healthy).await;
    token.cancel();
    tokio::time::timeout(common::WAIT, agent.finished())
        .await
        .unwrap();
    assert!(berth_agent::procfs::is_same_live_process(
        healthy.pid,
        berth_agent::procfs::stat(healthy.pid).unwrap().start_ticks
    ));

    let server2 = FakeServer::start("s2", 100).await;
    let (again, _token) = agent_on(dir.path(), &server2).await;
    assert_eq!(again.node_id(), node_id, "same node after a restart");
    let hello = server2.wait_hello().await;
    let adopted = &hello.instances[0];
    assert_eq!(
        (adopted.instance_id.as_str(), adopted.pid),
        ("web-1", healthy.pid)
    );
    server2.send(stop_cmd("web-1", 0, 1000)).await;
    server2.wait_event("web-1", pb::InstanceState::Exited).await;
}

async fn agent_on(dir: &std::path::Path, server: &FakeServer) -> (AgentHandle, CancellationToken) {
    let config = AgentConfig::for_test(dir, &[server.addr]);
    let token = CancellationToken::new();
    (
        start_with_token(config, token.clone()).await.unwrap(),
        token,
    )
}

#[tokio::test]
async fn bad_settings_are_refused_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let mut config = AgentConfig::for_test(dir.path(), &[]);
    let err = start_with_token(config.clone(), CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("--server"), "{err}");
    config.servers = vec!["127.0.0.1:1".into()];
    config.node_id = Some("bad/id".into());
    let err = start_with_token(config.clone(), CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("node_id"), "{err}");
    config.node_id = None;
    std::fs::write(dir.path().join("node_id"), "not/valid\n").unwrap();
    let err = start_with_token(config.clone(), CancellationToken::new())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("node_id") && err.contains("fix or delete"),
        "{err}"
    );
    std::fs::remove_file(dir.path().join("node_id")).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.listen = busy.local_addr().unwrap();
    let err = start_with_token(config, CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("--listen"), "{err}");
}

#[tokio::test]
async fn instances_push_log_lines_to_the_agent_intake() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    let server = FakeServer::start("s1", 100).await;
    let (agent, _token) = agent(dir.path(), &[&server]).await;
    server.wait_hello().await;
    server
        .send(start_cmd(
            "web-1",
            "echo \"$BERTH_LOG_ADDR\" > log_addr; exec sleep 300",
            0,
        ))
        .await;
    server.wait_event("web-1", pb::InstanceState::Healthy).await;
    let work = dir.path().join("instances/web-1/work");
    let addr = std::fs::read_to_string(work.join("log_addr")).unwrap();
    assert_eq!(addr.trim(), format!("http://{}", agent.http_addr()));

    let http = reqwest::Client::new();
    let url = |id: &str| format!("{}/v1/instances/{id}/logs", addr.trim());
    let pushed = http
        .post(url("web-1"))
        .body("pushed line")
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 204);
    let stdout = std::fs::read_to_string(dir.path().join("instances/web-1/stdout.log")).unwrap();
    assert!(stdout.contains("pushed line\n"), "{stdout:?}");

    let unknown = http.post(url("nobody")).body("x").send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let invalid = http.post(url("..")).body("x").send().await.unwrap();
    assert!(invalid.status().is_client_error());
    let huge = http
        .post(url("web-1"))
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    server.send(stop_cmd("web-1", 0, 1000)).await;
    server.wait_event("web-1", pb::InstanceState::Exited).await;
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_is_left_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let _reaper = common::Reaper(dir.path().to_path_buf());
    // Accepts TCP connections and never speaks HTTP/2.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let good = FakeServer::start("good", 100).await;
    let config = AgentConfig::for_test(dir.path(), &[silent_addr, good.addr]);
    let agent = start_with_token(config, CancellationToken::new())
        .await
        .unwrap();
    good.wait_hello().await;
    common::wait_until("connected to the answering server", || {
        agent.link_status().server_id.as_deref() == Some("good")
    })
    .await;
}
