//! `Exec`: one command inside an instance, relayed both ways with credit.
//!
//! Output: the agent sends at most `window` frames ahead; they wait in a channel of that
//! size and each one the user's transport takes returns one credit, as for operations.
//! Input: the gateway forwards at most `window` frames the agent has not yet handed to
//! the command (the agent returns `exec_input_credit` as it does), and meanwhile stops
//! reading the user's stream, so HTTP/2 flow control pushes back to the user. A user
//! that goes away drops [`ExecStream`], which cancels the exec: the agent kills it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use berth_proto::diag::v1 as pb;
use futures::Stream;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};

use super::{AgentConn, Gateway, Inner};

/// Time a user has to send its ExecOpen.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one exec's frames go.
pub(super) struct Route {
    down: mpsc::Sender<pb::ExecDown>,
    input_credit: Arc<Semaphore>,
}

impl AgentConn {
    fn execs(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Route>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) fn fail_all(conn: &AgentConn, why: &str) {
    for (id, route) in conn.execs().drain() {
        route.input_credit.close();
        let _ = route.down.try_send(exit_error(id, why.to_string()));
    }
}

fn exit_error(id: u64, why: String) -> pb::ExecDown {
    pb::ExecDown {
        kind: Some(pb::exec_down::Kind::Exit(pb::ExecExit {
            request_id: id,
            status: Some(pb::exec_exit::Status::Error(why)),
        })),
    }
}

pub(super) fn on_output(conn: &AgentConn, output: pb::ExecOutput) {
    let id = output.request_id;
    let Some(down) = conn.execs().get(&id).map(|r| r.down.clone()) else {
        return;
    };
    let frame = pb::ExecDown {
        kind: Some(pb::exec_down::Kind::Output(output)),
    };
    if down.try_send(frame).is_err() {
        tracing::warn!(node = %conn.node, request = id, "agent sent exec output past its window; exec cancelled");
        if let Some(route) = conn.execs().remove(&id) {
            let _ = route
                .down
                .try_send(exit_error(id, "the agent overran its window".into()));
        }
        conn.send(pb::gateway_frame::Kind::Cancel(pb::Cancel {
            request_id: id,
        }));
    }
}

pub(super) fn on_exit(conn: &AgentConn, exit: pb::ExecExit) {
    let id = exit.request_id;
    if let Some(route) = conn.execs().remove(&id) {
        route.input_credit.close();
        // The channel keeps one slot beyond the window for this frame.
        let _ = route.down.try_send(pb::ExecDown {
            kind: Some(pb::exec_down::Kind::Exit(exit)),
        });
    }
}

pub(super) fn on_input_credit(conn: &AgentConn, credit: pb::Credit) {
    if let Some(route) = conn.execs().get(&credit.request_id) {
        route
            .input_credit
            .add_permits(credit.chunks.min(1024) as usize);
    }
}

impl Gateway {
    pub(super) async fn open_exec(
        &self,
        mut up: Streaming<pb::ExecUp>,
    ) -> Result<ExecStream, Status> {
        let open = match tokio::time::timeout(OPEN_TIMEOUT, up.message()).await {
            Ok(Ok(Some(pb::ExecUp {
                kind: Some(pb::exec_up::Kind::Open(open)),
            }))) => open,
            Ok(Ok(_)) => {
                return Err(Status::invalid_argument(
                    "the first frame of Exec must be an ExecOpen naming the node and the command",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "no ExecOpen within {OPEN_TIMEOUT:?}"
                )));
            }
        };
        let mut start = open
            .start
            .ok_or_else(|| Status::invalid_argument("ExecOpen.start is missing"))?;
        if start.argv.is_empty() {
            return Err(Status::invalid_argument(
                "ExecOpen.start.argv is empty: name the program to run",
            ));
        }
        if start.instance_id.is_empty() && start.app_id.is_empty() {
            return Err(Status::invalid_argument(
                "ExecOpen.start names neither instance_id nor app_id",
            ));
        }
        let conn = self.attached(&open.node_id)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let window = self.inner.window.max(1);
        start.request_id = id;
        start.window = window;
        let (down, rx) = mpsc::channel(window as usize + 1);
        let input_credit = Arc::new(Semaphore::new(window as usize));
        conn.execs().insert(
            id,
            Route {
                down,
                input_credit: input_credit.clone(),
            },
        );
        if !conn.send(pb::gateway_frame::Kind::ExecStart(start)) {
            conn.execs().remove(&id);
            return Err(Status::unavailable(format!(
                "the agent of node {} just went away",
                open.node_id
            )));
        }
        let stats = &self.inner.stats;
        stats.operations.fetch_add(1, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let pump = tokio::spawn(pump_input(up, conn.clone(), id, input_credit));
        Ok(ExecStream {
            rx,
            conn,
            id,
            finished: false,
            pump,
            gateway: self.inner.clone(),
        })
    }
}

/// Forwards the user's input frames while the agent has room for them. A user that
/// closes its side just sends no more; only dropping the call cancels the exec.
async fn pump_input(
    mut up: Streaming<pb::ExecUp>,
    conn: Arc<AgentConn>,
    id: u64,
    credit: Arc<Semaphore>,
) {
    loop {
        let input = match up.message().await {
            Ok(Some(pb::ExecUp {
                kind: Some(pb::exec_up::Kind::Input(input)),
            })) => input,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        };
        match credit.acquire().await {
            Ok(permit) => permit.forget(),
            // The exec ended.
            Err(_) => return,
        }
        let input = pb::ExecInput {
            request_id: id,
            ..input
        };
        if !conn.send(pb::gateway_frame::Kind::ExecInput(input)) {
            return;
        }
    }
}

/// One user's exec: each output frame taken returns one credit to the agent; dropping the
/// stream before the exit cancels the exec there.
pub struct ExecStream {
    rx: mpsc::Receiver<pb::ExecDown>,
    conn: Arc<AgentConn>,
    id: u64,
    finished: bool,
    pump: JoinHandle<()>,
    gateway: Arc<Inner>,
}

impl Stream for ExecStream {
    type Item = Result<pb::ExecDown, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Err(Status::unavailable(format!(
                    "the agent of node {} went away",
                    self.conn.node
                )))))
            }
            Poll::Ready(Some(frame)) => {
                match &frame.kind {
                    Some(pb::exec_down::Kind::Output(_)) => {
                        self.conn.send(pb::gateway_frame::Kind::Credit(pb::Credit {
                            request_id: self.id,
                            chunks: 1,
                        }));
                    }
                    _ => self.finished = true,
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        self.pump.abort();
        self.gateway.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            self.conn.execs().remove(&self.id);
            self.conn.send(pb::gateway_frame::Kind::Cancel(pb::Cancel {
                request_id: self.id,
            }));
            self.gateway.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}
