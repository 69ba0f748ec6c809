//! The gateway in-process, with a scripted agent on a real gRPC stream: credit-based flow
//! control (a user that stops reading stops the agent once its transport buffers are
//! full), cancellation when the user goes away, an agent that disconnects mid-request, unknown nodes, and the secret.

use std::time::Duration;

use berth_diag::{DiagConfig, DiagHandle};
use berth_proto::diag::v1 as pb;
use berth_proto::diag::v1::diag_gateway_client::DiagGatewayClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const WINDOW: u32 = 4;
const WAIT: Duration = Duration::from_secs(10);

async fn gateway(secret: Option<&str>) -> (DiagHandle, CancellationToken) {
    let token = CancellationToken::new();
    let config = DiagConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        registry_http: None,
        secret: secret.map(str::to_string),
        window: WINDOW,
        ..DiagConfig::default()
    };
    (
        berth_diag::start(config, token.clone()).await.unwrap(),
        token,
    )
}

async fn client(handle: &DiagHandle) -> DiagGatewayClient<tonic::transport::Channel> {
    DiagGatewayClient::connect(format!("http://{}", handle.addr()))
        .await
        .unwrap()
}

/// A scripted agent: sends frames, receives what the gateway sends it.
struct FakeAgent {
    tx: mpsc::Sender<pb::AgentFrame>,
    inbound: tonic::Streaming<pb::GatewayFrame>,
}

impl FakeAgent {
    async fn attach(
        handle: &DiagHandle,
        node: &str,
        secret: Option<&str>,
    ) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Hello(pb::AgentHello {
                node_id: node.into(),
                version: "test".into(),
            })),
        })
        .await
        .unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(secret) = secret {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {secret}").parse().unwrap());
        }
        let mut inbound = client(handle).await.attach(request).await?.into_inner();
        match next(&mut inbound).await {
            pb::gateway_frame::Kind::Welcome(w) => assert!(!w.gateway_id.is_empty()),
            other => panic!("expected a Welcome, got {other:?}"),
        }
        Ok(Self { tx, inbound })
    }

    async fn chunk(&self, request_id: u64, line: &str, done: bool) {
        self.tx
            .send(pb::AgentFrame {
                kind: Some(pb::agent_frame::Kind::Chunk(pb::Chunk {
                    request_id,
                    instance_id: "i-1".into(),
                    lines: vec![line.to_string()],
                    done,
                    error: String::new(),
                })),
            })
            .await
            .unwrap();
    }
}

async fn next(inbound: &mut tonic::Streaming<pb::GatewayFrame>) -> pb::gateway_frame::Kind {
    tokio::time::timeout(WAIT, inbound.message())
        .await
        .expect("a frame in time")
        .expect("stream open")
        .expect("a frame")
        .kind
        .expect("a kind")
}

/// Waits until the gateway lists `node`.
async fn wait_attached(handle: &DiagHandle, node: &str) {
    berth_testkit::wait_until("the agent is attached", WAIT, || async {
        handle.gateway().nodes() == [node]
    })
    .await;
}

fn grep_request(node: &str) -> pb::RunRequest {
    pb::RunRequest {
        node_id: node.into(),
        operation: Some(pb::Operation {
            app_id: "shop/web".into(),
            op: Some(pb::operation::Op::Grep(pb::Grep {
                pattern: "x".into(),
                ..Default::default()
            })),
            ..Default::default()
        }),
    }
}

/// Lines big enough that a few of them fill the user's HTTP/2 window.
const LINE: usize = 32 * 1024;
const TOTAL: u32 = 200;

#[tokio::test]
async fn a_user_that_does_not_read_stops_the_agent_and_one_that_leaves_cancels_it() {
    let (handle, _token) = gateway(None).await;
    let agent = FakeAgent::attach(&handle, "node-1", None).await.unwrap();
    wait_attached(&handle, "node-1").await;
    let mut user = client(&handle)
        .await
        .run(grep_request("node-1"))
        .await
        .unwrap()
        .into_inner();
    let FakeAgent { tx, mut inbound } = agent;
    let op = match next(&mut inbound).await {
        pb::gateway_frame::Kind::Operation(op) => op,
        other => panic!("expected the operation, got {other:?}"),
    };
    assert_eq!(op.window, WINDOW);
    assert_eq!(op.app_id, "shop/web");
    // An agent that honours its window: sends while it has credit, counts what it sent.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let (cancelled_tx, cancelled_rx) = tokio::sync::oneshot::channel();
    let agent = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut credit = op.window;
            let mut cancelled_tx = Some(cancelled_tx);
            loop {
                while credit > 0 && sent.load(std::sync::atomic::Ordering::SeqCst) < TOTAL {
                    let n = sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let chunk = pb::Chunk {
                        request_id: op.request_id,
                        instance_id: "i-1".into(),
                        lines: vec![format!("{n:>5}{}", "x".repeat(LINE))],
                        done: n + 1 == TOTAL,
                        error: String::new(),
                    };
                    let frame = pb::AgentFrame {
                        kind: Some(pb::agent_frame::Kind::Chunk(chunk)),
                    };
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                    credit -= 1;
                }
                match inbound.message().await {
                    Ok(Some(pb::GatewayFrame {
                        kind: Some(pb::gateway_frame::Kind::Credit(c)),
                    })) => credit += c.chunks,
                    Ok(Some(pb::GatewayFrame {
                        kind: Some(pb::gateway_frame::Kind::Cancel(c)),
                    })) => {
                        if let Some(done) = cancelled_tx.take() {
                            let _ = done.send(c.request_id);
                        }
                    }
                    _ => return,
                }
            }
        })
    };
    // Nobody reads: once the user's transport buffers are full, no more credit comes, so
    // the agent stops far short of everything.
    let stalled_at = berth_testkit::wait_for("the agent to stall", WAIT, || {
        let sent = sent.clone();
        async move {
            let before = sent.load(std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = sent.load(std::sync::atomic::Ordering::SeqCst);
            (before == after).then_some(after)
        }
    })
    .await;
    assert!(
        stalled_at < TOTAL / 2,
        "a user that reads nothing held the agent at {stalled_at} of {TOTAL} chunks"
    );
    assert_eq!(
        handle
            .gateway()
            .stats()
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Reading some lets the agent go on; leaving cancels it on the agent.
    let first = user.message().await.unwrap().unwrap();
    assert_eq!(first.instance_id, "i-1");
    assert!(first.lines[0].starts_with("    0"));
    for _ in 0..20 {
        user.message().await.unwrap().unwrap();
    }
    berth_testkit::wait_until("the agent sends more", WAIT, || async {
        sent.load(std::sync::atomic::Ordering::SeqCst) > stalled_at
    })
    .await;
    drop(user);
    let cancelled = tokio::time::timeout(WAIT, cancelled_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled, op.request_id);
    assert!(sent.load(std::sync::atomic::Ordering::SeqCst) < TOTAL);
    assert_eq!(
        handle
            .gateway()
            .stats()
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert_eq!(
        handle
            .gateway()
            .stats()
            .cancelled
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    agent.abort();
}

#[tokio::test]
async fn results_end_with_the_done_chunk_and_errors_reach_the_user() {
    let (handle, _token) = gateway(None).await;
    let mut agent = FakeAgent::attach(&handle, "node-2", None).await.unwrap();
    wait_attached(&handle, "node-2").await;
    let mut gw = client(&handle).await;
    let mut user = gw.run(grep_request("node-2")).await.unwrap().into_inner();
    let pb::gateway_frame::Kind::Operation(op) = next(&mut agent.inbound).await else {
        panic!("expected the operation");
    };
    agent.chunk(op.request_id, "only match", true).await;
    let chunk = user.message().await.unwrap().unwrap();
    assert_eq!(chunk.lines, ["only match"]);
    assert!(
        user.message().await.unwrap().is_none(),
        "done ends the stream"
    );

    // An agent that goes away mid-request ends its users' streams with the reason.
    let mut user = gw.run(grep_request("node-2")).await.unwrap().into_inner();
    let _ = next(&mut agent.inbound).await;
    drop(agent);
    let end = tokio::time::timeout(WAIT, user.message()).await.unwrap();
    let said = match end {
        Ok(Some(chunk)) => chunk.error,
        Ok(None) => String::new(),
        Err(status) => status.message().to_string(),
    };
    assert!(said.contains("went away"), "{said}");
    berth_testkit::wait_until("the node is detached", WAIT, || async {
        handle.gateway().nodes().is_empty()
    })
    .await;
}

#[tokio::test]
async fn unknown_nodes_bad_requests_and_the_secret_are_refused_by_name() {
    let secret = "s".repeat(32);
    let (handle, _token) = gateway(Some(&secret)).await;
    let refused = FakeAgent::attach(&handle, "node-3", None)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused.message().contains("secret"),
        "{}",
        refused.message()
    );
    let wrong = FakeAgent::attach(&handle, "node-3", Some("wrong"))
        .await
        .err()
        .unwrap();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let _agent = FakeAgent::attach(&handle, "node-3", Some(&secret))
        .await
        .unwrap();
    let bad_node = FakeAgent::attach(&handle, "../x", Some(&secret))
        .await
        .err()
        .unwrap();
    assert_eq!(bad_node.code(), tonic::Code::InvalidArgument);

    let mut gw = client(&handle).await;
    let with_secret = |request: pb::RunRequest| {
        let mut request = tonic::Request::new(request);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", "s".repeat(32)).parse().unwrap(),
        );
        request
    };
    let unknown = gw
        .run(with_secret(grep_request("node-9")))
        .await
        .err()
        .unwrap();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("berth.diag.node.node-9"),
        "{}",
        unknown.message()
    );
    let mut empty = grep_request("node-3");
    empty.operation.as_mut().unwrap().op = None;
    let err = gw.run(with_secret(empty)).await.err().unwrap();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let no_auth = gw.run(grep_request("node-3")).await.err().unwrap();
    assert_eq!(no_auth.code(), tonic::Code::Unauthenticated);
}
