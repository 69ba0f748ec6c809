//! The link to the server: one long-lived gRPC stream to one server of the configured
//! list at a time.
//!
//! The agent speaks first (Hello with every instance it has), waits for the Welcome, then
//! sends a heartbeat every `heartbeat_interval_ms` with the full instance list
//! (level-triggered) and an event the moment an instance changes state (edge-triggered).
//! Commands from the server go to the supervisor, which is idempotent by instance id, so
//! a command repeated after a reconnect is harmless.
//!
//! When the session fails (refused, closed, silent past the HTTP/2 keep-alive), the agent
//! moves to the next server after a backoff: doubling from `backoff_initial` to
//! `backoff_max`, each delay drawn at random between half and all of it, so agents that
//! lost the same server do not come back in lockstep. Instances keep running while no
//! server is reachable; the next Hello carries their state.
//!
//! With TLS files the agent dials `https://ADDR` over mutual TLS: it verifies the
//! server's certificate against the CA for the name `server.berth` (whatever address it
//! dialed, so one certificate serves every address of a server) and presents its own,
//! whose node id the server holds the Hello to.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_proto::agent::v1 as pb;
use berth_proto::agent::v1::agent_link_client::AgentLinkClient;
use rand::Rng;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::supervisor::Supervisor;
use berth_core::ResourceRequest;

#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Server URIs (`http://127.0.0.1:7071`), tried in order, round robin.
    pub servers: Vec<String>,
    pub connect_timeout: Duration,
    /// Used until (and if) the Welcome names another interval.
    pub default_heartbeat: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// HTTP/2 pings that find a server which vanished without closing the connection.
    pub keepalive: Duration,
    /// Mutual TLS to the server, read again for every dial; `None`: cleartext HTTP/2.
    pub tls: Option<std::sync::Arc<berth_identity::ReloadingTls>>,
}

/// What the agent says about its node in the Hello.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: String,
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub total: ResourceRequest,
    pub version: String,
    pub address: String,
    pub status_url: String,
}

/// The link's state, for `/health` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStatus {
    /// The server of the open session, if any.
    pub connected_to: Option<String>,
    pub server_id: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot reach {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("{server} broke the session: {reason}")]
    Broken { server: String, reason: String },
}

/// The server address as a URI; plain `host:port` means cleartext HTTP/2, or TLS when
/// the agent has certificates.
pub fn server_uri(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    }
}

/// Delay before attempt number `failures` (1 = after the first failure).
pub fn backoff(config: &LinkConfig, failures: u32, rng: &mut impl Rng) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    let full = config
        .backoff_initial
        .saturating_mul(factor)
        .min(config.backoff_max);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(rng.random::<f64>())
}

pub async fn run(
    config: LinkConfig,
    node: NodeInfo,
    supervisor: Supervisor,
    cancel: CancellationToken,
    status: watch::Sender<LinkStatus>,
) {
    let mut failures = 0u32;
    let mut index = 0usize;
    loop {
        let server = config.servers[index % config.servers.len()].clone();
        let result = session(&config, &node, &supervisor, &cancel, &server, &status).await;
        supervisor.metrics().server_connected.set(0);
        if cancel.is_cancelled() {
            return;
        }
        let established = match result {
            Ok(established) => established,
            Err(err) => {
                tracing::warn!("{err}");
                status.send_modify(|s| {
                    s.connected_to = None;
                    s.server_id = None;
                    s.last_error = Some(err.to_string());
                });
                matches!(err, SessionError::Broken { .. })
            }
        };
        if established {
            failures = 1;
        } else {
            supervisor.metrics().server_connect_failures.inc();
            failures = failures.saturating_add(1);
        }
        index += 1;
        let delay = backoff(&config, failures, &mut rand::rng());
        tracing::debug!(
            next = %config.servers[index % config.servers.len()],
            ?delay,
            "connecting to the next server after a backoff"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// One session; returns when the agent stops (`Ok(established)`) or the session fails.
async fn session(
    config: &LinkConfig,
    node: &NodeInfo,
    supervisor: &Supervisor,
    cancel: &CancellationToken,
    server: &str,
    status: &watch::Sender<LinkStatus>,
) -> Result<bool, SessionError> {
    let connect_err = |reason: String| SessionError::Connect {
        server: server.to_string(),
        reason,
    };
    let broken = |reason: String| SessionError::Broken {
        server: server.to_string(),
        reason,
    };
    let endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|err| connect_err(format!("invalid server address: {err} (check --server)")))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive)
        .keep_alive_timeout(config.keepalive)
        .keep_alive_while_idle(true);
    let connect = async {
        match &config.tls {
            Some(tls) => {
                berth_identity::dial::connect(endpoint, tls.clone(), berth_identity::Role::Server)
                    .await
            }
            None => endpoint.connect().await,
        }
    };
    let channel = tokio::select! {
        result = tokio::time::timeout(config.connect_timeout, connect) => match result {
            Ok(Ok(channel)) => channel,
            Ok(Err(err)) => return Err(connect_err(error_chain(&err))),
            Err(_) => return Err(connect_err(format!("no connection within {:?}", config.connect_timeout))),
        },
        _ = cancel.cancelled() => return Ok(false),
    };
    let mut client = AgentLinkClient::new(channel);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(256);
    // Subscribe before taking the snapshot for the Hello: no change falls in between.
    let mut events = supervisor.subscribe();
    let total = node.total;
    let hello = pb::Hello {
        node_id: node.node_id.clone(),
        hostname: node.hostname.clone(),
        labels: node.labels.clone().into_iter().collect(),
        total: Some(berth_wire::request_to_pb(&total)),
        drivers: supervisor.drivers(),
        version: node.version.clone(),
        address: node.address.clone(),
        instances: supervisor.statuses(),
        status_url: node.status_url.clone(),
    };
    let _ = tx
        .send(pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Hello(hello)),
        })
        .await;
    let call = tokio::time::timeout(
        config.connect_timeout,
        client.session(ReceiverStream::new(rx)),
    );
    let mut inbound = match call.await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(connect_err(status_text(&status))),
        Err(_) => {
            return Err(connect_err(format!(
                "no answer to Hello within {:?}",
                config.connect_timeout
            )));
        }
    };
    let welcome = match tokio::time::timeout(config.connect_timeout, inbound.message()).await {
        Ok(Ok(Some(pb::ServerMessage {
            kind: Some(pb::server_message::Kind::Welcome(welcome)),
        }))) => welcome,
        Ok(Ok(Some(other))) => {
            return Err(connect_err(format!(
                "expected a Welcome first, got {other:?}"
            )));
        }
        Ok(Ok(None)) => return Err(connect_err("closed the stream before its Welcome".into())),
        Ok(Err(status)) => return Err(connect_err(status_text(&status))),
        Err(_) => {
            return Err(connect_err(format!(
                "no Welcome within {:?}",
                config.connect_timeout
            )));
        }
    };
    let mut interval = heartbeat_interval(&welcome, config.default_heartbeat);
    tracing::info!(%server, server_id = %welcome.server_id, ?interval, "session open");
    supervisor.metrics().server_connected.set(1);
    supervisor.metrics().server_sessions.inc();
    status.send_replace(LinkStatus {
        connected_to: Some(server.to_string()),
        server_id: Some(welcome.server_id.clone()),
        last_error: None,
    });
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let send = |message: pb::agent_message::Kind| {
        let tx = tx.clone();
        async move {
            tx.send(pb::AgentMessage {
                kind: Some(message),
            })
            .await
            .map_err(|_| "the outgoing stream closed".to_string())
        }
    };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(true),
            _ = tick.tick() => {
                send(heartbeat(supervisor)).await.map_err(broken)?;
            }
            event = events.recv() => match event {
                Ok(instance) => {
                    let event = pb::InstanceEvent { instance: Some(instance) };
                    send(pb::agent_message::Kind::Event(event)).await.map_err(broken)?;
                }
                // Too many changes at once: the full list says it all.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    send(heartbeat(supervisor)).await.map_err(broken)?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(true),
            },
            message = inbound.message() => match message {
                Ok(Some(message)) => match message.kind {
                    Some(pb::server_message::Kind::Start(start)) => supervisor.start_instance(&start),
                    Some(pb::server_message::Kind::Stop(stop)) => supervisor.stop_instance(&stop),
                    Some(pb::server_message::Kind::Welcome(again)) => {
                        interval = heartbeat_interval(&again, interval);
                        tick = tokio::time::interval(interval);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                    None => tracing::debug!("empty server message ignored"),
                },
                Ok(None) => return Err(broken("closed the stream".into())),
                Err(status) => return Err(broken(status_text(&status))),
            },
        }
    }
}

fn heartbeat_interval(welcome: &pb::Welcome, fallback: Duration) -> Duration {
    if welcome.heartbeat_interval_ms == 0 {
        fallback
    } else {
        // A server asking for beats faster than every 50 ms is most likely misconfigured.
        Duration::from_millis(u64::from(welcome.heartbeat_interval_ms).max(50))
    }
}

fn heartbeat(supervisor: &Supervisor) -> pb::agent_message::Kind {
    pb::agent_message::Kind::Heartbeat(pb::Heartbeat {
        used: Some(berth_wire::request_to_pb(&supervisor.used())),
        load1: crate::procfs::load1(),
        instances: supervisor.statuses(),
    })
}

fn status_text(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        format!("{:?}: {}", status.code(), status.message())
    }
}

/// An error with its causes (a TLS refusal hides levels down in tonic's error).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let config = LinkConfig {
            servers: vec![],
            connect_timeout: Duration::from_secs(1),
            default_heartbeat: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            keepalive: Duration::from_secs(5),
            tls: None,
        };
        let mut rng = rand::rng();
        for _ in 0..100 {
            let first = backoff(&config, 1, &mut rng);
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&first));
            let third = backoff(&config, 3, &mut rng);
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&third));
            let late = backoff(&config, 40, &mut rng);
            assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&late));
        }
    }

    #[test]
    fn server_addresses_become_uris() {
        assert_eq!(server_uri("127.0.0.1:7071", false), "http://127.0.0.1:7071");
        assert_eq!(server_uri("127.0.0.1:7071", true), "https://127.0.0.1:7071");
        assert_eq!(server_uri("https://s:1", false), "https://s:1");
    }
}
