//! The agent stream: one long-lived gRPC stream per node. Hello -> Welcome, then
//! heartbeats and instance events in, commands out.
//!
//! Owns the protobuf side of the conversation: [`wire`] translates, [`sessions`] keeps
//! each connected node's command sender. Real state only hears decoded reports. Over
//! mutual TLS (`berth_identity::accept`), the node id a Hello claims must be the one in the agent's
//! certificate ([`check_identity`]).

pub mod sessions;
pub mod wire;

use std::pin::Pin;
use std::sync::Arc;

use berth_core::NodeId;
use berth_proto::agent::v1 as pb;
use berth_proto::agent::v1::agent_link_server::AgentLink;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::context::Ctx;
use crate::events::{EventKind, NewEvent};

/// Commands queued per node before the server counts the node as unable to keep up.
const QUEUE: usize = 1024;

pub struct AgentService {
    pub ctx: Arc<Ctx>,
}

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

/// Checks a Hello; the error says which field and what to send instead.
pub fn check_hello(hello: &pb::Hello) -> Result<(), Status> {
    let id = &hello.node_id;
    if id.is_empty() || id.len() > 253 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Status::invalid_argument(format!(
            "hello.node_id {id:?} is not usable: send a non-empty id of at most 253 characters without spaces (the hostname by default)"
        )));
    }
    let Some(total) = &hello.total else {
        return Err(Status::invalid_argument(
            "hello.total is missing: send the node's total cpus, mem_mib and disk_mib",
        ));
    };
    if !total.cpus.is_finite() || total.cpus < 0.0 {
        return Err(Status::invalid_argument(format!(
            "hello.total.cpus {} is not a non-negative number of cores",
            total.cpus
        )));
    }
    Ok(())
}

/// Over mutual TLS: the certificate must be an agent's, of the node the Hello claims.
/// `peer` is `None` on the cleartext loopback listener, where there is no certificate.
pub fn check_identity(
    peer: Option<&berth_identity::PeerCert>,
    hello: &pb::Hello,
) -> Result<(), Status> {
    let Some(peer) = peer else { return Ok(()) };
    let identity = peer.identity.as_ref().map_err(|reason| {
        Status::permission_denied(format!(
            "the client certificate names no agent: {reason}; give the agent the certificate of its node (`berth tls cert create --role agent --name {}`)",
            hello.node_id
        ))
    })?;
    if identity.role != berth_identity::Role::Agent {
        return Err(Status::permission_denied(format!(
            "the client certificate is a {} certificate ({}), not an agent's: a certificate of one role cannot act as another; give the agent `berth tls cert create --role agent --name {}`",
            identity.role,
            identity.dns_name(),
            hello.node_id
        )));
    }
    if identity.name != hello.node_id {
        return Err(Status::permission_denied(format!(
            "the Hello claims node {:?} but the certificate is node {:?}'s ({}): an agent may only claim the node id in its certificate",
            hello.node_id,
            identity.name,
            identity.dns_name()
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl AgentLink for AgentService {
    type SessionStream = Outbound;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // Only the leader takes agents; the others send them on to the next server.
        let Some(term) = self.ctx.leadership().term() else {
            return Err(Status::unavailable(self.ctx.leadership().refusal()));
        };
        let peer = request
            .extensions()
            .get::<berth_identity::PeerCert>()
            .cloned();
        let mut inbound = request.into_inner();
        let hello_timeout = self.ctx.config.hello_timeout;
        let first = tokio::time::timeout(hello_timeout, inbound.next())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no hello within {} ms: an agent must send Hello first",
                    hello_timeout.as_millis()
                ))
            })?;
        let hello = match first {
            Some(Ok(pb::AgentMessage {
                kind: Some(pb::agent_message::Kind::Hello(h)),
            })) => h,
            Some(Ok(_)) => {
                return Err(Status::failed_precondition(
                    "the first message on the stream must be Hello; send Hello, then heartbeats",
                ));
            }
            Some(Err(e)) => return Err(e),
            None => return Err(Status::cancelled("stream closed before hello")),
        };
        check_hello(&hello)?;
        if let Err(refused) = check_identity(peer.as_ref(), &hello) {
            let remote = peer.as_ref().map(|p| p.remote);
            tracing::warn!(?remote, "agent refused: {}", refused.message());
            return Err(refused);
        }

        let (tx, rx) = mpsc::channel(QUEUE);
        let welcome = wire::welcome(&self.ctx.server_id, self.ctx.config.heartbeat_interval);
        tx.send(welcome)
            .await
            .map_err(|_| Status::internal("stream closed"))?;
        let hello = wire::hello(&hello);
        let node = hello.node.clone();
        let session = {
            let mut state = self.ctx.lock_state();
            let session = self.ctx.sessions.open(&node, tx);
            state.connect(hello, Instant::now(), &self.ctx.events);
            session
        };
        self.ctx.wake.notify_one();

        let ctx = self.ctx.clone();
        // The session ends with the leader's term, or with the server.
        let cancel = term;
        tokio::spawn(async move {
            read_loop(&ctx, &node, session, inbound, cancel).await;
            let mut state = ctx.lock_state();
            if ctx.sessions.close(&node, session) {
                state.disconnect(&node, &ctx.events);
            }
            drop(state);
            ctx.wake.notify_one();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }
}

async fn read_loop(
    ctx: &Ctx,
    node: &NodeId,
    session: u64,
    mut inbound: Streaming<pb::AgentMessage>,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = inbound.next() => m,
            _ = cancel.cancelled() => return,
        };
        let msg = match msg {
            None => return,
            Some(Err(e)) => {
                tracing::info!(%node, "agent stream ended: {e}");
                return;
            }
            Some(Ok(m)) => m,
        };
        let mut state = ctx.lock_state();
        if !ctx.sessions.is_current(node, session) {
            // A newer session of the same node took over.
            return;
        }
        let now = Instant::now();
        let mut changed = true;
        match msg.kind {
            Some(pb::agent_message::Kind::Heartbeat(hb)) => {
                // Unchanged heartbeats only refresh liveness: no pass needed.
                changed = state.heartbeat(node, wire::heartbeat(node, &hb), now, &ctx.events);
            }
            Some(pb::agent_message::Kind::Event(ev)) => match ev.instance {
                Some(inst) => {
                    state.instance_event(node, wire::instance(node, &inst), now, &ctx.events)
                }
                None => ctx.events.emit(
                    EventKind::AgentProtocolError,
                    NewEvent::node(node),
                    format!("node {node} sent an instance event without an instance; ignored"),
                ),
            },
            Some(pb::agent_message::Kind::Hello(_)) => ctx.events.emit(
                EventKind::AgentProtocolError,
                NewEvent::node(node),
                format!("node {node} sent a second hello on one stream; ignored (reconnect to re-register)"),
            ),
            None => ctx.events.emit(
                EventKind::AgentProtocolError,
                NewEvent::node(node),
                format!("node {node} sent an empty message; ignored"),
            ),
        }
        drop(state);
        if changed {
            ctx.wake.notify_one();
        }
    }
}
