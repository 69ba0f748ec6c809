//! `berth exec` in a container, through the engine's exec API.
//!
//! The engine starts the command inside the container's namespaces and hands over the
//! connection that asked for it (`101 Switching Protocols`): the user's input is written
//! to it, the command's output read from it, raw with a terminal and multiplexed as the
//! container logs without one. A task copies that output into one pipe per stream, so
//! the runner sees the same [`ExecChild`] as for a process on the host, and notes when
//! the stream ends: that, or a periodic look at the exec, tells the command ended. Its
//! exit code comes from the engine.
//!
//! The engine has no call to kill an exec, so a kill signals the process the engine
//! reports (its host pid) and its group (a terminal's command leads one): the agent runs
//! in the host's pid namespace beside the engine.

use std::time::Duration;

use futures::FutureExt;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::oneshot;

use super::api::DockerApi;
use super::exit_from_code;
use super::logs::{Demux, Stream};
use crate::driver::{DriverError, ExecChild, ExecCommand, Exit, Resize, STDERR, STDOUT};

/// Bytes each output pipe holds before the copy waits for its reader.
const PIPE: usize = 64 * 1024;
/// How often the engine is asked whether the command still runs while its stream stays
/// open (something it started may hold the output open after it ended).
const POLL: Duration = Duration::from_millis(500);
/// How long after the stream ended the engine may still report the command running.
const SETTLE: Duration = Duration::from_secs(5);

pub(super) async fn start(
    api: DockerApi,
    container: String,
    cmd: ExecCommand,
) -> Result<ExecChild, DriverError> {
    let engine = |e: super::DockerError| DriverError::Engine(e.to_string());
    if cmd.argv.is_empty() {
        return Err(DriverError::Spec("exec: argv is empty".into()));
    }
    let env: Vec<String> = cmd.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // No working folder: the container's own applies (the instance folder is the host's).
    let config = json!({
        "Cmd": cmd.argv,
        "Env": env,
        "AttachStdin": true,
        "AttachStdout": true,
        "AttachStderr": true,
        "Tty": cmd.tty,
    });
    let id = api.exec_create(&container, &config).await.map_err(engine)?;
    let io = api.exec_attach(&id, cmd.tty).await.map_err(engine)?;
    let (reader, writer) = tokio::io::split(io);

    let (stdout_in, stdout_out) = tokio::io::duplex(PIPE);
    let mut outputs: Vec<(u32, Box<dyn tokio::io::AsyncRead + Send + Unpin>)> =
        vec![(STDOUT, Box::new(stdout_out))];
    let stderr_in = if cmd.tty {
        None
    } else {
        let (stderr_in, stderr_out) = tokio::io::duplex(PIPE);
        outputs.push((STDERR, Box::new(stderr_out)));
        Some(stderr_in)
    };
    let (ended_tx, ended_rx) = oneshot::channel();
    tokio::spawn(copy_output(reader, cmd.tty, stdout_in, stderr_in, ended_tx));

    let resize = if cmd.tty {
        // One task applies the latest size asked for, so an early size that the engine
        // only accepts late can never land after (and undo) a later resize.
        let (size_tx, size_rx) = tokio::sync::watch::channel((cmd.rows, cmd.cols));
        tokio::spawn(apply_sizes(api.clone(), id.clone(), size_rx));
        let resize: Resize = Box::new(move |rows, cols| {
            size_tx
                .send((rows, cols))
                .map_err(|_| "the command has ended".to_string())
        });
        Some(resize)
    } else {
        None
    };

    let killer = {
        let (api, id) = (api.clone(), id.clone());
        let runtime = tokio::runtime::Handle::current();
        Box::new(move || {
            let (api, id) = (api.clone(), id.clone());
            runtime.spawn(async move {
                match api.exec_inspect(&id).await {
                    Ok(state) if state.running => signal_kill(state.pid),
                    Ok(_) => {}
                    Err(err) => tracing::warn!("cannot find the exec to kill it: {err}"),
                }
            });
        }) as Box<dyn Fn() + Send + Sync>
    };

    Ok(ExecChild {
        stdin: Box::new(writer),
        outputs,
        resize,
        exit: wait(api, id, ended_rx).boxed(),
        kill: killer,
    })
}

/// Kills the command and, when it leads one, its process group. Never pid 0 or 1: those
/// would be this agent's own group or the host's init.
fn signal_kill(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(raw), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
}

/// Applies each size asked for, the latest one winning. The engine refuses a resize
/// until the command runs, which it may not yet when the connection was handed over, so
/// a size is retried for a while; a newer size replaces one still being retried.
async fn apply_sizes(
    api: DockerApi,
    id: String,
    mut sizes: tokio::sync::watch::Receiver<(u16, u16)>,
) {
    loop {
        let (rows, cols) = *sizes.borrow_and_update();
        if rows > 0 && cols > 0 {
            for _ in 0..40 {
                if api.exec_resize(&id, rows, cols).await.is_ok()
                    || sizes.has_changed().unwrap_or(true)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        if sizes.changed().await.is_err() {
            return;
        }
    }
}

/// Copies the engine's stream into the pipes until it ends. A pipe whose reader went
/// away is dropped; the stream is still read to its end, which tells the command ended.
async fn copy_output(
    mut from: tokio::io::ReadHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
    tty: bool,
    stdout: DuplexStream,
    stderr: Option<DuplexStream>,
    ended: oneshot::Sender<()>,
) {
    let mut stdout = Some(stdout);
    let mut stderr = stderr;
    let mut demux = Demux::default();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if tty {
            deliver(&mut stdout, &buf[..n]).await;
            continue;
        }
        match demux.push(&buf[..n]) {
            Ok(frames) => {
                for frame in frames {
                    let pipe = match frame.stream {
                        Stream::Stdout => &mut stdout,
                        Stream::Stderr => &mut stderr,
                    };
                    deliver(pipe, &frame.payload).await;
                }
            }
            Err(err) => {
                tracing::warn!("exec output: {err}");
                break;
            }
        }
    }
    drop((stdout, stderr));
    let _ = ended.send(());
}

async fn deliver(pipe: &mut Option<DuplexStream>, bytes: &[u8]) {
    if let Some(w) = pipe
        && w.write_all(bytes).await.is_err()
    {
        *pipe = None;
    }
}

/// Resolves with the command's exit once the engine reports it ended.
async fn wait(api: DockerApi, id: String, mut ended: oneshot::Receiver<()>) -> Exit {
    let mut settle_deadline = None;
    loop {
        if settle_deadline.is_none() {
            tokio::select! {
                _ = &mut ended => {
                    settle_deadline = Some(tokio::time::Instant::now() + SETTLE);
                }
                () = tokio::time::sleep(POLL) => {}
            }
        }
        match api.exec_inspect(&id).await {
            Ok(state) if !state.running => {
                return state.exit_code.map(exit_from_code).unwrap_or(Exit::Unknown);
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!("exec {id}: cannot read its state: {err}");
                return Exit::Unknown;
            }
        }
        if let Some(deadline) = settle_deadline {
            if tokio::time::Instant::now() >= deadline {
                return Exit::Unknown;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
