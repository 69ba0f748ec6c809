//! `berth exec` on the agent: runs the command through the instance's driver and moves
//! its bytes. Output waits for credit like an operation's chunks; each input frame handed
//! to the command returns one input credit, so the gateway never sends more than a
//! window ahead. A cancel (the user went away) kills the command's process group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_core::exec::ExecRequest;
use berth_proto::diag::v1 as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::ops::Ctx;
use crate::driver::{ExecChild, Exit, Resize};
use crate::supervisor::ExecWish;

/// Bytes per output frame.
const CHUNK: usize = 32 * 1024;
/// How long outputs may still drain after the command ended (its group is killed then,
/// so this only bounds a reader stuck on something outside the group).
const DRAIN: Duration = Duration::from_secs(5);
/// End of file on a terminal (Ctrl-D).
const EOT: u8 = 0x04;

/// One exec's link to the gateway.
pub struct ExecSink {
    pub tx: mpsc::Sender<pb::AgentFrame>,
    pub request_id: u64,
    pub credit: Arc<Semaphore>,
    pub cancel: CancellationToken,
}

/// The user is gone, or the stream broke.
struct Gone;

impl ExecSink {
    async fn send(&self, kind: pb::agent_frame::Kind) -> Result<(), Gone> {
        self.tx
            .send(pb::AgentFrame { kind: Some(kind) })
            .await
            .map_err(|_| Gone)
    }

    async fn output(&self, stream: u32, data: Vec<u8>) -> Result<(), Gone> {
        tokio::select! {
            permit = self.credit.acquire() => match permit {
                Ok(permit) => permit.forget(),
                Err(_) => return Err(Gone),
            },
            () = self.cancel.cancelled() => return Err(Gone),
        }
        self.send(pb::agent_frame::Kind::ExecOutput(pb::ExecOutput {
            request_id: self.request_id,
            stream,
            data,
        }))
        .await
    }

    async fn exit(&self, status: pb::exec_exit::Status) {
        let _ = self
            .send(pb::agent_frame::Kind::ExecExit(pb::ExecExit {
                request_id: self.request_id,
                status: Some(status),
            }))
            .await;
    }

    async fn input_taken(&self) -> Result<(), Gone> {
        self.send(pb::agent_frame::Kind::ExecInputCredit(pb::Credit {
            request_id: self.request_id,
            chunks: 1,
        }))
        .await
    }
}

/// Runs `start` to its end (or its cancellation) and sends the exit frame.
pub async fn run(
    ctx: &Ctx,
    start: pb::ExecStart,
    sink: &ExecSink,
    input: mpsc::Receiver<pb::ExecInput>,
) {
    let child = match prepare(ctx, start).await {
        Ok(child) => child,
        Err(why) => {
            sink.exit(pb::exec_exit::Status::Error(why)).await;
            return;
        }
    };
    let ExecChild {
        stdin,
        outputs,
        resize,
        exit,
        kill,
    } = child;
    let tty = resize.is_some();
    let readers = futures::future::join_all(
        outputs
            .into_iter()
            .map(|(stream, reader)| pump_output(stream, reader, sink)),
    );
    let writer = pump_input(stdin, input, resize, tty, sink);
    // Output flows while the command runs; once it ended (and the driver killed what it
    // left in its group) what it wrote is still in the pipes, read to their end.
    let ended = async {
        let mut exit = exit;
        let mut readers = std::pin::pin!(readers);
        let mut drained = false;
        let status = tokio::select! {
            status = &mut exit => status,
            _ = &mut readers => {
                drained = true;
                exit.await
            }
        };
        if !drained {
            let _ = tokio::time::timeout(DRAIN, readers).await;
        }
        status
    };
    let exit = tokio::select! {
        exit = ended => exit,
        never = writer => match never {},
        () = sink.cancel.cancelled() => {
            kill();
            tracing::info!(request = sink.request_id, "exec cancelled: its user went away; the command was killed");
            return;
        }
    };
    let status = match exit {
        Exit::Code(code) => pb::exec_exit::Status::Code(code),
        Exit::Signal(signal) => pb::exec_exit::Status::Signal(signal),
        Exit::Unknown => {
            pb::exec_exit::Status::Error("the command's exit status is unknown".into())
        }
    };
    sink.exit(status).await;
}

async fn prepare(ctx: &Ctx, start: pb::ExecStart) -> Result<ExecChild, String> {
    let dimension = |name: &str, n: u32| {
        u16::try_from(n).map_err(|_| format!("exec.{name} {n} is larger than a terminal can be"))
    };
    let request = ExecRequest {
        argv: start.argv,
        tty: start.tty,
        rows: dimension("rows", start.rows)?,
        cols: dimension("cols", start.cols)?,
        env: start.env.into_iter().collect::<BTreeMap<_, _>>(),
    };
    request.validate().map_err(|e| e.to_string())?;
    let target = ctx.supervisor.exec_target(
        &start.instance_id,
        &start.app_id,
        ExecWish {
            argv: request.argv,
            env: request.env,
            tty: request.tty,
            rows: request.rows,
            cols: request.cols,
        },
    )?;
    tracing::info!(instance = %target.instance, program = %target.command.argv[0], tty = request.tty, "exec");
    target
        .driver
        .exec(&target.handle, &target.command)
        .await
        .map_err(|e| e.to_string())
}

async fn pump_output(stream: u32, mut reader: Box<dyn AsyncRead + Send + Unpin>, sink: &ExecSink) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if sink.output(stream, buf[..n].to_vec()).await.is_err() {
            return;
        }
    }
}

/// Hands the user's frames to the command in order. It never returns: once the link is
/// gone or stdin is done it waits for the command's exit (or the cancel) like the rest.
async fn pump_input(
    stdin: Box<dyn AsyncWrite + Send + Unpin>,
    mut input: mpsc::Receiver<pb::ExecInput>,
    resize: Option<Resize>,
    tty: bool,
    sink: &ExecSink,
) -> std::convert::Infallible {
    let mut stdin = Some(stdin);
    while let Some(frame) = input.recv().await {
        match frame.kind {
            Some(pb::exec_input::Kind::Stdin(bytes)) => {
                if let Some(w) = stdin.as_mut()
                    && (w.write_all(&bytes).await.is_err() || w.flush().await.is_err())
                {
                    // The command closed its stdin: later input has nowhere to go.
                    stdin = None;
                }
            }
            Some(pb::exec_input::Kind::Eof(_)) => {
                if tty {
                    if let Some(w) = stdin.as_mut() {
                        let _ = w.write_all(&[EOT]).await;
                        let _ = w.flush().await;
                    }
                } else if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            Some(pb::exec_input::Kind::Resize(size)) => {
                if let Some(resize) = &resize {
                    let rows = u16::try_from(size.rows).unwrap_or(u16::MAX);
                    let cols = u16::try_from(size.cols).unwrap_or(u16::MAX);
                    if let Err(err) = resize(rows, cols) {
                        tracing::debug!(request = sink.request_id, "exec resize failed: {err}");
                    }
                }
            }
            None => {}
        }
        if sink.input_taken().await.is_err() {
            break;
        }
    }
    std::future::pending().await
}
