//! The Nacos 2.x gRPC protocol on the registry's gRPC listener, beside the native watch
//! (tonic routes by path: `/Request/request`, `/BiRequestStream/requestBiStream`).
//!
//! Every current Nacos SDK speaks it. A client's TCP connection is a Nacos connection
//! ([`connections`]): unary requests are answered by [`NacosGrpc::handle`], the stream
//! carries the client's setup, then the server's pushes and the client's answers.
//!
//! How 2.x semantics map onto the naming core:
//! - An ephemeral instance registered over gRPC belongs to its connection: the instance
//!   records the connection id as its `owner`, and the connection lists what it holds.
//!   While the connection lives, this member beats for its instances every beat
//!   interval through the core's ordinary beat path, so in a cluster the member owning
//!   the service (which may be another one) keeps them alive exactly like beating v1
//!   clients, and expires them when the beats stop: a member that dies takes its
//!   connections' instances with it on every member after the beat timeouts.
//! - When a connection closes (its stream ends, or it stops answering the server's
//!   detection requests), its instances are released after `release_grace`: an
//!   [`Op::Release`] removes an instance only while that connection still owns it, so a
//!   client that reconnected meanwhile (to this member or another) and registered again
//!   keeps its instance.
//! - Subscriptions live on the connection; every committed change of a subscribed
//!   service marks it dirty for each subscriber, and one worker per connection pushes
//!   the latest state of each dirty service (coalesced, in order, waiting for the ack).

mod config;
pub mod connections;
pub mod loader;
mod naming;
pub mod wire;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_proto::nacos as pb;
use berth_proto::nacos::bi_request_stream_server::{BiRequestStream, BiRequestStreamServer};
use berth_proto::nacos::request_server::{Request as RequestRpc, RequestServer};
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Response, Status, Streaming};

use crate::auth::Auth;
use crate::config_center::ConfigCenter;
use crate::core::Registry;
use crate::model::{HealthStatus, ServiceKey};
use crate::naming::Op;
use connections::{Connection, Connections};
use wire::{Inbound, code};

/// Timings of the gRPC connections.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// How long a closed connection's instances stay before they are released.
    pub release_grace: Duration,
    /// How long a unary request waits for its connection's setup to arrive on the stream
    /// (the SDKs send their first requests right after the setup).
    pub setup_wait: Duration,
    /// How long the server waits for a client's answer to one of its requests.
    pub push_timeout: Duration,
    /// Tries of one push before the subscriber's connection is given up.
    pub push_attempts: u32,
    /// A connection silent this long is asked whether it is still there.
    pub detect_after: Duration,
    /// How often connections are beaten for and checked.
    pub beat_interval: Duration,
    /// The beat timings instances are listed with.
    pub beat: crate::model::BeatTimings,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            release_grace: Duration::from_secs(1),
            setup_wait: Duration::from_secs(2),
            push_timeout: Duration::from_secs(3),
            push_attempts: 3,
            detect_after: Duration::from_secs(20),
            beat_interval: Duration::from_secs(5),
            beat: crate::model::BeatTimings::default(),
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct GrpcStats {
    pub requests: AtomicU64,
    pub pushes: AtomicU64,
    pub pushes_failed: AtomicU64,
    pub push_latency_us_sum: AtomicU64,
    pub connections_closed: AtomicU64,
    pub config_publishes: AtomicU64,
    pub config_pushes: AtomicU64,
    pub config_pushes_failed: AtomicU64,
    pub config_push_latency_us_sum: AtomicU64,
}

pub(crate) struct Inner {
    registry: Registry,
    auth: Arc<Auth>,
    configs: Arc<ConfigCenter>,
    pub(crate) connections: Connections,
    options: GrpcOptions,
    shutdown: CancellationToken,
    /// The last `lastRefTime` handed out: SDKs drop a service state not newer than the
    /// one they hold, so every rendering gets a strictly larger one.
    last_ref_time: AtomicU64,
    pub(crate) stats: GrpcStats,
}

/// The Nacos gRPC services, cheap to clone.
#[derive(Clone)]
pub struct NacosGrpc {
    inner: Arc<Inner>,
}

impl NacosGrpc {
    pub fn new(
        registry: Registry,
        auth: Arc<Auth>,
        configs: Arc<ConfigCenter>,
        options: GrpcOptions,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry,
                auth,
                configs,
                connections: Connections::default(),
                options,
                shutdown,
                last_ref_time: AtomicU64::new(0),
                stats: GrpcStats::default(),
            }),
        }
    }

    /// The background work: pushes on changes, beats for held instances, detection of
    /// silent connections. Runs until shutdown.
    pub async fn run(self) {
        let inner = self.inner.clone();
        tokio::join!(
            naming::watch_changes(inner.clone()),
            config::watch_changes(inner.clone()),
            keep_alive(inner.clone()),
            reset_on_shutdown(inner.clone()),
        );
    }

    pub fn request_server(&self) -> RequestServer<Self> {
        RequestServer::new(self.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn stream_server(&self) -> BiRequestStreamServer<Self> {
        BiRequestStreamServer::new(self.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    pub fn connection_count(&self) -> usize {
        self.inner.connections.len()
    }

    pub fn subscription_count(&self) -> usize {
        self.inner.connections.subscription_count()
    }

    pub fn config_listener_count(&self) -> usize {
        self.inner.connections.config_listener_count()
    }

    pub fn stats(&self) -> &GrpcStats {
        &self.inner.stats
    }

    /// Moves `count` connections away (the busiest member's way to even the load out).
    pub async fn reset_some(&self, count: usize) -> usize {
        let all = self.inner.connections.all();
        let chosen: Vec<_> = all.into_iter().take(count).collect();
        let n = chosen.len();
        reset_connections(&self.inner, chosen).await;
        n
    }
}

/// The largest message a client may send (Nacos's own server limit).
const MAX_MESSAGE: usize = 10 * 1024 * 1024;

/// A member leaving tells its clients to move (SDKs that read `ConnectReset` reconnect
/// to another server at once; the others do when their stream closes).
async fn reset_on_shutdown(inner: Arc<Inner>) {
    inner.shutdown.cancelled().await;
    let all = inner.connections.all();
    if !all.is_empty() {
        tracing::info!(
            connections = all.len(),
            "asking Nacos gRPC clients to move to another member"
        );
    }
    reset_connections(&inner, all).await;
}

async fn reset_connections(inner: &Arc<Inner>, chosen: Vec<Arc<Connection>>) {
    let asks = chosen.iter().map(|c| {
        let body = json!({"module": "internal", "serverIp": "", "serverPort": ""});
        c.request("ConnectResetRequest", body, Duration::from_millis(500))
    });
    let _ = futures::future::join_all(asks).await;
    for c in chosen {
        close_moving(inner, &c);
    }
}

/// Ends a connection whose client was asked to move: its instances are not released
/// (the client registers them again wherever it reconnects, which takes them over); if
/// it never comes back they expire once this member's beats for them stop.
fn close_moving(inner: &Arc<Inner>, connection: &Arc<Connection>) {
    if inner.connections.close(connection) {
        inner
            .stats
            .connections_closed
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl Inner {
    fn next_ref_time(&self) -> u64 {
        let now = crate::http::nacos_json::now_millis();
        let mut last = self.last_ref_time.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_ref_time.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// The connection of `remote`, waiting a little for a setup that is on its way.
    async fn connection(&self, remote: SocketAddr) -> Option<Arc<Connection>> {
        let deadline = tokio::time::Instant::now() + self.options.setup_wait;
        loop {
            if let Some(c) = self.connections.get(remote) {
                return Some(c);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn handle(&self, remote: Option<SocketAddr>, payload: pb::Payload) -> pb::Payload {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let request = match Inbound::decode(payload) {
            Ok(request) => request,
            Err(why) => return wire::fail("ErrorResponse", "", code::BAD_PARAM, why),
        };
        let id = request.request_id();
        let Some(remote) = remote else {
            return wire::fail(
                "ErrorResponse",
                &id,
                code::UNREGISTERED,
                "Connection is unregistered.",
            );
        };
        if request.kind == "ServerCheckRequest" {
            return wire::ok(
                "ServerCheckResponse",
                &id,
                json!({
                    "connectionId": &*self.connections.id_for(remote),
                    "supportAbilityNegotiation": false,
                }),
            );
        }
        let Some(connection) = self.connection(remote).await else {
            return wire::fail(
                "ErrorResponse",
                &id,
                code::UNREGISTERED,
                "Connection is unregistered.",
            );
        };
        self.connections.touch(&connection);
        if request.kind == "HealthCheckRequest" {
            return wire::ok("HealthCheckResponse", &id, json!({}));
        }
        let answer =
            naming::response_type(&request.kind).or_else(|| config::response_type(&request.kind));
        let Some(answer) = answer else {
            return wire::fail(
                "ErrorResponse",
                &id,
                code::NO_HANDLER,
                format!(
                    "RequestHandler Not Found: this server does not handle {} requests (it serves Nacos naming: InstanceRequest, BatchInstanceRequest, PersistentInstanceRequest, ServiceQueryRequest, SubscribeServiceRequest, ServiceListRequest; and config: ConfigQueryRequest, ConfigPublishRequest, ConfigRemoveRequest, ConfigBatchListenRequest)",
                    request.kind
                ),
            );
        };
        if self.auth.enabled() {
            let allowed = request
                .header("accessToken")
                .is_some_and(|t| self.auth.verify(t));
            if !allowed {
                return wire::fail(
                    answer,
                    &id,
                    code::NO_RIGHT,
                    "user not found! (auth is on: log in with POST /nacos/v1/auth/login and send accessToken)",
                );
            }
        }
        let result = if config::response_type(&request.kind).is_some() {
            config::handle(self, &connection, &request).await
        } else {
            naming::handle(self, &connection, &request).await
        };
        match result {
            Ok(fields) => wire::ok_fields(answer, &id, fields),
            Err((error_code, message)) => wire::fail(answer, &id, error_code, message),
        }
    }
}

/// Ends a connection: forgets it, and releases its instances after the grace.
fn close(inner: &Arc<Inner>, connection: &Arc<Connection>) {
    if !inner.connections.close(connection) {
        return;
    }
    inner
        .stats
        .connections_closed
        .fetch_add(1, Ordering::Relaxed);
    let held = connection.held();
    if held.is_empty() {
        return;
    }
    let (inner, owner) = (inner.clone(), connection.id.clone());
    tokio::spawn(async move {
        tokio::time::sleep(inner.options.release_grace).await;
        for (service, instance) in held {
            let op = Op::Release {
                service,
                instance,
                owner: owner.clone(),
            };
            if let Err(err) = inner.registry.submit(op).await {
                tracing::warn!(connection = %owner, "cannot release an instance of a closed connection: {err}");
            }
        }
    });
}

/// Beats for every held instance and asks silent connections whether they are there.
async fn keep_alive(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.options.beat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for connection in inner.connections.all() {
            for (service, instance) in connection.held() {
                let result = inner
                    .registry
                    .beat(
                        service.clone(),
                        instance.ip.to_string(),
                        instance.port,
                        Some(instance.cluster.to_string()),
                        HealthStatus::Passing,
                    )
                    .await;
                if let Err(err) = result {
                    tracing::debug!(%service, "beat for a connection's instance failed: {err}");
                }
            }
            if inner.connections.idle(&connection) >= inner.options.detect_after {
                let (inner, connection) = (inner.clone(), connection.clone());
                tokio::spawn(async move {
                    let asked = connection
                        .request(
                            "ClientDetectionRequest",
                            json!({"module": "internal"}),
                            inner.options.push_timeout,
                        )
                        .await;
                    match asked {
                        Ok(_) => inner.connections.touch(&connection),
                        Err(err) => {
                            tracing::info!(connection = %connection.id, "closing a connection that does not answer: {err}");
                            close(&inner, &connection);
                        }
                    }
                });
            }
        }
    }
}

type PayloadStream = Pin<Box<dyn Stream<Item = Result<pb::Payload, Status>> + Send>>;

#[tonic::async_trait]
impl RequestRpc for NacosGrpc {
    async fn request(
        &self,
        request: tonic::Request<pb::Payload>,
    ) -> Result<Response<pb::Payload>, Status> {
        let remote = request.remote_addr();
        Ok(Response::new(
            self.inner.handle(remote, request.into_inner()).await,
        ))
    }
}

#[tonic::async_trait]
impl BiRequestStream for NacosGrpc {
    type requestBiStreamStream = PayloadStream;

    async fn request_bi_stream(
        &self,
        request: tonic::Request<Streaming<pb::Payload>>,
    ) -> Result<Response<Self::requestBiStreamStream>, Status> {
        let Some(remote) = request.remote_addr() else {
            return Err(Status::failed_precondition(
                "the client's address is unknown, so its requests cannot be tied to this stream",
            ));
        };
        let incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let inner = self.inner.clone();
        tokio::spawn(run_stream(inner, remote, incoming, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How long a shutting-down member gives its connections to take their reset.
const SHUTDOWN_RESET: Duration = Duration::from_millis(700);

/// How long a new stream may take to send its setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

async fn run_stream(
    inner: Arc<Inner>,
    remote: SocketAddr,
    mut incoming: Streaming<pb::Payload>,
    tx: connections::Outbound,
) {
    let first = tokio::select! {
        first = tokio::time::timeout(SETUP_TIMEOUT, incoming.next()) => first,
        () = inner.shutdown.cancelled() => return,
    };
    let setup = match first {
        Ok(Some(Ok(payload))) => match Inbound::decode(payload) {
            Ok(setup) if setup.kind == "ConnectionSetupRequest" => setup,
            Ok(other) => {
                let _ = tx
                    .send(Err(Status::invalid_argument(format!(
                        "the stream must open with a ConnectionSetupRequest, not {}",
                        other.kind
                    ))))
                    .await;
                return;
            }
            Err(why) => {
                let _ = tx.send(Err(Status::invalid_argument(why))).await;
                return;
            }
        },
        Ok(Some(Err(_)) | None) => return,
        Err(_) => {
            let _ = tx
                .send(Err(Status::deadline_exceeded(format!(
                    "no ConnectionSetupRequest within {SETUP_TIMEOUT:?} of opening the stream"
                ))))
                .await;
            return;
        }
    };
    let connection = inner.connections.open(remote, &setup, tx);
    tracing::debug!(connection = %connection.id, version = %connection.client_version, "nacos connection set up");
    let pusher = tokio::spawn(naming::push_worker(inner.clone(), connection.clone()));
    // On shutdown the connections are asked to move first (`reset_on_shutdown`); a
    // stream still open a moment later is ended anyway.
    let shutdown = {
        let token = inner.shutdown.clone();
        async move {
            token.cancelled().await;
            tokio::time::sleep(SHUTDOWN_RESET).await;
        }
    };
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            next = incoming.next() => next,
            () = connection.closed.cancelled() => break,
            () = &mut shutdown => break,
        };
        let Some(Ok(payload)) = next else { break };
        inner.connections.touch(&connection);
        match Inbound::decode(payload) {
            // The client's answers to the server's requests.
            Ok(answer) if answer.kind.ends_with("Response") => {
                connection.answer(answer);
            }
            Ok(other) => {
                tracing::debug!(connection = %connection.id, kind = %other.kind, "ignored a request sent on the stream");
            }
            Err(why) => {
                tracing::debug!(connection = %connection.id, "ignored an unreadable stream frame: {why}");
            }
        }
    }
    pusher.abort();
    // Ended by this side (a reset, a client that stopped answering, shutdown): tell the
    // client so it reconnects.
    if connection.closed.is_cancelled() || inner.shutdown.is_cancelled() {
        connection.end(Status::unavailable(
            "the server closed this connection: reconnect (to another member if this one is leaving)",
        ));
    }
    close(&inner, &connection);
}

/// An instance as a gRPC request's `instance` object describes it (the parser the
/// handlers use), for the fuzz targets. `Err` is the message the client would get.
pub fn parse_instance(
    value: &serde_json::Value,
    service: &ServiceKey,
) -> Result<crate::model::Instance, String> {
    naming::instance_from(value, "instance", service, true).map_err(|(_, message)| message)
}

/// The namespace a request names: `""` is Nacos's default namespace, `public`.
pub(crate) fn namespace_of(request: &Inbound, connection: &Connection) -> String {
    let ns = request
        .str("namespace")
        .or_else(|| request.str("tenant"))
        .filter(|n| !n.is_empty())
        .unwrap_or(&connection.tenant);
    if ns.is_empty() {
        crate::model::DEFAULT_NAMESPACE.to_string()
    } else {
        ns.to_string()
    }
}

/// The service a naming request names.
pub(crate) fn service_of(
    request: &Inbound,
    connection: &Connection,
) -> Result<ServiceKey, (u64, String)> {
    let name = request
        .str("serviceName")
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| {
            (
                code::BAD_PARAM,
                "serviceName is missing: name the service (without the group@@ prefix)".to_string(),
            )
        })?;
    let group = request
        .str("groupName")
        .filter(|g| !g.is_empty())
        .unwrap_or(crate::model::DEFAULT_GROUP);
    let namespace = namespace_of(request, connection);
    Ok(ServiceKey::parse_grouped(&namespace, name, group))
}
