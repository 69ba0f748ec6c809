//! Black-box tests of the registry's auth as its Berth clients meet it, every role its
//! own `berth` process: with `--registry-secret-file` an agent's instances are registered
//! and a router is fed their routes; without it the agent is refused, and says so once
//! (not on every retry), naming the setting; the gateway registers its nodes and the
//! server finds them, so `berth inspect` works against a registry with auth on.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use berth_testkit::{BerthProcess, InstanceReaper, temp_dir, wait_for, wait_until};
use common::{WAIT_ROLES, cli, get_json, role, token_file};

const SECRET: &str = "0123456789abcdef0123456789abcdef-registry";

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

async fn registry(dir: &Path, secret_file: &str) -> BerthProcess {
    role(
        "registry",
        &[
            ("BERTH_REGISTRY_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_GRPC_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_REGISTRY_DATA_DIR", path(dir, "registry")),
            ("BERTH_REGISTRY_AUTH_SECRET_FILE", secret_file.into()),
        ],
    )
    .await
}

async fn server(dir: &Path, nacos: SocketAddr, extra: &[(&str, String)]) -> BerthProcess {
    let mut env = vec![
        ("BERTH_SERVER_LISTEN", "127.0.0.1:0".into()),
        ("BERTH_SERVER_AGENT_LISTEN", "127.0.0.1:0".into()),
        ("BERTH_SERVER_DATA_DIR", path(dir, "server")),
        ("BERTH_SERVER_STARTUP_GRACE", "1s".into()),
        ("BERTH_SERVER_REGISTRY_HTTP", nacos.to_string()),
    ];
    env.extend_from_slice(extra);
    role("server", &env).await
}

/// An agent of node `node` (also its label `node`) registering in `nacos`, at info level
/// so its warnings show.
async fn agent(
    dir: &Path,
    server: SocketAddr,
    nacos: SocketAddr,
    node: &str,
    extra: &[(&str, String)],
) -> BerthProcess {
    let mut command = tokio::process::Command::new(common::BIN);
    command
        .arg("agent")
        .env("BERTH_LOG", "info")
        .env("BERTH_AGENT_SERVER", server.to_string())
        .env("BERTH_AGENT_REGISTRY_HTTP", nacos.to_string())
        .env("BERTH_AGENT_DATA_DIR", path(dir, node))
        .env("BERTH_AGENT_NODE_ID", node)
        .env("BERTH_AGENT_LABELS", format!("node={node}"))
        .env("BERTH_AGENT_LISTEN", "127.0.0.1:0")
        .env("BERTH_AGENT_CPUS", "2")
        .env("BERTH_AGENT_MEM_MIB", "2048")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
    BerthProcess::spawn(command).await
}

async fn deploy(api: SocketAddr, dir: &Path, name: &str, spec: &str) {
    let file = dir.join(name);
    std::fs::write(&file, spec).unwrap();
    let out = cli(
        api,
        &["apps", "deploy", "--timeout", "40s", file.to_str().unwrap()],
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
}

/// A simulated app of one instance with a port and a route, pinned to the node labelled
/// `node`.
fn pinned_app(id: &str, node: &str, route: &str) -> String {
    format!(
        r#"
id = "{id}"
driver = "sim"
cmd = "unused by the sim driver"
instances = 1
cpus = 0.1
mem = 16
ports = 1
routes = ["{route}"]
constraints = [["node", "CLUSTER", "{node}"]]
"#
    )
}

/// The ports the registry lists for `service`, asked with the secret.
async fn listed_ports(nacos: SocketAddr, service: &str) -> Vec<u64> {
    let listing = get_json(&format!(
        "http://{nacos}/nacos/v1/ns/instance/list?serviceName={service}&accessToken={SECRET}"
    ))
    .await;
    listing["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["port"].as_u64())
        .collect()
}

/// How many register calls of the agent the registry refused, from its `/metrics`.
async fn failed_registers(agent: &BerthProcess) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", agent.addr("http")))
        .await
        .ok();
    let text = match text {
        Some(response) => response.text().await.unwrap_or_default(),
        None => String::new(),
    };
    text.lines()
        .find(|l| {
            l.starts_with("berth_agent_registry_calls_total")
                && l.contains(r#"op="register""#)
                && l.contains(r#"result="error""#)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn agents_and_routers_need_the_registry_secret_and_say_which_setting_once() {
    let dir = temp_dir();
    let dir = dir.path();
    let _reaper = InstanceReaper::new([dir.join("keyed"), dir.join("bare")]);
    let secret_file = token_file(dir, "registry.secret", SECRET);
    let registry = registry(dir, &secret_file).await;
    let nacos = registry.addr("http");
    let server = server(dir, nacos, &[]).await;
    let (api, grpc) = (server.addr("http"), server.addr("grpc"));
    let sim = ("BERTH_AGENT_DRIVER", "sim".to_string());
    let keyed = agent(
        dir,
        grpc,
        nacos,
        "keyed",
        &[
            sim.clone(),
            ("BERTH_AGENT_REGISTRY_SECRET_FILE", secret_file.clone()),
        ],
    )
    .await;
    let bare = agent(dir, grpc, nacos, "bare", &[sim]).await;
    let router = role(
        "router",
        &[
            ("BERTH_ROUTER_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_ROUTER_STATUS_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_ROUTER_REGISTRY", registry.addr("grpc").to_string()),
            ("BERTH_ROUTER_REGISTRY_SECRET_FILE", secret_file.clone()),
            ("BERTH_ROUTER_ACCESS_LOG", "false".into()),
        ],
    )
    .await;
    wait_until("both nodes joined", WAIT_ROLES, || async {
        common::node_ids(api).await.len() == 2
    })
    .await;

    deploy(
        api,
        dir,
        "keyed.toml",
        &pinned_app("auth/keyed", "keyed", "keyed.test"),
    )
    .await;
    deploy(
        api,
        dir,
        "bare.toml",
        &pinned_app("auth/bare", "bare", "bare.test"),
    )
    .await;

    // With the secret: the instance is in the registry and the router routes to it.
    let port = wait_for("the keyed instance registered", WAIT_ROLES, || async {
        listed_ports(nacos, "auth.keyed").await.first().copied()
    })
    .await;
    let routes = router.addr("http");
    wait_until("the router routes to it", WAIT_ROLES, || async {
        let answer = common::raw_get(routes, "keyed.test", "/").await;
        answer.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(port > 0);

    // Without it: refused on every retry, said once, naming the setting.
    wait_until("the bare agent retried thrice", WAIT_ROLES, || async {
        failed_registers(&bare).await >= 3
    })
    .await;
    assert!(listed_ports(nacos, "auth.bare").await.is_empty());
    let log = bare.output();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("refused register"))
        .collect();
    assert_eq!(refusals.len(), 1, "one warning, not one per retry:\n{log}");
    assert!(
        refusals[0].contains("no secret was sent")
            && refusals[0].contains("--registry-secret-file")
            && refusals[0].contains("BERTH_AGENT_REGISTRY_SECRET_FILE"),
        "{}",
        refusals[0]
    );
    assert!(!log.contains(SECRET) && !keyed.output().contains(SECRET));
}

#[tokio::test]
async fn inspect_finds_the_gateway_in_a_registry_with_auth_on() {
    let dir = temp_dir();
    let dir = dir.path();
    let _reaper = InstanceReaper::new([dir.join("node-1")]);
    let secret_file = token_file(dir, "registry.secret", SECRET);
    let registry = registry(dir, &secret_file).await;
    let nacos = registry.addr("http");
    let gateway = role(
        "diag",
        &[
            ("BERTH_DIAG_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_DIAG_REGISTRY_HTTP", nacos.to_string()),
            ("BERTH_DIAG_REGISTRY_SECRET_FILE", secret_file.clone()),
        ],
    )
    .await;
    let server = server(
        dir,
        nacos,
        &[("BERTH_SERVER_REGISTRY_SECRET_FILE", secret_file.clone())],
    )
    .await;
    let api = server.addr("http");
    let _agent = agent(
        dir,
        server.addr("grpc"),
        nacos,
        "node-1",
        &[
            ("BERTH_AGENT_REGISTRY_SECRET_FILE", secret_file.clone()),
            ("BERTH_AGENT_DIAG", gateway.addr("grpc").to_string()),
        ],
    )
    .await;
    deploy(
        api,
        dir,
        "sleeper.toml",
        r#"
id = "auth/sleeper"
cmd = "exec sleep 300"
instances = 1
mem = 16
"#,
    )
    .await;
    let ps = wait_for("inspect ps through the gateway", WAIT_ROLES, || async {
        let out = cli(api, &["inspect", "ps", "auth/sleeper"]).await;
        (out.ok && out.stdout.contains("sleep")).then_some(out.stdout)
    })
    .await;
    assert!(ps.contains("sleep 300"), "{ps}");
    let gateways = listed_ports(nacos, "berth.diag.node.node-1").await;
    assert_eq!(gateways, vec![u64::from(gateway.addr("grpc").port())]);

    // A gateway without the secret is refused, and says which setting gives it.
    let bare = role(
        "diag",
        &[
            ("BERTH_DIAG_LISTEN", "127.0.0.1:0".into()),
            ("BERTH_DIAG_REGISTRY_HTTP", nacos.to_string()),
        ],
    )
    .await;
    wait_until(
        "the bare gateway reported its refusal",
        WAIT_ROLES,
        || async { bare.output().contains("register berth.diag: HTTP 403") },
    )
    .await;
    let log = bare.output();
    assert!(
        log.contains("no secret was sent") && log.contains("BERTH_DIAG_REGISTRY_SECRET_FILE"),
        "{log}"
    );
}
