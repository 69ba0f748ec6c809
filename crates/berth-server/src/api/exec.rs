//! `GET /v1/exec/{app}` upgraded to a WebSocket: `berth exec`, a command run inside one
//! running instance of the app, through the diagnostics gateway that holds its node.
//!
//! Which instance is settled before the upgrade (a bad name is an ordinary 404 or 409);
//! what to run is the socket's first frame (`berth_core::exec`), validated before any
//! gateway is called. Then two pumps, one per direction, so a command that stops reading
//! its stdin never keeps its output from flowing (and the reverse): each waits only on
//! its own peer, which is how back-pressure reaches the CLI and the agent. A client that
//! goes away ends the gateway call, and the agent kills the command.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use berth_core::exec::{ClientFrame, ExecRequest, ExitStatus, ServerFrame, Stream, Wire};
use berth_core::instance::InstanceState;
use berth_proto::diag::v1 as pb;
use berth_proto::diag::v1::diag_gateway_client::DiagGatewayClient;
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiError;
use berth_registry_client::NacosClient;

use super::diag::{Attempt, GatewayLink, dial, gateways_of, registry_client, with_secret};
use crate::context::Ctx;

/// Time the client has to send what to run.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client has to close once the exit status is sent.
const LINGER: Duration = Duration::from_secs(5);
/// Largest client frame: stdin arrives in chunks far smaller.
const MAX_FRAME: usize = 1 << 20;

/// The instance a command runs in.
struct Target {
    instance: String,
    app: String,
    node: String,
}

pub async fn exec(
    State(ctx): State<Arc<Ctx>>,
    Path(app): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    if let Some(key) = q.keys().find(|k| k.as_str() != "instance") {
        return Err(
            ApiError::bad_request(format!("unknown parameter {key:?}: use instance"))
                .field(key.clone()),
        );
    }
    let target = target(&ctx, &app, q.get("instance"))?;
    let Some(registry) = ctx.config.registry_http else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_diagnostics",
            "exec goes through the diagnostics gateways, found in the registry: set registry_http",
        ));
    };
    let registry = registry_client(registry, ctx.config.registry_secret.as_ref());
    let link = GatewayLink::of(&ctx);
    let cancel = ctx.cancel.clone();
    Ok(upgrade
        .max_message_size(MAX_FRAME)
        .on_upgrade(move |socket| async move {
            tokio::select! {
                () = session(socket, registry, link, target) => {}
                () = cancel.cancelled() => {}
            }
        }))
}

fn runs(state: InstanceState) -> bool {
    matches!(
        state,
        InstanceState::Running | InstanceState::Healthy | InstanceState::Unhealthy
    )
}

/// The named instance of `app`, or its first running one.
fn target(ctx: &Ctx, app: &str, instance: Option<&String>) -> Result<Target, ApiError> {
    let state = ctx.lock_state();
    let mut of_app: Vec<_> = state.instances().filter(|i| i.app == app).collect();
    of_app.sort_by(|a, b| a.id.cmp(&b.id));
    let chosen = match instance {
        Some(id) => {
            let found = of_app
                .iter()
                .find(|i| i.id.as_str() == id.as_str())
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "app {app:?} has no instance {id:?}: see `berth instances --app {app}`"
                    ))
                    .field("instance")
                })?;
            if !runs(found.state) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_running",
                    format!(
                        "instance {id} is {}: exec needs a running instance",
                        found.state.as_str()
                    ),
                )
                .field("instance"));
            }
            found
        }
        None => {
            if of_app.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no agent reports an instance of app {app:?}: see `berth instances` for what runs"
                )));
            }
            of_app.iter().find(|i| runs(i.state)).ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "not_running",
                    format!("app {app:?} has no running instance: exec needs one"),
                )
            })?
        }
    };
    Ok(Target {
        instance: chosen.id.as_str().to_string(),
        app: chosen.app.clone(),
        node: chosen.node.to_string(),
    })
}

fn to_wire(message: Message) -> Option<Wire> {
    match message {
        Message::Text(text) => Some(Wire::Text(text.as_str().to_string())),
        Message::Binary(bytes) => Some(Wire::Binary(bytes.to_vec())),
        _ => None,
    }
}

fn to_message(frame: &ServerFrame) -> Message {
    match frame.encode() {
        Wire::Text(text) => Message::Text(text.into()),
        Wire::Binary(bytes) => Message::Binary(bytes.into()),
    }
}

async fn refuse(socket: &mut WebSocket, message: String, field: Option<String>) {
    let _ = socket
        .send(to_message(&ServerFrame::Error { message, field }))
        .await;
    let _ = socket.send(Message::Close(None)).await;
}

/// The first frame: what to run, validated.
async fn read_request(socket: &mut WebSocket) -> Result<ExecRequest, (String, Option<String>)> {
    let first = loop {
        match tokio::time::timeout(REQUEST_TIMEOUT, socket.recv()).await {
            Err(_) => {
                return Err((
                    format!(
                        "no request within {REQUEST_TIMEOUT:?}: send {{\"argv\": [...]}} first"
                    ),
                    None,
                ));
            }
            Ok(None) | Ok(Some(Err(_))) => return Err((String::new(), None)),
            Ok(Some(Ok(message))) => {
                if let Some(wire) = to_wire(message) {
                    break wire;
                }
            }
        }
    };
    let request = ExecRequest::decode(&first).map_err(|e| (e.to_string(), None))?;
    request
        .validate()
        .map_err(|e| (e.to_string(), Some(e.field.clone())))?;
    Ok(request)
}

async fn session(mut socket: WebSocket, registry: NacosClient, link: GatewayLink, target: Target) {
    let request = match read_request(&mut socket).await {
        Ok(request) => request,
        Err((message, _)) if message.is_empty() => return,
        Err((message, field)) => return refuse(&mut socket, message, field).await,
    };
    let (down, up) = match open(&registry, &link, &target, request).await {
        Ok(call) => call,
        Err(why) => return refuse(&mut socket, why, None).await,
    };
    let started = ServerFrame::Started {
        instance: target.instance.clone(),
        node: target.node.clone(),
    };
    if socket.send(to_message(&started)).await.is_err() {
        return;
    }
    let (mut ws_tx, mut ws_rx) = socket.split();
    let upward = async move {
        // Ends when the client leaves (or breaks the protocol); the call then drops.
        while let Some(Ok(message)) = ws_rx.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
            let Some(wire) = to_wire(message) else {
                continue;
            };
            let kind = match ClientFrame::decode(wire) {
                Ok(ClientFrame::Stdin(bytes)) => pb::exec_input::Kind::Stdin(bytes),
                Ok(ClientFrame::Eof) => pb::exec_input::Kind::Eof(true),
                Ok(ClientFrame::Resize { rows, cols }) => {
                    pb::exec_input::Kind::Resize(pb::Resize {
                        rows: rows.into(),
                        cols: cols.into(),
                    })
                }
                Err(err) => {
                    tracing::debug!("exec: {err}; the client is dropped");
                    return;
                }
            };
            let frame = pb::ExecUp {
                kind: Some(pb::exec_up::Kind::Input(pb::ExecInput {
                    request_id: 0,
                    kind: Some(kind),
                })),
            };
            // A call that ended (the exit is on its way down) takes no more input; the
            // client is still read until it leaves, which is what ends this pump.
            let _ = up.send(frame).await;
        }
    };
    let downward = async move {
        let mut down = down;
        let last = loop {
            let frame = match down.message().await {
                Ok(Some(pb::ExecDown { kind: Some(kind) })) => kind,
                Ok(Some(_)) => continue,
                Ok(None) => {
                    break ServerFrame::Error {
                        message: "the gateway ended the exec without an exit status".into(),
                        field: None,
                    };
                }
                Err(status) => {
                    break ServerFrame::Error {
                        message: format!("the gateway: {}", status.message()),
                        field: None,
                    };
                }
            };
            match frame {
                pb::exec_down::Kind::Output(output) => {
                    let stream = if output.stream == 2 {
                        Stream::Stderr
                    } else {
                        Stream::Stdout
                    };
                    let frame = ServerFrame::Output(stream, output.data);
                    if ws_tx.send(to_message(&frame)).await.is_err() {
                        return;
                    }
                }
                pb::exec_down::Kind::Exit(exit) => break exit_frame(exit),
            }
        };
        let _ = ws_tx.send(to_message(&last)).await;
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    tokio::pin!(upward, downward);
    tokio::select! {
        // The client left: dropping the call cancels the exec on the agent.
        () = &mut upward => {}
        // Done: read on until the client closes too, as closing a socket with its data
        // unread would reset the connection and could lose the last frames on their way.
        () = &mut downward => {
            let _ = tokio::time::timeout(LINGER, upward).await;
        }
    }
}

fn exit_frame(exit: pb::ExecExit) -> ServerFrame {
    match exit.status {
        Some(pb::exec_exit::Status::Code(code)) => ServerFrame::Exit(ExitStatus::Code(code)),
        Some(pb::exec_exit::Status::Signal(signal)) => {
            ServerFrame::Exit(ExitStatus::Signal(signal))
        }
        Some(pb::exec_exit::Status::Error(message)) => ServerFrame::Error {
            message,
            field: None,
        },
        None => ServerFrame::Error {
            message: "the agent sent an exit without a status".into(),
            field: None,
        },
    }
}

type Call = (tonic::Streaming<pb::ExecDown>, mpsc::Sender<pb::ExecUp>);

/// The exec call on the gateway holding the node, trying the next listed gateway when
/// one is unreachable or no longer holds it.
async fn open(
    registry: &NacosClient,
    link: &GatewayLink,
    target: &Target,
    request: ExecRequest,
) -> Result<Call, String> {
    let node = &target.node;
    let gateways = gateways_of(registry, node).await?;
    let start = pb::ExecStart {
        instance_id: target.instance.clone(),
        app_id: target.app.clone(),
        argv: request.argv,
        env: request.env.into_iter().collect(),
        tty: request.tty,
        rows: request.rows.into(),
        cols: request.cols.into(),
        ..Default::default()
    };
    let mut tried = Vec::new();
    for gateway in gateways {
        let fail = |a: Attempt| match a {
            Attempt::NextGateway(why) => Ok(why),
            Attempt::Failed(why) => Err(why),
        };
        let channel = match dial(&gateway, link).await {
            Ok(channel) => channel,
            Err(a) => {
                tried.push(fail(a)?);
                continue;
            }
        };
        // A small queue: the upward pump waits on it, which is the client's back-pressure.
        let (up, rx) = mpsc::channel(4);
        let open = pb::ExecUp {
            kind: Some(pb::exec_up::Kind::Open(pb::ExecOpen {
                node_id: node.clone(),
                start: Some(start.clone()),
            })),
        };
        up.send(open)
            .await
            .map_err(|_| "internal: exec queue closed".to_string())?;
        let call = with_secret(tonic::Request::new(ReceiverStream::new(rx)), link.secret())
            .map_err(|a| match a {
                Attempt::NextGateway(why) | Attempt::Failed(why) => why,
            })?;
        match DiagGatewayClient::new(channel).exec(call).await {
            Ok(response) => return Ok((response.into_inner(), up)),
            Err(status) if status.code() == tonic::Code::NotFound => {
                tried.push(format!("gateway {gateway}: {}", status.message()));
            }
            Err(status) => return Err(format!("gateway {gateway}: {}", status.message())),
        }
    }
    Err(tried.join("; "))
}
