//! The process driver: each instance is a plain process in its own process group.
//!
//! The own group is what lets a stop reach everything the program spawned (a shell and
//! its children) and keeps a Ctrl-C or SIGTERM meant for the agent away from instances,
//! which outlive the agent by design.

use std::process::Stdio;
use std::time::Duration;

use berth_core::launch::CommandLine;
use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

use super::{
    Driver, DriverError, DriverHandle, ExecChild, ExecCommand, Exit, LaunchSpec, LogFiles, Running,
};
use crate::procfs;

#[derive(Debug, Clone)]
pub struct ProcessDriver {
    /// How often an adopted process (not our child, so no wait status) is polled.
    poll: Duration,
    boot_id: String,
}

impl ProcessDriver {
    pub fn new(poll: Duration) -> Self {
        Self {
            poll,
            boot_id: procfs::boot_id(),
        }
    }

    fn command(spec: &LaunchSpec) -> Result<Command, DriverError> {
        let Some(line) = &spec.command else {
            return Err(DriverError::Spec(
                "the process driver needs cmd or args: an image alone runs on the docker driver"
                    .into(),
            ));
        };
        let mut command = match line {
            CommandLine::Shell(line) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(line);
                c
            }
            CommandLine::Argv(argv) => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        command
            .env_clear()
            .envs(&spec.env)
            .current_dir(&spec.work_dir)
            .process_group(0)
            .stdin(Stdio::null())
            // Instances outlive the agent: never kill them when their handle is dropped.
            .kill_on_drop(false);
        Ok(command)
    }

    fn wait_gone(&self, handle: &DriverHandle) -> BoxFuture<'static, Exit> {
        let (pid, ticks, poll) = (handle.pid, handle.start_ticks, self.poll);
        async move {
            while procfs::is_same_live_process(pid, ticks) {
                tokio::time::sleep(poll).await;
            }
            Exit::Unknown
        }
        .boxed()
    }
}

impl Driver for ProcessDriver {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError> {
        let prepare = |what, path: &std::path::Path, source| DriverError::Prepare {
            what,
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&spec.work_dir)
            .map_err(|e| prepare("working folder", &spec.work_dir, e))?;
        let stdout = LogFiles::open_for_append(&spec.logs.stdout)
            .map_err(|e| prepare("log file", &spec.logs.stdout, e))?;
        let stderr = LogFiles::open_for_append(&spec.logs.stderr)
            .map_err(|e| prepare("log file", &spec.logs.stderr, e))?;
        let mut command = Self::command(spec)?;
        command.stdout(stdout).stderr(stderr);
        let mut child = command.spawn().map_err(|source| DriverError::Spawn {
            program: match &spec.command {
                Some(CommandLine::Argv(argv)) => argv[0].clone(),
                _ => "/bin/sh".to_string(),
            },
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        // Just spawned and not yet reaped (only `exit` below waits), so the stat exists.
        let start_ticks = procfs::stat(pid).map(|s| s.start_ticks).unwrap_or(0);
        let handle = DriverHandle {
            driver: self.name().to_string(),
            pid,
            start_ticks,
            boot_id: self.boot_id.clone(),
            container: None,
        };
        let exit = async move {
            use std::os::unix::process::ExitStatusExt;
            let exit = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(signal)) => Exit::Signal(signal),
                    (None, None) => Exit::Unknown,
                },
                Err(_) => Exit::Unknown,
            };
            // The leader is gone; take down whatever it left behind in its group.
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            exit
        }
        .boxed();
        Ok(Running { handle, exit })
    }

    fn adopt(&self, handle: &DriverHandle) -> Option<Running> {
        if handle.boot_id != self.boot_id
            || !procfs::is_same_live_process(handle.pid, handle.start_ticks)
        {
            return None;
        }
        Some(Running {
            handle: handle.clone(),
            exit: self.wait_gone(handle),
        })
    }

    /// Beside the instance on the host, with its environment and working folder.
    fn exec(
        &self,
        _handle: &DriverHandle,
        cmd: &ExecCommand,
    ) -> BoxFuture<'static, Result<ExecChild, DriverError>> {
        let started = super::exec::spawn_on_host(cmd);
        async move { started }.boxed()
    }

    fn stop(
        &self,
        handle: &DriverHandle,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), DriverError>> {
        let handle = handle.clone();
        let poll = self.poll.min(Duration::from_millis(50));
        async move {
            let (pid, ticks) = (handle.pid, handle.start_ticks);
            if !procfs::is_same_live_process(pid, ticks) {
                return Ok(());
            }
            let group = Pid::from_raw(pid as i32);
            let signal = |signal| match killpg(group, signal) {
                Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
                Err(source) => Err(DriverError::Signal { pgid: pid, source }),
            };
            signal(Signal::SIGTERM)?;
            let deadline = tokio::time::Instant::now() + grace;
            while procfs::is_same_live_process(pid, ticks) {
                if tokio::time::Instant::now() >= deadline {
                    tracing::info!(pid, ?grace, "still running after the grace period: SIGKILL");
                    signal(Signal::SIGKILL)?;
                    break;
                }
                tokio::time::sleep(poll).await;
            }
            // The leader may have exited on SIGTERM while children ignored it.
            signal(Signal::SIGKILL)?;
            while procfs::is_same_live_process(pid, ticks) {
                tokio::time::sleep(poll).await;
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::InstanceId;
    use std::collections::BTreeMap;

    fn launch(dir: &std::path::Path, command: CommandLine) -> LaunchSpec {
        let mut env = BTreeMap::new();
        env.insert("PATH".to_string(), "/usr/bin:/bin".to_string());
        env.insert("GREETING".to_string(), "hello".to_string());
        LaunchSpec {
            instance_id: InstanceId::try_from("i-1".to_string()).unwrap(),
            command: Some(command),
            image: None,
            env,
            labels: BTreeMap::new(),
            resources: Default::default(),
            work_dir: dir.join("work"),
            logs: LogFiles::in_dir(dir),
        }
    }

    fn driver() -> ProcessDriver {
        ProcessDriver::new(Duration::from_millis(20))
    }

    #[tokio::test]
    async fn shell_command_gets_env_workdir_logs_and_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let spec = launch(
            dir.path(),
            CommandLine::Shell("echo $GREETING; pwd; echo oops >&2; exit 3".into()),
        );
        let running = driver().start(&spec).unwrap();
        assert!(running.handle.pid > 0);
        assert_eq!(running.exit.await, Exit::Code(3));
        let out = std::fs::read_to_string(&spec.logs.stdout).unwrap();
        let work = spec.work_dir.canonicalize().unwrap();
        assert_eq!(out, format!("hello\n{}\n", work.display()));
        assert_eq!(
            std::fs::read_to_string(&spec.logs.stderr).unwrap(),
            "oops\n"
        );
    }

    #[tokio::test]
    async fn argv_runs_without_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let spec = launch(
            dir.path(),
            CommandLine::Argv(vec!["/bin/echo".into(), "$GREETING".into(), "a b".into()]),
        );
        let running = driver().start(&spec).unwrap();
        assert_eq!(running.exit.await, Exit::Code(0));
        assert_eq!(
            std::fs::read_to_string(&spec.logs.stdout).unwrap(),
            "$GREETING a b\n"
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = launch(
            dir.path(),
            CommandLine::Argv(vec!["/nonexistent/program".into()]),
        );
        let err = driver().start(&spec).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/program"), "{err}");
        assert!(err.contains("exists"), "{err}");
    }

    #[tokio::test]
    async fn stop_terminates_the_whole_group_politely() {
        let dir = tempfile::tempdir().unwrap();
        // A shell with a child: both must go.
        let spec = launch(
            dir.path(),
            CommandLine::Shell("sleep 300 & echo $! > child.pid; wait".into()),
        );
        let d = driver();
        let running = d.start(&spec).unwrap();
        let child_pid_file = spec.work_dir.join("child.pid");
        let child: u32 = loop {
            if let Ok(text) = std::fs::read_to_string(&child_pid_file)
                && let Ok(pid) = text.trim().parse()
            {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let child_ticks = procfs::stat(child).unwrap().start_ticks;
        let exit = tokio::spawn(running.exit);
        d.stop(&running.handle, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(exit.await.unwrap(), Exit::Signal(15));
        // The grandchild died with its group (the tokio reaper or init reaps it).
        for _ in 0..200 {
            if !procfs::is_same_live_process(child, child_ticks) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("child {child} of the instance survived the stop");
    }

    #[tokio::test]
    async fn stop_kills_a_program_that_ignores_sigterm_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let spec = launch(
            dir.path(),
            CommandLine::Shell("trap '' TERM; echo ready; while true; do sleep 0.05; done".into()),
        );
        let d = driver();
        let running = d.start(&spec).unwrap();
        while std::fs::read_to_string(&spec.logs.stdout).unwrap_or_default() != "ready\n" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let exit = tokio::spawn(running.exit);
        d.stop(&running.handle, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(exit.await.unwrap(), Exit::Signal(9));
    }

    #[tokio::test]
    async fn adopt_finds_a_live_process_and_notices_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let spec = launch(dir.path(), CommandLine::Shell("sleep 300".into()));
        let d = driver();
        let running = d.start(&spec).unwrap();
        let handle = running.handle.clone();
        // Forget the child as a restarted agent would; the tokio reaper collects it later.
        let first_watch = tokio::spawn(running.exit);
        let adopted = d.adopt(&handle).expect("still running");
        let mut wrong = handle.clone();
        wrong.start_ticks += 1;
        assert!(
            d.adopt(&wrong).is_none(),
            "a recycled pid must not be adopted"
        );
        let mut other_boot = handle.clone();
        other_boot.boot_id = "another-boot".into();
        assert!(d.adopt(&other_boot).is_none());
        d.stop(&handle, Duration::from_secs(5)).await.unwrap();
        assert_eq!(adopted.exit.await, Exit::Unknown);
        first_watch.await.unwrap();
    }
}
