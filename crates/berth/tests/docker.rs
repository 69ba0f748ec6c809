//! Black-box test of containerised apps, every role its own `berth` process and a real
//! Docker engine (a throwaway `dockerd`): an app given as an image is placed on the node
//! whose agent has the docker driver, runs as containers on the host network with its
//! CPU and memory limits, becomes healthy, is reached through the router, shows its output
//! through `berth logs`, and leaves no container behind when scaled to zero.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use berth_testkit::docker::{BUSYBOX_INDEX, TempDocker};
use berth_testkit::{temp_dir, wait_until};
use common::{WAIT_ROLES, cli, get_json, role};
use serde_json::Value;

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
