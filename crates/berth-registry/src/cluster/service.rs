//! The peer protocol's server side, on the gRPC listener. Every call must carry the
//! cluster secret; a forwarded write is applied here whoever owns it (one hop at most,
//! so two members with different views can never bounce a write between them), and
//! once however often it is sent ([`super::idempotence`]).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_proto::registry::v1 as pb;
use berth_proto::registry::v1::cluster_server::{Cluster as ClusterRpc, ClusterServer};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::idempotence::Admit;
use super::peer::{MAX_MESSAGE, SECRET_HEADER};
use super::{Cluster, DeltaOutcome, antientropy, membership, snapshot, wire};
use crate::core::Forwarded;

#[derive(Clone)]
pub struct PeerService {
    cluster: Arc<Cluster>,
}

/// Refuses peer calls without the cluster secret.
#[derive(Clone)]
pub struct RequireSecret(Arc<str>);

impl tonic::service::Interceptor for RequireSecret {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get(SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if crate::auth::same(given, &self.0) {
            // Over mutual TLS the caller must also hold a registry's certificate.
            berth_identity::authorize::require(
                req.extensions().get::<berth_identity::PeerCert>(),
                berth_identity::Role::Registry,
                None,
                "give every member its own certificate (`berth tls cert create --role registry`)",
            )?;
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "peer calls need the cluster secret (cluster_secret_file) in x-berth-cluster-secret",
            ))
        }
    }
}

pub type Server =
    tonic::service::interceptor::InterceptedService<ClusterServer<PeerService>, RequireSecret>;

/// The service with its secret check, ready for the gRPC server.
pub fn server(cluster: Arc<Cluster>) -> Server {
    let secret = RequireSecret(Arc::from(cluster.options.secret.as_str()));
    let svc = ClusterServer::new(PeerService { cluster })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    tonic::service::interceptor::InterceptedService::new(svc, secret)
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<pb::StateBatch, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterRpc for PeerService {
    async fn heartbeat(&self, req: Request<pb::Beat>) -> Result<Response<pb::Beat>, Status> {
        let c = &self.cluster;
        if c.members.observe(req.get_ref()) {
            c.members.recompute(c.id(), c.is_loaded(), &c.stats);
        }
        Ok(Response::new(membership::own_beat(c)))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardReply>, Status> {
        let req = req.into_inner();
        let write: Forwarded = wire::from_json(&req.request)
            .map_err(|e| Status::invalid_argument(format!("field 'request': {e}")))?;
        let c = &self.cluster;
        c.stats.forwarded_in.fetch_add(1, Ordering::Relaxed);
        let mut answer = match c.once.admit(&req.from, req.incarnation, req.seq, req.low) {
            Admit::Stale => {
                return Err(Status::already_exists(format!(
                    "write {} of {} was finished before; this copy is late",
                    req.seq, req.from
                )));
            }
            Admit::Again(answer) => {
                c.stats.forwarded_again.fetch_add(1, Ordering::Relaxed);
                answer
            }
            Admit::First(tx) => {
                // Applied on its own task: a sender that stops waiting (its deadline
                // passed) must not cancel a write half-way; its next copy gets the
                // answer kept here instead of applying again. Only the answer is kept,
                // not what changed (another copy carried that back already, and it may
                // be stale by then).
                let c = c.clone();
                let task = tokio::spawn(async move {
                    let full = c.apply_forwarded(write).await;
                    tx.send_replace(Some(Arc::new(pb::ForwardReply {
                        reply: full.reply.clone(),
                        ..Default::default()
                    })));
                    full
                });
                return task
                    .await
                    .map(Response::new)
                    .map_err(|_| Status::unavailable("the write was interrupted; send it again"));
            }
        };
        let reply = answer
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone())
            .ok_or_else(|| Status::unavailable("the write was interrupted; send it again"))?;
        Ok(Response::new((*reply).clone()))
    }

    async fn replicate(
        &self,
        req: Request<pb::StateBatch>,
    ) -> Result<Response<pb::ReplicateAck>, Status> {
        let batch = req.into_inner();
        let c = &self.cluster;
        let mut applied = 0;
        for (i, s) in batch.states.iter().enumerate() {
            let (key, state, stamp) = wire::decode_state(s)
                .map_err(|e| Status::invalid_argument(format!("states[{i}]: {e}")))?;
            if c.apply_replicated(key, state, stamp).await {
                applied += 1;
            }
        }
        let mut gaps = Vec::new();
        for (i, d) in batch.deltas.iter().enumerate() {
            let delta = wire::Delta::decode(d)
                .map_err(|e| Status::invalid_argument(format!("deltas[{i}]: {e}")))?;
            match c.apply_delta(delta, false).await {
                DeltaOutcome::Applied => applied += 1,
                DeltaOutcome::Ignored => {}
                DeltaOutcome::Gap => gaps.push(d.key.clone()),
            }
        }
        Ok(Response::new(pb::ReplicateAck { applied, gaps }))
    }

    async fn checksums(
        &self,
        req: Request<pb::ChecksumList>,
    ) -> Result<Response<pb::WantedKeys>, Status> {
        antientropy::receive(&self.cluster, req.into_inner())
            .await
            .map(Response::new)
            .map_err(Status::invalid_argument)
    }

    type SnapshotStream = BatchStream;

    async fn snapshot(
        &self,
        _req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let stream = snapshot::serve(&self.cluster)?;
        Ok(Response::new(Box::pin(stream)))
    }
}
