//! The gateway service: agents attach and stay; users' operations are relayed to them.
//!
//! Each attached agent has one outbound queue (operations, credit, cancels: small frames,
//! so unbounded) and a table of its requests in flight. A request's results flow into a
//! channel sized to the window the agent was given, so the agent can never overfill it;
//! credit goes back to the agent only as the user takes a chunk ([`RunStream`]). A user
//! that goes away drops its stream, which cancels the operation on the agent.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use berth_proto::diag::v1 as pb;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registration::Registrar;

mod exec;
pub use exec::ExecStream;

/// Time an agent has to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    id: String,
    address: String,
    secret: Option<String>,
    window: u32,
    agents: Mutex<HashMap<String, Arc<AgentConn>>>,
    next_id: AtomicU64,
    registrar: Option<Arc<Registrar>>,
    stats: Stats,
}

/// Counters for `/metrics`-style reporting and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub operations: AtomicU64,
    pub cancelled: AtomicU64,
    pub in_flight: AtomicU64,
}

struct AgentConn {
    node: String,
    /// Which attachment this is: a reconnecting agent replaces its older one.
    session: u64,
    out: mpsc::UnboundedSender<Result<pb::GatewayFrame, Status>>,
    pending: Mutex<HashMap<u64, mpsc::Sender<pb::Chunk>>>,
    /// Execs in flight on this stream (`berth exec`).
    execs: Mutex<HashMap<u64, exec::Route>>,
}

impl AgentConn {
    fn send(&self, kind: pb::gateway_frame::Kind) -> bool {
        self.out
            .send(Ok(pb::GatewayFrame { kind: Some(kind) }))
            .is_ok()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::Sender<pb::Chunk>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every request in flight on this stream; their users see `why`.
    fn fail_all(&self, why: &str) {
        exec::fail_all(self, why);
        for (_, sender) in self.pending().drain() {
            let _ = sender.try_send(pb::Chunk {
                done: true,
                error: why.to_string(),
                ..Default::default()
            });
        }
    }
}

impl Gateway {
    pub fn new(
        id: String,
        address: String,
        secret: Option<String>,
        window: u32,
        registrar: Option<Arc<Registrar>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                address,
                secret,
                window,
                agents: Mutex::default(),
                next_id: AtomicU64::new(1),
                registrar,
                stats: Stats::default(),
            }),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Nodes whose agents are attached now.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.agents().keys().cloned().collect();
        nodes.sort();
        nodes
    }

    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AgentConn>>> {
        self.inner.agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Agents and users present the shared secret as a bearer token, when one is set.
    #[allow(clippy::result_large_err)]
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(secret) = &self.inner.secret else {
            return Ok(());
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(token) if constant_time_eq(token.as_bytes(), secret.as_bytes()) => Ok(()),
            Some(_) => Err(Status::unauthenticated(
                "wrong diagnostics secret: use the gateway's secret_file",
            )),
            None => Err(Status::unauthenticated(
                "this gateway needs its secret: send `authorization: Bearer <secret>` (the agent's and server's diag_secret_file)",
            )),
        }
    }

    /// The stream of `node`'s agent; NotFound (the user tries the node's next gateway).
    #[allow(clippy::result_large_err)]
    fn attached(&self, node: &str) -> Result<Arc<AgentConn>, Status> {
        self.agents().get(node).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "node {node:?} is not attached to gateway {}: find its gateway in the registry (service {})",
                self.inner.id,
                crate::registration::node_service(node)
            ))
        })
    }

    fn on_chunk(conn: &AgentConn, chunk: pb::Chunk) {
        let id = chunk.request_id;
        let done = chunk.done;
        let sender = {
            let mut pending = conn.pending();
            if done {
                pending.remove(&id)
            } else {
                pending.get(&id).cloned()
            }
        };
        let Some(sender) = sender else {
            // Cancelled meanwhile: the agent stops at the Cancel it was sent.
            return;
        };
        if sender.try_send(chunk).is_err() {
            // Full only if the agent ignored its window; its request ends here.
            tracing::warn!(node = %conn.node, request = id, "agent sent past its window; request dropped");
            conn.pending().remove(&id);
            conn.send(pb::gateway_frame::Kind::Cancel(pb::Cancel {
                request_id: id,
            }));
        }
    }

    fn detach(&self, conn: &Arc<AgentConn>) {
        let removed = {
            let mut agents = self.agents();
            match agents.get(&conn.node) {
                Some(current) if current.session == conn.session => {
                    agents.remove(&conn.node);
                    true
                }
                _ => false,
            }
        };
        conn.fail_all(&format!("the agent of node {} went away", conn.node));
        if removed {
            tracing::info!(node = %conn.node, "agent detached");
            if let Some(registrar) = &self.inner.registrar {
                registrar.detached(&conn.node);
            }
        }
    }
}

/// The caller's verified certificate, when the call came over mutual TLS.
fn peer<T>(request: &Request<T>) -> Option<berth_identity::PeerCert> {
    request
        .extensions()
        .get::<berth_identity::PeerCert>()
        .cloned()
}

/// Over mutual TLS, only a server runs operations and lists nodes.
#[allow(clippy::result_large_err)]
fn require_server<T>(request: &Request<T>) -> Result<(), Status> {
    berth_identity::authorize::require(
        peer(request).as_ref(),
        berth_identity::Role::Server,
        None,
        "give the server its own certificate (`berth tls cert create --role server`)",
    )
    .map(drop)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

type AttachStream = UnboundedReceiverStream<Result<pb::GatewayFrame, Status>>;

#[tonic::async_trait]
impl pb::diag_gateway_server::DiagGateway for Gateway {
    type AttachStream = AttachStream;
    type RunStream = RunStream;
    type ExecStream = ExecStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::AgentFrame>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        self.authorize(&request)?;
        let peer = peer(&request);
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(pb::AgentFrame {
                kind: Some(pb::agent_frame::Kind::Hello(hello)),
            }))) => hello,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first frame of Attach must be a Hello naming the node",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no Hello within {HELLO_TIMEOUT:?}"
                )));
            }
        };
        if !valid_node_id(&hello.node_id) {
            return Err(Status::invalid_argument(format!(
                "Hello.node_id {:?} is not a node id: 1-128 characters from a-z, A-Z, 0-9, '-', '_', '.'",
                hello.node_id
            )));
        }
        // Over mutual TLS an agent attaches only as the node its certificate names.
        berth_identity::authorize::require(
            peer.as_ref(),
            berth_identity::Role::Agent,
            Some(&hello.node_id),
            &format!(
                "give the agent the certificate of its node (`berth tls cert create --role agent --name {}`)",
                hello.node_id
            ),
        )?;
        let (out, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(AgentConn {
            node: hello.node_id.clone(),
            session: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            out,
            pending: Mutex::default(),
            execs: Mutex::default(),
        });
        conn.send(pb::gateway_frame::Kind::Welcome(pb::Welcome {
            gateway_id: self.inner.id.clone(),
            address: self.inner.address.clone(),
        }));
        let replaced = self.agents().insert(conn.node.clone(), conn.clone());
        if let Some(old) = replaced {
            // The old stream's reader ends on its own; its requests fail now.
            old.fail_all("the agent reconnected");
        }
        tracing::info!(node = %conn.node, version = %hello.version, "agent attached");
        if let Some(registrar) = &self.inner.registrar {
            registrar.attached(&conn.node);
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::AgentFrame {
                        kind: Some(pb::agent_frame::Kind::Chunk(chunk)),
                    })) => Self::on_chunk(&conn, chunk),
                    Ok(Some(pb::AgentFrame {
                        kind: Some(pb::agent_frame::Kind::ExecOutput(output)),
                    })) => exec::on_output(&conn, output),
                    Ok(Some(pb::AgentFrame {
                        kind: Some(pb::agent_frame::Kind::ExecExit(exit)),
                    })) => exec::on_exit(&conn, exit),
                    Ok(Some(pb::AgentFrame {
                        kind: Some(pb::agent_frame::Kind::ExecInputCredit(credit)),
                    })) => exec::on_input_credit(&conn, credit),
                    Ok(Some(_)) => {
                        tracing::debug!(node = %conn.node, "ignored an unexpected frame");
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            this.detach(&conn);
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn run(
        &self,
        request: Request<pb::RunRequest>,
    ) -> Result<Response<Self::RunStream>, Status> {
        self.authorize(&request)?;
        require_server(&request)?;
        let request = request.into_inner();
        let mut operation = request
            .operation
            .ok_or_else(|| Status::invalid_argument("RunRequest.operation is missing"))?;
        if operation.op.is_none() {
            return Err(Status::invalid_argument(
                "RunRequest.operation names no operation: give grep, tail, processes or ports",
            ));
        }
        if operation.instance_id.is_empty() && operation.app_id.is_empty() {
            return Err(Status::invalid_argument(
                "RunRequest.operation names neither instance_id nor app_id",
            ));
        }
        let conn = self.attached(&request.node_id)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        operation.request_id = id;
        operation.window = self.inner.window;
        // One extra slot: the final chunk (done) may come while the window is full.
        let (tx, rx) = mpsc::channel(self.inner.window as usize + 1);
        conn.pending().insert(id, tx);
        if !conn.send(pb::gateway_frame::Kind::Operation(operation)) {
            conn.pending().remove(&id);
            return Err(Status::unavailable(format!(
                "the agent of node {} just went away",
                request.node_id
            )));
        }
        let stats = &self.inner.stats;
        stats.operations.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(RunStream {
            rx,
            conn,
            id,
            finished: false,
            gateway: self.inner.clone(),
        }))
    }

    async fn exec(
        &self,
        request: Request<Streaming<pb::ExecUp>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        self.authorize(&request)?;
        self.open_exec(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn nodes(
        &self,
        request: Request<pb::NodesRequest>,
    ) -> Result<Response<pb::NodesReply>, Status> {
        self.authorize(&request)?;
        require_server(&request)?;
        Ok(Response::new(pb::NodesReply {
            gateway_id: self.inner.id.clone(),
            node_ids: self.nodes(),
        }))
    }
}

/// One user's results: each chunk taken returns one credit to the agent; dropping the
/// stream before the end cancels the operation there.
pub struct RunStream {
    rx: mpsc::Receiver<pb::Chunk>,
    conn: Arc<AgentConn>,
    id: u64,
    finished: bool,
    gateway: Arc<Inner>,
}

impl Stream for RunStream {
    type Item = Result<pb::RunChunk, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Err(Status::unavailable(format!(
                    "the agent of node {} went away",
                    self.conn.node
                )))))
            }
            Poll::Ready(Some(chunk)) => {
                if chunk.done {
                    self.finished = true;
                    if chunk.error.is_empty() && chunk.lines.is_empty() {
                        return Poll::Ready(None);
                    }
                    if !chunk.error.is_empty() && chunk.lines.is_empty() {
                        return Poll::Ready(Some(Ok(pb::RunChunk {
                            instance_id: chunk.instance_id,
                            lines: vec![],
                            error: chunk.error,
                        })));
                    }
                } else {
                    self.conn.send(pb::gateway_frame::Kind::Credit(pb::Credit {
                        request_id: self.id,
                        chunks: 1,
                    }));
                }
                Poll::Ready(Some(Ok(pb::RunChunk {
                    instance_id: chunk.instance_id,
                    lines: chunk.lines,
                    error: chunk.error,
                })))
            }
        }
    }
}

impl Drop for RunStream {
    fn drop(&mut self) {
        self.gateway.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.conn.pending().remove(&self.id);
            self.conn.send(pb::gateway_frame::Kind::Cancel(pb::Cancel {
                request_id: self.id,
            }));
            self.gateway.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}
