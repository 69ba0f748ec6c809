//! Black-box test of a small cluster on one machine, every role its own `berth` process:
//! one registry, one router fed by it, one server and two agents with different labels.
//! Proves: three instances reached through the router, a placement constraint respected,
//! and, when one node is lost for good (agent and its instances killed), its instances
//! replaced on the other node while the router keeps answering.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use berth_testkit::{BerthProcess, InstanceReaper, temp_dir, wait_until};
use common::{BIN, WAIT_ROLES, cli, get_json, role};

async fn agent(
    dir: &Path,
    server: SocketAddr,
    registry: SocketAddr,
    node: &str,
    rack: &str,
    ports: &str,
) -> BerthProcess {
    role(
        "agent",
        &[
            ("BERTH_AGENT_SERVER", server.to_string()),
            ("BERTH_AGENT_REGISTRY_HTTP", registry.to_string()),
            ("BERTH_AGENT_DATA_DIR", dir.join(node).display().to_string()),
            ("BERTH_AGENT_NODE_ID", node.to_string()),
            ("BERTH_AGENT_LABELS", format!("rack={rack}")),
            ("BERTH_AGENT_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_AGENT_PORT_RANGE", ports.to_string()),
            ("BERTH_AGENT_CPUS", "4".into()),
            ("BERTH_AGENT_MEM_MIB", "4096".into()),
        ],
    )
    .await
}

/// Instance id -> (node, pid) of the app's instances that are healthy.
async fn healthy(api: SocketAddr, app: &str) -> Vec<(String, String, u64)> {
    let v = get_json(&format!("http://{api}/v1/instances?app={app}")).await;
    v["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|i| i["state"] == "healthy" || (i["state"] == "running" && app != "multi/web"))
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_string(),
                i["node"].as_str().unwrap_or_default().to_string(),
                i["pid"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The distinct greetings seen through the router in `tries` requests; fails the test
/// on any error answer.
async fn greetings(router: SocketAddr, tries: usize) -> BTreeSet<String> {
    let client = reqwest::Client::new();
    let mut seen = BTreeSet::new();
    for _ in 0..tries {
        let Ok(response) = client
            .get(format!("http://{router}/"))
            .header("host", "web.test")
            .send()
            .await
        else {
            continue;
        };
        if response.status().is_success() {
            seen.insert(response.text().await.unwrap_or_default());
        }
    }
    seen
}

async fn deploy(api: SocketAddr, dir: &Path, name: &str, spec: &str) {
    let path = dir.join(name);
    std::fs::write(&path, spec).unwrap();
    let out = cli(
        api,
        &["apps", "deploy", "--timeout", "40s", path.to_str().unwrap()],
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
}

#[tokio::test]
async fn two_nodes_route_constrain_and_survive_a_lost_node() {
    let dir = temp_dir();
    let dir = dir.path();
    let _reaper = InstanceReaper::new([dir.join("node-a"), dir.join("node-b")]);
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
            ("BERTH_SERVER_HEARTBEAT_INTERVAL", "300ms".into()),
            ("BERTH_SERVER_NODE_TTL", "2s".into()),
        ],
    )
    .await;
    let api = server.addr("http");
    let grpc = server.addr("grpc");
    let nacos = registry.addr("http");
    let node_a = agent(dir, grpc, nacos, "node-a", "a", "21000-21999").await;
    let _node_b = agent(dir, grpc, nacos, "node-b", "b", "22000-22999").await;
    wait_until("both nodes ready", WAIT_ROLES, || async {
        let v = get_json(&format!("http://{api}/v1/nodes")).await;
        v["nodes"]
            .as_array()
            .is_some_and(|n| n.iter().filter(|n| n["status"] == "ready").count() == 2)
    })
    .await;

    // Three instances of a web app, spread over both nodes, each reached through the router.
    deploy(
        api,
        dir,
        "web.toml",
        &format!(
            r#"
id = "multi/web"
args = ["{BIN}", "hello-app"]
instances = 3
cpus = 0.1
mem = 32
ports = 1
routes = ["web.test"]

[[health_checks]]
protocol = "http"
path = "/healthz"
grace_period_seconds = 5
interval_seconds = 1
timeout_seconds = 1
"#
        ),
    )
    .await;
    let first = healthy(api, "multi/web").await;
    assert_eq!(first.len(), 3, "{first:?}");
    let nodes: BTreeSet<&str> = first.iter().map(|(_, node, _)| node.as_str()).collect();
    assert_eq!(nodes.len(), 2, "spread over both nodes: {first:?}");
    wait_until(
        "all three instances answer through the router",
        WAIT_ROLES,
        || async { greetings(router.addr("http"), 12).await.len() == 3 },
    )
    .await;

    // A constraint pins an app to rack b.
    deploy(
        api,
        dir,
        "pinned.toml",
        r#"
id = "multi/pinned"
cmd = "exec sleep 300"
instances = 2
mem = 16
constraints = [["rack", "CLUSTER", "b"]]
"#,
    )
    .await;
    let pinned = healthy(api, "multi/pinned").await;
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    assert!(
        pinned.iter().all(|(_, node, _)| node == "node-b"),
        "{pinned:?}"
    );

    // Node a is lost for good: its agent and its instances die at once.
    let on_a: Vec<u64> = first
        .iter()
        .filter(|(_, node, _)| node == "node-a")
        .map(|(_, _, pid)| *pid)
        .collect();
    node_a.kill().await;
    for pid in &on_a {
        // Each instance leads its own process group.
        let _ = std::process::Command::new("kill")
            .args(["-9", "--", &format!("-{pid}")])
            .status();
    }
    wait_until("node a lost", WAIT_ROLES, || async {
        let v = get_json(&format!("http://{api}/v1/nodes")).await;
        v["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["id"] == "node-a" && n["status"] == "lost")
        })
    })
    .await;
    wait_until(
        "three healthy web instances, all on node b",
        WAIT_ROLES,
        || async {
            let now = healthy(api, "multi/web").await;
            now.len() == 3 && now.iter().all(|(_, node, _)| node == "node-b")
        },
    )
    .await;
    let replaced: BTreeSet<String> = healthy(api, "multi/web")
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    wait_until(
        "the router reaches the three instances on node b",
        WAIT_ROLES,
        || async {
            let seen = greetings(router.addr("http"), 12).await;
            seen.len() == 3
                && seen
                    .iter()
                    .all(|g| replaced.iter().any(|id| g.contains(id.as_str())))
        },
    )
    .await;
    // The pinned app had nowhere else to go and stayed where it was.
    assert_eq!(healthy(api, "multi/pinned").await.len(), 2);
}
