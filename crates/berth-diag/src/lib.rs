//! The diagnostics gateway (`berth diag`), the proxy of the source design's Bistoury.
//!
//! Agents dial a gateway and hold one gRPC stream to it, so no node has to accept
//! connections; one gateway holds many agents. The gateway registers itself and every
//! node it holds in the service registry, so a user (the server, for the CLI and the web
//! UI) finds the gateway of a node with one lookup, then runs an operation there: logs
//! grep and tail, process and port listings. The operations themselves run in the agent
//! (`berth-agent`'s `diag` module); the gateway only relays, with per-request flow
//! control and cancellation ([`gateway`]).
//!
//! Owns: the gateway service and which registry entries it keeps. Must never depend on
//! the server, agent or registry crates: it speaks to them through `berth-proto` and the
//! Nacos API, whose client is `berth-registry-client`.
#![forbid(unsafe_code)]

pub mod config;
pub mod gateway;
pub mod registration;

use std::net::SocketAddr;
use std::sync::Arc;

use berth_proto::diag::v1::diag_gateway_server::DiagGatewayServer;
use berth_util::net::{BindError, bind_tcp};
use tokio_util::sync::CancellationToken;

pub use config::DiagConfig;
pub use gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Tls(#[from] berth_identity::TlsError),
}

/// A running gateway.
#[derive(Clone)]
pub struct DiagHandle {
    addr: SocketAddr,
    gateway: Gateway,
}

impl DiagHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }
}

/// Binds and serves until `token` is cancelled.
pub async fn start(config: DiagConfig, token: CancellationToken) -> Result<DiagHandle, Error> {
    // Unreadable certificates stop the start before anything listens.
    let tls = match config.tls()? {
        Some(files) => Some(berth_identity::ReloadingTls::load(files)?),
        None => None,
    };
    let listener = bind_tcp(config.listen, "--listen").await?;
    let addr = listener.local_addr().map_err(|source| BindError {
        addr: config.listen,
        setting: "--listen".into(),
        hint: "check the address",
        source,
    })?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let gateway_id = format!("diag-{}", advertise.replace([':', '.', '[', ']'], "-"));
    let registrar = match (config.registry_http, advertise.parse::<SocketAddr>()) {
        (Some(registry), Ok(advertised)) => Some(Arc::new(registration::Registrar::new(
            registry,
            config
                .registry_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
            advertised,
            &gateway_id,
        ))),
        (Some(_), Err(_)) => {
            tracing::warn!(%advertise, "advertise is not an ip:port; the gateway is not registered");
            None
        }
        (None, _) => None,
    };
    let gateway = Gateway::new(
        gateway_id,
        advertise,
        config.secret.clone(),
        config.window,
        registrar.clone(),
    );
    if let Some(registrar) = registrar {
        tokio::spawn(registrar.run(token.clone()));
    }
    let service = DiagGatewayServer::new(gateway.clone());
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(config.tls_reload_interval, token.clone()));
    }
    let tls_on = tls.is_some();
    tokio::spawn(async move {
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .add_service(service);
        // With TLS the handshake verifies the certificate against the CA; each call then
        // checks the role (and an agent's node id) in it.
        let result = berth_identity::accept::serve(server, listener, "diag", tls, token).await;
        if let Err(err) = result {
            tracing::error!(%err, "diagnostics gateway failed");
        }
    });
    tracing::info!(%addr, tls = tls_on, "diagnostics gateway started");
    Ok(DiagHandle { addr, gateway })
}
