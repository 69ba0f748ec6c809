//! The JSON shapes Nacos 1.x answers with, field for field, so clients parse them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::model::{BeatTimings, CheckSpec, Instance, Service, ServiceKey};

/// Milliseconds since the Unix epoch (Nacos's `lastRefTime`).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One entry of `hosts` in an instance list, serialized straight to bytes (lists are the
/// registry's hottest read; building a `Value` tree first doubled their cost).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Host<'a> {
    instance_id: InstanceId<'a>,
    ip: &'a str,
    port: u16,
    weight: f64,
    healthy: bool,
    enabled: bool,
    ephemeral: bool,
    cluster_name: &'a str,
    service_name: &'a str,
    metadata: &'a BTreeMap<String, String>,
    instance_heart_beat_interval: u64,
    instance_heart_beat_time_out: u64,
    ip_delete_timeout: u64,
    instance_id_generator: &'static str,
}

impl<'a> Host<'a> {
    fn new(service_name: &'a str, i: &'a Instance, defaults: &BeatTimings) -> Self {
        let t = i.timings(defaults);
        Self {
            instance_id: InstanceId {
                instance: i,
                grouped_name: service_name,
            },
            ip: &i.ip,
            port: i.port,
            weight: i.weight,
            healthy: i.healthy(),
            enabled: i.enabled,
            ephemeral: i.ephemeral,
            cluster_name: &i.cluster,
            service_name,
            metadata: &i.metadata,
            instance_heart_beat_interval: t.interval_ms,
            instance_heart_beat_time_out: t.unhealthy_after_ms,
            ip_delete_timeout: t.delete_after_ms,
            instance_id_generator: "simple",
        }
    }
}

/// An instance's id written straight into the output: Nacos ids are derived, not stored
/// (see [`Instance::id`]), and building each one as a `String` first would cost a list
/// one allocation per host.
struct InstanceId<'a> {
    instance: &'a Instance,
    /// "group@@service".
    grouped_name: &'a str,
}

impl std::fmt::Display for InstanceId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.instance;
        match &i.id {
            Some(id) => f.write_str(id),
            None => write!(f, "{}#{}#{}#{}", i.ip, i.port, i.cluster, self.grouped_name),
        }
    }
}

impl Serialize for InstanceId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The `hosts` array of an instance list: the instances `filter` keeps, as JSON bytes.
pub fn render_hosts(
    key: &ServiceKey,
    svc: Option<&Service>,
    filter: &ListFilter,
    defaults: &BeatTimings,
) -> Vec<u8> {
    let name = key.grouped_name();
    let hosts: Vec<Host<'_>> = svc
        .map(|s| {
            s.instances
                .values()
                .filter(|i| filter.keeps(i))
                .map(|i| Host::new(&name, i, defaults))
                .collect()
        })
        .unwrap_or_default();
    // Serializing plain structs and maps of strings into a Vec cannot fail.
    serde_json::to_vec(&hosts).unwrap_or_else(|_| b"[]".to_vec())
}

/// Which instances a list request asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ListFilter {
    /// Empty: every cluster.
    pub clusters: Vec<String>,
    pub healthy_only: bool,
}

impl ListFilter {
    pub fn parse(clusters: Option<&str>, healthy_only: bool) -> Self {
        let mut clusters: Vec<String> = clusters
            .unwrap_or("")
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        clusters.sort();
        clusters.dedup();
        Self {
            clusters,
            healthy_only,
        }
    }

    pub fn clusters_param(&self) -> String {
        self.clusters.join(",")
    }

    fn keeps(&self, i: &Instance) -> bool {
        // Nacos 1.x never hands out disabled instances.
        i.enabled
            && (!self.healthy_only || i.healthy())
            && (self.clusters.is_empty() || self.clusters.iter().any(|c| **c == *i.cluster))
    }
}

/// The `/instance/list` answer (also the `data` of a UDP push), around a `hosts` array
/// rendered by [`render_hosts`] (possibly cached: only this envelope is per request).
pub fn render_service_info(
    key: &ServiceKey,
    svc: Option<&Service>,
    filter: &ListFilter,
    cache_millis: u64,
    hosts: &[u8],
) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Head<'a> {
        name: String,
        group_name: &'a str,
        clusters: String,
        cache_millis: u64,
        last_ref_time: u64,
        checksum: String,
        #[serde(rename = "allIPs")]
        all_ips: bool,
        reach_protection_threshold: bool,
        valid: bool,
    }
    let head = Head {
        name: key.grouped_name(),
        group_name: &key.group,
        clusters: filter.clusters_param(),
        cache_millis,
        last_ref_time: now_millis(),
        checksum: svc.map(|s| format!("{:x}", s.revision)).unwrap_or_default(),
        all_ips: false,
        reach_protection_threshold: false,
        valid: true,
    };
    let mut out = serde_json::to_vec(&head).unwrap_or_else(|_| b"{}".to_vec());
    // Splice `"hosts":[...]` in before the closing brace of the head object.
    out.pop();
    out.extend_from_slice(b",\"hosts\":");
    out.extend_from_slice(hosts);
    out.push(b'}');
    out
}

/// The `GET /instance` answer.
pub fn instance_detail(key: &ServiceKey, i: &Instance) -> Value {
    json!({
        "service": key.grouped_name(),
        "ip": i.ip,
        "port": i.port,
        "clusterName": i.cluster,
        "weight": i.weight,
        "healthy": i.healthy(),
        "instanceId": i.id(key),
        "metadata": i.metadata,
    })
}

fn health_checker(s: &Service, cluster: &str) -> Value {
    let check = s
        .clusters
        .get(cluster)
        .map(|c| c.check.clone())
        .or_else(|| {
            s.instances
                .values()
                .find(|i| &*i.cluster == cluster && !i.ephemeral)
                .and_then(|i| i.check.clone())
        });
    match check {
        Some(CheckSpec::Http { path }) => {
            json!({"type": "HTTP", "path": path, "headers": "", "expectedResponseCode": 200})
        }
        Some(CheckSpec::None) => json!({"type": "NONE"}),
        _ => json!({"type": "TCP"}),
    }
}

/// Reads a Nacos `healthChecker` JSON (`{"type":"HTTP","path":"/health"}`).
pub fn parse_health_checker(raw: &str) -> Result<CheckSpec, String> {
    let v: Value = serde_json::from_str(raw)
        .map_err(|e| format!("is not JSON ({e}); send {{\"type\":\"TCP\"}} or {{\"type\":\"HTTP\",\"path\":\"/health\"}}"))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or("needs a string field 'type' (TCP, HTTP or NONE)")?;
    match kind.to_ascii_uppercase().as_str() {
        "TCP" => Ok(CheckSpec::Tcp),
        "NONE" => Ok(CheckSpec::None),
        "HTTP" => {
            let path = v.get("path").and_then(Value::as_str).unwrap_or("/");
            Ok(CheckSpec::Http {
                path: if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                },
            })
        }
        other => Err(format!(
            "type '{}' is not supported; use TCP, HTTP or NONE",
            crate::http::params::clip(other)
        )),
    }
}

/// The `GET /service` answer.
pub fn service_detail(s: &Service) -> Value {
    let mut names = s.cluster_names();
    names.extend(s.clusters.keys().cloned());
    names.sort();
    names.dedup();
    let clusters: Vec<Value> = names
        .iter()
        .map(|c| {
            let metadata = s
                .clusters
                .get(c)
                .map(|c| c.metadata.clone())
                .unwrap_or_default();
            json!({"name": c, "healthChecker": health_checker(s, c), "metadata": metadata})
        })
        .collect();
    let selector: Value = s
        .selector
        .as_deref()
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_else(|| json!({"type": "none"}));
    json!({
        "namespaceId": s.key.namespace,
        "groupName": s.key.group,
        "name": s.key.name,
        "protectThreshold": s.protect_threshold,
        "metadata": s.metadata,
        "selector": selector,
        "clusters": clusters,
    })
}

/// Nacos metadata: a JSON object, or `k=v,k=v`. Values become strings.
pub fn parse_metadata(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(BTreeMap::new());
    }
    if raw.starts_with('{') {
        let v: Value = serde_json::from_str(raw).map_err(|e| {
            format!("is not a JSON object ({e}); send {{\"key\":\"value\"}} or key=value,key=value")
        })?;
        return json_metadata(&v);
    }
    let mut out = BTreeMap::new();
    for pair in raw.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "entry '{}' has no '='; send key=value,key=value or a JSON object",
                crate::http::params::clip(pair)
            ));
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// A JSON object as string metadata.
pub fn json_metadata(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = v else {
        return Err("must be a JSON object of strings".into());
    };
    Ok(map
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checker_types() {
        assert_eq!(
            parse_health_checker(r#"{"type":"tcp"}"#),
            Ok(CheckSpec::Tcp)
        );
        assert_eq!(
            parse_health_checker(r#"{"type":"HTTP","path":"health"}"#),
            Ok(CheckSpec::Http {
                path: "/health".into()
            })
        );
        assert!(
            parse_health_checker(r#"{"type":"MYSQL"}"#)
                .unwrap_err()
                .contains("MYSQL")
        );
        assert!(parse_health_checker("{").is_err());
        assert!(parse_health_checker("{}").unwrap_err().contains("'type'"));
    }

    #[test]
    fn metadata_accepts_json_and_pairs() {
        let m = parse_metadata(r#"{"a":"1","b":2}"#).unwrap();
        assert_eq!(m.get("b").unwrap(), "2");
        let m = parse_metadata("a=1, b=x=y").unwrap();
        assert_eq!(m.get("b").unwrap(), "x=y");
        assert!(parse_metadata("nonsense").is_err());
        assert!(parse_metadata("{broken").is_err());
        assert!(parse_metadata("[1]").is_err());
    }
}
