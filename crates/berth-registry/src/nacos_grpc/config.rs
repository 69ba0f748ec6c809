//! The Nacos config center over gRPC: query, publish (with `casMd5`), remove, batch
//! listen, and `ConfigChangeNotify` pushed to the connections listening to a config when
//! it changes, whichever member (or API) changed it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use berth_kv::Change;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Inner;
use super::connections::Connection;
use super::wire::{Fields, Inbound, code};
use crate::config_center::{ConfigError, ConfigKey, ConfigMeta, actor, listen};

type Failure = (u64, String);

/// The response type of each config request this server handles.
pub fn response_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ConfigQueryRequest" => "ConfigQueryResponse",
        "ConfigPublishRequest" => "ConfigPublishResponse",
        "ConfigRemoveRequest" => "ConfigRemoveResponse",
        "ConfigBatchListenRequest" => "ConfigChangeBatchListenResponse",
        _ => return None,
    })
}

pub async fn handle(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
) -> Result<Fields, Failure> {
    handle_json(inner, connection, request)
        .await
        .map(Fields::from)
}

async fn handle_json(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
) -> Result<Value, Failure> {
    match request.kind.as_str() {
        "ConfigQueryRequest" => query(inner, request).await,
        "ConfigPublishRequest" => publish(inner, connection, request).await,
        "ConfigRemoveRequest" => remove(inner, connection, request).await,
        "ConfigBatchListenRequest" => listen(inner, connection, request).await,
        other => Err((
            code::NO_HANDLER,
            format!("RequestHandler Not Found: {other}"),
        )),
    }
}

fn failure(err: ConfigError) -> Failure {
    let code = match &err {
        ConfigError::Invalid { .. } | ConfigError::TooLarge { .. } | ConfigError::Empty => {
            code::BAD_PARAM
        }
        ConfigError::HistoryNotFound(_) => code::NOT_FOUND,
        ConfigError::CasMismatch { .. } | ConfigError::Unavailable | ConfigError::Store(_) => {
            code::SERVER_ERROR
        }
    };
    (code, err.to_string())
}

fn key_of(value: &serde_json::Map<String, Value>) -> Result<ConfigKey, Failure> {
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or_default();
    ConfigKey::new(field("tenant"), field("group"), field("dataId")).map_err(failure)
}

async fn query(inner: &Inner, request: &Inbound) -> Result<Value, Failure> {
    let key = key_of(&request.body)?;
    match inner.configs.get(&key).await.map_err(failure)? {
        Some(config) => Ok(json!({
            "content": config.content,
            "encryptedDataKey": "",
            "contentType": config.meta.kind,
            "md5": config.md5,
            "lastModified": config.modified_ms,
            "beta": false,
        })),
        None => Err((code::CONFIG_NOT_FOUND, "config data not exist".into())),
    }
}

async fn publish(
    inner: &Inner,
    connection: &Connection,
    request: &Inbound,
) -> Result<Value, Failure> {
    let key = key_of(&request.body)?;
    let Some(content) = request.str("content") else {
        return Err((
            code::BAD_PARAM,
            "content is missing: a config needs content".into(),
        ));
    };
    let extra = request.body.get("additionMap");
    let extra_field = |name: &str| {
        extra
            .and_then(|m| m.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let meta = ConfigMeta {
        kind: extra_field("type"),
        app_name: extra_field("appName"),
        tags: extra_field("config_tags"),
        desc: extra_field("desc"),
    };
    let author = extra_field("src_user");
    inner
        .configs
        .publish(
            &key,
            content,
            &meta,
            request.str("casMd5"),
            actor(Some(&author), Some(connection.remote.ip())),
        )
        .await
        .map_err(failure)?;
    inner.stats.config_publishes.fetch_add(1, Ordering::Relaxed);
    Ok(json!({}))
}

async fn remove(
    inner: &Inner,
    connection: &Connection,
    request: &Inbound,
) -> Result<Value, Failure> {
    let key = key_of(&request.body)?;
    inner
        .configs
        .remove(&key, actor(None, Some(connection.remote.ip())))
        .await
        .map_err(failure)?;
    Ok(json!({}))
}

async fn listen(
    inner: &Inner,
    connection: &Arc<Connection>,
    request: &Inbound,
) -> Result<Value, Failure> {
    let on = request
        .body
        .get("listen")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let contexts = match request.body.get("configListenContexts") {
        Some(Value::Array(list)) => list.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err((
                code::BAD_PARAM,
                "configListenContexts must be an array of {dataId, group, tenant, md5}".into(),
            ));
        }
    };
    let mut watched = Vec::with_capacity(contexts.len());
    for (n, context) in contexts.iter().enumerate() {
        let Some(obj) = context.as_object() else {
            return Err((
                code::BAD_PARAM,
                format!("configListenContexts[{n}] must be an object"),
            ));
        };
        let key = key_of(obj).map_err(|(c, m)| (c, format!("configListenContexts[{n}].{m}")))?;
        let md5 = obj
            .get("md5")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        inner.connections.listen_config(connection, &key, on);
        watched.push((key, md5));
    }
    let changed = if on {
        listen::changed(&inner.configs, &watched)
            .await
            .map_err(failure)?
    } else {
        Vec::new()
    };
    let changed: Vec<Value> = changed
        .iter()
        .map(|k| json!({"dataId": k.data_id, "group": k.group, "tenant": k.tenant_for_clients()}))
        .collect();
    Ok(json!({ "changedConfigs": changed }))
}

/// Pushes `ConfigChangeNotify` to the listeners of every changed config.
pub async fn watch_changes(inner: Arc<Inner>) {
    let Some(kv) = inner.configs.handle().cloned() else {
        return;
    };
    let space = inner.configs.space_ref().clone();
    let mut feed = kv.subscribe();
    loop {
        let next = tokio::select! {
            () = inner.shutdown.cancelled() => return,
            next = feed.recv() => next,
        };
        match next {
            Ok(Change::Written {
                space: changed_space,
                keys,
                prefixes,
                ..
            }) if changed_space == space => {
                for key in &keys {
                    for connection in inner.connections.config_listeners_of(key) {
                        if let Some(config) = ConfigKey::from_store_key(key) {
                            notify(&inner, connection, config);
                        }
                    }
                }
                if !prefixes.is_empty() {
                    notify_all(&inner);
                }
            }
            Ok(Change::Written { .. }) => {}
            // Changes may have been missed: every listener re-reads what it listens to.
            Ok(Change::Resync { .. }) | Err(RecvError::Lagged(_)) => notify_all(&inner),
            Err(RecvError::Closed) => return,
        }
    }
}

fn notify_all(inner: &Arc<Inner>) {
    for connection in inner.connections.all() {
        for key in inner.connections.listened_configs(&connection) {
            notify(inner, connection.clone(), key);
        }
    }
}

/// One push; the SDK answers it (some with `NotifySubscriberResponse`), then queries the
/// config. A push that is not answered is not retried: the SDKs also re-listen with
/// their md5s every few seconds, which reports the change.
fn notify(inner: &Arc<Inner>, connection: Arc<Connection>, key: ConfigKey) {
    let inner = inner.clone();
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let body = json!({
            "module": "config",
            "dataId": key.data_id,
            "group": key.group,
            "tenant": key.tenant_for_clients(),
        });
        match connection
            .request(
                "ConfigChangeNotifyRequest",
                body,
                inner.options.push_timeout,
            )
            .await
        {
            Ok(_) => {
                inner.stats.config_pushes.fetch_add(1, Ordering::Relaxed);
                inner
                    .stats
                    .config_push_latency_us_sum
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Err(err) => {
                inner
                    .stats
                    .config_pushes_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(connection = %connection.id, "config change push not acknowledged: {err}");
            }
        }
    });
}
