//! Consul HTTP API, the part service-discovery clients use, mapped onto the naming model:
//! a Consul service `Name` is a service in namespace `public`, group `DEFAULT_GROUP`; each
//! registration is a persistent instance in cluster `DEFAULT` whose id is the Consul
//! service `ID`. Reads support blocking queries (`index`, `wait`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use serde_json::{Map, Value, json};

use super::AppState;
use super::params::{ApiError, Params, clip};
use crate::core::Registry;
use crate::model::{
    CheckSpec, DEFAULT_CLUSTER, DEFAULT_GROUP, DEFAULT_NAMESPACE, HealthStatus, Instance, Service,
    ServiceKey,
};
use crate::naming::Op;

pub(crate) const NODE: &str = "berth";
pub(crate) const NODE_ADDRESS: &str = "127.0.0.1";
pub(crate) const DATACENTER: &str = "dc1";
/// Consul caps `wait` at ten minutes.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Metadata key holding a check id given at registration.
const META_CHECK_ID: &str = "consul.check_id";
/// Routing convention read by the router.
pub const META_ROUTES: &str = "berth.routes";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agent/service/register", put(register).post(register))
        .route(
            "/v1/agent/service/deregister/{id}",
            put(deregister).post(deregister),
        )
        .route(
            "/v1/agent/check/{verdict}/{*id}",
            put(check_update).post(check_update),
        )
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/status/peers", get(status_peers))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/{*rest}", any(unsupported))
}

async fn unsupported(Path(rest): Path<String>) -> ApiError {
    ApiError::not_found(format!(
        "/v1/{} is not part of the Consul API subset this registry serves; see docs/REGISTRY.md",
        clip(&rest)
    ))
}

/// Case-insensitive field lookup: Consul accepts `Name`, `name`, `NAME`.
pub(crate) fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| {
            k.eq_ignore_ascii_case(name) || k.replace('_', "").eq_ignore_ascii_case(name)
        })
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

pub(crate) fn str_field(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "field '{name}' must be a string, got {}",
            clip(&other.to_string())
        ))),
    }
}

/// Longest duration a part of a Go duration may give (about 31 years): TTLs and
/// deregister-after are kept in milliseconds, and far beyond this they would not fit.
const MAX_DURATION_SECS: u64 = 1_000_000_000;

/// Parses Go durations: "10s", "1m30s", "250ms", "1h"; a bare number is seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if let Ok(secs) = raw.parse::<u64>() {
        return (secs <= MAX_DURATION_SECS).then(|| Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = raw;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let secs = value * factor;
        if !secs.is_finite() || secs > MAX_DURATION_SECS as f64 {
            return None;
        }
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

fn duration_field(obj: &Map<String, Value>, name: &str) -> Result<Option<Duration>, ApiError> {
    match str_field(obj, name)? {
        None => Ok(None),
        Some(s) => parse_duration(&s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!(
                "field '{name}' must be a duration like \"10s\" or \"1m\", got '{}'",
                clip(&s)
            ))
        }),
    }
}

/// One check from a registration: spec, initial status, deregister-after, check id.
struct CheckDef {
    spec: CheckSpec,
    status: HealthStatus,
    deregister_after: Option<Duration>,
    id: Option<String>,
}

fn parse_check(v: &Value) -> Result<CheckDef, ApiError> {
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request("field 'Check' must be an object"));
    };
    let spec = if let Some(ttl) = duration_field(obj, "TTL")? {
        CheckSpec::Ttl {
            ttl_ms: ttl.as_millis().max(1) as u64,
        }
    } else if let Some(url) = str_field(obj, "HTTP")? {
        if !url.starts_with("http://") {
            return Err(ApiError::bad_request(format!(
                "field 'HTTP' must be an http:// URL, got '{}'",
                clip(&url)
            )));
        }
        CheckSpec::Http { path: url }
    } else if let Some(addr) = str_field(obj, "TCP")? {
        CheckSpec::TcpAddr { addr }
    } else {
        return Err(ApiError::bad_request(
            "field 'Check' needs one of TTL, HTTP or TCP (script, gRPC and Docker checks are not supported)",
        ));
    };
    let status = match str_field(obj, "Status")?.as_deref() {
        None | Some("critical") => HealthStatus::Critical,
        Some("passing") => HealthStatus::Passing,
        Some("warning") => HealthStatus::Warning,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "field 'Status' must be passing, warning or critical, got '{}'",
                clip(other)
            )));
        }
    };
    Ok(CheckDef {
        spec,
        status,
        deregister_after: duration_field(obj, "DeregisterCriticalServiceAfter")?,
        id: str_field(obj, "CheckID")?.or(str_field(obj, "ID")?),
    })
}

/// Maps a Consul registration onto a service key and a persistent instance.
pub fn parse_registration(body: &[u8]) -> Result<(ServiceKey, Instance), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(ApiError::bad_request("body must be a JSON object"));
    };
    let name = str_field(&obj, "Name")?
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("field 'Name' is required"))?;
    if name.len() > 256 || name.contains(['#', '/']) {
        return Err(ApiError::bad_request(format!(
            "field 'Name' is not a valid service name: '{}'",
            clip(&name)
        )));
    }
    let id = str_field(&obj, "ID")?.unwrap_or_else(|| name.clone());
    let address = str_field(&obj, "Address")?
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| NODE_ADDRESS.to_string());
    let port = match field(&obj, "Port") {
        None => 0,
        Some(p) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| ApiError::bad_request("field 'Port' must be a number 0-65535"))?,
    };
    let tags: Vec<String> = match field(&obj, "Tags") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad_request("field 'Tags' must be an array of strings"))?,
        Some(_) => {
            return Err(ApiError::bad_request(
                "field 'Tags' must be an array of strings",
            ));
        }
    };
    let mut metadata: BTreeMap<String, String> = match field(&obj, "Meta") {
        None => BTreeMap::new(),
        Some(m) => super::nacos_json::json_metadata(m)
            .map_err(|e| ApiError::bad_request(format!("field 'Meta' {e}")))?,
    };
    let weight = field(&obj, "Weights")
        .and_then(Value::as_object)
        .and_then(|w| field(w, "Passing"))
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    // The Nacos API refuses negative weights too: clients sum and divide by them.
    if weight < 0.0 {
        return Err(ApiError::bad_request(format!(
            "field 'Weights.Passing' must be 0 or more, got {weight}"
        )));
    }
    let mut checks = Vec::new();
    if let Some(c) = field(&obj, "Check") {
        checks.push(parse_check(c)?);
    }
    match field(&obj, "Checks") {
        None => {}
        Some(Value::Array(list)) => {
            for c in list {
                checks.push(parse_check(c)?);
            }
        }
        Some(_) => return Err(ApiError::bad_request("field 'Checks' must be an array")),
    }
    if checks.len() > 1 {
        return Err(ApiError::bad_request(
            "only one check per service is supported; register extra checks as separate services",
        ));
    }
    let routes: Vec<&str> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("urlprefix-"))
        .collect();
    if !routes.is_empty() && !metadata.contains_key(META_ROUTES) {
        metadata.insert(META_ROUTES.into(), routes.join(","));
    }
    let key = ServiceKey::new(DEFAULT_NAMESPACE, DEFAULT_GROUP, name);
    let mut i = Instance::new(&key, address, port, DEFAULT_CLUSTER);
    i.id = Some(id.into());
    i.ephemeral = false;
    i.weight = weight;
    i.tags = tags;
    match checks.pop() {
        Some(c) => {
            i.check = Some(c.spec);
            i.status = c.status;
            i.deregister_critical_after_ms = c.deregister_after.map(|d| d.as_millis() as u64);
            if let Some(id) = c.id {
                metadata.insert(META_CHECK_ID.into(), id);
            }
        }
        None => {
            i.check = Some(CheckSpec::None);
            i.status = HealthStatus::Passing;
        }
    }
    i.metadata = Arc::new(metadata);
    Ok((key, i))
}

fn consul_name(key: &ServiceKey) -> String {
    if &*key.group == DEFAULT_GROUP {
        key.name.to_string()
    } else {
        key.grouped_name()
    }
}

fn consul_key(name: &str) -> ServiceKey {
    ServiceKey::parse_grouped(DEFAULT_NAMESPACE, name, DEFAULT_GROUP)
}

/// Finds the instance a Consul service id or check id names.
pub(crate) fn find_by_id(registry: &Registry, id: &str) -> Option<(ServiceKey, Instance)> {
    let (_, services) = registry.snapshot();
    let sid = id.strip_prefix("service:").unwrap_or(id);
    for s in services
        .iter()
        .filter(|s| &*s.key.namespace == DEFAULT_NAMESPACE)
    {
        if let Some(i) = s.instances.values().find(|i| {
            i.has_id(&s.key, sid)
                || i.has_id(&s.key, id)
                || i.metadata.get(META_CHECK_ID).is_some_and(|c| c == id)
        }) {
            return Some((s.key.clone(), (**i).clone()));
        }
    }
    None
}

/// Service checks by id, as sessions see them.
pub struct RegistryChecks(pub Registry);

impl crate::sessions::CheckSource for RegistryChecks {
    fn critical(&self, check_id: &str) -> Option<bool> {
        find_by_id(&self.0, check_id).map(|(_, i)| i.status == HealthStatus::Critical)
    }
}

fn empty_ok() -> Response {
    StatusCode::OK.into_response()
}

async fn register(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let (key, instance) = parse_registration(&p.body)?;
    // A re-registration under a new address replaces the old one with the same id.
    if let Some((old_key, old)) = find_by_id(&s.registry, &instance.id(&key))
        && (old_key != key || old.key() != instance.key())
    {
        s.registry
            .submit(Op::Deregister {
                service: old_key,
                instance: old.key(),
            })
            .await?;
    }
    s.registry
        .submit(Op::Register {
            service: key,
            instance,
        })
        .await?;
    Ok(empty_ok())
}

async fn deregister(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (key, instance) = find_by_id(&s.registry, &id).ok_or_else(|| {
        ApiError::not_found(format!(
            "Unknown service ID \"{}\"; list /v1/agent/services",
            clip(&id)
        ))
    })?;
    s.registry
        .submit(Op::Deregister {
            service: key,
            instance: instance.key(),
        })
        .await?;
    Ok(empty_ok())
}

async fn check_update(
    State(s): State<AppState>,
    Path((verdict, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let status = match verdict.as_str() {
        "pass" => HealthStatus::Passing,
        "warn" => HealthStatus::Warning,
        "fail" => HealthStatus::Critical,
        other => {
            return Err(ApiError::not_found(format!(
                "/v1/agent/check/{} is unknown; use pass, warn or fail",
                clip(other)
            )));
        }
    };
    let (key, instance) = find_by_id(&s.registry, &id).ok_or_else(|| {
        ApiError::not_found(format!(
            "Unknown check ID \"{}\"; checks are named service:<service id>",
            clip(&id)
        ))
    })?;
    if !matches!(instance.check, Some(CheckSpec::Ttl { .. })) {
        return Err(ApiError::bad_request(format!(
            "check \"{}\" is not a TTL check; only TTL checks take pass/warn/fail",
            clip(&id)
        )));
    }
    if status == HealthStatus::Critical {
        s.registry.fail(key, instance.key()).await?;
    } else {
        s.registry
            .beat(
                key,
                instance.ip.to_string(),
                instance.port,
                Some(instance.cluster.to_string()),
                status,
            )
            .await?;
    }
    Ok(empty_ok())
}

fn service_json(key: &ServiceKey, i: &Instance) -> Value {
    json!({
        "ID": i.id(key),
        "Service": consul_name(key),
        "Tags": i.tags,
        "Meta": i.metadata,
        "Port": i.port,
        "Address": i.ip,
        "Weights": {"Passing": i.weight, "Warning": 1},
        "EnableTagOverride": false,
        "Datacenter": DATACENTER,
    })
}

fn node_json() -> Value {
    json!({
        "ID": "00000000-0000-0000-0000-000000000001",
        "Node": NODE,
        "Address": NODE_ADDRESS,
        "Datacenter": DATACENTER,
        "TaggedAddresses": {"lan": NODE_ADDRESS, "wan": NODE_ADDRESS},
        "Meta": {},
    })
}

fn check_json(key: &ServiceKey, i: &Instance) -> Value {
    let (kind, output) = match &i.check {
        Some(CheckSpec::Ttl { .. }) => ("ttl", ""),
        Some(CheckSpec::Http { .. }) => ("http", ""),
        Some(CheckSpec::Tcp | CheckSpec::TcpAddr { .. }) => ("tcp", ""),
        _ => ("", ""),
    };
    let id = i
        .metadata
        .get(META_CHECK_ID)
        .cloned()
        .unwrap_or_else(|| format!("service:{}", i.id(key)));
    json!({
        "Node": NODE,
        "CheckID": id,
        "Name": format!("Service '{}' check", consul_name(key)),
        "Status": i.status.as_str(),
        "Notes": "",
        "Output": output,
        "ServiceID": i.id(key),
        "ServiceName": consul_name(key),
        "ServiceTags": i.tags,
        "Type": kind,
    })
}

pub(crate) fn index_response(index: u64, body: Value) -> Response {
    let mut r = axum::Json(body).into_response();
    let h = r.headers_mut();
    // Always non-zero: clients treat 0 as "no blocking support".
    if let Ok(v) = HeaderValue::from_str(&index.max(1).to_string()) {
        h.insert(HeaderName::from_static("x-consul-index"), v);
    }
    h.insert(
        HeaderName::from_static("x-consul-knownleader"),
        HeaderValue::from_static("true"),
    );
    h.insert(
        HeaderName::from_static("x-consul-lastcontact"),
        HeaderValue::from_static("0"),
    );
    r
}

/// Blocks until `current()` moves past `index` or `wait` passes (Consul blocking query).
async fn block(
    registry: &Registry,
    p: &Params,
    current: impl Fn() -> u64,
) -> Result<u64, ApiError> {
    let Some(index) = p.u64("index")? else {
        return Ok(current());
    };
    let wait = match p.opt("wait") {
        None => DEFAULT_WAIT,
        Some(w) => parse_duration(w).ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter 'wait' must be a duration like \"10s\" or \"5m\", got '{}'",
                clip(w)
            ))
        })?,
    }
    .min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut revisions = registry.revision_watch();
    loop {
        revisions.borrow_and_update();
        let now = current();
        // An index that went backwards means the registry restarted: answer at once.
        if index == 0 || now != index {
            return Ok(now);
        }
        match tokio::time::timeout_at(deadline, revisions.changed()).await {
            Ok(Ok(())) => continue,
            _ => return Ok(current()),
        }
    }
}

fn service_index(registry: &Registry, key: &ServiceKey) -> u64 {
    registry
        .get(key)
        .map(|s| s.revision)
        .unwrap_or_else(|| registry.revision())
        .max(1)
}

fn consul_services(registry: &Registry) -> Vec<Arc<Service>> {
    let (_, mut services) = registry.snapshot();
    services.retain(|s| &*s.key.namespace == DEFAULT_NAMESPACE && !s.instances.is_empty());
    services.sort_by(|a, b| a.key.cmp(&b.key));
    services
}

async fn agent_services(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let index = block(&s.registry, &p, || s.registry.revision().max(1)).await?;
    let mut out = Map::new();
    for svc in consul_services(&s.registry) {
        for i in svc.instances.values() {
            out.insert(i.id(&svc.key).into_owned(), service_json(&svc.key, i));
        }
    }
    Ok(index_response(index, Value::Object(out)))
}

async fn agent_self() -> Response {
    axum::Json(json!({
        "Config": {
            "Datacenter": DATACENTER,
            "NodeName": NODE,
            "NodeID": "00000000-0000-0000-0000-000000000001",
            "Server": true,
            "Version": "1.15.0",
            "Revision": "berth",
        },
        "Member": {"Name": NODE, "Addr": NODE_ADDRESS, "Port": 8301, "Status": 1, "Tags": {"dc": DATACENTER, "role": "consul"}},
        "Meta": {},
    }))
    .into_response()
}

async fn status_leader(State(s): State<AppState>) -> Response {
    axum::Json(json!(format!("{}", s.http_addr))).into_response()
}

async fn status_peers(State(s): State<AppState>) -> Response {
    match &s.cluster {
        Some(c) => axum::Json(json!(crate::cluster::view::peer_ids(c))).into_response(),
        None => axum::Json(json!([format!("{}", s.http_addr)])).into_response(),
    }
}

async fn catalog_services(State(s): State<AppState>, p: Params) -> Result<Response, ApiError> {
    let index = block(&s.registry, &p, || s.registry.revision().max(1)).await?;
    let mut out = Map::new();
    for svc in consul_services(&s.registry) {
        let mut tags: Vec<String> = svc
            .instances
            .values()
            .flat_map(|i| i.tags.clone())
            .collect();
        tags.sort();
        tags.dedup();
        out.insert(consul_name(&svc.key), json!(tags));
    }
    Ok(index_response(index, Value::Object(out)))
}

fn tag_filter(p: &Params) -> Vec<String> {
    p.all("tag").into_iter().map(str::to_string).collect()
}

fn selected<'a>(
    svc: Option<&'a Service>,
    tags: &'a [String],
    passing: bool,
) -> impl Iterator<Item = &'a Instance> {
    svc.into_iter().flat_map(move |s| {
        s.instances.values().map(|i| &**i).filter(move |i| {
            i.enabled
                && tags.iter().all(|t| i.tags.contains(t))
                && (!passing || i.status == HealthStatus::Passing)
        })
    })
}

async fn catalog_service(
    State(s): State<AppState>,
    Path(name): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let key = consul_key(&name);
    let index = block(&s.registry, &p, || service_index(&s.registry, &key)).await?;
    let svc = s.registry.get(&key);
    let tags = tag_filter(&p);
    let list: Vec<Value> = selected(svc.as_deref(), &tags, false)
        .map(|i| {
            json!({
                "ID": "00000000-0000-0000-0000-000000000001",
                "Node": NODE,
                "Address": NODE_ADDRESS,
                "Datacenter": DATACENTER,
                "TaggedAddresses": {"lan": NODE_ADDRESS, "wan": NODE_ADDRESS},
                "NodeMeta": {},
                "ServiceKind": "",
                "ServiceID": i.id(&key),
                "ServiceName": consul_name(&key),
                "ServiceTags": i.tags,
                "ServiceAddress": i.ip,
                "ServiceMeta": i.metadata,
                "ServicePort": i.port,
                "ServiceWeights": {"Passing": i.weight, "Warning": 1},
                "ServiceEnableTagOverride": false,
                "CreateIndex": index,
                "ModifyIndex": index,
            })
        })
        .collect();
    Ok(index_response(index, json!(list)))
}

async fn health_service(
    State(s): State<AppState>,
    Path(name): Path<String>,
    p: Params,
) -> Result<Response, ApiError> {
    let key = consul_key(&name);
    let passing = match p.opt("passing") {
        None => p.has("passing"),
        Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "0" | "false"),
    };
    let index = block(&s.registry, &p, || service_index(&s.registry, &key)).await?;
    let svc = s.registry.get(&key);
    let tags = tag_filter(&p);
    let list: Vec<Value> = selected(svc.as_deref(), &tags, passing)
        .map(|i| {
            json!({
                "Node": node_json(),
                "Service": service_json(&key, i),
                "Checks": [
                    {
                        "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
                        "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
                        "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                    },
                    check_json(&key, i),
                ],
            })
        })
        .collect();
    Ok(index_response(index, json!(list)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_registration_body_is_accepted_or_refused_without_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = parse_registration(&body);
        }

        #[test]
        fn json_shaped_registrations_never_panic(
            name in ".{0,20}", port in proptest::prelude::any::<i64>(), ttl in ".{0,8}", tags in proptest::collection::vec(".{0,5}", 0..3)
        ) {
            let body = json!({"Name": name, "Port": port, "Tags": tags, "Check": {"TTL": ttl}}).to_string();
            let _ = parse_registration(body.as_bytes());
        }

        #[test]
        fn durations_never_panic(s in ".{0,30}") {
            let _ = parse_duration(&s);
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("10q"), None);
        assert_eq!(parse_duration("99999999999h"), None);
    }

    /// Found by the `consul_registration` fuzz target (fuzz/regressions/): a bare number
    /// was not capped like `1h` is, so a TTL of u64::MAX seconds wrapped in milliseconds.
    #[test]
    fn bare_durations_are_capped_like_the_others() {
        assert_eq!(parse_duration("244444444444444"), None);
        assert_eq!(parse_duration("18446744073709551615"), None);
        assert_eq!(
            parse_duration("1000000000"),
            Some(Duration::from_secs(1_000_000_000))
        );
        let err = parse_registration(br#"{"Name":"a","Check":{"TTL":"18446744073709551615"}}"#)
            .unwrap_err();
        assert!(err.message.contains("'TTL'"), "{}", err.message);
    }

    /// Found by the `consul_registration` fuzz target: a negative weight was stored.
    #[test]
    fn negative_weights_are_refused() {
        let err = parse_registration(br#"{"Name":"web","Weights":{"Passing":-5}}"#).unwrap_err();
        assert!(err.message.contains("'Weights.Passing'"), "{}", err.message);
        let (_, i) = parse_registration(br#"{"Name":"web","Weights":{"Passing":0}}"#).unwrap();
        assert_eq!(i.weight, 0.0);
    }

    #[test]
    fn registration_keys_in_any_case() {
        let (key, i) = parse_registration(
            br#"{"name":"web","ID":"web-1","address":"127.0.0.1","PORT":8080,
                 "tags":["urlprefix-web.example/api"],"Meta":{"Version":"2"},
                 "check":{"ttl":"5s","deregistercriticalserviceafter":"1m"}}"#,
        )
        .unwrap();
        assert_eq!(&*key.name, "web");
        assert_eq!(i.id(&key), "web-1");
        assert_eq!(i.port, 8080);
        assert_eq!(i.check, Some(CheckSpec::Ttl { ttl_ms: 5000 }));
        assert_eq!(i.deregister_critical_after_ms, Some(60_000));
        assert_eq!(i.status, HealthStatus::Critical);
        assert_eq!(i.metadata.get("Version").unwrap(), "2");
        assert_eq!(i.metadata.get(META_ROUTES).unwrap(), "web.example/api");
    }

    #[test]
    fn bad_registrations_name_the_field() {
        for (body, field) in [
            (&b"{"[..], "JSON"),
            (br#"{"ID":"x"}"#, "'Name'"),
            (br#"{"Name":"a","Port":"eighty"}"#, "'Port'"),
            (br#"{"Name":"a","Tags":"t"}"#, "'Tags'"),
            (br#"{"Name":"a","Check":{"TTL":"soon"}}"#, "'TTL'"),
            (
                br#"{"Name":"a","Check":{"Script":"x"}}"#,
                "TTL, HTTP or TCP",
            ),
        ] {
            let err = parse_registration(body).unwrap_err();
            assert!(err.message.contains(field), "{field}: {}", err.message);
        }
    }
}
