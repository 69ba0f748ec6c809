//! A command run inside an instance for `berth exec`, as a driver starts it: its input,
//! its outputs, how to resize its terminal, how it ends and how to kill it.
//!
//! On the host (process driver) the command is a child of the agent in a process group
//! of its own (with a terminal, a session of its own, the terminal its controlling one),
//! so a kill reaches whatever it spawned.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{DriverError, Exit};

/// What to run, with the instance's context already resolved.
#[derive(Debug, Clone)]
pub struct ExecCommand {
    pub argv: Vec<String>,
    /// The complete environment.
    pub env: BTreeMap<String, String>,
    pub work_dir: PathBuf,
    pub tty: bool,
    pub rows: u16,
    pub cols: u16,
}

/// Which output a reader carries (the wire's numbering: 1 stdout, 2 stderr).
pub type StreamNo = u32;
pub const STDOUT: StreamNo = 1;
pub const STDERR: StreamNo = 2;

pub type Resize = Box<dyn Fn(u16, u16) -> Result<(), String> + Send + Sync>;

/// A started command.
pub struct ExecChild {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    /// With a terminal, one reader (stdout); else stdout and stderr.
    pub outputs: Vec<(StreamNo, Box<dyn AsyncRead + Send + Unpin>)>,
    /// Sets the terminal's size; `None` without a terminal.
    pub resize: Option<Resize>,
    /// Resolves when the command ends.
    pub exit: BoxFuture<'static, Exit>,
    /// Kills the command and everything it started.
    pub kill: Box<dyn Fn() + Send + Sync>,
}

impl ExecChild {
    pub fn tty(&self) -> bool {
        self.resize.is_some()
    }
}

impl std::fmt::Debug for ExecChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecChild")
            .field("tty", &self.tty())
            .finish_non_exhaustive()
    }
}

/// The command as a child of the agent, on the host (the process driver's instances).
pub fn spawn_on_host(cmd: &ExecCommand) -> Result<ExecChild, DriverError> {
    let Some(program) = cmd.argv.first() else {
        return Err(DriverError::Spec("exec: argv is empty".into()));
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(&cmd.argv[1..])
        .env_clear()
        .envs(&cmd.env)
        .current_dir(&cmd.work_dir)
        // A user who leaves kills it; an agent that stops must not leave it behind.
        .kill_on_drop(true);
    let spawn_error = |source| DriverError::Spawn {
        program: program.clone(),
        source,
    };
    if cmd.tty {
        spawn_with_terminal(command, cmd).map_err(|e| match e {
            TerminalError::Spawn(source) => spawn_error(source),
            TerminalError::Pty(message) => DriverError::Engine(format!(
                "cannot allocate a pseudo-terminal: {message} (is /dev/ptmx available?)"
            )),
        })
    } else {
        command
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(spawn_error)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(DriverError::Engine("exec: the child has no pipes".into()));
        };
        let pid = child.id().unwrap_or_default();
        Ok(ExecChild {
            stdin: Box::new(stdin),
            outputs: vec![(STDOUT, Box::new(stdout)), (STDERR, Box::new(stderr))],
            resize: None,
            exit: wait(child, pid),
            kill: kill_group(pid),
        })
    }
}

enum TerminalError {
    Spawn(std::io::Error),
    Pty(String),
}

fn spawn_with_terminal(
    command: tokio::process::Command,
    cmd: &ExecCommand,
) -> Result<ExecChild, TerminalError> {
    let pty_error = |e: pty_process::Error| TerminalError::Pty(e.to_string());
    let (pty, pts) = pty_process::open().map_err(pty_error)?;
    if cmd.rows > 0 && cmd.cols > 0 {
        pty.resize(pty_process::Size::new(cmd.rows, cmd.cols))
            .map_err(pty_error)?;
    }
    // A second handle on the terminal's master, for resizes while the writer holds one.
    let master = pty
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| TerminalError::Pty(e.to_string()))?;
    let child = pty_process::Command::from(command)
        .spawn(pts)
        .map_err(|e| match e {
            pty_process::Error::Io(source) => TerminalError::Spawn(source),
            other => pty_error(other),
        })?;
    let pid = child.id().unwrap_or_default();
    let (reader, writer) = pty.into_split();
    let resize: Resize = Box::new(move |rows, cols| {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, size).map_err(|e| e.to_string())
    });
    Ok(ExecChild {
        stdin: Box::new(writer),
        outputs: vec![(STDOUT, Box::new(TerminalReader(reader)))],
        resize: Some(resize),
        exit: wait(child, pid),
        kill: kill_group(pid),
    })
}

/// The terminal's master reads EIO once every process holding the terminal closed it:
/// that is its end of file.
struct TerminalReader(pty_process::OwnedReadPty);

impl AsyncRead for TerminalReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

fn wait(mut child: tokio::process::Child, pid: u32) -> BoxFuture<'static, Exit> {
    async move {
        use std::os::unix::process::ExitStatusExt;
        let exit = match child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(signal)) => Exit::Signal(signal),
                (None, None) => Exit::Unknown,
            },
            Err(_) => Exit::Unknown,
        };
        // What it left behind in its group would hold the outputs open: it goes too.
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        exit
    }
    .boxed()
}

fn kill_group(pid: u32) -> Box<dyn Fn() + Send + Sync> {
    Box::new(move || {
        if pid != 0 {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn command(argv: &[&str], tty: bool, dir: &std::path::Path) -> ExecCommand {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), "/usr/bin:/bin".to_string());
        env.insert("GREETING".to_string(), "hello".to_string());
        ExecCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env,
            work_dir: dir.to_path_buf(),
            tty,
            rows: 30,
            cols: 90,
        }
    }

    async fn read_until(reader: &mut (dyn AsyncRead + Send + Unpin), wanted: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains(wanted) {
            let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
                .await
                .expect("output in time")
                .unwrap();
            assert!(
                n > 0,
                "ended before {wanted:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test]
    async fn a_terminal_has_the_asked_size_and_follows_resizes() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = command(
            &["sh", "-c", "stty size; read x; stty size"],
            true,
            dir.path(),
        );
        let mut child = spawn_on_host(&cmd).unwrap();
        let (_, reader) = &mut child.outputs[0];
        read_until(reader.as_mut(), "30 90").await;
        (child.resize.as_ref().expect("a terminal"))(50, 120).unwrap();
        child.stdin.write_all(b"go\n").await.unwrap();
        let (_, reader) = &mut child.outputs[0];
        read_until(reader.as_mut(), "50 120").await;
        assert_eq!(child.exit.await, Exit::Code(0));
    }

    #[tokio::test]
    async fn pipes_keep_stdout_and_stderr_apart_and_close_stdin_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = command(
            &["sh", "-c", "echo $GREETING; pwd >&2; cat; exit 4"],
            false,
            dir.path(),
        );
        let mut child = spawn_on_host(&cmd).unwrap();
        assert!(!child.tty());
        child.stdin.write_all(b"piped\n").await.unwrap();
        // Dropping the pipe closes it (a shutdown only flushes).
        child.stdin = Box::new(tokio::io::sink());
        let mut outputs = std::mem::take(&mut child.outputs);
        let (_, mut err) = outputs.pop().unwrap();
        let (_, mut out) = outputs.pop().unwrap();
        let mut text = String::new();
        out.read_to_string(&mut text).await.unwrap();
        assert_eq!(text, "hello\npiped\n");
        let mut text = String::new();
        err.read_to_string(&mut text).await.unwrap();
        assert_eq!(
            text.trim(),
            dir.path().canonicalize().unwrap().display().to_string()
        );
        assert_eq!(child.exit.await, Exit::Code(4));
    }

    #[tokio::test]
    async fn a_kill_takes_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = command(&["sh", "-c", "sleep 300 & wait"], false, dir.path());
        let child = spawn_on_host(&cmd).unwrap();
        (child.kill)();
        assert_eq!(child.exit.await, Exit::Signal(9));
    }
}
