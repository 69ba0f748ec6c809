//! The real `berth` binary as a child process, for black-box tests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const DNS_LISTEN_VAR: &str = "BERTH_REGISTRY_DNS_LISTEN";

/// A running `berth` process that printed its ready line.
///
/// Its stdout and stderr are captured and included in every failure message. Dropping it
/// kills the process, so a failed test never leaves a role running.
pub struct BerthProcess {
    child: Child,
    role: String,
    addrs: Vec<(String, SocketAddr)>,
    output: Arc<Mutex<String>>,
}

impl BerthProcess {
    /// Starts `bin` with `args` and waits for its ready line.
    pub async fn start(bin: impl AsRef<Path>, args: &[&str]) -> Self {
        let mut command = Command::new(bin.as_ref());
        command.args(args);
        Self::spawn(command).await
    }

    /// Starts a prepared command (extra env, working folder...) and waits for its ready line.
    ///
    /// The registry's DNS listener defaults to a fixed port (8600); unless the command
    /// names it, it moves to an ephemeral one so tests running side by side never collide.
    pub async fn spawn(mut command: Command) -> Self {
        if !command
            .as_std()
            .get_envs()
            .any(|(key, _)| key == DNS_LISTEN_VAR)
        {
            command.env(DNS_LISTEN_VAR, "127.0.0.1:0");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let description = format!("{:?}", command.as_std());
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {description}: {err}"));
        let output = Arc::new(Mutex::new(String::new()));
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        tokio::spawn(capture(stdout, "", output.clone(), Some(ready_tx)));
        tokio::spawn(capture(stderr, "stderr| ", output.clone(), None));

        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            tokio::select! {
                line = ready_rx.recv() => match line {
                    Some(line) => Ok(line),
                    None => Err("stdout closed before the ready line".to_string()),
                },
                status = child.wait() => {
                    Err(format!("exited with {status:?} before the ready line"))
                }
            }
        })
        .await;
        let text = |output: &Arc<Mutex<String>>| output.lock().unwrap().clone();
        let (role, addrs) = match ready {
            Ok(Ok(line)) => berth_util::ready::parse(&line).expect("parsed once already"),
            Ok(Err(why)) => panic!("{description} {why}; output:\n{}", text(&output)),
            Err(_) => panic!(
                "{description} printed no ready line within {READY_TIMEOUT:?}; output:\n{}",
                text(&output)
            ),
        };
        Self {
            child,
            role,
            addrs,
            output,
        }
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// The address the process announced under `name` (`http`, `grpc`, ...).
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| {
                panic!(
                    "berth {} announced no `{name}` address; it announced {:?}",
                    self.role, self.addrs
                )
            })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("process still running")
    }

    /// Everything the process printed so far (stderr lines prefixed `stderr| `).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits i32");
        kill(Pid::from_raw(pid), signal).expect("signal the process");
    }

    /// Sends SIGTERM and waits for a clean exit; panics with the output if it hangs.
    pub async fn terminate(mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(EXIT_TIMEOUT).await
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for the process"),
            Err(_) => {
                let _ = self.child.start_kill();
                panic!(
                    "berth {} did not exit within {timeout:?}; output:\n{}",
                    self.role,
                    self.output()
                )
            }
        }
    }

    /// SIGKILL: the process gets no chance to clean up (crash tests).
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

async fn capture(
    stream: impl AsyncRead + Unpin,
    prefix: &'static str,
    output: Arc<Mutex<String>>,
    ready: Option<mpsc::UnboundedSender<String>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        {
            let mut out = output.lock().unwrap();
            out.push_str(prefix);
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(ready) = &ready
            && berth_util::ready::parse(&line).is_some()
        {
            let _ = ready.send(line.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    #[tokio::test]
    async fn reads_addresses_from_the_ready_line_and_terminates() {
        let process = BerthProcess::spawn(shell(
            "trap 'echo bye; exit 0' TERM; echo starting; \
             echo 'berth fake ready http=127.0.0.1:8080 grpc=[::1]:9'; \
             while :; do sleep 0.05; done",
        ))
        .await;
        assert_eq!(process.role(), "fake");
        assert_eq!(process.addr("http"), "127.0.0.1:8080".parse().unwrap());
        assert_eq!(process.addr("grpc"), "[::1]:9".parse().unwrap());
        assert!(process.output().contains("starting"));
        let status = process.terminate().await;
        assert!(status.success(), "{status:?}");
    }

    #[tokio::test]
    #[should_panic(expected = "before the ready line")]
    async fn an_early_exit_fails_with_the_output() {
        BerthProcess::spawn(shell("echo 'error: bad flag' >&2; exit 2")).await;
    }
}
