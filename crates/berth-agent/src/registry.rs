//! Registers healthy instances in the service registry through the Nacos v1 HTTP API,
//! the API every Nacos client speaks, so the agent works against any registry that
//! speaks it (Berth's own or a real Nacos).
//!
//! Naming: the service name is the app id with `/` replaced by `.` (`shop/web` ->
//! `shop.web`), because `/` would be read as a path separator by HTTP tooling and is
//! not valid in DNS names that Consul-style lookups derive from service names. Group
//! `DEFAULT_GROUP`, namespace `public`, ephemeral instances (kept alive by beats).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::spec::InstanceSpec;

pub const GROUP: &str = "DEFAULT_GROUP";
pub const NAMESPACE: &str = "public";
/// Nacos clients beat every 5 s; the registry marks an instance unhealthy after 15 s
/// without one and removes it after 30 s.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(5);

/// The registry service name of an app.
pub fn service_name(app_id: &str) -> String {
    app_id.replace('/', ".")
}

/// One instance as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub service: String,
    pub ip: String,
    pub port: u16,
    pub metadata: BTreeMap<String, String>,
}

impl Registration {
    /// `None` when the instance has no port, so nothing could be routed to it.
    pub fn of(spec: &InstanceSpec, ports: &[u16], ip: &str, node_id: &str) -> Option<Self> {
        let port = *ports.first()?;
        let mut metadata = BTreeMap::new();
        metadata.insert("berth.app".to_string(), spec.app_id.clone());
        metadata.insert("berth.instance".to_string(), spec.instance_id.to_string());
        metadata.insert("berth.version".to_string(), spec.app_version.to_string());
        metadata.insert("berth.node".to_string(), node_id.to_string());
        metadata.insert("berth.routes".to_string(), spec.routes.join(","));
        Some(Self {
            service: service_name(&spec.app_id),
            ip: ip.to_string(),
            port,
            metadata,
        })
    }

    fn metadata_json(&self) -> String {
        serde_json::to_string(&self.metadata).unwrap_or_else(|_| "{}".to_string())
    }

    fn base_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("serviceName", self.service.clone()),
            ("groupName", GROUP.to_string()),
            ("namespaceId", NAMESPACE.to_string()),
            ("ip", self.ip.clone()),
            ("port", self.port.to_string()),
            ("ephemeral", "true".to_string()),
        ]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry at {base} unreachable for {op}: {source} (check --registry-http)")]
    Unreachable {
        base: String,
        op: &'static str,
        source: reqwest::Error,
    },
    #[error("registry at {base} refused {op} with HTTP {status}: {body}")]
    Refused {
        base: String,
        op: &'static str,
        status: u16,
        body: String,
    },
}

/// Whether a beat found the instance; a registry that forgot it (restart, 30 s without
/// beats) answers "not found" and the instance must be registered again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatOutcome {
    Alive,
    NotFound,
}

#[derive(Debug, Clone)]
pub struct NacosClient {
    http: reqwest::Client,
    base: String,
}

impl NacosClient {
    /// `base` like `http://127.0.0.1:8848`.
    pub fn new(base: String, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self { http, base }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        op: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<String, RegistryError> {
        let unreachable = |source| RegistryError::Unreachable {
            base: self.base.clone(),
            op,
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(RegistryError::Refused {
                base: self.base.clone(),
                op,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        Ok(body)
    }

    pub async fn register(&self, reg: &Registration) -> Result<(), RegistryError> {
        let mut params = reg.base_params();
        params.push(("metadata", reg.metadata_json()));
        params.push(("healthy", "true".to_string()));
        params.push(("enabled", "true".to_string()));
        params.push(("weight", "1.0".to_string()));
        let url = format!("{}/nacos/v1/ns/instance", self.base);
        self.call("register", self.http.post(url).query(&params))
            .await
            .map(drop)
    }

    pub async fn beat(&self, reg: &Registration) -> Result<BeatOutcome, RegistryError> {
        let beat = serde_json::json!({
            "serviceName": format!("{GROUP}@@{}", reg.service),
            "ip": reg.ip,
            "port": reg.port,
            "cluster": "DEFAULT",
            "weight": 1.0,
            "ephemeral": true,
            "scheduled": true,
            "metadata": reg.metadata,
        });
        let mut params = reg.base_params();
        params.push(("beat", beat.to_string()));
        let url = format!("{}/nacos/v1/ns/instance/beat", self.base);
        match self.call("beat", self.http.put(url).query(&params)).await {
            Ok(body) => {
                #[derive(Deserialize)]
                struct Reply {
                    code: Option<i64>,
                }
                let code = serde_json::from_str::<Reply>(&body)
                    .ok()
                    .and_then(|r| r.code);
                Ok(if code == Some(20404) {
                    BeatOutcome::NotFound
                } else {
                    BeatOutcome::Alive
                })
            }
            Err(RegistryError::Refused { status: 404, .. }) => Ok(BeatOutcome::NotFound),
            Err(err) => Err(err),
        }
    }

    pub async fn deregister(&self, reg: &Registration) -> Result<(), RegistryError> {
        let url = format!("{}/nacos/v1/ns/instance", self.base);
        self.call(
            "deregister",
            self.http.delete(url).query(&reg.base_params()),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_replace_slashes() {
        assert_eq!(service_name("shop/web"), "shop.web");
        assert_eq!(service_name("a/b/c"), "a.b.c");
        assert_eq!(service_name("plain"), "plain");
    }
}
