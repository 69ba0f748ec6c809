//! The agent's side of live diagnostics: one long-lived stream to a diagnostics gateway,
//! operations run as they arrive ([`ops`]).
//!
//! The agent is given the gateways' addresses (or one load-balanced address) and dials
//! one at random: the gateway that answers says who it is, and the agent stays with it.
//! When that stream breaks, the agent waits a random delay before dialling again, so the
//! agents of a gateway that died spread over the others instead of arriving at once.

pub mod exec;
pub mod ops;
pub mod procs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::diag::v1 as pb;
use berth_proto::diag::v1::diag_gateway_client::DiagGatewayClient;
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::link::error_chain;
use crate::record::RecordStore;
use crate::supervisor::Supervisor;
use ops::{Ctx, Sink};

/// Longest pause between two dial attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Operations and execs running on this stream: their cancel token, their output credit
/// and, for an exec, where its input goes.
type InFlight = HashMap<u64, Request>;

struct Request {
    cancel: CancellationToken,
    credit: Arc<Semaphore>,
    input: Option<mpsc::Sender<pb::ExecInput>>,
}

#[derive(Debug, Clone)]
pub struct DiagOptions {
    pub gateways: Vec<String>,
    pub secret: Option<String>,
    pub node_id: String,
    /// Mutual TLS to the gateway with the agent's own certificate (the one it shows the
    /// server), the gateway verified as `diag.berth`.
    pub tls: Option<Arc<berth_identity::ReloadingTls>>,
}

/// Which gateway holds this agent now (for `/health` and tests).
#[derive(Debug, Clone, Default)]
pub struct DiagStatus {
    pub gateway_id: Option<String>,
    pub gateway_address: Option<String>,
}

pub struct DiagLink {
    options: DiagOptions,
    ctx: Arc<Ctx>,
    status: Arc<Mutex<DiagStatus>>,
}

impl DiagLink {
    pub fn new(options: DiagOptions, supervisor: Supervisor, store: RecordStore) -> Self {
        Self {
            options,
            ctx: Arc::new(Ctx { supervisor, store }),
            status: Arc::default(),
        }
    }

    pub fn status(&self) -> Arc<Mutex<DiagStatus>> {
        self.status.clone()
    }

    /// Dials, holds the stream, dials again, until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut failures: u32 = 0;
        loop {
            let address = {
                let gateways = &self.options.gateways;
                gateways[rand::rng().random_range(0..gateways.len())].clone()
            };
            match self.session(&address, &cancel).await {
                Ok(()) => failures = 0,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(gateway = %address, "diagnostics link: {err}");
                }
            }
            *self.status.lock().unwrap_or_else(|e| e.into_inner()) = DiagStatus::default();
            if cancel.is_cancelled() {
                return;
            }
            let ceiling = Duration::from_millis(200)
                .saturating_mul(1 << failures.min(6))
                .min(MAX_BACKOFF);
            let delay = ceiling.mul_f64(rand::rng().random_range(0.0..1.0));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn session(&self, address: &str, cancel: &CancellationToken) -> Result<(), String> {
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = tonic::transport::Endpoint::from_shared(url)
            .map_err(|e| format!("bad gateway address {address:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10));
        let connected = match &self.options.tls {
            Some(tls) => {
                berth_identity::dial::connect(endpoint, tls.clone(), berth_identity::Role::Diag)
                    .await
            }
            None => endpoint.connect().await,
        };
        let channel = connected.map_err(|e| format!("cannot connect: {}", error_chain(&e)))?;
        let mut client = DiagGatewayClient::new(channel);
        let (tx, rx) = mpsc::channel::<pb::AgentFrame>(64);
        tx.send(pb::AgentFrame {
            kind: Some(pb::agent_frame::Kind::Hello(pb::AgentHello {
                node_id: self.options.node_id.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        })
        .await
        .map_err(|_| "stream closed before the Hello".to_string())?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(secret) = &self.options.secret {
            let value = format!("Bearer {secret}")
                .parse()
                .map_err(|_| "the diagnostics secret is not a valid header value".to_string())?;
            request.metadata_mut().insert("authorization", value);
        }
        let mut inbound = client
            .attach(request)
            .await
            .map_err(|s| format!("attach refused: {}", s.message()))?
            .into_inner();
        let ops: Arc<Mutex<InFlight>> = Arc::default();
        let session = cancel.child_token();
        let result = loop {
            let frame = tokio::select! {
                () = cancel.cancelled() => break Ok(()),
                frame = inbound.message() => frame,
            };
            let kind = match frame {
                Ok(Some(pb::GatewayFrame { kind: Some(kind) })) => kind,
                Ok(Some(_)) => continue,
                Ok(None) => break Err("the gateway closed the stream".to_string()),
                Err(status) => break Err(format!("stream broke: {}", status.message())),
            };
            match kind {
                pb::gateway_frame::Kind::Welcome(welcome) => {
                    tracing::info!(gateway = %welcome.gateway_id, address = %welcome.address, "attached to a diagnostics gateway");
                    *self.status.lock().unwrap_or_else(|e| e.into_inner()) = DiagStatus {
                        gateway_id: Some(welcome.gateway_id),
                        gateway_address: Some(welcome.address),
                    };
                }
                pb::gateway_frame::Kind::Operation(op) => {
                    let id = op.request_id;
                    let credit = Arc::new(Semaphore::new(op.window.max(1) as usize));
                    let op_cancel = session.child_token();
                    ops.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        id,
                        Request {
                            cancel: op_cancel.clone(),
                            credit: credit.clone(),
                            input: None,
                        },
                    );
                    let sink = Sink {
                        tx: tx.clone(),
                        request_id: id,
                        credit,
                        cancel: op_cancel,
                    };
                    let (ctx, ops) = (self.ctx.clone(), ops.clone());
                    tokio::spawn(async move {
                        ops::run(&ctx, op, &sink).await;
                        ops.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    });
                }
                pb::gateway_frame::Kind::ExecStart(start) => {
                    let id = start.request_id;
                    let window = start.window.max(1) as usize;
                    let credit = Arc::new(Semaphore::new(window));
                    let op_cancel = session.child_token();
                    // The gateway sends at most `window` inputs ahead of their credit.
                    let (input_tx, input_rx) = mpsc::channel(window);
                    ops.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        id,
                        Request {
                            cancel: op_cancel.clone(),
                            credit: credit.clone(),
                            input: Some(input_tx),
                        },
                    );
                    let sink = exec::ExecSink {
                        tx: tx.clone(),
                        request_id: id,
                        credit,
                        cancel: op_cancel,
                    };
                    let (ctx, ops) = (self.ctx.clone(), ops.clone());
                    tokio::spawn(async move {
                        exec::run(&ctx, start, &sink, input_rx).await;
                        ops.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                    });
                }
                pb::gateway_frame::Kind::ExecInput(input) => {
                    let mut ops = ops.lock().unwrap_or_else(|e| e.into_inner());
                    let id = input.request_id;
                    let overrun = ops
                        .get(&id)
                        .and_then(|r| r.input.as_ref())
                        .is_some_and(|tx| tx.try_send(input).is_err());
                    if overrun {
                        // Past the window (or the command is gone): the exec ends here.
                        tracing::warn!(request = id, "exec input past its window; exec cancelled");
                        if let Some(r) = ops.remove(&id) {
                            r.cancel.cancel();
                        }
                    }
                }
                pb::gateway_frame::Kind::Credit(credit) => {
                    if let Some(r) = ops
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&credit.request_id)
                    {
                        r.credit.add_permits(credit.chunks.min(1024) as usize);
                    }
                }
                pb::gateway_frame::Kind::Cancel(c) => {
                    if let Some(r) = ops
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&c.request_id)
                    {
                        r.cancel.cancel();
                    }
                }
            }
        };
        // Operations of a broken stream have nobody to answer to.
        session.cancel();
        result
    }
}
