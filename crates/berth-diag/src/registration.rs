//! The gateway's entries in the service registry, through the Nacos v1 HTTP API.
//!
//! - `berth.diag`: one instance per gateway (its advertised address), so users and
//!   operators can list the gateways.
//! - `berth.diag.node.<node id>`: one instance, the gateway that holds that node's agent.
//!   This is the agent -> gateway mapping the source design suggests keeping in a shared
//!   store: a user finds the right gateway with one lookup instead of asking them all.
//!
//! Entries are ephemeral and beaten every 5 s, so a gateway that dies drops out of both
//! services within the registry's 15/30 s, while the agents it held reconnect elsewhere
//! and are registered there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_registry_client::nacos::{
    BEAT_INTERVAL, BeatOutcome, Credentials, NacosClient, Registration,
};
use berth_registry_client::{RegistryError, names};
use tokio_util::sync::CancellationToken;

pub use berth_registry_client::names::DIAG_GATEWAYS as GATEWAYS_SERVICE;

/// The registry service whose one instance is the gateway holding `node`.
pub fn node_service(node: &str) -> String {
    names::diag_node_service(node)
}

pub struct Registrar {
    client: NacosClient,
    ip: String,
    port: u16,
    gateway_id: String,
    nodes: Mutex<BTreeSet<String>>,
}

impl Registrar {
    /// `secret`: the registry's auth secret, when its auth is on.
    pub fn new(
        registry: std::net::SocketAddr,
        secret: Option<String>,
        advertise: std::net::SocketAddr,
        gateway_id: &str,
    ) -> Self {
        let credentials = Credentials::new(
            secret,
            "--registry-secret-file FILE (or BERTH_DIAG_REGISTRY_SECRET_FILE)",
        );
        Self {
            client: NacosClient::new(format!("http://{registry}"), Duration::from_secs(3))
                .with_credentials(credentials),
            ip: advertise.ip().to_string(),
            port: advertise.port(),
            gateway_id: gateway_id.to_string(),
            nodes: Mutex::default(),
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registration(&self, service: &str) -> Registration {
        Registration {
            service: service.to_string(),
            ip: self.ip.clone(),
            port: self.port,
            metadata: BTreeMap::from([("berth.diag.gateway".to_string(), self.gateway_id.clone())]),
        }
    }

    async fn register(&self, service: &str) -> Result<(), Failure> {
        self.client
            .register(&self.registration(service))
            .await
            .map_err(|err| self.failure("register", service, err))
    }

    fn failure(&self, op: &str, service: &str, err: RegistryError) -> Failure {
        Failure {
            news: self.client.should_report(&err),
            auth: matches!(err, RegistryError::Unauthorized { .. }),
            text: describe(op, service, err),
        }
    }

    async fn deregister(&self, service: &str) {
        let _ = self.client.deregister(&self.registration(service)).await;
    }

    /// A beat; an instance the registry forgot is registered again.
    async fn beat(&self, service: &str) -> Result<(), Failure> {
        match self.client.beat(&self.registration(service)).await {
            Ok(BeatOutcome::Alive) => Ok(()),
            Ok(BeatOutcome::NotFound) => self.register(service).await,
            Err(err) => Err(self.failure("beat", service, err)),
        }
    }

    pub fn attached(self: &Arc<Self>, node: &str) {
        self.nodes().insert(node.to_string());
        let this = self.clone();
        let service = node_service(node);
        tokio::spawn(async move {
            if let Err(err) = this.register(&service).await {
                err.log("");
            }
        });
    }

    pub fn detached(self: &Arc<Self>, node: &str) {
        self.nodes().remove(node);
        let this = self.clone();
        let service = node_service(node);
        tokio::spawn(async move { this.deregister(&service).await });
    }

    /// Registers the gateway, beats every entry until `cancel`, then withdraws them all.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        if let Err(err) = self.register(GATEWAYS_SERVICE).await {
            err.log(" (retried with the beats)");
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(BEAT_INTERVAL) => {}
            }
            for service in self.services() {
                match self.beat(&service).await {
                    // An auth refusal is worth one warning; a beat lost now and then is not.
                    Err(err) if err.news && err.auth => err.log(""),
                    Err(err) => tracing::debug!("registry: {}", err.text),
                    Ok(()) => {}
                }
            }
        }
        for service in self.services() {
            self.deregister(&service).await;
        }
    }

    fn services(&self) -> Vec<String> {
        std::iter::once(GATEWAYS_SERVICE.to_string())
            .chain(self.nodes().iter().map(|n| node_service(n)))
            .collect()
    }
}

/// A failed registry call, worded, and whether it deserves a warning (an auth refusal
/// only once until the registry accepts a call again).
struct Failure {
    text: String,
    news: bool,
    auth: bool,
}

impl Failure {
    fn log(&self, suffix: &str) {
        if self.news {
            tracing::warn!("registry: {}{suffix}", self.text);
        } else {
            tracing::debug!("registry: {}{suffix}", self.text);
        }
    }
}

/// The gateway's own wording of a failed call: `register berth.diag: HTTP 503 Service
/// Unavailable`.
fn describe(op: &str, service: &str, err: RegistryError) -> String {
    match err {
        RegistryError::Unreachable { source, .. } | RegistryError::Unreadable { source, .. } => {
            format!("{op} {service}: {source}")
        }
        RegistryError::Unauthorized { status, advice, .. } => {
            format!("{op} {service}: HTTP {status}: {advice}")
        }
        RegistryError::Refused { status, .. } => {
            let status = reqwest::StatusCode::from_u16(status)
                .map(|s| s.to_string())
                .unwrap_or_else(|_| status.to_string());
            format!("{op} {service}: HTTP {status}")
        }
    }
}
