//! A fake server for agent tests: a real tonic `AgentLink` service on loopback that
//! records what the agent says and sends the commands a test gives it. It proves the
//! agent's side of the contract, in-process or against the real `berth agent` binary;
//! [`crate::fake_agent`] is its counterpart for server tests.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::agent::v1 as pb;
use berth_proto::agent::v1::agent_link_server::{AgentLink, AgentLinkServer};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// How long a wait for the agent lasts unless [`FakeServer::with_wait`] says otherwise.
pub const WAIT: Duration = Duration::from_secs(15);

type ToAgent = mpsc::Sender<Result<pb::ServerMessage, Status>>;

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<pb::AgentMessage>>>,
    to_agent: Arc<Mutex<Option<ToAgent>>>,
    changed: Arc<Notify>,
}

struct Service {
    server_id: String,
    heartbeat_ms: u32,
    shared: Shared,
}

#[tonic::async_trait]
impl AgentLink for Service {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let welcome = pb::Welcome {
            server_id: self.server_id.clone(),
            heartbeat_interval_ms: self.heartbeat_ms,
        };
        tx.send(Ok(pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Welcome(welcome)),
        }))
        .await
        .ok();
        *self.shared.to_agent.lock().unwrap() = Some(tx);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                shared.received.lock().unwrap().push(message);
                shared.changed.notify_waiters();
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
    /// The bound of every wait for the agent.
    wait: Duration,
}

impl FakeServer {
    pub async fn start(server_id: &str, heartbeat_ms: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, server_id, heartbeat_ms)
    }

    pub fn serve(listener: tokio::net::TcpListener, server_id: &str, heartbeat_ms: u32) -> Self {
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        let service = Service {
            server_id: server_id.to_string(),
            heartbeat_ms,
            shared: shared.clone(),
        };
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AgentLinkServer::new(service))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .ok();
        });
        Self {
            addr,
            shared,
            task,
            wait: WAIT,
        }
    }

    /// Waits for the agent at most `wait` instead of [`WAIT`].
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The server dies: the open stream fails, new connections are refused.
    pub fn kill(&self) {
        self.task.abort();
        if let Some(tx) = self.shared.to_agent.lock().unwrap().take() {
            tx.try_send(Err(Status::unavailable("server killed"))).ok();
        }
    }

    pub async fn send(&self, kind: pb::server_message::Kind) {
        let tx = tokio::time::timeout(self.wait, async {
            loop {
                if let Some(tx) = self.shared.to_agent.lock().unwrap().clone() {
                    return tx;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("an agent session to send to");
        tx.send(Ok(pb::ServerMessage { kind: Some(kind) }))
            .await
            .expect("session open");
    }

    pub fn received(&self) -> Vec<pb::AgentMessage> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `pick` finds something in what the agent said (oldest first).
    pub async fn wait_for<T>(
        &self,
        what: &str,
        mut pick: impl FnMut(&pb::AgentMessage) -> Option<T>,
    ) -> T {
        self.wait_for_all(what, |messages| messages.iter().find_map(&mut pick))
            .await
    }

    /// Waits until `pick` finds something in everything the agent said so far.
    pub async fn wait_for_all<T>(
        &self,
        what: &str,
        mut pick: impl FnMut(&[pb::AgentMessage]) -> Option<T>,
    ) -> T {
        let result = tokio::time::timeout(self.wait, async {
            loop {
                let changed = self.shared.changed.notified();
                if let Some(found) = pick(&self.received()) {
                    return found;
                }
                tokio::time::timeout(Duration::from_millis(100), changed)
                    .await
                    .ok();
            }
        })
        .await;
        result.unwrap_or_else(|_| {
            panic!(
                "fake server {}: never saw {what}; received {:#?}",
                self.addr,
                summary(&self.received())
            )
        })
    }

    /// Waits for an event putting `id` into `state`.
    pub async fn wait_event(&self, id: &str, state: pb::InstanceState) -> pb::InstanceStatus {
        self.wait_for(&format!("{id} {state:?}"), |m| match &m.kind {
            Some(pb::agent_message::Kind::Event(pb::InstanceEvent { instance: Some(i) }))
                if i.instance_id == id && i.state == state as i32 =>
            {
                Some(i.clone())
            }
            _ => None,
        })
        .await
    }

    pub async fn wait_hello(&self) -> pb::Hello {
        self.wait_for("a Hello", hello).await
    }

    /// The `count`th Hello (1 is the first), once the agent has said that many: one per
    /// session, so an agent restarted `count - 1` times.
    pub async fn wait_hellos(&self, count: usize) -> pb::Hello {
        self.wait_for_all(&format!("Hello number {count}"), |messages| {
            messages.iter().filter_map(hello).nth(count - 1)
        })
        .await
    }
}

fn hello(message: &pb::AgentMessage) -> Option<pb::Hello> {
    match &message.kind {
        Some(pb::agent_message::Kind::Hello(h)) => Some(h.clone()),
        _ => None,
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn summary(messages: &[pb::AgentMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match &m.kind {
            Some(pb::agent_message::Kind::Hello(h)) => {
                format!("hello {} ({} instances)", h.node_id, h.instances.len())
            }
            Some(pb::agent_message::Kind::Heartbeat(h)) => {
                format!("heartbeat ({} instances)", h.instances.len())
            }
            Some(pb::agent_message::Kind::Event(e)) => {
                let i = e.instance.clone().unwrap_or_default();
                format!("event {} {:?} {}", i.instance_id, i.state(), i.message)
            }
            None => "empty".into(),
        })
        .collect()
}

pub fn start_cmd(id: &str, cmd: &str, ports: u32) -> pb::server_message::Kind {
    pb::server_message::Kind::Start(pb::StartInstance {
        instance_id: id.into(),
        app_id: "shop/web".into(),
        app_version: 1,
        cmd: cmd.into(),
        port_count: ports,
        routes: vec!["web.shop.test".into()],
        ..Default::default()
    })
}

pub fn stop_cmd(id: &str, drain_ms: u32, grace_ms: u32) -> pb::server_message::Kind {
    pb::server_message::Kind::Stop(pb::StopInstance {
        instance_id: id.into(),
        drain_ms,
        grace_ms,
        reason: "test".into(),
    })
}
