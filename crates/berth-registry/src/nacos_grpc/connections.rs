//! The Nacos 2.x connections this member holds.
//!
//! A Nacos connection is one TCP connection of an SDK: the SDK sends `ServerCheck` as a
//! unary call, opens the bi-stream on the same HTTP/2 connection and sends
//! `ConnectionSetup`; from then on unary requests on that TCP connection (known here by
//! the client's address and port) belong to it. What a connection registered
//! ([`Connection::instances`]) lives as long as it does; what it subscribed to is pushed
//! to it over its stream, where the server's requests wait for the client's answer by
//! `requestId`.

use std::collections::{HashMap, HashSet, VecDeque};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_proto::nacos as pb;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Inbound};
use crate::config_center::ConfigKey;
use crate::http::nacos_json::ListFilter;
use crate::model::{InstanceKey, ServiceKey};

/// Frames the stream carries to the client.
pub type Outbound = mpsc::Sender<Result<pb::Payload, tonic::Status>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a request the server sent got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the connection is closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the client answered with an error: {0}")]
    Refused(String),
}

/// One SDK connection.
pub struct Connection {
    pub id: Arc<str>,
    pub remote: SocketAddr,
    /// What the SDK said of itself at setup (`clientVersion`, app name).
    pub client_version: String,
    pub app: String,
    /// The namespace given at setup (the SDK's default for its requests).
    pub tenant: String,
    out: Outbound,
    /// Closed when the stream ends or the server gives up on the client.
    pub closed: CancellationToken,
    next_request: AtomicU64,
    waiting: Mutex<HashMap<String, oneshot::Sender<Inbound>>>,
    /// Milliseconds since [`Connections::epoch`] of the last frame or request seen.
    last_active_ms: AtomicU64,
    /// Ephemeral instances registered through this connection, by service (a 2.x
    /// registration replaces the connection's instances of that service).
    instances: Mutex<HashMap<ServiceKey, Vec<InstanceKey>>>,
    /// Services pushed to this connection, with the clusters it asked for.
    subscriptions: Mutex<HashMap<ServiceKey, ListFilter>>,
    /// Configs this connection listens to, by store key.
    config_listens: Mutex<HashMap<String, ConfigKey>>,
    /// Services whose latest state is still to be pushed, oldest first, each once.
    dirty: Mutex<VecDeque<ServiceKey>>,
    pub(super) dirty_notify: Notify,
}

impl Connection {
    /// Sends `body` as a server request of type `kind` and waits up to `timeout` for
    /// the client's response.
    pub async fn request(
        &self,
        kind: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<Inbound, PushError> {
        let fields = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
        self.request_raw(kind, &fields, timeout).await
    }

    /// [`Self::request`] with the body's fields already as a JSON object's text (a push
    /// renders a service once for all its subscribers); `requestId` and `headers` are
    /// put in front.
    pub async fn request_raw(
        &self,
        kind: &str,
        fields: &str,
        timeout: Duration,
    ) -> Result<Inbound, PushError> {
        let id = format!("{}", self.next_request.fetch_add(1, Ordering::Relaxed));
        let rest = fields.trim_start().strip_prefix('{').unwrap_or("}");
        let separator = if rest.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        let body = format!("{{\"requestId\":\"{id}\",\"headers\":{{}}{separator}{rest}");
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.clone(), tx);
        let payload = pb::Payload {
            metadata: Some(pb::Metadata {
                r#type: kind.to_string(),
                client_ip: String::new(),
                headers: Default::default(),
            }),
            body: Some(pb::Any {
                type_url: String::new(),
                value: body.into_bytes(),
            }),
        };
        let sent = self.out.send(Ok(payload)).await;
        let answer = match sent {
            Err(_) => Err(PushError::Closed),
            Ok(()) => tokio::select! {
                answer = rx => answer.map_err(|_| PushError::Closed),
                () = tokio::time::sleep(timeout) => Err(PushError::Timeout(timeout)),
                () = self.closed.cancelled() => Err(PushError::Closed),
            },
        };
        lock(&self.waiting).remove(&id);
        let answer = answer?;
        if answer.body.get("resultCode").and_then(Value::as_u64) == Some(wire::OK)
            || answer.body.get("success").and_then(Value::as_bool) == Some(true)
        {
            Ok(answer)
        } else {
            Err(PushError::Refused(
                answer.str("message").unwrap_or("no message").to_string(),
            ))
        }
    }

    /// Ends the stream with `status`: SDKs take an error as the server going away and
    /// reconnect (a clean end is not always read that way).
    pub fn end(&self, status: tonic::Status) {
        let _ = self.out.try_send(Err(status));
    }

    /// Hands a client's response to the server request waiting for it. `false` when
    /// nothing waits (it came too late).
    pub fn answer(&self, response: Inbound) -> bool {
        let id = response.request_id();
        match lock(&self.waiting).remove(&id) {
            Some(tx) => tx.send(response).is_ok(),
            None => false,
        }
    }

    /// Makes `instances` the connection's instances of `service`; returns the ones it
    /// held before.
    pub fn hold(&self, service: &ServiceKey, instances: Vec<InstanceKey>) -> Vec<InstanceKey> {
        let mut held = lock(&self.instances);
        let before = if instances.is_empty() {
            held.remove(service)
        } else {
            held.insert(service.clone(), instances)
        };
        before.unwrap_or_default()
    }

    /// The connection's instances of `service`.
    pub fn held_of(&self, service: &ServiceKey) -> Vec<InstanceKey> {
        lock(&self.instances)
            .get(service)
            .cloned()
            .unwrap_or_default()
    }

    /// Every instance this connection holds.
    pub fn held(&self) -> Vec<(ServiceKey, InstanceKey)> {
        lock(&self.instances)
            .iter()
            .flat_map(|(s, keys)| keys.iter().map(move |k| (s.clone(), k.clone())))
            .collect()
    }

    pub fn subscribe(&self, service: ServiceKey, filter: ListFilter) {
        lock(&self.subscriptions).insert(service, filter);
    }

    pub fn unsubscribe(&self, service: &ServiceKey) {
        lock(&self.subscriptions).remove(service);
    }

    pub fn subscription(&self, service: &ServiceKey) -> Option<ListFilter> {
        lock(&self.subscriptions).get(service).cloned()
    }

    pub fn subscribed(&self) -> Vec<ServiceKey> {
        lock(&self.subscriptions).keys().cloned().collect()
    }

    /// Marks `service` to be pushed (once, however often it changed meanwhile).
    pub fn mark_dirty(&self, service: &ServiceKey) {
        let mut dirty = lock(&self.dirty);
        if !dirty.contains(service) {
            dirty.push_back(service.clone());
        }
        drop(dirty);
        self.dirty_notify.notify_one();
    }

    pub fn next_dirty(&self) -> Option<ServiceKey> {
        lock(&self.dirty).pop_front()
    }
}

/// Every connection of this member.
pub struct Connections {
    epoch: Instant,
    by_addr: Mutex<HashMap<SocketAddr, Arc<Connection>>>,
    /// Ids handed out by `ServerCheck` to TCP connections whose stream is not set up
    /// yet, with when (forgotten after a minute without a stream).
    reserved: Mutex<HashMap<SocketAddr, (Arc<str>, Instant)>>,
    /// Which connections subscribed to each service.
    subscribers: Mutex<HashMap<ServiceKey, HashSet<SocketAddr>>>,
    /// Which connections listen to each config (by store key).
    config_listeners: Mutex<HashMap<String, HashSet<SocketAddr>>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            by_addr: Mutex::default(),
            reserved: Mutex::default(),
            subscribers: Mutex::default(),
            config_listeners: Mutex::default(),
        }
    }
}

/// A connection id of Nacos's shape, `<millis>_<ip>_<port>`.
fn new_id(remote: SocketAddr) -> Arc<str> {
    let millis = crate::http::nacos_json::now_millis();
    format!("{millis}_{}_{}", remote.ip(), remote.port()).into()
}

/// How long an id from `ServerCheck` waits for its stream.
const RESERVATION: Duration = Duration::from_secs(60);

impl Connections {
    /// The id of the TCP connection from `remote`: its stream's, or the one reserved for
    /// it, or a new one (Nacos's shape: `<millis>_<ip>_<port>`).
    pub fn id_for(&self, remote: SocketAddr) -> Arc<str> {
        if let Some(c) = lock(&self.by_addr).get(&remote) {
            return c.id.clone();
        }
        let now = Instant::now();
        let mut reserved = lock(&self.reserved);
        reserved.retain(|_, (_, at)| now.duration_since(*at) < RESERVATION);
        reserved
            .entry(remote)
            .or_insert_with(|| (new_id(remote), now))
            .0
            .clone()
    }

    /// Registers the stream of the TCP connection from `remote` after its setup.
    pub fn open(&self, remote: SocketAddr, setup: &Inbound, out: Outbound) -> Arc<Connection> {
        let id = lock(&self.reserved)
            .remove(&remote)
            .map(|(id, _)| id)
            .unwrap_or_else(|| new_id(remote));
        let labels = setup.body.get("labels");
        let label = |k: &str| {
            labels
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let connection = Arc::new(Connection {
            id,
            remote,
            client_version: setup.str("clientVersion").unwrap_or_default().to_string(),
            app: label("AppName"),
            tenant: setup.str("tenant").unwrap_or_default().to_string(),
            out,
            closed: CancellationToken::new(),
            next_request: AtomicU64::new(1),
            waiting: Mutex::default(),
            last_active_ms: AtomicU64::new(self.now_ms()),
            instances: Mutex::default(),
            subscriptions: Mutex::default(),
            config_listens: Mutex::default(),
            dirty: Mutex::default(),
            dirty_notify: Notify::new(),
        });
        // A second setup on the same TCP connection replaces the first.
        if let Some(old) = lock(&self.by_addr).insert(remote, connection.clone()) {
            old.closed.cancel();
        }
        connection
    }

    /// Forgets the connection (its stream ended). Returns it when it was still the one
    /// registered for its address.
    pub fn close(&self, connection: &Arc<Connection>) -> bool {
        connection.closed.cancel();
        let mut by_addr = lock(&self.by_addr);
        let current = by_addr
            .get(&connection.remote)
            .is_some_and(|c| Arc::ptr_eq(c, connection));
        if current {
            by_addr.remove(&connection.remote);
        }
        drop(by_addr);
        let listened: Vec<String> = lock(&connection.config_listens).keys().cloned().collect();
        let mut listeners = lock(&self.config_listeners);
        for key in listened {
            if let Some(set) = listeners.get_mut(&key) {
                set.remove(&connection.remote);
                if set.is_empty() {
                    listeners.remove(&key);
                }
            }
        }
        drop(listeners);
        let mut subscribers = lock(&self.subscribers);
        for key in connection.subscribed() {
            if let Some(set) = subscribers.get_mut(&key) {
                set.remove(&connection.remote);
                if set.is_empty() {
                    subscribers.remove(&key);
                }
            }
        }
        current
    }

    pub fn get(&self, remote: SocketAddr) -> Option<Arc<Connection>> {
        lock(&self.by_addr).get(&remote).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Connection>> {
        lock(&self.by_addr).values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.by_addr).len()
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.by_addr).is_empty()
    }

    pub fn subscribe(&self, connection: &Connection, service: ServiceKey, filter: ListFilter) {
        connection.subscribe(service.clone(), filter);
        lock(&self.subscribers)
            .entry(service)
            .or_default()
            .insert(connection.remote);
    }

    pub fn unsubscribe(&self, connection: &Connection, service: &ServiceKey) {
        connection.unsubscribe(service);
        let mut subscribers = lock(&self.subscribers);
        if let Some(set) = subscribers.get_mut(service) {
            set.remove(&connection.remote);
            if set.is_empty() {
                subscribers.remove(service);
            }
        }
    }

    /// The connections subscribed to `service`.
    pub fn subscribers_of(&self, service: &ServiceKey) -> Vec<Arc<Connection>> {
        let addrs: Vec<SocketAddr> = lock(&self.subscribers)
            .get(service)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let by_addr = lock(&self.by_addr);
        addrs
            .iter()
            .filter_map(|a| by_addr.get(a).cloned())
            .collect()
    }

    /// `connection` listens to `key` (`on`) or no longer does.
    pub fn listen_config(&self, connection: &Connection, key: &ConfigKey, on: bool) {
        let store_key = key.store_key();
        let mut listens = lock(&connection.config_listens);
        let mut listeners = lock(&self.config_listeners);
        if on {
            listens.insert(store_key.clone(), key.clone());
            listeners
                .entry(store_key)
                .or_default()
                .insert(connection.remote);
        } else {
            listens.remove(&store_key);
            if let Some(set) = listeners.get_mut(&store_key) {
                set.remove(&connection.remote);
                if set.is_empty() {
                    listeners.remove(&store_key);
                }
            }
        }
    }

    /// The connections listening to the config stored under `store_key`, with its key.
    pub fn config_listeners_of(&self, store_key: &str) -> Vec<Arc<Connection>> {
        let addrs: Vec<SocketAddr> = lock(&self.config_listeners)
            .get(store_key)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let by_addr = lock(&self.by_addr);
        addrs
            .iter()
            .filter_map(|a| by_addr.get(a).cloned())
            .collect()
    }

    /// Every config `connection` listens to.
    pub fn listened_configs(&self, connection: &Connection) -> Vec<ConfigKey> {
        lock(&connection.config_listens).values().cloned().collect()
    }

    pub fn config_listener_count(&self) -> usize {
        lock(&self.config_listeners)
            .values()
            .map(HashSet::len)
            .sum()
    }

    pub fn subscription_count(&self) -> usize {
        lock(&self.subscribers).values().map(HashSet::len).sum()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn touch(&self, connection: &Connection) {
        connection
            .last_active_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// How long `connection` has been silent.
    pub fn idle(&self, connection: &Connection) -> Duration {
        let last = connection.last_active_ms.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }
}
