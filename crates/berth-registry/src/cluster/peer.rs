//! One peer's gRPC client: a lazily connected channel that reconnects by itself, the
//! cluster secret on every call, a deadline on every call.

use std::time::Duration;

use berth_proto::registry::v1 as pb;
use berth_proto::registry::v1::cluster_client::ClusterClient;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

use super::ClusterError;
use super::wire;
use crate::core::{Forwarded, ForwardedReply};

/// Metadata key carrying the cluster secret.
pub const SECRET_HEADER: &str = "x-berth-cluster-secret";
/// Largest message a peer sends or takes (a snapshot chunk, a batch of big services).
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

#[derive(Clone)]
pub struct AddSecret(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for AddSecret {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(SECRET_HEADER, self.0.clone());
        Ok(req)
    }
}

type Client = ClusterClient<tonic::service::interceptor::InterceptedService<Channel, AddSecret>>;

/// A dialable peer.
#[derive(Clone)]
pub struct Peer {
    pub dial: String,
    client: Client,
}

impl Peer {
    /// Builds the client; nothing connects until the first call. `None` when `dial` is
    /// not a usable address or the secret is not valid metadata.
    /// With `tls`, every connection is mutual TLS and the peer must be a registry.
    pub fn new(
        dial: &str,
        secret: &str,
        tls: Option<std::sync::Arc<berth_identity::ReloadingTls>>,
        timeout: Duration,
        keepalive: Duration,
    ) -> Option<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{dial}"))
            .ok()?
            .connect_timeout(timeout)
            // A peer behind a cut link holds the connection open but answers nothing:
            // keepalive notices and the channel reconnects once the link is back.
            .http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let channel = match tls {
            Some(tls) => {
                berth_identity::dial::connect_lazy(endpoint, tls, berth_identity::Role::Registry)
            }
            None => endpoint.connect_lazy(),
        };
        let secret = MetadataValue::try_from(secret).ok()?;
        let client = ClusterClient::with_interceptor(channel, AddSecret(secret))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Some(Self {
            dial: dial.to_string(),
            client,
        })
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ClusterError {
        ClusterError::Unreachable {
            peer: self.dial.clone(),
            message: e.to_string(),
        }
    }

    fn status(&self, s: tonic::Status) -> ClusterError {
        use tonic::Code;
        match s.code() {
            // The peer read the call and answered no: the same call would get the same
            // answer.
            Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::Unimplemented
            | Code::NotFound
            | Code::OutOfRange => ClusterError::Refused {
                peer: self.dial.clone(),
                message: format!("{:?}: {}", s.code(), s.message()),
            },
            // Anything else (unavailable, deadline, a connection torn down mid-call,
            // which surfaces as Unknown or Internal) may pass next time.
            _ => self.unreachable(format!("{:?}: {}", s.code(), s.message())),
        }
    }

    async fn call<T, F>(&self, timeout: Duration, f: F) -> Result<T, ClusterError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.status(s)),
            Err(_) => Err(self.unreachable(format!("no answer within {timeout:?}"))),
        }
    }

    pub async fn heartbeat(
        &self,
        beat: pb::Beat,
        timeout: Duration,
    ) -> Result<pb::Beat, ClusterError> {
        let mut c = self.client.clone();
        self.call(timeout, c.heartbeat(beat)).await
    }

    /// Sends a write to its owner; `numbering` is the sender's (incarnation, seq, low),
    /// see [`super::idempotence`]. Returns the owner's answer and what changed.
    pub async fn forward(
        &self,
        from: &str,
        numbering: (u64, u64, u64),
        write: &Forwarded,
        timeout: Duration,
    ) -> Result<(ForwardedReply, pb::ForwardReply), ClusterError> {
        let mut c = self.client.clone();
        let (incarnation, seq, low) = numbering;
        let req = pb::ForwardRequest {
            from: from.to_string(),
            request: wire::to_json(write),
            incarnation,
            seq,
            low,
        };
        let reply = self.call(timeout, c.forward(req)).await?;
        let result = wire::from_json(&reply.reply).map_err(|message| ClusterError::BadPayload {
            peer: self.dial.clone(),
            what: "forward reply",
            message,
        })?;
        Ok((result, reply))
    }

    pub async fn replicate(
        &self,
        batch: pb::StateBatch,
        timeout: Duration,
    ) -> Result<pb::ReplicateAck, ClusterError> {
        let mut c = self.client.clone();
        self.call(timeout, c.replicate(batch)).await
    }

    pub async fn checksums(
        &self,
        list: pb::ChecksumList,
        timeout: Duration,
    ) -> Result<pb::WantedKeys, ClusterError> {
        let mut c = self.client.clone();
        self.call(timeout, c.checksums(list)).await
    }

    /// Opens the snapshot stream (the caller reads it chunk by chunk).
    pub async fn snapshot(
        &self,
        from: &str,
        timeout: Duration,
    ) -> Result<tonic::Streaming<pb::StateBatch>, ClusterError> {
        let mut c = self.client.clone();
        self.call(
            timeout,
            c.snapshot(pb::SnapshotRequest {
                from: from.to_string(),
            }),
        )
        .await
    }
}
