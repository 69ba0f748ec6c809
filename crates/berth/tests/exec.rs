//! Black-box test of `berth exec`, every role its own `berth` process (registry,
//! diagnostics gateway, server, agent on the process driver): the command runs inside the
//! instance (its environment), stdin reaches it and EOF closes it, its exit code becomes
//! the CLI's, `--tty` gives it a terminal that takes typed input and whose size follows
//! the CLI's (the CLI itself run on a pseudo-terminal here, resized as a user's window
//! would be), a CLI that is killed takes the command with it, and with ACLs a token without `exec` on the app is refused.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_testkit::{InstanceReaper, temp_dir, wait_for, wait_until};
use common::{BIN, WAIT_ROLES, acl_bootstrap, acl_server, api_call, cli, role, token_file};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const APP: &str = "exec/web";

fn data(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test]
async fn exec_runs_argv_inside_the_instance_with_stdin_exit_codes_and_a_terminal() {
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
            ("BERTH_AGENT_PORT_RANGE", "25000-25999".into()),
            ("BERTH_AGENT_CPUS", "2".into()),
            ("BERTH_AGENT_MEM_MIB", "2048".into()),
            ("BERTH_AGENT_DIAG", gateway.addr("grpc").to_string()),
        ],
    )
    .await;
    let spec = dir.join("web.toml");
    std::fs::write(
        &spec,
        format!(
            r#"
id = "{APP}"
cmd = "exec {BIN} hello-app"
instances = 1
cpus = 0.1
mem = 32
ports = 1
env = {{ GREETING = "from the spec" }}
"#
        ),
    )
    .unwrap();
    let deployed = cli(
        api,
        &["apps", "deploy", "--timeout", "40s", spec.to_str().unwrap()],
    )
    .await;
    assert!(deployed.ok, "{}{}", deployed.stdout, deployed.stderr);

    // The instance's own environment; the agent may still be attaching to the gateway.
    let printenv = wait_for("exec printenv to succeed", WAIT_ROLES, || async {
        let out = cli(
            api,
            &["exec", APP, "--", "printenv", "GREETING", "BERTH_APP"],
        )
        .await;
        out.ok.then_some(out)
    })
    .await;
    assert_eq!(printenv.stdout, format!("from the spec\n{APP}\n"));
    assert!(
        printenv.stderr.contains("exec in instance exec-web."),
        "{}",
        printenv.stderr
    );
    let instance = printenv
        .stderr
        .split_whitespace()
        .nth(3)
        .expect("the instance named")
        .to_string();

    // stdin reaches the command; our EOF closes its stdin, so cat ends.
    let mut cat = exec_command(api, &["exec", APP, "--", "cat"]);
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

    // The exit code is the command's; stderr stays apart from stdout. APP/INSTANCE
    // names the instance (and nothing is said about which was picked).
    let target = format!("{APP}/{instance}");
    let three = cli(
        api,
        &[
            "exec",
            &target,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    )
    .await;
    assert_eq!(three.stdout, "out\n", "{}", three.stderr);
    assert_eq!(three.stderr, "err\n");
    let code = exec_command(api, &["exec", &target, "--", "sh", "-c", "exit 3"])
        .output()
        .await
        .unwrap();
    assert_eq!(code.status.code(), Some(3), "{code:?}");

    // Bad requests are named: an empty program, an unknown instance.
    let empty = cli(api, &["exec", APP, "--", ""]).await;
    assert!(
        !empty.ok && empty.stderr.contains("argv[0]"),
        "{}",
        empty.stderr
    );
    let unknown = cli(
        api,
        &["exec", &format!("{APP}/exec-web.nope"), "--", "true"],
    )
    .await;
    assert!(
        !unknown.ok && unknown.stderr.contains("has no instance \"exec-web.nope\""),
        "{}",
        unknown.stderr
    );
    let missing = cli(api, &["exec", APP, "--", "/no/such/program"]).await;
    assert!(
        !missing.ok && missing.stderr.contains("/no/such/program"),
        "{}",
        missing.stderr
    );

    // --tty: the command's stdin is a terminal.
    let tty = cli(api, &["exec", "--tty", APP, "--", "tty"]).await;
    assert!(tty.ok, "{}", tty.stderr);
    assert!(tty.stdout.starts_with("/dev/pts/"), "{:?}", tty.stdout);

    // Typed input reaches a command on a terminal (which echoes it, as terminals do).
    let mut typed = exec_command(
        api,
        &[
            "exec",
            "--tty",
            APP,
            "--",
            "sh",
            "-c",
            "read x; echo got $x",
        ],
    );
    let mut child = typed.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hi\n").await.unwrap();
    let out = tokio::time::timeout(WAIT_ROLES, child.wait_with_output())
        .await
        .expect("the command reads its line and ends")
        .unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("got hi"), "{text:?} {out:?}");

    // On a terminal of its own the CLI passes its size, then each resize.
    resize_follows_the_cli_terminal(api).await;

    // A CLI that is killed takes the command with it.
    let mut sleeper = exec_command(
        api,
        &["exec", APP, "--", "sh", "-c", "echo $$; exec sleep 300"],
    );
    let mut child = sleeper.spawn().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT_ROLES, stdout.read_line(&mut line))
        .await
        .expect("the remote command prints its pid")
        .unwrap();
    let pid: i32 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a pid: {line:?}"));
    assert!(alive(pid), "the remote command {pid} runs");
    child.kill().await.unwrap();
    wait_until(
        "the remote command to die with its CLI",
        WAIT_ROLES,
        || async { !alive(pid) },
    )
    .await;
}

/// Runs on a pseudo-terminal as a person's shell would: the command sees the size at
/// start, and a resize of the CLI's terminal (SIGWINCH) reaches it.
async fn resize_follows_the_cli_terminal(api: std::net::SocketAddr) {
    let (pty, pts) = pty_process::open().unwrap();
    pty.resize(pty_process::Size::new(30, 90)).unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_TOKEN_FILE")
        .args([
            "--server-url",
            &format!("http://{api}"),
            "exec",
            "--tty",
            APP,
        ])
        .args(["--", "sh", "-c", "while read x; do stty size; done"])
        .kill_on_drop(true);
    let mut child = pty_process::Command::from(command).spawn(pts).unwrap();
    let (mut reader, mut writer) = pty.into_split();
    let mut seen = Vec::new();
    // Typed only once the command runs (before, the CLI's terminal is not raw yet).
    let deadline = tokio::time::Instant::now() + WAIT_ROLES;
    while !String::from_utf8_lossy(&seen).contains("exec in instance") {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            other => panic!(
                "the CLI on a terminal never started the command ({other:?}): {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    ask_size(&mut reader, &mut writer, &mut seen, "30 90").await;
    writer
        .resize(pty_process::Size::new(50, 120))
        .expect("resize the CLI's terminal");
    ask_size(&mut reader, &mut writer, &mut seen, "50 120").await;
    child.kill().await.unwrap();
}

/// Each line makes the command say its size; a line that arrives before a resize is
/// answered with the old one, so this asks until `wanted` shows.
async fn ask_size(
    reader: &mut pty_process::OwnedReadPty,
    writer: &mut pty_process::OwnedWritePty,
    seen: &mut Vec<u8>,
    wanted: &str,
) {
    let deadline = tokio::time::Instant::now() + WAIT_ROLES;
    while !String::from_utf8_lossy(seen).contains(wanted) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stty size never said {wanted}: {}",
            String::from_utf8_lossy(seen)
        );
        let _ = writer.write_all(b"size?\n").await;
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), reader.read(&mut buf)).await
        {
            seen.extend_from_slice(&buf[..n]);
        }
    }
}

fn exec_command(api: std::net::SocketAddr, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_remove("BERTH_TOKEN")
        .env_remove("BERTH_TOKEN_FILE")
        .arg("--server-url")
        .arg(format!("http://{api}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Running (a zombie waiting to be reaped counts as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn with_acls_exec_needs_the_exec_capability_on_the_app() {
    let dir = temp_dir();
    let server = acl_server(&dir.path().join("server"), &[]).await;
    let api = server.addr("http");
    let root = acl_bootstrap(api).await;
    for (name, caps) in [
        ("looker", serde_json::json!(["read", "logs", "diagnose"])),
        ("execer", serde_json::json!(["exec"])),
    ] {
        let (status, body) = api_call(
            api,
            reqwest::Method::PUT,
            &format!("/v1/acl/policy/{name}"),
            Some(&root),
            Some(serde_json::json!({"rules":[{"apps":"exec/*","capabilities":caps}]})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let looker = common::acl_token(api, &root, "looker", &["looker"], None).await;
    let execer = common::acl_token(api, &root, "execer", &["execer"], None).await;
    let looker_file = token_file(dir.path(), "looker", &looker);
    let execer_file = token_file(dir.path(), "execer", &execer);

    let none = cli(api, &["exec", APP, "--", "true"]).await;
    assert!(!none.ok && none.stderr.contains("401"), "{}", none.stderr);
    let refused = cli(
        api,
        &["--token-file", &looker_file, "exec", APP, "--", "true"],
    )
    .await;
    assert!(
        !refused.ok && refused.stderr.contains("403") && refused.stderr.contains("exec"),
        "{}",
        refused.stderr
    );
    // With the capability the request gets past the check (and finds no instance).
    let allowed = cli(
        api,
        &["--token-file", &execer_file, "exec", APP, "--", "true"],
    )
    .await;
    assert!(
        !allowed.ok && allowed.stderr.contains("404"),
        "{}",
        allowed.stderr
    );
    let elsewhere = cli(
        api,
        &[
            "--token-file",
            &execer_file,
            "exec",
            "other/app",
            "--",
            "true",
        ],
    )
    .await;
    assert!(elsewhere.stderr.contains("403"), "{}", elsewhere.stderr);

    // Every attempt is in the audit trail, the refused ones as denied.
    let (status, body) = api_call(
        api,
        reqwest::Method::GET,
        "/v1/audit?action=exec",
        Some(&root),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().expect("entries");
    let by = |name: &str, target: &str| {
        entries
            .iter()
            .find(|e| e["token_name"] == name && e["target"] == target)
            .unwrap_or_else(|| panic!("no exec entry by {name} on {target}: {body}"))
            .clone()
    };
    let denied = by("looker", &format!("app:{APP}"));
    assert_eq!(denied["decision"], "denied", "{denied}");
    assert_eq!(denied["status"], 403, "{denied}");
    let tried = by("execer", &format!("app:{APP}"));
    assert_eq!(tried["decision"], "allowed", "{tried}");
    assert_eq!(tried["status"], 404, "{tried}");
    assert_eq!(by("execer", "app:other/app")["status"], 403);
}
