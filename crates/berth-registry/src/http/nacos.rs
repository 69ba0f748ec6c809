//! Nacos 1.x naming API (`/nacos/v1/ns/...`), as nacos-sdk-python and the Java client use it.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::AppState;
use super::nacos_json::{self, ListFilter, json_metadata, parse_metadata};
use super::params::{ApiError, Params, clip};
use crate::core::BeatResult;
use crate::model::{
    CheckSpec, DEFAULT_CLUSTER, DEFAULT_GROUP, DEFAULT_NAMESPACE, HealthStatus, Instance,
    InstanceKey, ServiceKey,
};
use crate::naming::Op;

/// Nacos's beat-OK code.
const CODE_OK: u64 = 10200;
/// Nacos's "resource not found" code for a beat of an unknown instance.
const CODE_NOT_FOUND: u64 = 20404;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/nacos/v1/ns/instance",
            get(get_instance)
                .post(register)
                .put(update)
                .delete(deregister),
        )
        .route("/nacos/v1/ns/instance/beat", any(beat))
        .route("/nacos/v1/ns/instance/list", any(list))
        .route(
            "/nacos/v1/ns/service",
            get(get_service)
                .post(create_service)
                .put(update_service)
                .delete(delete_service),
        )
        .route("/nacos/v1/ns/service/list", any(list_services))
        .route("/nacos/v1/ns/cluster", any(update_cluster))
        .route("/nacos/v1/ns/operator/metrics", get(operator_metrics))
}

fn ok() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "ok").into_response()
}

fn json_response(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// Names checked like Nacos does: no spaces, no separators that break ids.
fn name_param<'a>(p: &'a Params, param: &str, value: &'a str) -> Result<&'a str, ApiError> {
    if value.len() > 512 || value.contains('#') || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "parameter '{param}' is not a valid name: '{}'; use letters, digits, '.', ':', '_' and '-'",
            clip(value)
        )));
    }
    let _ = p;
    Ok(value)
}

/// Service from `serviceName` (maybe "group@@name"), `groupName`, `namespaceId`.
pub fn service_key(p: &Params) -> Result<ServiceKey, ApiError> {
    let name = p.required("serviceName")?;
    let namespace = p
        .opt_any(&["namespaceId", "tenant"])
        .unwrap_or(DEFAULT_NAMESPACE);
    let group = p.opt("groupName").unwrap_or(DEFAULT_GROUP);
    let key = ServiceKey::parse_grouped(namespace, name, group);
    name_param(p, "serviceName", &key.name)?;
    name_param(p, "groupName", &key.group)?;
    name_param(p, "namespaceId", &key.namespace)?;
    if key.name.is_empty() {
        return Err(ApiError::bad_request("parameter 'serviceName' is required"));
    }
    Ok(key)
}

fn cluster_param(p: &Params) -> Result<Option<&str>, ApiError> {
    match p.opt_any(&["clusterName", "cluster"]) {
        None => Ok(None),
        Some(c)
            if c.len() <= 128
                && c.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') =>
        {
            Ok(Some(c))
        }
        Some(c) => Err(ApiError::bad_request(format!(
            "parameter 'clusterName' must be letters, digits and '-', got '{}'",
            clip(c)
        ))),
    }
}

fn metadata_param(
    p: &Params,
) -> Result<Option<std::collections::BTreeMap<String, String>>, ApiError> {
    p.opt("metadata")
        .map(|raw| {
            parse_metadata(raw)
                .map_err(|e| ApiError::bad_request(format!("parameter 'metadata' {e}")))
        })
        .transpose()
}

/// Builds an instance from register/update parameters over `base` (update keeps fields
/// the request leaves out).
pub fn instance_from(
    p: &Params,
    key: &ServiceKey,
    base: Option<&Instance>,
    svc: Option<&crate::model::Service>,
) -> Result<Instance, ApiError> {
    let ip = p.ip("ip")?;
    let port = p.port("port")?;
    let cluster = cluster_param(p)?
        .map(crate::model::name)
        .or_else(|| base.map(|b| b.cluster.clone()))
        .unwrap_or_else(|| crate::model::name(DEFAULT_CLUSTER));
    let mut i = match base {
        Some(b) => b.clone(),
        None => Instance::new(key, ip, port, &cluster),
    };
    if let Some(w) = p.f64("weight")? {
        i.weight = w;
    }
    if let Some(e) = p.bool_any(&["enabled", "enable"])? {
        i.enabled = e;
    }
    if let Some(h) = p.bool("healthy")? {
        i.status = HealthStatus::from_healthy(h);
    }
    if let Some(e) = p.bool("ephemeral")? {
        i.ephemeral = e;
    }
    if let Some(m) = metadata_param(p)? {
        i.metadata = std::sync::Arc::new(m);
    }
    let cluster_check = svc
        .and_then(|s| s.clusters.get(&*i.cluster))
        .map(|c| c.check.clone());
    i.check = if i.ephemeral {
        None
    } else {
        Some(
            cluster_check
                .or_else(|| i.check.clone())
                .unwrap_or(CheckSpec::Tcp),
        )
    };
    Ok(i)
}

async fn register(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    // The service's cluster settings only matter to a persistent instance (its check):
    // an ephemeral registration skips the lookup and the read lock it contends for.
    let svc = if p.bool("ephemeral")?.unwrap_or(true) {
        None
    } else {
        s.registry.get(&key)
    };
    let instance = instance_from(&p, &key, None, svc.as_deref())?;
    s.registry
        .submit(Op::Register {
            service: key,
            instance,
        })
        .await?;
    Ok(ok())
}

async fn deregister(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let ip = p.ip("ip")?;
    let port = p.port("port")?;
    let cluster = cluster_param(&p)?;
    let found = s
        .registry
        .get(&key)
        .and_then(|svc| svc.find(ip, port, cluster).map(|i| i.key()));
    if let Some(instance) = found {
        s.registry
            .submit(Op::Deregister {
                service: key,
                instance,
            })
            .await?;
    }
    Ok(ok())
}

async fn update(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let ip = p.ip("ip")?;
    let port = p.port("port")?;
    let cluster = cluster_param(&p)?;
    let svc = s.registry.get(&key);
    let base = svc
        .as_deref()
        .and_then(|svc| svc.find(ip, port, cluster).cloned())
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "instance {ip}:{port} not found in service {key}; register it first"
            ))
        })?;
    let instance = instance_from(&p, &key, Some(&base), svc.as_deref())?;
    s.registry
        .submit(Op::Update {
            service: key,
            instance,
        })
        .await?;
    Ok(ok())
}

async fn get_instance(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let ip = p.ip("ip")?;
    let port = p.port("port")?;
    let cluster = cluster_param(&p)?;
    let svc = s
        .registry
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("service {key} not found")))?;
    let i = svc
        .find(ip, port, cluster)
        .ok_or_else(|| ApiError::not_found(format!("no instance {ip}:{port} in service {key}")))?;
    Ok(json_response(nacos_json::instance_detail(&key, i)))
}

fn beat_answer(s: &AppState, code: u64, interval: Option<u64>) -> Response {
    let mut v = json!({
        "clientBeatInterval": interval.unwrap_or(s.beat.interval_ms),
        "code": code,
    });
    if code == CODE_OK {
        v["lightBeatEnabled"] = json!(true);
    }
    json_response(v)
}

/// The `beat` JSON body a client sends with each beat.
#[derive(Debug)]
pub struct BeatBody {
    pub ip: String,
    pub port: u16,
    pub cluster: Option<String>,
    pub weight: Option<f64>,
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
    pub ephemeral: Option<bool>,
}

pub fn parse_beat(raw: &str) -> Result<BeatBody, ApiError> {
    let bad = |what: &str| ApiError::bad_request(format!("parameter 'beat' {what}"));
    let v: Value =
        serde_json::from_str(raw).map_err(|e| bad(&format!("is not valid JSON ({e})")))?;
    let ip = v
        .get("ip")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && !s.contains('#'))
        .ok_or_else(|| bad("needs a string field 'ip'"))?
        .to_string();
    let port = v
        .get("port")
        .and_then(|p| {
            p.as_u64()
                .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| bad("needs a field 'port' between 0 and 65535"))?;
    let metadata = match v.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m) => Some(json_metadata(m).map_err(|e| bad(&format!("field 'metadata' {e}")))?),
    };
    Ok(BeatBody {
        ip,
        port,
        cluster: v
            .get("cluster")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        weight: v
            .get("weight")
            .and_then(Value::as_f64)
            .filter(|w| w.is_finite() && *w >= 0.0),
        metadata,
        ephemeral: v.get("ephemeral").and_then(Value::as_bool),
    })
}

async fn beat(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let body = p.opt("beat").map(parse_beat).transpose()?;
    let (ip, port, cluster) = match &body {
        Some(b) => (b.ip.clone(), b.port, b.cluster.clone()),
        None => (
            p.ip("ip")?.to_string(),
            p.port("port")?,
            cluster_param(&p)?.map(str::to_string),
        ),
    };
    let result = s
        .registry
        .beat(
            key.clone(),
            ip.clone(),
            port,
            cluster.clone(),
            HealthStatus::Passing,
        )
        .await?;
    match result {
        BeatResult::Alive(i) => {
            let interval = i
                .metadata
                .contains_key(crate::model::META_BEAT_INTERVAL)
                .then(|| i.timings(&s.beat).interval_ms);
            Ok(beat_answer(&s, CODE_OK, interval))
        }
        BeatResult::NotFound => {
            let Some(b) = body else {
                return Ok(beat_answer(&s, CODE_NOT_FOUND, None));
            };
            // Nacos re-registers a beating instance it lost (restart, expiry race).
            let cluster = b.cluster.unwrap_or_else(|| DEFAULT_CLUSTER.to_string());
            let mut i = Instance::new(&key, b.ip, b.port, &cluster);
            if let Some(w) = b.weight {
                i.weight = w;
            }
            if let Some(m) = b.metadata {
                i.metadata = std::sync::Arc::new(m);
            }
            i.ephemeral = b.ephemeral.unwrap_or(true);
            if !i.ephemeral {
                i.check = Some(CheckSpec::Tcp);
            }
            let interval = i
                .metadata
                .contains_key(crate::model::META_BEAT_INTERVAL)
                .then(|| i.timings(&s.beat).interval_ms);
            s.registry
                .submit(Op::Register {
                    service: key,
                    instance: i,
                })
                .await?;
            Ok(beat_answer(&s, CODE_OK, interval))
        }
    }
}

async fn list(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let filter = ListFilter::parse(p.opt("clusters"), p.bool("healthyOnly")?.unwrap_or(false));
    let udp_port = p.opt_port("udpPort")?.filter(|p| *p > 0);
    let mut cache_millis = 3_000;
    if let Some(port) = udp_port {
        // Push goes to the address the request came from: a client cannot make the
        // registry send datagrams to a third party by naming another clientIP.
        let ip = match (p.opt("clientIP").and_then(|c| c.parse().ok()), p.peer) {
            (Some(claimed), Some(peer)) if claimed == peer.ip() => Some(claimed),
            (_, Some(peer)) => Some(peer.ip()),
            (claimed, None) => claimed,
        };
        if let Some(ip) = ip {
            s.push
                .subscribe(key.clone(), filter.clone(), SocketAddr::new(ip, port));
            cache_millis = 10_000;
        }
    }
    let svc = s.registry.get(&key);
    let hosts = s.lists.hosts(&key, svc.as_deref(), &filter, &s.beat);
    let body = nacos_json::render_service_info(&key, svc.as_deref(), &filter, cache_millis, &hosts);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

fn threshold(p: &Params) -> Result<Option<f32>, ApiError> {
    match p.f64("protectThreshold")? {
        Some(t) if t > 1.0 => Err(ApiError::bad_request(
            "parameter 'protectThreshold' must be between 0 and 1",
        )),
        other => Ok(other.map(|t| t as f32)),
    }
}

async fn create_service(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    s.registry
        .submit(Op::CreateService {
            service: key,
            metadata: metadata_param(&p)?.unwrap_or_default(),
            protect_threshold: threshold(&p)?.unwrap_or(0.0),
            selector: p.opt("selector").map(str::to_string),
        })
        .await?;
    Ok(ok())
}

async fn update_service(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let current = s
        .registry
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("service {key} not found; create it first")))?;
    s.registry
        .submit(Op::UpdateService {
            service: key,
            metadata: metadata_param(&p)?.unwrap_or_else(|| current.metadata.clone()),
            protect_threshold: threshold(&p)?.unwrap_or(current.protect_threshold),
            selector: p
                .opt("selector")
                .map(str::to_string)
                .or_else(|| current.selector.clone()),
        })
        .await?;
    Ok(ok())
}

async fn update_cluster(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let cluster = cluster_param(&p)?
        .ok_or_else(|| ApiError::bad_request("parameter 'clusterName' is required"))?
        .to_string();
    let current = s
        .registry
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("service {key} not found; create it first")))?;
    let existing = current.clusters.get(&cluster);
    let check = match p.opt("healthChecker") {
        Some(raw) => nacos_json::parse_health_checker(raw)
            .map_err(|e| ApiError::bad_request(format!("parameter 'healthChecker' {e}")))?,
        None => existing.map(|c| c.check.clone()).unwrap_or(CheckSpec::Tcp),
    };
    let metadata = match metadata_param(&p)? {
        Some(m) => m,
        None => existing.map(|c| c.metadata.clone()).unwrap_or_default(),
    };
    s.registry
        .submit(Op::UpdateCluster {
            service: key,
            cluster,
            config: crate::model::ClusterConfig { check, metadata },
        })
        .await?;
    Ok(ok())
}

async fn delete_service(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    s.registry
        .submit(Op::DeleteService { service: key })
        .await?;
    Ok(ok())
}

async fn get_service(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let key = service_key(&p)?;
    let svc = s
        .registry
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("service {key} not found")))?;
    Ok(json_response(nacos_json::service_detail(&svc)))
}

async fn list_services(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let page_no = p.u64("pageNo")?.unwrap_or(1).max(1);
    let page_size = p.u64("pageSize")?.unwrap_or(100).clamp(1, 10_000);
    let namespace = p
        .opt_any(&["namespaceId", "tenant"])
        .unwrap_or(DEFAULT_NAMESPACE);
    let group = p.opt("groupName").unwrap_or(DEFAULT_GROUP);
    let (_, services) = s.registry.snapshot();
    let mut names: Vec<String> = services
        .iter()
        .filter(|svc| &*svc.key.namespace == namespace && &*svc.key.group == group)
        .map(|svc| svc.key.name.to_string())
        .collect();
    names.sort();
    let count = names.len();
    let doms: Vec<String> = names
        .into_iter()
        .skip(((page_no - 1) * page_size) as usize)
        .take(page_size as usize)
        .collect();
    Ok(json_response(json!({"count": count, "doms": doms})))
}

async fn operator_metrics(State(s): State<AppState>) -> Response {
    let (services, instances, _) = s.registry.counts();
    json_response(json!({
        "status": "UP",
        "serviceCount": services,
        "instanceCount": instances,
        "responsibleServiceCount": services,
        "responsibleInstanceCount": instances,
        "clientCount": s.push.len(),
        "load": 0.0,
        "cpu": 0.0,
        "mem": 0.0,
    }))
}

/// Parses an instance key from parameters (used by tests and the Consul mapping).
pub fn instance_key(p: &Params) -> Result<InstanceKey, ApiError> {
    Ok(InstanceKey::new(
        p.ip("ip")?,
        p.port("port")?,
        cluster_param(p)?.unwrap_or(DEFAULT_CLUSTER),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_beat_body_parses_or_errors(raw in ".{0,200}") {
            let _ = parse_beat(&raw);
        }

        #[test]
        fn any_metadata_parses_or_errors(raw in ".{0,200}") {
            let _ = parse_metadata(&raw);
        }
    }

    #[test]
    fn beat_body_errors_name_fields() {
        assert!(parse_beat("{").unwrap_err().message.contains("'beat'"));
        assert!(
            parse_beat(r#"{"port":1}"#)
                .unwrap_err()
                .message
                .contains("'ip'")
        );
        assert!(
            parse_beat(r#"{"ip":"1.1.1.1","port":70000}"#)
                .unwrap_err()
                .message
                .contains("'port'")
        );
        let b = parse_beat(r#"{"ip":"1.1.1.1","port":"80","metadata":{"a":1}}"#).unwrap();
        assert_eq!(b.port, 80);
        assert_eq!(b.metadata.unwrap().get("a").unwrap(), "1");
    }

    #[test]
    fn service_key_reads_grouped_names() {
        let p = Params::from_pairs([("serviceName", "g@@svc"), ("namespaceId", "dev")]);
        assert_eq!(service_key(&p).unwrap(), ServiceKey::new("dev", "g", "svc"));
        let p = Params::from_pairs([("serviceName", "a#b")]);
        assert!(
            service_key(&p)
                .unwrap_err()
                .message
                .contains("'serviceName'")
        );
    }
}
