//! The peer protocol's server side, on the gRPC listener. Every call must carry the
//! cluster secret; a forwarded write is applied here whoever owns it (one hop at most,
//! so two members with different views can never bounce a write between them).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_proto::registry::v1 as pb;
use berth_proto::registry::v1::cluster_server::{Cluster as ClusterRpc, ClusterServer};
use futures::Stream;
use tonic::{Request, Response, Status};

use super::peer::{MAX_MESSAGE, SECRET_HEADER};
use super::{Cluster, Stamp, antientropy, membership, snapshot, wire};
use crate::core::{Forwarded, ForwardedReply};

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
        self.cluster
            .stats
            .forwarded_in
            .fetch_add(1, Ordering::Relaxed);
        let r = &self.cluster.registry;
        let mut state = None;
        let reply = match write {
            Forwarded::Op(op) => ForwardedReply::Op(match r.submit_local(op).await {
                Ok(applied) => {
                    state = applied.change.map(|c| {
                        let stamp = Stamp {
                            origin: self.cluster.id().to_string(),
                            incarnation: self.cluster.incarnation,
                            revision: c.revision,
                        };
                        wire::encode_state(&c.key, c.service.as_deref(), &stamp)
                    });
                    Ok(())
                }
                Err(e) => Err(e),
            }),
            Forwarded::Beat {
                service,
                ip,
                port,
                cluster,
                status,
            } => ForwardedReply::Beat(r.beat_local(service, ip, port, cluster, status).await),
            Forwarded::Fail { service, instance } => {
                ForwardedReply::Beat(r.fail_local(service, instance).await)
            }
        };
        Ok(Response::new(pb::ForwardReply {
            reply: wire::to_json(&reply),
            state,
        }))
    }

    async fn replicate(
        &self,
        req: Request<pb::StateBatch>,
    ) -> Result<Response<pb::ReplicateAck>, Status> {
        let batch = req.into_inner();
        let mut applied = 0;
        for (i, s) in batch.states.iter().enumerate() {
            let (key, state, stamp) = wire::decode_state(s)
                .map_err(|e| Status::invalid_argument(format!("states[{i}]: {e}")))?;
            if self.cluster.apply_replicated(key, state, stamp).await {
                applied += 1;
            }
        }
        Ok(Response::new(pb::ReplicateAck { applied }))
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
