//! Helpers of the black-box tests of the `berth` binary, written once: the binary's path,
//! the wait bounds, roles started as processes, client commands against a server, and
//! HTTP GETs. What does not need the `berth` binary (waits, the process wrapper, the
//! instance reaper, fake peers, throwaway PostgreSQL, Docker and NATS) is in
//! `berth-testkit`, shared with the crates' own tests.
//!
//! Every test file (`mod common;`) is its own crate and uses only part of this module,
//! so what one file leaves unused is not dead code.
#![allow(dead_code)]

pub mod browser;
pub mod registry_cluster;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_testkit::BerthProcess;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The `berth` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_berth");

// Wait bounds: how long a test polls for a condition before it fails. They bound a
// failure, never delay a pass, and grow with how much must happen before the condition
// can hold on a small, busy machine.

/// One role against in-test fakes.
pub const WAIT: Duration = Duration::from_secs(15);
/// A real agent starting real instances for a fake server.
pub const WAIT_AGENT: Duration = Duration::from_secs(20);
/// Servers with a real agent and a database, or `berth dev` driven by a browser.
pub const WAIT_PLATFORM: Duration = Duration::from_secs(30);
/// Several roles, each its own `berth` process, placing and routing real instances.
pub const WAIT_ROLES: Duration = Duration::from_secs(45);
/// Rolling deployments of a real app under load.
pub const WAIT_DEPLOY: Duration = Duration::from_secs(60);

/// `berth NAME` configured only through `env` (its `BERTH_<ROLE>_*` variables), with
/// quiet logs; returns once it printed its ready line.
pub async fn role(name: &str, env: &[(&str, String)]) -> BerthProcess {
    let mut command = Command::new(BIN);
    command.arg(name).env("BERTH_LOG", "warn");
    for (key, value) in env {
        command.env(key, value);
    }
    BerthProcess::spawn(command).await
}

/// `berth dev` in `data` without the demo app, every listener on an ephemeral port.
pub async fn dev_without_demo(data: &Path) -> BerthProcess {
    let mut command = berth_testkit::dev_command(BIN, data);
    command.arg("--no-demo");
    BerthProcess::spawn(command).await
}

/// `berth server` in `data` with both listeners on ephemeral loopback ports; `extra`
/// flags follow. The one way black-box tests start a lone server.
pub async fn loopback_server<S: AsRef<str>>(data: &Path, extra: &[S]) -> BerthProcess {
    let mut args = vec![
        "server",
        "--listen",
        "127.0.0.1:0",
        "--agent-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend(extra.iter().map(AsRef::as_ref));
    BerthProcess::start(BIN, &args).await
}

/// `berth server` keeping its desired state in the PostgreSQL database `url_file` names,
/// every listener on an ephemeral port; `extra` flags follow.
pub async fn postgres_server(data: &Path, url_file: &Path, extra: &[&str]) -> BerthProcess {
    let mut args = vec![
        "--postgres-url-file",
        url_file.to_str().unwrap(),
        "--leader-lease",
        "1500ms",
    ];
    args.extend_from_slice(extra);
    loopback_server(data, &args).await
}

/// Runs `berth ARGS` to its end (commands that exit at once: flags, help, refusals),
/// blocking the caller.
pub fn berth(args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("run berth")
}

/// What a client command did.
pub struct Cli {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the client command `berth --server-url http://API ARGS` to its end.
pub async fn cli(api: SocketAddr, args: &[&str]) -> Cli {
    cli_env(api, &[], args).await
}

/// [`cli`] with the environment variables `env` set; the ACL token variables of the
/// test's own environment are cleared first, so only what the test gives counts.
pub async fn cli_env(api: SocketAddr, env: &[(&str, &str)], args: &[&str]) -> Cli {
    let mut command = Command::new(BIN);
    command
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_TOKEN_FILE")
        .envs(env.iter().copied())
        .arg("--server-url")
        .arg(format!("http://{api}"))
        .args(args);
    let out = command.output().await.expect("run berth");
    Cli {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `POST /v1/acl/bootstrap` on the server at `api`: the management token's secret.
pub async fn acl_bootstrap(api: SocketAddr) -> String {
    let (status, answer) =
        api_call(api, reqwest::Method::POST, "/v1/acl/bootstrap", None, None).await;
    assert_eq!(status, 200, "bootstrap: {answer}");
    answer["secret_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no secret_id in the bootstrap answer: {answer}"))
        .to_string()
}

/// Writes `secret` into `dir/name` readable by its owner only (as a token file must be);
/// returns the path.
pub fn token_file(dir: &Path, name: &str, secret: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

/// GETs `url` and reads the answer as JSON; `Null` when there is no answer or no JSON,
/// so a poll can ask again.
pub async fn get_json(url: &str) -> Value {
    match reqwest::get(url).await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// A GET written by hand over a fresh HTTP/1.1 connection (`Connection: close`), so the
/// test sees exactly what came back: the whole answer, head and body, or "" when the
/// connection fails. Reading stops after 5 s.
pub async fn raw_get(addr: SocketAddr, host: &str, path: &str) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// [`raw_get`] of `http://ADDR/PATH`: the status and the body. Panics when no HTTP
/// answer comes.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = raw_get(addr, &addr.to_string(), path).await;
    let status = answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET http://{addr}{path}: no HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// `berth server --acl` in `data` on ephemeral loopback ports; `extra` flags follow.
pub async fn acl_server(data: &Path, extra: &[&str]) -> BerthProcess {
    let mut args = vec!["--acl", "--registry-http", "off"];
    args.extend_from_slice(extra);
    loopback_server(data, &args).await
}

/// One API call with an optional token (`Authorization: Bearer`) and JSON body: the
/// status and the answer as JSON (`Null` when it is not JSON).
pub async fn api_call(
    api: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut request = client.request(method, format!("http://{api}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .expect("the server answers")
        .expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `POST /v1/acl/token` with `policies` (and `ttl`), as `token` (a management token):
/// the new token's secret.
pub async fn acl_token(
    api: SocketAddr,
    token: &str,
    name: &str,
    policies: &[&str],
    ttl: Option<&str>,
) -> String {
    let mut body = serde_json::json!({ "name": name, "policies": policies });
    if let Some(ttl) = ttl {
        body["ttl"] = ttl.into();
    }
    let (status, answer) = api_call(
        api,
        reqwest::Method::POST,
        "/v1/acl/token",
        Some(token),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "token create: {answer}");
    answer["secret_id"]
        .as_str()
        .expect("a secret_id")
        .to_string()
}

/// A private CA in `dir` (`berth tls ca create`) and one certificate per `(role, name)`
/// (`berth tls cert create`), made by the binary as an operator would.
pub fn tls_pki(dir: &Path, certs: &[(&str, &str)]) {
    let dir_arg = dir.to_str().unwrap();
    let out = berth(&["tls", "ca", "create", "--dir", dir_arg]);
    assert!(out.status.success(), "tls ca create: {out:?}");
    for (role, name) in certs {
        let out = berth(&[
            "tls", "cert", "create", "--role", role, "--name", name, "--dir", dir_arg,
        ]);
        assert!(
            out.status.success(),
            "tls cert create {role} {name}: {out:?}"
        );
    }
}

/// `--tls-cert-file DIR/ROLE-NAME.pem --tls-key-file DIR/ROLE-NAME-key.pem
/// --tls-ca-file DIR/ca.pem`, the files [`tls_pki`] wrote.
pub fn tls_flags(dir: &Path, role: &str, name: &str) -> Vec<String> {
    let file = |f: String| dir.join(f).display().to_string();
    vec![
        "--tls-cert-file".into(),
        file(format!("{role}-{name}.pem")),
        "--tls-key-file".into(),
        file(format!("{role}-{name}-key.pem")),
        "--tls-ca-file".into(),
        file("ca.pem".into()),
    ]
}

/// `berth agent` on the simulated driver, no registry, status on an ephemeral port,
/// dialing `server` as node `node`; `extra` flags follow.
pub async fn sim_agent(
    server: SocketAddr,
    data: &Path,
    node: &str,
    extra: &[String],
) -> BerthProcess {
    let mut args: Vec<String> = [
        "agent",
        "--server",
        &server.to_string(),
        "--registry-http",
        "off",
        "--data-dir",
        data.to_str().unwrap(),
        "--node-id",
        node,
        "--listen",
        "127.0.0.1:0",
        "--driver",
        "sim",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    BerthProcess::start(BIN, &args).await
}

/// The ids of the nodes `GET /v1/nodes` lists.
pub async fn node_ids(api: SocketAddr) -> Vec<String> {
    get_json(&format!("http://{api}/v1/nodes")).await["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The folder of the third-party client scripts (`tests/registry_clients`).
pub fn client_scripts() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/registry_clients")
}

/// Runs the client script `name` with the interpreter `python` and `args`, from the
/// scripts' folder, for at most `limit`. The script asserts itself and ends by printing
/// OK; otherwise this panics with its output and, when given, the registry's. Returns
/// what the script printed.
pub async fn run_client_script(
    python: &Path,
    name: &str,
    args: &[String],
    limit: Duration,
    registry: Option<&BerthProcess>,
) -> String {
    let output = tokio::time::timeout(
        limit,
        Command::new(python)
            .arg(client_scripts().join(name))
            .args(args)
            .current_dir(client_scripts())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} did not finish within {limit:?}"))
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && stdout.trim_end().ends_with("OK"),
        "{name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{}\n--- registry\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        registry.map(BerthProcess::output).unwrap_or_default()
    );
    stdout
}
