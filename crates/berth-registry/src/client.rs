//! A small client of the native watch, for command-line tools and consumers that want
//! the current state once (`berth services`).

use std::net::SocketAddr;

use berth_proto::registry::v1::registry_client::RegistryClient;
use berth_proto::registry::v1::{Service, WatchRequest, watch_event::Kind};

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

/// Opens a watch: a snapshot (or the changes after `from_revision`), then every change.
/// The router and agents keep this stream open and reconnect with their last revision.
pub async fn watch(
    addr: SocketAddr,
    request: WatchRequest,
    token: Option<&str>,
) -> Result<tonic::Streaming<berth_proto::registry::v1::WatchEvent>, ClientError> {
    let mut client = RegistryClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| ClientError::Connect {
            addr,
            reason: e.to_string(),
        })?;
    let mut request = tonic::Request::new(request);
    if let Some(token) = token
        && let Ok(value) = format!("Bearer {token}").parse()
    {
        request.metadata_mut().insert("authorization", value);
    }
    Ok(client
        .watch(request)
        .await
        .map_err(|s| ClientError::Refused {
            addr,
            status: s.message().to_string(),
        })?
        .into_inner())
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

pub use berth_proto::registry::v1::{Instance as WireInstance, Service as WireService};

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
