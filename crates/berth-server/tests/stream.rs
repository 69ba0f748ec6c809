//! Agent stream faults and the SSE event stream.

mod common;

use berth_proto::agent::v1 as pb;
use berth_proto::agent::v1::agent_link_client::AgentLinkClient;
use berth_testkit::fake_agent::{FakeAgent, NodeSpec};
use berth_testkit::wait_until;
use common::{TestServer, WAIT};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

async fn open_with(s: &TestServer, first: pb::AgentMessage) -> Result<(), tonic::Status> {
    let mut client = AgentLinkClient::connect(format!("http://{}", s.agent_addr()))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.unwrap();
    let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
    match inbound.next().await {
        Some(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

#[tokio::test]
async fn bad_agent_openings_are_refused_with_reasons() {
    let s = TestServer::start().await;
    let hb = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Heartbeat(pb::Heartbeat::default())),
    };
    let err = open_with(&s, hb).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("must be Hello"), "{}", err.message());

    let no_id = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            total: Some(pb::Resources {
                cpus: 1.0,
                mem_mib: 1,
                disk_mib: 1,
            }),
            ..Default::default()
        })),
    };
    let err = open_with(&s, no_id).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("hello.node_id"), "{}", err.message());

    let no_total = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Hello(pb::Hello {
            node_id: "n".into(),
            ..Default::default()
        })),
    };
    let err = open_with(&s, no_total).await.unwrap_err();
    assert!(err.message().contains("hello.total"), "{}", err.message());

    // The server still works for well-behaved agents.
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("good", 1.0, 512)).await;
    s.deploy(json!({"id": "ok", "cmd": "x"})).await;
    wait_until("running", WAIT, || async { a.running_of("ok") == 1 }).await;
    let welcome = a.inner.lock().unwrap().welcome.clone().unwrap();
    assert_eq!(welcome.heartbeat_interval_ms, 100);
}

#[tokio::test]
async fn agent_reconnect_replaces_the_old_session() {
    let s = TestServer::start().await;
    let a = FakeAgent::connect(s.agent_addr(), NodeSpec::new("n1", 2.0, 512)).await;
    s.deploy(json!({"id": "app", "cmd": "x"})).await;
    wait_until("running", WAIT, || async { a.running_of("app") == 1 }).await;
    let running = a.running();
    drop(a);
    let mut spec = NodeSpec::new("n1", 2.0, 512);
    spec.running = running;
    let b = FakeAgent::connect(s.agent_addr(), spec).await;
    wait_until("node ready again", WAIT, || async {
        s.get("/v1/nodes").await.1["nodes"][0]["status"] == "ready"
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(b.starts(), 0, "the running instance was adopted");
}

#[tokio::test]
async fn sse_streams_filtered_events() {
    let s = TestServer::start().await;
    let resp = reqwest::get(s.url("/v1/events?types=app_created,app_scaled"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    s.deploy(json!({"id": "ev", "cmd": "x"})).await;
    s.send(
        reqwest::Method::DELETE,
        "/v1/apps/ev",
        "application/json",
        "",
    )
    .await;
    s.deploy(json!({"id": "ev2", "cmd": "x"})).await;
    let mut text = String::new();
    while !text.contains("ev2") {
        let chunk = tokio::time::timeout(WAIT, body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: app_created"), "{text}");
    assert!(!text.contains("app_deleted"), "filtered out: {text}");
    let data: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["app"], "ev");
    // Shutdown ends open streams instead of hanging.
    s.stop().await;
}
