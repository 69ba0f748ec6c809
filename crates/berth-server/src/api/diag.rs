//! `GET /v1/diag/{op}`: live diagnostics of an app or one instance, through the
//! diagnostics gateway that holds each node's agent.
//!
//! The server is the one address users know (the source design's ui -> proxy -> agent
//! path, with the server as the ui's back end). It finds the nodes that run the target
//! from its real state, looks each node's gateway up in the registry (service
//! `berth.diag.node.<node>`, kept by the gateways), runs the operation there, and streams
//! the merged lines back, each prefixed with its instance when several answer. A client
//! that goes away drops the gateway streams, which cancels the operations on the agents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_proto::diag::v1 as pb;
use berth_proto::diag::v1::diag_gateway_client::DiagGatewayClient;
use berth_registry_client::{Credentials, NacosClient, RegistryError, names};
use berth_util::config::Secret;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiError;
use crate::context::Ctx;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

const PARAMS: [&str; 9] = [
    "app",
    "instance",
    "pattern",
    "stream",
    "lines",
    "follow",
    "max_matches",
    "ignore_case",
    "node",
];

/// One gateway call: a node and what to run there.
struct Target {
    node: String,
    operation: pb::Operation,
}

pub async fn diag(
    State(ctx): State<Arc<Ctx>>,
    Path(op): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    for key in q.keys() {
        if !PARAMS.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "unknown parameter {key:?}: use {}",
                PARAMS.join(", ")
            ))
            .field(key.clone()));
        }
    }
    let op = parse_op(&op, &q)?;
    let targets = targets(&ctx, &q, op)?;
    let Some(registry) = ctx.config.registry_http else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_diagnostics",
            "live diagnostics need the registry, where gateways are found: set registry_http",
        ));
    };
    let registry = registry_client(registry, ctx.config.registry_secret.as_ref());
    let prefix = !q.contains_key("instance");
    let link = GatewayLink::of(&ctx);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    for target in targets {
        let (tx, link, cancel) = (tx.clone(), link.clone(), ctx.cancel.clone());
        let registry = registry.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = run_on_node(&registry, &link, target, prefix, &tx) => {}
                // The client went away: dropping the gateway stream cancels the operation.
                () = tx.closed() => {}
                () = cancel.cancelled() => {}
            }
        });
    }
    let headers = [
        (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, Body::from_stream(ReceiverStream::new(rx))).into_response())
}

fn parse_op(name: &str, q: &HashMap<String, String>) -> Result<pb::operation::Op, ApiError> {
    let number = |key: &str, max: u32| -> Result<u32, ApiError> {
        match q.get(key) {
            None => Ok(0),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{key}={text:?} is not a number from 1 to {max}"
                ))
                .field(key)),
            },
        }
    };
    let flag = |key: &str| -> Result<bool, ApiError> {
        match q.get(key).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => {
                Err(ApiError::bad_request(format!("{key}={v:?} is not true or false")).field(key))
            }
        }
    };
    let stream = q.get("stream").cloned().unwrap_or_default();
    if !["", "stdout", "stderr"].contains(&stream.as_str()) {
        return Err(ApiError::bad_request(format!(
            "stream={stream:?} does not exist: use stdout or stderr"
        ))
        .field("stream"));
    }
    Ok(match name {
        "grep" => {
            let pattern = q.get("pattern").cloned().unwrap_or_default();
            if pattern.is_empty() {
                return Err(ApiError::bad_request(
                    "grep needs pattern=REGEX (what to look for in the logs)",
                )
                .field("pattern"));
            }
            pb::operation::Op::Grep(pb::Grep {
                pattern,
                stream,
                max_matches: number("max_matches", 100_000)?,
                ignore_case: flag("ignore_case")?,
            })
        }
        "tail" => pb::operation::Op::Tail(pb::Tail {
            stream,
            lines: number("lines", 10_000)?,
            follow: flag("follow")?,
        }),
        "ps" => pb::operation::Op::Processes(pb::Processes {}),
        "ports" => pb::operation::Op::Ports(pb::Ports {}),
        other => {
            return Err(ApiError::not_found(format!(
                "no diagnostic operation {other:?}: use grep, tail, ps or ports"
            )));
        }
    })
}

/// One gateway call per node that runs the app (or the one instance).
fn targets(
    ctx: &Ctx,
    q: &HashMap<String, String>,
    op: pb::operation::Op,
) -> Result<Vec<Target>, ApiError> {
    let app = q.get("app");
    let instance = q.get("instance");
    if app.is_none() && instance.is_none() {
        return Err(ApiError::bad_request(
            "say what to diagnose: ?app=APP_ID or ?instance=INSTANCE_ID",
        )
        .field("app"));
    }
    let state = ctx.lock_state();
    let mut by_node: BTreeMap<String, (String, String)> = BTreeMap::new();
    for node in state.nodes.values() {
        for i in node.instances.values() {
            if app.is_some_and(|a| &i.app != a) || instance.is_some_and(|id| i.id.as_str() != id) {
                continue;
            }
            let instance_id = if instance.is_some() {
                i.id.as_str().to_string()
            } else {
                String::new()
            };
            by_node.insert(node.id.to_string(), (i.app.clone(), instance_id));
        }
    }
    drop(state);
    if let Some(node) = q.get("node") {
        by_node.retain(|n, _| n == node);
    }
    if by_node.is_empty() {
        let what = match (instance, app) {
            (Some(id), _) => format!("no agent reports instance {id:?}"),
            (None, Some(app)) => format!("no agent reports an instance of app {app:?}"),
            (None, None) => unreachable!("checked above"),
        };
        return Err(ApiError::not_found(format!(
            "{what}: see `berth instances` for what runs"
        )));
    }
    Ok(by_node
        .into_iter()
        .map(|(node, (app_id, instance_id))| Target {
            node,
            operation: pb::Operation {
                app_id,
                instance_id,
                op: Some(op.clone()),
                ..Default::default()
            },
        })
        .collect())
}

/// The registry client of gateway look-ups, with the server's registry secret.
pub(super) fn registry_client(
    registry: std::net::SocketAddr,
    secret: Option<&Secret>,
) -> NacosClient {
    let credentials = Credentials::new(
        secret.map(|s| s.expose().to_string()),
        "the server's --registry-secret-file FILE (or BERTH_SERVER_REGISTRY_SECRET_FILE)",
    );
    NacosClient::new(format!("http://{registry}"), LOOKUP_TIMEOUT).with_credentials(credentials)
}

/// The gateways registered for `node`, from the registry. Usually one; right after a
/// gateway died its entry lingers until the registry expires it, beside the new one.
pub(super) async fn gateways_of(client: &NacosClient, node: &str) -> Result<Vec<String>, String> {
    let service = names::diag_node_service(node);
    let hosts: Vec<String> = match client.list_instances(&service, true).await {
        Ok(listed) => listed.iter().map(|host| host.addr()).collect(),
        Err(RegistryError::Unreachable { source, .. }) => {
            return Err(format!(
                "registry at {} unreachable: {source}",
                client.base()
            ));
        }
        Err(RegistryError::Unreadable { source, .. }) => {
            return Err(format!("registry answer unreadable: {source}"));
        }
        Err(err @ RegistryError::Unauthorized { .. }) => return Err(err.to_string()),
        // Any other refusal names no gateway, like an empty listing.
        Err(RegistryError::Refused { .. }) => Vec::new(),
    };
    if hosts.is_empty() {
        return Err(format!(
            "no diagnostics gateway holds node {node} (registry service {service} is empty): start its agent with --diag pointing at a gateway"
        ));
    }
    Ok(hosts)
}

/// A channel to `gateway`, over mutual TLS when the server has its certificate;
/// unreachable means try the next one.
pub(super) async fn dial(
    gateway: &str,
    link: &GatewayLink,
) -> Result<tonic::transport::Channel, Attempt> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))
        .map_err(|e| Attempt::Failed(e.to_string()))?
        .connect_timeout(LOOKUP_TIMEOUT);
    let connected = match &link.tls {
        Some(tls) => {
            berth_identity::dial::connect(endpoint, tls.clone(), berth_identity::Role::Diag).await
        }
        None => endpoint.connect().await,
    };
    connected
        .map_err(|e| Attempt::NextGateway(format!("gateway {gateway} unreachable: {}", causes(&e))))
}

/// `request` carrying the gateways' shared secret, when one is set.
pub(super) fn with_secret<T>(
    mut request: tonic::Request<T>,
    secret: Option<&str>,
) -> Result<tonic::Request<T>, Attempt> {
    if let Some(secret) = secret {
        let value = format!("Bearer {secret}")
            .parse()
            .map_err(|_| Attempt::Failed("diag_secret is not a valid header value".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

/// An error with its causes: a refused TLS handshake hides below tonic's "transport
/// error".
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Why one gateway could not serve: try the next, or give up.
pub(super) enum Attempt {
    NextGateway(String),
    Failed(String),
}

/// How the server calls gateways: their shared secret, and its own certificate (the
/// gateway verified as `diag.berth`) when it has one.
#[derive(Clone)]
pub(super) struct GatewayLink {
    secret: Option<String>,
    tls: Option<Arc<berth_identity::ReloadingTls>>,
}

impl GatewayLink {
    pub(super) fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    pub(super) fn of(ctx: &Ctx) -> Self {
        Self {
            secret: ctx
                .config
                .diag_secret
                .as_ref()
                .map(|s| s.expose().to_string()),
            tls: ctx.tls.clone(),
        }
    }
}

async fn run_on_node(
    registry: &NacosClient,
    link: &GatewayLink,
    target: Target,
    prefix: bool,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let node = target.node.clone();
    let fail = |why: String| Bytes::from(format!("[node {node}] error: {why}\n"));
    let gateways = match gateways_of(registry, &target.node).await {
        Ok(gateways) => gateways,
        Err(why) => {
            let _ = tx.send(Ok(fail(why))).await;
            return;
        }
    };
    let mut tried = Vec::new();
    for gateway in gateways {
        match run_via(&gateway, link, &target, prefix, tx).await {
            Ok(()) => return,
            Err(Attempt::NextGateway(why)) => tried.push(why),
            Err(Attempt::Failed(why)) => {
                let _ = tx.send(Ok(fail(why))).await;
                return;
            }
        }
    }
    let _ = tx.send(Ok(fail(tried.join("; ")))).await;
}

async fn run_via(
    gateway: &str,
    link: &GatewayLink,
    target: &Target,
    prefix: bool,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), Attempt> {
    let channel = dial(gateway, link).await?;
    let request = with_secret(
        tonic::Request::new(pb::RunRequest {
            node_id: target.node.clone(),
            operation: Some(target.operation.clone()),
        }),
        link.secret.as_deref(),
    )?;
    let mut stream = match DiagGatewayClient::new(channel).run(request).await {
        Ok(response) => response.into_inner(),
        // This gateway no longer holds the node (its agent moved on).
        Err(status) if status.code() == tonic::Code::NotFound => {
            return Err(Attempt::NextGateway(format!(
                "gateway {gateway}: {}",
                status.message()
            )));
        }
        Err(status) => {
            return Err(Attempt::Failed(format!(
                "gateway {gateway}: {}",
                status.message()
            )));
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                let mut text = String::new();
                for line in &chunk.lines {
                    if prefix {
                        text.push_str(&format!("[{}] ", chunk.instance_id));
                    }
                    text.push_str(line);
                    text.push('\n');
                }
                if !chunk.error.is_empty() {
                    text.push_str(&format!("[node {}] error: {}\n", target.node, chunk.error));
                }
                if tx.send(Ok(Bytes::from(text))).await.is_err() {
                    return Ok(());
                }
            }
            Ok(None) => return Ok(()),
            Err(status) => {
                return Err(Attempt::Failed(format!(
                    "gateway {gateway}: {}",
                    status.message()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::get;

    use super::*;

    /// A registry with auth on whose secret is `right`, listing one gateway for any node.
    async fn guarded_registry() -> std::net::SocketAddr {
        let listing = |headers: HeaderMap| async move {
            match headers.get("accesstoken").and_then(|v| v.to_str().ok()) {
                Some("right") => (
                    StatusCode::OK,
                    r#"{"hosts":[{"ip":"127.0.0.1","port":7080}]}"#,
                ),
                _ => (StatusCode::FORBIDDEN, "auth is on: send a token"),
            }
        };
        let app = Router::new().route(
            berth_registry_client::nacos::INSTANCE_LIST_PATH,
            get(listing),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn gateway_lookups_carry_the_registry_secret_and_name_it_when_refused() {
        let registry = guarded_registry().await;
        let right = Secret::new("right");
        let found = gateways_of(&registry_client(registry, Some(&right)), "n1").await;
        assert_eq!(found.unwrap(), vec!["127.0.0.1:7080"]);

        let missing = gateways_of(&registry_client(registry, None), "n1")
            .await
            .unwrap_err();
        assert!(
            missing.contains("no secret was sent")
                && missing.contains("BERTH_SERVER_REGISTRY_SECRET_FILE"),
            "a refusal is not an empty listing: {missing}"
        );
        let wrong = Secret::new("wrong-secret");
        let refused = gateways_of(&registry_client(registry, Some(&wrong)), "n1")
            .await
            .unwrap_err();
        assert!(
            refused.contains("is not the registry's auth secret")
                && refused.contains("--registry-secret-file")
                && !refused.contains("wrong-secret"),
            "{refused}"
        );
    }
}
