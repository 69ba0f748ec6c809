//! Black-box test of containerised apps, every role its own `berth` process and a real
//! Docker engine (a throwaway `dockerd`): an app given as an image is placed on the node
//! whose agent has the docker driver, runs as containers on the host network with its
//! CPU and memory limits, becomes healthy, is reached through the router, shows its output
//! through `berth logs`, and leaves no container behind when scaled to zero; `berth exec`
//! runs commands inside such a container (its environment, stdin, exit codes, a terminal,
//! and a killed CLI takes the command with it).

mod common;

use std::net::SocketAddr;
use std::path::Path;

use berth_testkit::docker::{BUSYBOX_INDEX, TempDocker};
use berth_testkit::{temp_dir, wait_for, wait_until};
use common::{BIN, WAIT_ROLES, cli, get_json, role};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const IMAGE: &str = "berth-test/busybox:1";

async fn through_router(router: SocketAddr, host: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .get(format!("http://{router}/"))
        .header("host", host)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

fn agent_env(dir: &Path, server: SocketAddr, registry: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("BERTH_AGENT_SERVER", server.to_string()),
        ("BERTH_AGENT_REGISTRY_HTTP", registry.to_string()),
        ("BERTH_AGENT_LISTEN", "127.0.0.1:0".into()),
        ("BERTH_AGENT_CPUS", "2".into()),
        ("BERTH_AGENT_MEM_MIB", "2048".into()),
        ("BERTH_AGENT_DATA_DIR", dir.display().to_string()),
    ]
}

#[tokio::test]
async fn an_image_app_runs_as_containers_behind_the_router() {
    let docker = TempDocker::start().await;
    docker.import_busybox(IMAGE);
    let dir = temp_dir();
    let dir = dir.path();
    let registry = role(
        "registry",
        &[
            ("BERTH_REGISTRY_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_GRPC_LISTEN", "127.0.0.1:0".into()),
            (
                "BERTH_REGISTRY_DATA_DIR",
                dir.join("registry").display().to_string(),
            ),
        ],
    )
    .await;
    let router = role(
        "router",
        &[
            ("BERTH_ROUTER_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_ROUTER_STATUS_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_ROUTER_REGISTRY", registry.addr("grpc").to_string()),
            ("BERTH_ROUTER_ACCESS_LOG", "false".into()),
        ],
    )
    .await;
    let server = role(
        "server",
        &[
            ("BERTH_SERVER_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_SERVER_AGENT_LISTEN", "127.0.0.1:0".into()),
            (
                "BERTH_SERVER_DATA_DIR",
                dir.join("server").display().to_string(),
            ),
            ("BERTH_SERVER_STARTUP_GRACE", "1s".into()),
        ],
    )
    .await;
    let api = server.addr("http");
    // One node runs processes only, the other also has the Docker engine.
    let mut plain = agent_env(
        &dir.join("plain"),
        server.addr("grpc"),
        registry.addr("http"),
    );
    plain.push(("BERTH_AGENT_NODE_ID", "plain".into()));
    plain.push(("BERTH_AGENT_PORT_RANGE", "23000-23499".into()));
    let _plain = role("agent", &plain).await;
    let mut boxed = agent_env(
        &dir.join("boxed"),
        server.addr("grpc"),
        registry.addr("http"),
    );
    boxed.push(("BERTH_AGENT_NODE_ID", "boxed".into()));
    boxed.push(("BERTH_AGENT_PORT_RANGE", "23500-23999".into()));
    boxed.push((
        "BERTH_AGENT_DOCKER_SOCKET",
        docker.socket().display().to_string(),
    ));
    let _boxed = role("agent", &boxed).await;
    wait_until(
        "both nodes ready, one with the docker driver",
        WAIT_ROLES,
        || async {
            let v = get_json(&format!("http://{api}/v1/nodes")).await;
            let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
            nodes.iter().filter(|n| n["status"] == "ready").count() == 2
                && nodes.iter().any(|n| {
                    n["id"] == "boxed" && n["drivers"] == serde_json::json!(["process", "docker"])
                })
        },
    )
    .await;

    let spec = dir.join("boxed.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
id = "shop/boxed"
image = "{IMAGE}"
cmd = "echo serving on $PORT; exec httpd -f -p 127.0.0.1:$PORT -h /www"
instances = 2
cpus = 0.2
mem = 64
ports = 1
routes = ["boxed.test"]

[[health_checks]]
protocol = "http"
path = "/"
interval_seconds = 1
"#
        ),
    )
    .unwrap();
    let deployed = cli(
        api,
        &[
            "apps",
            "deploy",
            "--timeout",
            "40s",
            &spec.display().to_string(),
        ],
    )
    .await;
    assert!(deployed.ok, "{}{}", deployed.stdout, deployed.stderr);

    let instances = get_json(&format!("http://{api}/v1/instances?app=shop/boxed")).await;
    let instances = instances["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert!(
        instances
            .iter()
            .all(|i| i["node"] == "boxed" && i["state"] == "healthy"),
        "placed on the docker node only: {instances:?}"
    );
    let containers = docker.containers_labelled("berth.app", "shop/boxed");
    assert_eq!(containers.len(), 2, "{containers:?}");
    // The app's limits are the container's.
    let (_, inspected) = docker
        .get(&format!("/containers/{}/json", containers[0]))
        .expect("inspect");
    let inspected: Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(inspected["HostConfig"]["Memory"], 64 * 1024 * 1024);
    assert_eq!(inspected["HostConfig"]["NanoCpus"], 200_000_000);
    assert_eq!(inspected["HostConfig"]["NetworkMode"], "host");

    wait_until(
        "the containers answer through the router",
        WAIT_ROLES,
        || async {
            through_router(router.addr("http"), "boxed.test")
                .await
                .as_deref()
                == Some(BUSYBOX_INDEX)
        },
    )
    .await;
    wait_until("their output shows in berth logs", WAIT_ROLES, || async {
        let out = cli(api, &["logs", "shop/boxed"]).await;
        out.ok && out.stdout.matches("serving on ").count() == 2
    })
    .await;

    let scaled = cli(api, &["apps", "scale", "shop/boxed", "0"]).await;
    assert!(scaled.ok, "{}{}", scaled.stdout, scaled.stderr);
    wait_until("no container is left", WAIT_ROLES, || async {
        docker
            .containers_labelled("berth.app", "shop/boxed")
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn exec_runs_commands_inside_a_container() {
    let docker = TempDocker::start().await;
    docker.import_busybox(IMAGE);
    let dir = temp_dir();
    let dir = dir.path();
    let registry = role(
        "registry",
        &[
            ("BERTH_REGISTRY_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_GRPC_LISTEN", "127.0.0.1:0".into()),
            (
                "BERTH_REGISTRY_DATA_DIR",
                dir.join("registry").display().to_string(),
            ),
        ],
    )
    .await;
    let nacos = registry.addr("http");
    let gateway = role(
        "diag",
        &[
            ("BERTH_DIAG_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_DIAG_REGISTRY_HTTP", nacos.to_string()),
        ],
    )
    .await;
    let server = role(
        "server",
        &[
            ("BERTH_SERVER_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_SERVER_AGENT_LISTEN", "127.0.0.1:0".into()),
            (
                "BERTH_SERVER_DATA_DIR",
                dir.join("server").display().to_string(),
            ),
            ("BERTH_SERVER_STARTUP_GRACE", "1s".into()),
            ("BERTH_SERVER_REGISTRY_HTTP", nacos.to_string()),
        ],
    )
    .await;
    let api = server.addr("http");
    let mut env = agent_env(&dir.join("boxed"), server.addr("grpc"), nacos);
    env.push(("BERTH_AGENT_NODE_ID", "boxed".into()));
    env.push(("BERTH_AGENT_PORT_RANGE", "24000-24499".into()));
    env.push(("BERTH_AGENT_DIAG", gateway.addr("grpc").to_string()));
    env.push((
        "BERTH_AGENT_DOCKER_SOCKET",
        docker.socket().display().to_string(),
    ));
    let _agent = role("agent", &env).await;

    let app = "shop/shell";
    let spec = dir.join("shell.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
id = "{app}"
image = "{IMAGE}"
cmd = "exec sleep 3600"
instances = 1
cpus = 0.1
mem = 32
env = {{ GREETING = "from the spec" }}
"#
        ),
    )
    .unwrap();
    let deployed = cli(
        api,
        &[
            "apps",
            "deploy",
            "--timeout",
            "40s",
            &spec.display().to_string(),
        ],
    )
    .await;
    assert!(deployed.ok, "{}{}", deployed.stdout, deployed.stderr);
    let container = docker.containers_labelled("berth.app", app);
    assert_eq!(container.len(), 1, "{container:?}");
    let container = container[0].clone();

    // The instance's environment and the container's file system; the agent may still be
    // attaching to the gateway.
    let printenv = wait_for("exec to succeed", WAIT_ROLES, || async {
        let out = cli(
            api,
            &[
                "exec",
                app,
                "--",
                "sh",
                "-c",
                "echo $GREETING; echo $BERTH_APP",
            ],
        )
        .await;
        out.ok.then_some(out)
    })
    .await;
    assert_eq!(printenv.stdout, format!("from the spec\n{app}\n"));
    let index = cli(api, &["exec", app, "--", "cat", "/www/index.html"]).await;
    assert_eq!(index.stdout, BUSYBOX_INDEX, "{}", index.stderr);

    // stdout and stderr apart, the exit code the command's.
    let three = cli(
        api,
        &[
            "exec",
            app,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    )
    .await;
    assert_eq!(three.stdout, "out\n", "{}", three.stderr);
    assert_eq!(three.stderr.lines().last(), Some("err"), "{}", three.stderr);
    let code = exec_command(api, &["exec", app, "--", "sh", "-c", "exit 3"])
        .output()
        .await
        .unwrap();
    assert_eq!(code.status.code(), Some(3), "{code:?}");

    // stdin reaches the command; our EOF closes its stdin, so cat ends.
    let mut cat = exec_command(api, &["exec", app, "--", "cat"]);
    let mut child = cat.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello through exec\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT_ROLES, child.wait_with_output())
        .await
        .expect("cat ends once its stdin is closed")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through exec\n");

    // A program the image lacks is named.
    let missing = cli(api, &["exec", app, "--", "/no/such/program"]).await;
    assert!(
        !missing.ok
            && (missing.stdout.contains("/no/such/program")
                || missing.stderr.contains("/no/such/program")),
        "{}{}",
        missing.stdout,
        missing.stderr
    );

    // --tty: a terminal inside the container.
    let tty = cli(api, &["exec", "--tty", app, "--", "tty"]).await;
    assert!(tty.ok, "{}", tty.stderr);
    assert!(tty.stdout.starts_with("/dev/pts/"), "{:?}", tty.stdout);

    // A CLI that is killed takes the command with it.
    let mut sleeper = exec_command(
        api,
        &[
            "exec",
            app,
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 301",
        ],
    );
    let mut child = sleeper.spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT_ROLES, stdout.read_line(&mut line))
        .await
        .expect("the remote command starts")
        .unwrap();
    let runs = |docker: &TempDocker| {
        docker
            .get(&format!("/containers/{container}/top"))
            .is_some_and(|(_, body)| body.contains("sleep 301"))
    };
    assert!(runs(&docker), "the command runs in the container");
    child.kill().await.unwrap();
    wait_until(
        "the command in the container to die with its CLI",
        WAIT_ROLES,
        || async { !runs(&docker) },
    )
    .await;
}

fn exec_command(api: SocketAddr, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_TOKEN_FILE")
        .arg("--server-url")
        .arg(format!("http://{api}"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}
