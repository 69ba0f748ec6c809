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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub const GATEWAYS_SERVICE: &str = "berth.diag";
const GROUP: &str = "DEFAULT_GROUP";
const NAMESPACE: &str = "public";
const BEAT: Duration = Duration::from_secs(5);

/// The registry service whose one instance is the gateway holding `node`.
pub fn node_service(node: &str) -> String {
    format!("berth.diag.node.{node}")
}

pub struct Registrar {
    client: reqwest::Client,
    base: String,
    ip: String,
    port: u16,
    gateway_id: String,
    nodes: Mutex<BTreeSet<String>>,
}

impl Registrar {
    pub fn new(
        registry: std::net::SocketAddr,
        advertise: std::net::SocketAddr,
        gateway_id: &str,
    ) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .no_proxy()
                .build()
                .unwrap_or_default(),
            base: format!("http://{registry}/nacos/v1/ns"),
            ip: advertise.ip().to_string(),
            port: advertise.port(),
            gateway_id: gateway_id.to_string(),
            nodes: Mutex::default(),
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn params(&self, service: &str) -> Vec<(&'static str, String)> {
        vec![
            ("serviceName", service.to_string()),
            ("groupName", GROUP.to_string()),
            ("namespaceId", NAMESPACE.to_string()),
            ("ip", self.ip.clone()),
            ("port", self.port.to_string()),
            ("ephemeral", "true".to_string()),
        ]
    }

    fn metadata(&self) -> String {
        serde_json::json!({ "berth.diag.gateway": self.gateway_id }).to_string()
    }

    async fn register(&self, service: &str) -> Result<(), String> {
        let mut params = self.params(service);
        params.push(("metadata", self.metadata()));
        let response = self
            .client
            .post(format!("{}/instance", self.base))
            .form(&params)
            .send()
            .await
            .map_err(|e| format!("register {service}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("register {service}: HTTP {}", response.status()))
        }
    }

    async fn deregister(&self, service: &str) {
        let _ = self
            .client
            .delete(format!("{}/instance", self.base))
            .query(&self.params(service))
            .send()
            .await;
    }

    /// A beat; an instance the registry forgot (code 20404) is registered again.
    async fn beat(&self, service: &str) -> Result<(), String> {
        let beat = serde_json::json!({
            "serviceName": service,
            "ip": self.ip,
            "port": self.port,
            "cluster": "DEFAULT",
            "metadata": { "berth.diag.gateway": self.gateway_id },
        });
        let mut params = self.params(service);
        params.push(("beat", beat.to_string()));
        let response = self
            .client
            .put(format!("{}/instance/beat", self.base))
            .form(&params)
            .send()
            .await
            .map_err(|e| format!("beat {service}: {e}"))?;
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if body["code"] == 20404 {
            self.register(service).await
        } else {
            Ok(())
        }
    }

    pub fn attached(self: &Arc<Self>, node: &str) {
        self.nodes().insert(node.to_string());
        let this = self.clone();
        let service = node_service(node);
        tokio::spawn(async move {
            if let Err(err) = this.register(&service).await {
                tracing::warn!("registry: {err}");
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
            tracing::warn!("registry: {err} (retried with the beats)");
        }
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(BEAT) => {}
            }
            let services: Vec<String> = std::iter::once(GATEWAYS_SERVICE.to_string())
                .chain(self.nodes().iter().map(|n| node_service(n)))
                .collect();
            for service in services {
                if let Err(err) = self.beat(&service).await {
                    tracing::debug!("registry: {err}");
                }
            }
        }
        let services: Vec<String> = std::iter::once(GATEWAYS_SERVICE.to_string())
            .chain(self.nodes().iter().map(|n| node_service(n)))
            .collect();
        for service in services {
            self.deregister(&service).await;
        }
    }
}
