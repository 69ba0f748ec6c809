//! The registry's native gRPC watch: a snapshot (or the changes after `from_revision`),
//! then every change. The router keeps this stream open and reconnects with its last
//! revision; command-line tools read the current state once ([`snapshot`]).

use std::net::SocketAddr;
use std::time::Duration;

use berth_proto::registry::v1::registry_client::RegistryClient;
use berth_proto::registry::v1::{Service, WatchEvent, WatchRequest, watch_event::Kind};

pub use berth_proto::registry::v1::{Instance as WireInstance, Service as WireService};

/// Why a watch could not be opened, with the transport's own error for callers that
/// word it themselves.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Endpoint(tonic::transport::Error),
    #[error("{0}")]
    Connect(tonic::transport::Error),
    #[error("{}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
}

/// Opens a watch at `endpoint` (an `http(s)://` URL). `token`, when set, is sent as a
/// bearer token.
pub async fn open(
    endpoint: &str,
    connect_timeout: Option<Duration>,
    request: WatchRequest,
    token: Option<&str>,
) -> Result<tonic::Streaming<WatchEvent>, OpenError> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(OpenError::Endpoint)?
        .tcp_nodelay(true);
    if let Some(timeout) = connect_timeout {
        endpoint = endpoint.connect_timeout(timeout);
    }
    let channel = endpoint.connect().await.map_err(OpenError::Connect)?;
    let mut request = tonic::Request::new(request);
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    Ok(RegistryClient::new(channel)
        .watch(request)
        .await
        .map_err(OpenError::Refused)?
        .into_inner())
}

/// Why the registry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the registry at {addr}: {reason}; is `berth registry` running there (--registry ADDR)?"
    )]
    Connect { addr: SocketAddr, reason: String },
    #[error("the registry at {addr} refused the watch: {status}")]
    Refused { addr: SocketAddr, status: String },
    #[error("the registry at {addr} closed the stream before sending its state")]
    Closed { addr: SocketAddr },
}

/// Opens a watch at `addr`, for tools that name the registry by address.
pub async fn watch(
    addr: SocketAddr,
    request: WatchRequest,
    token: Option<&str>,
) -> Result<tonic::Streaming<WatchEvent>, ClientError> {
    open(&format!("http://{addr}"), None, request, token)
        .await
        .map_err(|err| match err {
            OpenError::Endpoint(e) | OpenError::Connect(e) => ClientError::Connect {
                addr,
                reason: e.to_string(),
            },
            OpenError::Refused(s) => ClientError::Refused {
                addr,
                status: s.message().to_string(),
            },
        })
}

/// Every service of `namespace` (empty: `public`) at the registry's current revision.
pub async fn snapshot(
    addr: SocketAddr,
    namespace: &str,
    token: Option<&str>,
) -> Result<(u64, Vec<Service>), ClientError> {
    let request = WatchRequest {
        namespace: namespace.to_string(),
        ..Default::default()
    };
    let mut stream = watch(addr, request, token).await?;
    loop {
        match stream.message().await {
            Ok(Some(event)) => {
                if let Some(Kind::Snapshot(s)) = event.kind {
                    return Ok((event.revision, s.services));
                }
            }
            Ok(None) => return Err(ClientError::Closed { addr }),
            Err(s) => {
                return Err(ClientError::Refused {
                    addr,
                    status: s.message().to_string(),
                });
            }
        }
    }
}

/// One service as JSON (snake_case fields), for `-o json` output.
pub fn service_json(s: &Service) -> serde_json::Value {
    serde_json::json!({
        "namespace": s.namespace,
        "group": s.group,
        "name": s.name,
        "revision": s.revision,
        "metadata": s.metadata,
        "instances": s.instances.iter().map(|i| serde_json::json!({
            "id": i.id, "ip": i.ip, "port": i.port, "weight": i.weight, "healthy": i.healthy,
            "enabled": i.enabled, "ephemeral": i.ephemeral, "cluster": i.cluster,
            "metadata": i.metadata,
        })).collect::<Vec<_>>(),
    })
}

/// The whole listing as JSON text.
pub fn list_json(revision: u64, services: &[Service]) -> String {
    let list: Vec<_> = services.iter().map(service_json).collect();
    serde_json::json!({"revision": revision, "services": list}).to_string()
}
