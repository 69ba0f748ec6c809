//! The client side of Berth's mutual-TLS gRPC links: a tonic channel whose connections
//! present this role's certificate and accept only a peer of the expected role.
//!
//! The peer is verified by its role-wide name (`diag.berth`, `registry.berth`), never by
//! the address dialed, so a gateway found in the registry by IP is still checked as a
//! gateway. Each new connection takes the client config current at that moment (see
//! [`crate::ReloadingTls`]), so a reconnect presents a reloaded certificate.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{ReloadingTls, Role};

/// Connects `endpoint` (an `http://host:port` URL) over mutual TLS, verifying the peer
/// as a certificate of `peer`.
pub async fn connect(
    endpoint: Endpoint,
    tls: Arc<ReloadingTls>,
    peer: Role,
) -> Result<Channel, tonic::transport::Error> {
    endpoint
        .connect_with_connector(tower::service_fn(move |uri: Uri| {
            dial(tls.clone(), uri, peer)
        }))
        .await
}

/// [`connect`] that connects on the first call, and again after a broken connection.
pub fn connect_lazy(endpoint: Endpoint, tls: Arc<ReloadingTls>, peer: Role) -> Channel {
    endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: Uri| {
        dial(tls.clone(), uri, peer)
    }))
}

/// Dials `uri`'s authority over TCP, then TLS verifying `ROLE.berth`.
async fn dial(
    tls: Arc<ReloadingTls>,
    uri: Uri,
    peer: Role,
) -> Result<TokioIo<TlsStream<TcpStream>>, std::io::Error> {
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{uri} has no host:port"),
            )
        })?;
    let tcp = TcpStream::connect(&authority).await?;
    tcp.set_nodelay(true)?;
    let name = crate::server_name(&peer.dns_name());
    let stream = tokio_rustls::TlsConnector::from(tls.client())
        .connect(name, tcp)
        .await?;
    Ok(TokioIo::new(stream))
}
