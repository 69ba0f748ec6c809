//! Nacos naming over gRPC: registrations, queries, subscriptions and their pushes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::connections::{Connection, PushError};
use super::wire::{Fields, Inbound, code};
use super::{Inner, namespace_of, service_of};
use crate::http::nacos_json::{ListFilter, render_hosts};
use crate::model::{CheckSpec, DEFAULT_CLUSTER, HealthStatus, Instance, InstanceKey, ServiceKey};
use crate::naming::Op;

type Failure = (u64, String);

/// The response type of each naming request this server handles.
pub fn response_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "InstanceRequest" | "PersistentInstanceRequest" => "InstanceResponse",
        "BatchInstanceRequest" => "BatchInstanceResponse",
        "ServiceQueryRequest" => "QueryServiceResponse",
        "SubscribeServiceRequest" => "SubscribeServiceResponse",
        "ServiceListRequest" => "ServiceListResponse",
        _ => return None,
    })
}

pub async fn handle(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
) -> Result<Fields, Failure> {
    match request.kind.as_str() {
        "InstanceRequest" => instance(inner, connection, request, true)
            .await
            .map(Fields::from),
        "PersistentInstanceRequest" => instance(inner, connection, request, false)
            .await
            .map(Fields::from),
        "BatchInstanceRequest" => batch(inner, connection, request).await.map(Fields::from),
        "ServiceQueryRequest" => query(inner, connection, request),
        "SubscribeServiceRequest" => subscribe(inner, connection, request),
        "ServiceListRequest" => list(inner, connection, request).map(Fields::from),
        other => Err((
            code::NO_HANDLER,
            format!("RequestHandler Not Found: {other}"),
        )),
    }
}

fn bad(message: impl Into<String>) -> Failure {
    (code::BAD_PARAM, message.into())
}

fn server_error(err: impl std::fmt::Display) -> Failure {
    (code::SERVER_ERROR, err.to_string())
}

/// An instance from its JSON object (`instance` or an entry of `instances`).
pub(super) fn instance_from(
    value: &Value,
    field: &str,
    service: &ServiceKey,
    ephemeral_default: bool,
) -> Result<Instance, Failure> {
    let Some(obj) = value.as_object() else {
        return Err(bad(format!("{field} must be an object with ip and port")));
    };
    let ip = obj
        .get("ip")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            bad(format!(
                "{field}.ip is missing: give the instance's address"
            ))
        })?;
    if ip.len() > 128 || ip.contains(['#', ',', ' ']) {
        return Err(bad(format!(
            "{field}.ip {ip:?} is not an address (no '#', ',' or spaces, at most 128 bytes)"
        )));
    }
    let port = obj
        .get("port")
        .and_then(Value::as_u64)
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| bad(format!("{field}.port must be a number from 1 to 65535")))?;
    let cluster = obj
        .get("clusterName")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT_CLUSTER);
    let mut instance = Instance::new(service, ip, port as u16, cluster);
    if let Some(w) = obj.get("weight").filter(|w| !w.is_null()) {
        let w = w
            .as_f64()
            .filter(|w| w.is_finite() && (0.0..=10_000.0).contains(w))
            .ok_or_else(|| bad(format!("{field}.weight must be a number from 0 to 10000")))?;
        instance.weight = w;
    }
    let flag = |name: &str, default: bool| -> Result<bool, Failure> {
        match obj.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(bad(format!("{field}.{name} must be true or false"))),
        }
    };
    instance.enabled = flag("enabled", true)?;
    instance.status = HealthStatus::from_healthy(flag("healthy", true)?);
    instance.ephemeral = flag("ephemeral", ephemeral_default)?;
    if let Some(meta) = obj.get("metadata").filter(|m| !m.is_null()) {
        let Some(meta) = meta.as_object() else {
            return Err(bad(format!(
                "{field}.metadata must be an object of strings"
            )));
        };
        let map: BTreeMap<String, String> = meta
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        instance.metadata = Arc::new(map);
    }
    Ok(instance)
}

async fn instance(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
    ephemeral: bool,
) -> Result<Value, Failure> {
    let service = service_of(request, connection)?;
    let kind = request.str("type").unwrap_or_default().to_string();
    let value = request.body.get("instance").cloned().unwrap_or(Value::Null);
    match kind.as_str() {
        "registerInstance" => {
            let mut instance = instance_from(&value, "instance", &service, ephemeral)?;
            if instance.ephemeral {
                instance.owner = Some(connection.id.clone());
                let key = instance.key();
                register(inner, &service, instance).await?;
                for old in connection.hold(&service, vec![key.clone()]) {
                    if old != key {
                        release(inner, connection, &service, old).await?;
                    }
                }
            } else {
                persist_check(inner, &service, &mut instance);
                register(inner, &service, instance).await?;
            }
        }
        "deregisterInstance" => {
            let held = connection.held_of(&service);
            if ephemeral && !held.is_empty() {
                connection.hold(&service, Vec::new());
                for key in held {
                    release(inner, connection, &service, key).await?;
                }
            } else {
                // Not this connection's: the instance at that address, as v1 finds it.
                let obj = value.as_object();
                let ip = obj.and_then(|o| o.get("ip")).and_then(Value::as_str);
                let port = obj.and_then(|o| o.get("port")).and_then(Value::as_u64);
                let cluster = obj
                    .and_then(|o| o.get("clusterName"))
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty());
                let (Some(ip), Some(port)) = (ip, port) else {
                    return Err(bad(
                        "instance.ip and instance.port name the instance to deregister",
                    ));
                };
                let found = inner.registry.get(&service).and_then(|svc| {
                    svc.find(ip, u16::try_from(port).unwrap_or(0), cluster)
                        .map(|i| i.key())
                });
                if let Some(key) = found {
                    inner
                        .registry
                        .submit(Op::Deregister {
                            service: service.clone(),
                            instance: key,
                        })
                        .await
                        .map_err(server_error)?;
                }
            }
        }
        other => {
            return Err(bad(format!(
                "type {other:?} is not an instance operation: use registerInstance or deregisterInstance"
            )));
        }
    }
    Ok(json!({ "type": kind }))
}

/// A persistent instance gets the server-side check of its cluster (TCP by default),
/// as through the v1 API.
fn persist_check(inner: &Inner, service: &ServiceKey, instance: &mut Instance) {
    let cluster_check = inner
        .registry
        .get(service)
        .and_then(|s| s.clusters.get(&*instance.cluster).map(|c| c.check.clone()));
    instance.check = Some(cluster_check.unwrap_or(CheckSpec::Tcp));
}

async fn register(inner: &Inner, service: &ServiceKey, instance: Instance) -> Result<(), Failure> {
    inner
        .registry
        .submit(Op::Register {
            service: service.clone(),
            instance,
        })
        .await
        .map(|_| ())
        .map_err(server_error)
}

async fn release(
    inner: &Inner,
    connection: &Connection,
    service: &ServiceKey,
    instance: InstanceKey,
) -> Result<(), Failure> {
    inner
        .registry
        .submit(Op::Release {
            service: service.clone(),
            instance,
            owner: connection.id.clone(),
        })
        .await
        .map(|_| ())
        .map_err(server_error)
}

async fn batch(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
) -> Result<Value, Failure> {
    let service = service_of(request, connection)?;
    let kind = request.str("type").unwrap_or_default().to_string();
    if kind != "batchRegisterInstance" && kind != "batchDeregisterInstance" {
        return Err(bad(format!(
            "type {kind:?} is not a batch operation: use batchRegisterInstance"
        )));
    }
    let listed = match request.body.get("instances") {
        Some(Value::Array(list)) => list.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(bad("instances must be an array of instances")),
    };
    let mut instances = Vec::with_capacity(listed.len());
    for (n, value) in listed.iter().enumerate() {
        let mut instance = instance_from(value, &format!("instances[{n}]"), &service, true)?;
        if !instance.ephemeral {
            return Err(bad(format!(
                "instances[{n}] is persistent: a batch registers ephemeral instances only"
            )));
        }
        instance.owner = Some(connection.id.clone());
        instances.push(instance);
    }
    // A batch deregistration keeps none of the listed instances; a registration makes
    // the list the connection's whole set for the service.
    let keep: Vec<InstanceKey> = if kind == "batchRegisterInstance" {
        instances.iter().map(Instance::key).collect()
    } else {
        let gone: Vec<InstanceKey> = instances.iter().map(Instance::key).collect();
        let remaining = connection
            .held_of(&service)
            .into_iter()
            .filter(|k| !gone.contains(k))
            .collect();
        instances.clear();
        remaining
    };
    for instance in instances {
        register(inner, &service, instance).await?;
    }
    for old in connection.hold(&service, keep.clone()) {
        if !keep.contains(&old) {
            release(inner, connection, &service, old).await?;
        }
    }
    Ok(json!({ "type": kind }))
}

fn filter_of(request: &Inbound, clusters_field: &str) -> ListFilter {
    let healthy_only = request
        .body
        .get("healthyOnly")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    ListFilter::parse(request.str(clusters_field), healthy_only)
}

fn query(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
) -> Result<Fields, Failure> {
    let service = service_of(request, connection)?;
    let filter = filter_of(request, "cluster");
    Ok(service_info_fields(inner, &service, &filter))
}

/// `{"serviceInfo": ...}` rendered straight to text (no JSON value in between).
fn service_info_fields(inner: &Inner, service: &ServiceKey, filter: &ListFilter) -> Fields {
    Fields::Raw(format!(
        "{{\"serviceInfo\":{}}}",
        service_info_text(inner, service, filter)
    ))
}

fn subscribe(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
) -> Result<Fields, Failure> {
    let service = service_of(request, connection)?;
    let filter = filter_of(request, "clusters");
    let on = request
        .body
        .get("subscribe")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if on {
        inner
            .connections
            .subscribe(connection, service.clone(), filter.clone());
    } else {
        inner.connections.unsubscribe(connection, &service);
    }
    Ok(service_info_fields(inner, &service, &filter))
}

fn list(inner: &Inner, connection: &Arc<Connection>, request: &Inbound) -> Result<Value, Failure> {
    let number = |field: &str, default: u64| -> Result<u64, Failure> {
        match request.body.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad(format!("{field} must be a whole number from 1"))),
        }
    };
    let page_no = number("pageNo", 1)?;
    let page_size = number("pageSize", 10)?.min(10_000);
    let namespace = namespace_of(request, connection);
    let group = request
        .str("groupName")
        .filter(|g| !g.is_empty())
        .unwrap_or(crate::model::DEFAULT_GROUP);
    let (_, services) = inner.registry.snapshot();
    let mut names: Vec<String> = services
        .iter()
        .filter(|s| *s.key.namespace == *namespace && &*s.key.group == group)
        .map(|s| s.key.name.to_string())
        .collect();
    names.sort();
    let count = names.len();
    let page: Vec<String> = names
        .into_iter()
        .skip(((page_no - 1) * page_size) as usize)
        .take(page_size as usize)
        .collect();
    Ok(json!({ "count": count, "serviceNames": page }))
}

/// A service's state as 2.x SDKs read it: the bare name beside its group, `allIps`,
/// and a `lastRefTime` newer than any handed out before.
fn service_info_text(inner: &Inner, service: &ServiceKey, filter: &ListFilter) -> String {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Head<'a> {
        name: &'a str,
        group_name: &'a str,
        clusters: String,
        cache_millis: u64,
        last_ref_time: u64,
        checksum: String,
        all_ips: bool,
        reach_protection_threshold: bool,
        valid: bool,
    }
    let svc = inner.registry.get(service);
    let hosts = render_hosts(service, svc.as_deref(), filter, &inner.options.beat);
    let head = Head {
        name: &service.name,
        group_name: &service.group,
        clusters: filter.clusters_param(),
        cache_millis: 10_000,
        last_ref_time: inner.next_ref_time(),
        checksum: svc
            .as_ref()
            .map(|s| format!("{:x}", s.revision))
            .unwrap_or_default(),
        all_ips: false,
        reach_protection_threshold: false,
        valid: true,
    };
    let mut out = serde_json::to_string(&head).unwrap_or_else(|_| "{}".into());
    out.pop();
    out.push_str(",\"hosts\":");
    out.push_str(std::str::from_utf8(&hosts).unwrap_or("[]"));
    out.push('}');
    out
}

/// Marks every changed service dirty for its subscribers.
pub async fn watch_changes(inner: Arc<Inner>) {
    let mut changes = inner.registry.changes();
    loop {
        let next = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            next = changes.recv() => next,
        };
        match next {
            Ok(change) => {
                for connection in inner.connections.subscribers_of(&change.key) {
                    connection.mark_dirty(&change.key);
                }
            }
            // Changes were missed: every subscription gets the current state.
            Err(RecvError::Lagged(_)) => {
                for connection in inner.connections.all() {
                    for key in connection.subscribed() {
                        connection.mark_dirty(&key);
                    }
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Pushes the latest state of each dirty service to one connection, in order, each
/// push waiting for its ack (retried, then the connection is given up).
pub async fn push_worker(inner: Arc<Inner>, connection: Arc<Connection>) {
    loop {
        tokio::select! {
            () = connection.closed.cancelled() => return,
            () = connection.dirty_notify.notified() => {}
        }
        while let Some(key) = connection.next_dirty() {
            let Some(filter) = connection.subscription(&key) else {
                continue;
            };
            let started = tokio::time::Instant::now();
            let info = service_info_text(&inner, &key, &filter);
            let fields = format!("{{\"module\":\"naming\",\"serviceInfo\":{info}}}");
            let mut pushed = false;
            for _ in 0..inner.options.push_attempts.max(1) {
                match connection
                    .request_raw(
                        "NotifySubscriberRequest",
                        &fields,
                        inner.options.push_timeout,
                    )
                    .await
                {
                    Ok(_) => {
                        pushed = true;
                        break;
                    }
                    Err(PushError::Closed) => return,
                    Err(err) => {
                        tracing::debug!(connection = %connection.id, service = %key, "push not acknowledged: {err}");
                    }
                }
            }
            if pushed {
                inner.stats.pushes.fetch_add(1, Ordering::Relaxed);
                inner
                    .stats
                    .push_latency_us_sum
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            } else {
                inner.stats.pushes_failed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(connection = %connection.id, service = %key, "a subscriber never acknowledged its push; closing its connection so its SDK reconnects and subscribes again");
                super::close(&inner, &connection);
                return;
            }
        }
    }
}
