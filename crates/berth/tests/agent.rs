//! Black-box tests of `berth agent`: the real binary against a fake server (a real
//! tonic `AgentLink` service in the test), real processes as instances.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::agent::v1 as pb;
use berth_proto::agent::v1::agent_link_server::{AgentLink, AgentLinkServer};
use berth_testkit::{BerthProcess, temp_dir, wait_for, wait_until};
use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

const WAIT: Duration = Duration::from_secs(20);

type ToAgent = mpsc::Sender<Result<pb::ServerMessage, Status>>;

#[derive(Clone, Default)]
struct Fake {
    received: Arc<Mutex<Vec<pb::AgentMessage>>>,
    to_agent: Arc<Mutex<Option<ToAgent>>>,
}

#[tonic::async_trait]
impl AgentLink for Fake {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tx.send(Ok(pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Welcome(pb::Welcome {
                server_id: "fake".into(),
                heartbeat_interval_ms: 200,
            })),
        }))
        .await
        .ok();
        *self.to_agent.lock().unwrap() = Some(tx);
        let received = self.received.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                received.lock().unwrap().push(message);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Fake {
    async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Self::default();
        let service = fake.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AgentLinkServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .ok();
        });
        (fake, addr)
    }

    async fn send(&self, kind: pb::server_message::Kind) {
        let tx = wait_for("an agent session", WAIT, || async {
            self.to_agent.lock().unwrap().clone()
        })
        .await;
        tx.send(Ok(pb::ServerMessage { kind: Some(kind) }))
            .await
            .unwrap();
    }

    /// The newest Hello, once there are `count` of them.
    async fn hello(&self, count: usize) -> pb::Hello {
        wait_for("a Hello", WAIT, || async {
            let hellos: Vec<pb::Hello> = self
                .received
                .lock()
                .unwrap()
                .iter()
                .filter_map(|m| match &m.kind {
                    Some(pb::agent_message::Kind::Hello(h)) => Some(h.clone()),
                    _ => None,
                })
                .collect();
            (hellos.len() >= count).then(|| hellos[count - 1].clone())
        })
        .await
    }

    async fn event(&self, id: &str, state: pb::InstanceState) -> pb::InstanceStatus {
        wait_for(&format!("{id} {state:?}"), WAIT, || async {
            self.received
                .lock()
                .unwrap()
                .iter()
                .find_map(|m| match &m.kind {
                    Some(pb::agent_message::Kind::Event(pb::InstanceEvent {
                        instance: Some(i),
                    })) if i.instance_id == id && i.state == state as i32 => Some(i.clone()),
                    _ => None,
                })
        })
        .await
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Instances outlive agents by design: when dropped, kills the process group of every
/// instance recorded under the data folder that is still the recorded process.
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.0.join("instances")) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path().join("instance.json")) else {
                continue;
            };
            let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let handle = &record["handle"];
            if let (Some(pid), Some(ticks)) =
                (handle["pid"].as_u64(), handle["start_ticks"].as_u64())
                && berth_agent::procfs::is_same_live_process(pid as u32, ticks)
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
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
        env!("CARGO_BIN_EXE_berth"),
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
    let _reaper = Reaper(dir.path().to_path_buf());
    let (server, addr) = Fake::start().await;
    let agent = start_agent(dir.path(), addr).await;
    let status = agent.addr("http");
    let hello = server.hello(1).await;
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
    let healthy = server.event("web-1", pb::InstanceState::Healthy).await;
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
    let hello = server.hello(2).await;
    let adopted = hello
        .instances
        .iter()
        .find(|i| i.instance_id == "web-1")
        .expect("re-adopted instance in the Hello");
    assert_eq!(adopted.pid, healthy.pid, "not restarted");

    server
        .send(pb::server_message::Kind::Stop(pb::StopInstance {
            instance_id: "web-1".into(),
            drain_ms: 0,
            grace_ms: 2000,
            reason: "test over".into(),
        }))
        .await;
    wait_until("the instance is gone", WAIT, || async {
        !alive(healthy.pid)
    })
    .await;
    assert!(again.terminate().await.success());
}

#[tokio::test]
async fn bad_flags_and_a_busy_data_folder_are_named() {
    let dir = temp_dir();
    let _reaper = Reaper(dir.path().to_path_buf());
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .output()
            .unwrap()
    };
    let data = dir.path().display().to_string();
    let out = run(&[
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

    let out = run(&["agent", "--data-dir", &data]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server"));

    let out = run(&[
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

    let (_server, addr) = Fake::start().await;
    let first = start_agent(dir.path(), addr).await;
    let out = run(&[
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
