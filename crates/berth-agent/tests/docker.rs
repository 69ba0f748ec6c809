//! The docker driver against a real Docker engine (a throwaway `dockerd` per test, with a
//! busybox image imported from Debian's static build): output into the log files, exit
//! codes, stop with grace, a missing image, command checks run inside the container, and
//! re-adoption by a second supervisor (an agent restart) without losing or repeating
//! output, and the removal of this node's containers no record knows; `berth exec`'s
//! commands inside a running container (pipes, exit code, stdin, a terminal, a kill).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_agent::driver::{
    DockerDriver, Driver, Drivers, ENGINE_FAILURE, ExecChild, ExecCommand, Exit, LaunchSpec,
    LogFiles, LogRotator, ProcessDriver,
};
use berth_agent::metrics::AgentMetrics;
use berth_agent::ports::PortRange;
use berth_agent::record::RecordStore;
use berth_agent::supervisor::{Supervisor, SupervisorConfig};
use berth_agent::tasks::Tasks;
use berth_core::InstanceId;
use berth_core::launch::CommandLine;
use berth_proto::agent::v1 as pb;
use berth_testkit::docker::{BUSYBOX_INDEX, TempDocker};
use berth_testkit::wait_until;
use common::wait_for_state;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "berth-test/busybox:1";
const WAIT: Duration = Duration::from_secs(20);

async fn engine() -> TempDocker {
    let docker = TempDocker::start().await;
    docker.import_busybox(IMAGE);
    docker
}

fn launch(dir: &Path, id: &str, image: &str, command: Option<CommandLine>) -> LaunchSpec {
    LaunchSpec {
        instance_id: InstanceId::try_from(id.to_string()).unwrap(),
        command,
        image: Some(image.to_string()),
        env: [("GREETING".to_string(), "hi".to_string())].into(),
        labels: [("berth.instance".to_string(), id.to_string())].into(),
        resources: Default::default(),
        work_dir: dir.join(id).join("work"),
        logs: LogFiles::in_dir(&dir.join(id)),
    }
}

fn shell(line: &str) -> Option<CommandLine> {
    Some(CommandLine::Shell(line.to_string()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .ok()?;
    response.text().await.ok()
}

#[tokio::test]
async fn output_goes_to_the_log_files_and_the_exit_code_comes_back() {
    let docker = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let driver = DockerDriver::new(&docker.socket());
    let spec = launch(
        dir.path(),
        "out-1",
        IMAGE,
        shell("echo $GREETING; echo oops >&2; exit 3"),
    );
    let running = driver.start(&spec).unwrap();
    assert_eq!(running.handle.driver, "docker");
    assert_eq!(running.exit.await, Exit::Code(3));
    assert_eq!(read(&spec.logs.stdout), "hi\n");
    assert_eq!(read(&spec.logs.stderr), "oops\n");
    assert!(
        docker
            .containers_labelled("berth.instance", "out-1")
            .is_empty(),
        "an ended container is removed"
    );
}

#[tokio::test]
async fn a_served_port_on_the_host_network_and_a_graceful_stop() {
    let docker = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let driver = DockerDriver::new(&docker.socket());
    let port = free_port();
    let spec = launch(
        dir.path(),
        "web-1",
        IMAGE,
        Some(CommandLine::Argv(vec![
            "/bin/httpd".into(),
            "-f".into(),
            "-p".into(),
            format!("127.0.0.1:{port}"),
            "-h".into(),
            "/www".into(),
        ])),
    );
    let running = driver.start(&spec).unwrap();
    let exit = tokio::spawn(running.exit);
    wait_until("the container serves on its host port", WAIT, || async {
        get(port).await.as_deref() == Some(BUSYBOX_INDEX)
    })
    .await;
    assert_eq!(
        docker.containers_labelled("berth.instance", "web-1"),
        ["berth-web-1"]
    );
    driver
        .stop(&running.handle, Duration::from_secs(5))
        .await
        .unwrap();
    // httpd dies of the SIGTERM the engine's init passed on.
    assert_eq!(exit.await.unwrap(), Exit::Signal(15));
    assert!(get(port).await.is_none());
    wait_until("the stopped container is removed", WAIT, || async {
        docker
            .containers_labelled("berth.instance", "web-1")
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_program_that_ignores_sigterm_is_killed_after_the_grace() {
    let docker = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let driver = DockerDriver::new(&docker.socket());
    let spec = launch(
        dir.path(),
        "stubborn-1",
        IMAGE,
        shell("trap '' TERM; echo ready; while true; do sleep 0.1; done"),
    );
    let running = driver.start(&spec).unwrap();
    let exit = tokio::spawn(running.exit);
    wait_until("the program runs", WAIT, || async {
        read(&spec.logs.stdout) == "ready\n"
    })
    .await;
    driver
        .stop(&running.handle, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(exit.await.unwrap(), Exit::Signal(9));
}

#[tokio::test]
async fn a_missing_image_fails_with_the_reason_on_stderr() {
    let docker = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let driver = DockerDriver::new(&docker.socket());
    let spec = launch(dir.path(), "nope-1", "shop/never-built:9", None);
    let running = driver.start(&spec).unwrap();
    assert_eq!(running.exit.await, Exit::Code(ENGINE_FAILURE));
    let stderr = read(&spec.logs.stderr);
    assert!(
        stderr.contains("shop/never-built:9") && stderr.contains("never pulls"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_engine_is_named_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-engine.sock");
    let driver = DockerDriver::new(&socket);
    let spec = launch(dir.path(), "lost-1", IMAGE, None);
    let running = driver.start(&spec).unwrap();
    assert_eq!(running.exit.await, Exit::Code(ENGINE_FAILURE));
    let stderr = read(&spec.logs.stderr);
    assert!(
        stderr.contains("cannot reach the Docker engine") && stderr.contains("docker_socket"),
        "{stderr}"
    );
}

#[tokio::test]
async fn readoption_resumes_the_output_without_repeating_it() {
    let docker = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let driver = DockerDriver::new(&docker.socket());
    let spec = launch(
        dir.path(),
        "long-1",
        IMAGE,
        // One line, then a second once the test creates /tmp/go in the container.
        shell("echo one; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo two; sleep 1000"),
    );
    let running = driver.start(&spec).unwrap();
    let handle = running.handle.clone();
    // The exit future is what creates, starts and follows the container.
    let first_agent = tokio::spawn(running.exit);
    wait_until("the first line is copied", WAIT, || async {
        read(&spec.logs.stdout) == "one\n"
    })
    .await;
    // The agent goes away: its copy of the output stops with it.
    first_agent.abort();
    assert!(first_agent.await.unwrap_err().is_cancelled());
    docker.cli(&["exec", "berth-long-1", "/bin/sh", "-c", "echo > /tmp/go"]);
    wait_until("the engine has the second line", WAIT, || async {
        docker.cli(&["logs", "berth-long-1"]).contains("two")
    })
    .await;
    assert_eq!(read(&spec.logs.stdout), "one\n", "nobody copied meanwhile");

    let adopted = driver.adopt(&handle).expect("the container still runs");
    let exit = tokio::spawn(adopted.exit);
    wait_until(
        "the second line is copied after re-adoption",
        WAIT,
        || async { read(&spec.logs.stdout) == "one\ntwo\n" },
    )
    .await;
    driver.stop(&handle, Duration::from_secs(1)).await.unwrap();
    exit.await.unwrap();
    assert_eq!(read(&spec.logs.stdout), "one\ntwo\n", "nothing repeated");
    assert!(
        driver.adopt(&handle).is_none(),
        "a removed container is not adopted"
    );
}

fn supervisor(dir: &Path, docker: &TempDocker) -> (Supervisor, CancellationToken) {
    let token = CancellationToken::new();
    let config = SupervisorConfig {
        node_id: "node-d".into(),
        advertise: "127.0.0.1".into(),
        port_range: PortRange {
            first: 32000,
            last: 32999,
        },
        log_rotator: LogRotator {
            max_bytes: 1 << 20,
            keep: 1,
        },
        housekeeping_interval: Duration::from_millis(200),
        terminal_retention: Duration::from_secs(60),
        stderr_tail_lines: 5,
        registry_beat: Duration::from_secs(5),
        default_grace: Duration::from_secs(2),
        log_addr: None,
    };
    let drivers = Drivers::new(Arc::new(ProcessDriver::new(Duration::from_millis(50))))
        .with_docker(DockerDriver::new(&docker.socket()));
    let sup = Supervisor::new(
        config,
        drivers,
        RecordStore::open(dir).unwrap(),
        None,
        Tasks::new(token.clone()),
        Arc::new(AgentMetrics::default()),
    );
    (sup, token)
}

#[tokio::test]
async fn the_supervisor_runs_image_apps_with_checks_inside_and_readopts_them() {
    let docker = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let (sup, token) = supervisor(dir.path(), &docker);
    assert_eq!(sup.drivers(), ["process", "docker"]);
    let mut events = sup.subscribe();
    let start = pb::StartInstance {
        instance_id: "img-1".into(),
        app_id: "shop/img".into(),
        app_version: 2,
        image: IMAGE.into(),
        driver: "docker".into(),
        cmd: "echo $BERTH_APP $PORT home=$HOME; exec httpd -f -p 127.0.0.1:$PORT -h /www".into(),
        port_count: 1,
        health_checks: vec![pb::HealthCheck {
            protocol: "COMMAND".into(),
            // Only true inside the container: the host has no /www/index.html.
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "test -f /www/index.html".into(),
            ],
            interval_seconds: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    sup.start_instance(&start);
    let running = wait_for_state(&mut events, "img-1", pb::InstanceState::Running).await;
    let port = running.ports[0] as u16;
    let healthy = wait_for_state(&mut events, "img-1", pb::InstanceState::Healthy).await;
    assert_eq!(healthy.instance_id, "img-1");
    assert_eq!(get(port).await.as_deref(), Some(BUSYBOX_INDEX));
    let stdout = dir.path().join("instances/img-1/stdout.log");
    wait_until("the start line is in the log", WAIT, || async {
        !read(&stdout).is_empty()
    })
    .await;
    // The agent's HOME (the instance's work folder on the host) stays out: the engine's own.
    assert_eq!(read(&stdout), format!("shop/img {port} home=/\n"));

    // An agent restart: the next supervisor on the same folder finds the container.
    token.cancel();
    drop(sup);
    // A container of this node that no record knows (its start was cut off, say).
    docker.cli(&[
        "create",
        "--name",
        "berth-stray-1",
        "--label",
        "berth.node=node-d",
        IMAGE,
        "sleep",
        "1",
    ]);
    docker.cli(&[
        "create",
        "--name",
        "other-node",
        "--label",
        "berth.node=node-x",
        IMAGE,
        "sleep",
        "1",
    ]);
    let (sup, _token) = supervisor(dir.path(), &docker);
    let mut events = sup.subscribe();
    assert!(sup.recover().is_empty());
    assert_eq!(sup.sweep_orphan_containers().await, ["berth-stray-1"]);
    assert_eq!(
        docker.containers_labelled("berth.node", "node-x"),
        ["other-node"]
    );
    assert_eq!(get(port).await.as_deref(), Some(BUSYBOX_INDEX));
    sup.stop_instance(&pb::StopInstance {
        instance_id: "img-1".into(),
        drain_ms: 10,
        grace_ms: 2000,
        reason: "scaled down".into(),
    });
    let exited = wait_for_state(&mut events, "img-1", pb::InstanceState::Exited).await;
    assert!(exited.message.contains("stopped"), "{}", exited.message);
    assert!(get(port).await.is_none());
    wait_until("the container is removed", WAIT, || async {
        docker
            .containers_labelled("berth.instance", "img-1")
            .is_empty()
    })
    .await;
}

fn exec_command(argv: &[&str], tty: bool) -> ExecCommand {
    ExecCommand {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: [
            ("PATH".to_string(), "/bin".to_string()),
            ("GREETING".to_string(), "from exec".to_string()),
        ]
        .into(),
        work_dir: "/nonexistent-on-purpose".into(),
        tty,
        rows: 30,
        cols: 90,
    }
}

/// Reads every output of `child` to its end, then its exit.
async fn finish(mut child: ExecChild) -> (Vec<String>, Exit) {
    let mut texts = Vec::new();
    for (_, mut reader) in std::mem::take(&mut child.outputs) {
        let mut text = String::new();
        tokio::time::timeout(WAIT, reader.read_to_string(&mut text))
            .await
            .expect("the output ends")
            .unwrap();
        texts.push(text);
    }
    let exit = tokio::time::timeout(WAIT, child.exit)
        .await
        .expect("the command ends");
    (texts, exit)
}

#[tokio::test]
async fn exec_runs_inside_the_container_with_pipes_stdin_a_terminal_and_a_kill() {
    let docker = engine().await;
    let dir = tempfile::tempdir().unwrap();
    let driver = DockerDriver::new(&docker.socket());
    let spec = launch(dir.path(), "exec-1", IMAGE, shell("exec sleep 3600"));
    let running = driver.start(&spec).unwrap();
    let handle = running.handle.clone();
    let _exit = tokio::spawn(running.exit);
    wait_until("the container runs", WAIT, || async {
        !docker
            .containers_labelled("berth.instance", "exec-1")
            .is_empty()
    })
    .await;

    // Two pipes apart, the request's environment, the command's exit code; the file
    // system is the container's.
    let child = wait_for_exec(
        &driver,
        &handle,
        exec_command(
            &[
                "sh",
                "-c",
                "echo $GREETING; cat /www/index.html; echo err >&2; exit 3",
            ],
            false,
        ),
    )
    .await;
    assert!(!child.tty());
    let (texts, exit) = finish(child).await;
    assert_eq!(
        texts,
        [format!("from exec\n{BUSYBOX_INDEX}"), "err\n".to_string()]
    );
    assert_eq!(exit, Exit::Code(3));

    // stdin reaches the command; shutting it down is its end of file.
    let mut child = driver
        .exec(&handle, &exec_command(&["cat"], false))
        .await
        .unwrap();
    child.stdin.write_all(b"piped in\n").await.unwrap();
    child.stdin.shutdown().await.unwrap();
    let (texts, exit) = finish(child).await;
    assert_eq!(texts[0], "piped in\n");
    assert_eq!(exit, Exit::Code(0));

    // A terminal that follows a resize. (Its first size is set just after the start:
    // engines before API 1.42 take no size at creation, so a command that asks at once
    // may see 0 0.)
    let mut child = driver
        .exec(
            &handle,
            &exec_command(&["sh", "-c", "tty; while read x; do stty size; done"], true),
        )
        .await
        .unwrap();
    assert!(child.tty());
    let (_, reader) = &mut child.outputs[0];
    read_until(reader.as_mut(), "/dev/pts/").await;
    (child.resize.as_ref().unwrap())(50, 120).unwrap();
    // Each line makes the command say its size; the engine applies the resize a moment
    // later, so ask until it shows (the first size, asked for earlier, never lands after).
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !seen.contains("50 120") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resize never showed: {seen}"
        );
        child.stdin.write_all(b"size?\r").await.unwrap();
        let (_, reader) = &mut child.outputs[0];
        let mut buf = [0u8; 1024];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(300), reader.read(&mut buf)).await
        {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    (child.kill)();

    // A kill ends a command that would run for long.
    let child = driver
        .exec(&handle, &exec_command(&["sleep", "302"], false))
        .await
        .unwrap();
    wait_until("the command runs", WAIT, || async {
        docker
            .get("/containers/berth-exec-1/top")
            .is_some_and(|(_, body)| body.contains("sleep 302"))
    })
    .await;
    (child.kill)();
    let exit = tokio::time::timeout(WAIT, child.exit)
        .await
        .expect("a killed command ends");
    assert_eq!(exit, Exit::Signal(9));
    driver.stop(&handle, Duration::from_secs(1)).await.unwrap();
}

/// The container may still be starting when the first exec is asked for.
async fn wait_for_exec(
    driver: &DockerDriver,
    handle: &berth_agent::driver::DriverHandle,
    cmd: ExecCommand,
) -> ExecChild {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match driver.exec(handle, &cmd).await {
            Ok(child) => return child,
            Err(err) if tokio::time::Instant::now() < deadline => {
                eprintln!("exec not yet: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("exec never started: {err}"),
        }
    }
}

async fn read_until(
    reader: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    wanted: &str,
) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(wanted) {
        let n = tokio::time::timeout(WAIT, reader.read(&mut buf))
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
