//! Black-box test of live diagnostics, every role its own `berth` process: an agent
//! attached to one of two diagnostics gateways, the server relaying `berth inspect`
//! through the gateway the registry names for the node. Proves grep across every
//! instance of an app (rotated logs included), process and port listings, bad requests
//! named, and that when the gateway holding the agent dies the agent re-attaches to the
//! other one and diagnostics work again.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_testkit::{BerthProcess, InstanceReaper, temp_dir};
use common::{BIN, WAIT_ROLES, cli, get_json, role};

const APP: &str = "diag/web";

async fn gateway(registry: SocketAddr) -> BerthProcess {
    role(
        "diag",
        &[
            ("BERTH_DIAG_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_DIAG_REGISTRY_HTTP", registry.to_string()),
        ],
    )
    .await
}

fn data(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test]
async fn inspect_runs_through_the_gateway_holding_the_node_and_survives_its_loss() {
    let dir = temp_dir();
    let dir = dir.path();
    let _reaper = InstanceReaper::new([dir.join("node")]);
    let registry = role(
        "registry",
        &[
            ("BERTH_REGISTRY_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_GRPC_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_DATA_DIR", data(dir, "registry")),
        ],
    )
    .await;
    let nacos = registry.addr("http");
    let gateway_a = gateway(nacos).await;
    let gateway_b = gateway(nacos).await;
    let server = role(
        "server",
        &[
            ("BERTH_SERVER_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_SERVER_AGENT_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_SERVER_DATA_DIR", data(dir, "server")),
            ("BERTH_SERVER_STARTUP_GRACE", "1s".into()),
            ("BERTH_SERVER_REGISTRY_HTTP", nacos.to_string()),
        ],
    )
    .await;
    let api = server.addr("http");
    let _agent = role(
        "agent",
        &[
            ("BERTH_AGENT_SERVER", server.addr("grpc").to_string()),
            ("BERTH_AGENT_REGISTRY_HTTP", nacos.to_string()),
            ("BERTH_AGENT_DATA_DIR", data(dir, "node")),
            ("BERTH_AGENT_NODE_ID", "node-1".into()),
            ("BERTH_AGENT_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_AGENT_PORT_RANGE", "24000-24999".into()),
            ("BERTH_AGENT_CPUS", "2".into()),
            ("BERTH_AGENT_MEM_MIB", "2048".into()),
            (
                "BERTH_AGENT_DIAG",
                format!("{},{}", gateway_a.addr("grpc"), gateway_b.addr("grpc")),
            ),
        ],
    )
    .await;

    let spec = dir.join("web.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
id = "{APP}"
cmd = "echo request one ok; echo ERROR disk full on $BERTH_INSTANCE_ID >&2; echo request two ok; exec {BIN} hello-app"
instances = 2
cpus = 0.1
mem = 32
ports = 1
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
    let instances = get_json(&format!("http://{api}/v1/instances?app={APP}")).await;
    let instances: Vec<(String, u64)> = instances["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_string(),
                i["ports"][0].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(instances.len(), 2, "{instances:?}");
    // A rotated copy is searched too.
    let first = &instances[0].0;
    std::fs::write(
        dir.join(format!("node/instances/{first}/stderr.log.1")),
        "ERROR an older failure\n",
    )
    .unwrap();

    // Grep across the app: every instance's line, prefixed with the instance.
    let grep = wait_until_ok(
        api,
        &["inspect", "grep", APP, "ERROR", "--stream", "stderr"],
    )
    .await;
    for (id, _) in &instances {
        assert!(
            grep.contains(&format!("[{id}] ERROR disk full on {id}")),
            "{grep}"
        );
    }
    assert!(
        grep.contains(&format!("[{first}] ERROR an older failure")),
        "{grep}"
    );
    assert!(!grep.contains("request one"), "{grep}");
    let insensitive = cli(api, &["inspect", "grep", APP, "error DISK", "-i"]).await;
    assert!(insensitive.ok, "{}", insensitive.stderr);
    assert_eq!(
        insensitive
            .stdout
            .matches("stderr: ERROR disk full")
            .count(),
        2,
        "{}",
        insensitive.stdout
    );

    // Processes and listening ports of one instance.
    let (id, port) = &instances[1];
    let ps = cli(api, &["inspect", "ps", APP, "--instance", id]).await;
    assert!(
        ps.ok && ps.stdout.contains("hello-app"),
        "{}{}",
        ps.stdout,
        ps.stderr
    );
    let ports = cli(api, &["inspect", "ports", APP, "--instance", id]).await;
    assert!(
        ports.ok && ports.stdout.contains(&format!(":{port} pid ")),
        "{}{}",
        ports.stdout,
        ports.stderr
    );
    let tail = cli(api, &["inspect", "tail", APP, "--instance", id, "-n", "2"]).await;
    assert_eq!(
        tail.stdout,
        format!("request two ok\nberth hello-app ready http=127.0.0.1:{port}\n"),
        "{}",
        tail.stderr
    );

    // Bad requests are named.
    let bad = cli(api, &["inspect", "grep", APP, "(unclosed"]).await;
    assert!(
        !bad.ok && bad.stdout.contains("not a valid regular expression"),
        "{}{}",
        bad.stdout,
        bad.stderr
    );
    let unknown = cli(api, &["inspect", "ps", "no/such-app"]).await;
    assert!(
        !unknown.ok && unknown.stderr.contains("no agent reports"),
        "{}",
        unknown.stderr
    );
    let response = reqwest::get(format!("http://{api}/v1/diag/grep?app={APP}"))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("pattern"));

    // The gateway holding the agent dies: the agent attaches to the other, and the server
    // finds it there (skipping the dead one the registry still lists for a while).
    let holder = held_by(&gateway_a, &gateway_b).await;
    let (dead, alive) = if holder == 0 {
        (gateway_a, gateway_b)
    } else {
        (gateway_b, gateway_a)
    };
    dead.kill().await;
    let _alive = alive;
    let again = wait_until_ok(api, &["inspect", "ps", APP, "--instance", id]).await;
    assert!(again.contains("hello-app"), "{again}");
}

/// Retries until the command succeeds (the agent may still be attaching); its output.
async fn wait_until_ok(api: SocketAddr, args: &[&str]) -> String {
    let mut last = String::new();
    let found = tokio::time::timeout(WAIT_ROLES, async {
        loop {
            let out = cli(api, args).await;
            if out.ok && !out.stdout.is_empty() {
                return out.stdout;
            }
            last = format!("{}{}", out.stdout, out.stderr);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("berth {args:?} never succeeded: {last}"))
}

/// Which gateway (0 or 1) holds node-1, asked through its Nodes call.
async fn held_by(a: &BerthProcess, b: &BerthProcess) -> usize {
    use berth_proto::diag::v1::{NodesRequest, diag_gateway_client::DiagGatewayClient};
    let addrs = [a.addr("grpc"), b.addr("grpc")];
    let found = tokio::time::timeout(WAIT_ROLES, async {
        loop {
            for (i, addr) in addrs.iter().enumerate() {
                if let Ok(mut client) = DiagGatewayClient::connect(format!("http://{addr}")).await
                    && let Ok(reply) = client.nodes(NodesRequest {}).await
                    && reply.into_inner().node_ids == ["node-1"]
                {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.expect("one gateway holds node-1")
}
