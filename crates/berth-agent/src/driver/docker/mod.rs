//! The docker driver: each instance is a container of a local Docker engine.
//!
//! Containers use the host's network (the agent hands out host ports, as for processes,
//! and health checks, the router and the registry reach them on those ports) and run
//! under the engine's init, so the stop signal reaches the program even as pid 1 and
//! zombies are reaped. CPU and memory of the app spec become the container's limits.
//! The driver never pulls: an image reaches a node by `docker build` or `docker load`,
//! and a missing image fails the start with a message saying so.
//!
//! Containers are named `berth-<instance id>`, which is what finds one again after an
//! agent restart; the program's output is copied from the engine into the instance's log
//! files ([`logs`]), so `berth logs`, rotation and the stderr tail of a crash work the
//! same as for processes.
//!
//! The [`Driver`] trait starts synchronously (the supervisor holds its state lock), so
//! `start` returns at once and the container is created and started inside the exit
//! future: an engine error or a missing image ends the instance with code 125 (the
//! `docker run` convention for "the engine could not run it") and a line on its stderr.

mod api;
mod exec;
mod logs;

pub use api::{DockerApi, DockerError};

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::launch::CommandLine;
use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::{
    ContainerRef, Driver, DriverError, DriverHandle, ExecChild, ExecCommand, Exit, LaunchSpec,
    LogFiles, Running,
};
use logs::{Demux, LogSink, note_on_stderr};

/// The exit code of an instance the engine could not run (as `docker run` uses it).
pub const ENGINE_FAILURE: i32 = 125;

/// How long the output copy may lag behind the container's end before it is cut off.
const LOG_DRAIN: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct DockerDriver {
    api: DockerApi,
    /// Containers asked to stop: a start still in flight must not bring them up.
    stopping: Arc<Mutex<HashSet<String>>>,
}

impl DockerDriver {
    pub fn new(socket: &Path) -> Self {
        Self {
            api: DockerApi::new(socket),
            stopping: Arc::default(),
        }
    }

    pub fn api(&self) -> &DockerApi {
        &self.api
    }

    /// The container name of an instance; instance ids are already name-safe.
    pub fn container_name(instance: &str) -> String {
        format!("berth-{instance}")
    }

    fn is_stopping(&self, name: &str) -> bool {
        self.stopping
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }

    fn set_stopping(&self, name: &str, on: bool) {
        let mut set = self.stopping.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            set.insert(name.to_string());
        } else {
            set.remove(name);
        }
    }

    /// Create, start, copy output, wait, remove. Errors become a stderr line and code 125.
    async fn run(self, name: String, config: Value, image: String, logs: LogFiles) -> Exit {
        match self.create_and_start(&name, &config, &image).await {
            Ok(true) => self.follow_to_end(&name, &logs).await,
            // Stopped before it ran.
            Ok(false) => {
                let _ = self.api.remove(&name).await;
                self.set_stopping(&name, false);
                Exit::Unknown
            }
            Err(message) => {
                tracing::warn!(container = %name, "{message}");
                note_on_stderr(&logs, &message);
                let _ = self.api.remove(&name).await;
                self.set_stopping(&name, false);
                Exit::Code(ENGINE_FAILURE)
            }
        }
    }

    /// `Ok(false)` when a stop arrived before the container ran.
    async fn create_and_start(
        &self,
        name: &str,
        config: &Value,
        image: &str,
    ) -> Result<bool, String> {
        // A container of this name can only be a leftover of an earlier, cut-off start.
        self.api.remove(name).await.map_err(|e| e.to_string())?;
        if !self
            .api
            .image_exists(image)
            .await
            .map_err(|e| e.to_string())?
        {
            return Err(format!(
                "image {image:?} is not on this node's Docker engine: build or load it there (docker build, docker load); the docker driver never pulls"
            ));
        }
        if self.is_stopping(name) {
            return Ok(false);
        }
        self.api
            .create(name, config)
            .await
            .map_err(|e| e.to_string())?;
        if self.is_stopping(name) {
            return Ok(false);
        }
        self.api.start(name).await.map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Copies the output until the container ends, then removes it. The copy runs inside
    /// this future (not a task of its own), so an agent that stops drops both together
    /// and the next agent resumes the copy from the cursor.
    async fn follow_to_end(&self, name: &str, logs: &LogFiles) -> Exit {
        let copy = copy_output(self.api.clone(), name.to_string(), logs.clone(), true).fuse();
        let wait = self.wait_exit(name).fuse();
        futures::pin_mut!(copy, wait);
        let mut copied = false;
        let exit = loop {
            futures::select! {
                exit = wait => break exit,
                () = copy => copied = true,
            }
        };
        // The stream ends by itself once the container stopped; bound it anyway.
        if !copied && tokio::time::timeout(LOG_DRAIN, copy).await.is_err() {
            tracing::warn!(container = %name, "output copy still running {LOG_DRAIN:?} after the end; cut off");
        }
        if let Err(err) = self.api.remove(name).await {
            tracing::warn!(container = %name, "cannot remove the ended container: {err}");
        }
        self.set_stopping(name, false);
        exit
    }

    async fn wait_exit(&self, name: &str) -> Exit {
        match self.api.wait(name).await {
            Ok(code) => exit_from_code(code),
            Err(err) => {
                tracing::warn!(container = %name, "waiting for the container failed: {err}");
                // It may still have ended; ask once more before giving up on the status.
                match self.api.inspect(name).await {
                    Ok(Some(state)) if !state.running => exit_from_code(state.exit_code),
                    _ => Exit::Unknown,
                }
            }
        }
    }
}

/// Copies the container's output into the log files from the saved cursor on.
async fn copy_output(api: DockerApi, name: String, logs: LogFiles, follow: bool) {
    let mut sink = match LogSink::open(&logs) {
        Ok(sink) => sink,
        Err(err) => {
            tracing::warn!(container = %name, "cannot open the instance's log files: {err}");
            return;
        }
    };
    let mut body = match api.logs(&name, &sink.since(), follow).await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!(container = %name, "cannot read the container's output: {err}");
            return;
        }
    };
    let mut demux = Demux::default();
    while let Some(next) = body.frame().await {
        let Ok(frame) = next else { break };
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        match demux.push(&chunk) {
            Ok(frames) => {
                for frame in &frames {
                    if let Err(err) = sink.write(frame) {
                        tracing::warn!(container = %name, "cannot write the instance's log: {err}");
                        return;
                    }
                }
            }
            Err(err) => {
                tracing::warn!(container = %name, "{err}");
                break;
            }
        }
    }
    let _ = sink.save();
}

/// The engine's init exits with 128 + n when the program died of signal n.
fn exit_from_code(code: i64) -> Exit {
    match code {
        129..=192 => Exit::Signal((code - 128) as i32),
        code => Exit::Code(i32::try_from(code).unwrap_or(i32::MAX)),
    }
}

/// The engine's create request for one instance.
fn container_config(spec: &LaunchSpec, image: &str) -> Value {
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut config = json!({
        "Image": image,
        "Env": env,
        "Labels": spec.labels,
        "HostConfig": {
            "NetworkMode": "host",
            "Init": true,
            "RestartPolicy": { "Name": "no" },
            // The engine's own copy is only a buffer until the agent copied it.
            "LogConfig": { "Type": "json-file", "Config": { "max-size": "10m", "max-file": "2" } },
        },
    });
    match &spec.command {
        Some(CommandLine::Shell(line)) => {
            config["Entrypoint"] = json!(["/bin/sh", "-c"]);
            config["Cmd"] = json!([line]);
        }
        // As `docker run IMAGE ARGS...`: the image's entrypoint, if any, gets them.
        Some(CommandLine::Argv(argv)) => config["Cmd"] = json!(argv),
        None => {}
    }
    let host = &mut config["HostConfig"];
    if spec.resources.cpus > 0.0 {
        host["NanoCpus"] = json!((spec.resources.cpus * 1e9).round() as i64);
    }
    if spec.resources.mem_mib > 0 {
        host["Memory"] = json!(spec.resources.mem_mib * 1024 * 1024);
    }
    config
}

/// Docker's stop timeout is whole seconds; a short grace still gets one.
fn grace_secs(grace: Duration) -> u64 {
    let secs = grace.as_secs_f64().ceil() as u64;
    if grace.is_zero() { 0 } else { secs.max(1) }
}

impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start(&self, spec: &LaunchSpec) -> Result<Running, DriverError> {
        let prepare = |what, path: &Path, source| DriverError::Prepare {
            what,
            path: path.to_path_buf(),
            source,
        };
        let Some(image) = spec.image.clone() else {
            return Err(DriverError::Spec(
                "the docker driver needs an image: set image in the app spec".into(),
            ));
        };
        std::fs::create_dir_all(&spec.work_dir)
            .map_err(|e| prepare("working folder", &spec.work_dir, e))?;
        for path in [&spec.logs.stdout, &spec.logs.stderr] {
            LogFiles::open_for_append(path).map_err(|e| prepare("log file", path, e))?;
        }
        // A fresh start: the previous run's output position means nothing to it.
        let _ = std::fs::remove_file(LogSink::cursor_path(&spec.logs));
        let name = Self::container_name(spec.instance_id.as_str());
        self.set_stopping(&name, false);
        let handle = DriverHandle {
            driver: self.name().to_string(),
            pid: 0,
            start_ticks: 0,
            boot_id: String::new(),
            container: Some(ContainerRef {
                name: name.clone(),
                logs: spec.logs.clone(),
            }),
        };
        let config = container_config(spec, &image);
        let exit = self
            .clone()
            .run(name, config, image, spec.logs.clone())
            .boxed();
        Ok(Running { handle, exit })
    }

    fn adopt(&self, handle: &DriverHandle) -> Option<Running> {
        let container = handle.container.clone()?;
        let state = match api::inspect_blocking(self.api.socket(), &container.name) {
            Ok(Some(state)) => state,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!(container = %container.name, "cannot look the container up: {err}");
                return None;
            }
        };
        let mut handle = handle.clone();
        handle.pid = state.pid;
        let this = self.clone();
        // Whether it still runs or ended while the agent was away, the engine has the rest
        // of its output and its exit code.
        let exit =
            async move { this.follow_to_end(&container.name, &container.logs).await }.boxed();
        Some(Running { handle, exit })
    }

    fn stop(
        &self,
        handle: &DriverHandle,
        grace: Duration,
    ) -> BoxFuture<'static, Result<(), DriverError>> {
        let this = self.clone();
        let name = handle.container.as_ref().map(|c| c.name.clone());
        async move {
            let Some(name) = name else {
                return Ok(());
            };
            this.set_stopping(&name, true);
            this.api
                .stop(&name, grace_secs(grace))
                .await
                .map_err(|err| DriverError::Engine(err.to_string()))
        }
        .boxed()
    }

    fn exec_check(
        &self,
        handle: &DriverHandle,
        argv: &[String],
        env: &BTreeMap<String, String>,
    ) -> Option<BoxFuture<'static, Result<(), String>>> {
        let name = handle.container.as_ref()?.name.clone();
        let api = self.api.clone();
        let argv = argv.to_vec();
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Some(
            async move {
                match api.exec(&name, &argv, &env).await {
                    Ok(0) => Ok(()),
                    Ok(code) => Err(format!("command in the container exited with code {code}")),
                    Err(err) => Err(err.to_string()),
                }
            }
            .boxed(),
        )
    }

    fn exec(
        &self,
        handle: &DriverHandle,
        cmd: &ExecCommand,
    ) -> BoxFuture<'static, Result<ExecChild, DriverError>> {
        let api = self.api.clone();
        let container = handle.container.as_ref().map(|c| c.name.clone());
        let cmd = cmd.clone();
        async move {
            let Some(container) = container else {
                return Err(DriverError::Spec(
                    "the instance has no container to run the command in".into(),
                ));
            };
            exec::start(api, container, cmd).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{InstanceId, ResourceRequest};

    fn spec(command: Option<CommandLine>) -> LaunchSpec {
        let mut env = BTreeMap::new();
        env.insert("PORT".to_string(), "20001".to_string());
        let mut labels = BTreeMap::new();
        labels.insert("berth.app".to_string(), "web".to_string());
        LaunchSpec {
            instance_id: InstanceId::try_from("web-1".to_string()).unwrap(),
            command,
            image: Some("shop/web:1.4".into()),
            env,
            labels,
            resources: ResourceRequest {
                cpus: 0.5,
                mem_mib: 64,
                disk_mib: 0,
            },
            work_dir: "/tmp/w".into(),
            logs: LogFiles::in_dir(Path::new("/tmp/l")),
        }
    }

    #[test]
    fn the_create_request_carries_network_init_limits_env_and_labels() {
        let config = container_config(&spec(None), "shop/web:1.4");
        assert_eq!(config["Image"], "shop/web:1.4");
        assert_eq!(config["Env"], json!(["PORT=20001"]));
        assert_eq!(config["Labels"]["berth.app"], "web");
        assert_eq!(config["HostConfig"]["NetworkMode"], "host");
        assert_eq!(config["HostConfig"]["Init"], true);
        assert_eq!(config["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(config["HostConfig"]["Memory"], 64 * 1024 * 1024);
        assert!(config.get("Cmd").is_none(), "the image's own command runs");
    }

    #[test]
    fn cmd_runs_through_a_shell_and_args_go_to_the_entrypoint() {
        let shell = container_config(&spec(Some(CommandLine::Shell("echo $PORT".into()))), "i");
        assert_eq!(shell["Entrypoint"], json!(["/bin/sh", "-c"]));
        assert_eq!(shell["Cmd"], json!(["echo $PORT"]));
        let argv = container_config(
            &spec(Some(CommandLine::Argv(vec![
                "/bin/httpd".into(),
                "-f".into(),
            ]))),
            "i",
        );
        assert!(argv.get("Entrypoint").is_none());
        assert_eq!(argv["Cmd"], json!(["/bin/httpd", "-f"]));
    }

    #[test]
    fn exit_codes_above_128_are_signals_and_grace_rounds_up() {
        assert_eq!(exit_from_code(0), Exit::Code(0));
        assert_eq!(exit_from_code(3), Exit::Code(3));
        assert_eq!(exit_from_code(143), Exit::Signal(15));
        assert_eq!(exit_from_code(137), Exit::Signal(9));
        assert_eq!(exit_from_code(255), Exit::Code(255));
        assert_eq!(grace_secs(Duration::ZERO), 0);
        assert_eq!(grace_secs(Duration::from_millis(200)), 1);
        assert_eq!(grace_secs(Duration::from_millis(2500)), 3);
    }
}
