//! Black-box: the real `berth server` process driven by the real `berth apps ...` client
//! commands, with fake agents on the real gRPC stream.

mod common;

use std::path::Path;
use std::time::Duration;

use berth_testkit::fake_agent::{FakeAgent, NodeSpec};
use berth_testkit::{BerthProcess, wait_until};
use common::{BIN, WAIT, cli, get_json};

async fn server(dir: &Path) -> BerthProcess {
    server_on(dir, "127.0.0.1:0").await
}

async fn server_on(dir: &Path, agent_listen: &str) -> BerthProcess {
    BerthProcess::start(
        BIN,
        &[
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            agent_listen,
            "--registry",
            "127.0.0.1:9848",
            "--data-dir",
            dir.to_str().unwrap(),
            "--startup-grace",
            "100ms",
            "--heartbeat-interval",
            "100ms",
            "--node-ttl",
            "1s",
            "--reconcile-interval",
            "200ms",
            "--stop-grace",
            "100ms",
        ],
    )
    .await
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn deploy_waits_then_scale_restart_show_and_remove() {
    let data = tempfile::tempdir().unwrap();
    let s = server(data.path()).await;
    let a = FakeAgent::connect(s.addr("grpc"), NodeSpec::new("n1", 4.0, 2048)).await;
    let b = FakeAgent::connect(s.addr("grpc"), NodeSpec::new("n2", 4.0, 2048)).await;
    let total = || a.running_of("shop/web") + b.running_of("shop/web");
    let spec = write(
        data.path(),
        "web.toml",
        "id = \"shop/web\"\ncmd = \"exec ./web --port $PORT\"\ninstances = 2\nmem = 128\nroutes = [\"web.shop.example\"]\n",
    );
    let out = cli(s.addr("http"), &["apps", "deploy", &spec]).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("shop/web deployed: 2/2 running"),
        "{}",
        out.stdout
    );
    assert_eq!(total(), 2);

    let out = cli(s.addr("http"), &["apps", "list"]).await;
    assert!(
        out.stdout.contains("shop/web") && out.stdout.contains("2/2"),
        "{}",
        out.stdout
    );
    let out = cli(s.addr("http"), &["-o", "json", "apps", "list"]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json output");
    assert_eq!(v["apps"][0]["spec"]["id"], "shop/web");

    let out = cli(
        s.addr("http"),
        &["apps", "scale", "--wait", "shop/web", "3"],
    )
    .await;
    assert!(out.ok, "{}", out.stderr);
    wait_until("3 running", WAIT, || async { total() == 3 }).await;

    let out = cli(s.addr("http"), &["apps", "show", "shop/web"]).await;
    assert!(out.ok, "{}", out.stderr);
    for part in [
        "running:   3/3",
        "instances:",
        "versions:",
        "scaled",
        "created",
        "last events:",
    ] {
        assert!(
            out.stdout.contains(part),
            "{part} missing in:\n{}",
            out.stdout
        );
    }
    let out = cli(s.addr("http"), &["nodes"]).await;
    assert!(
        out.stdout.contains("n1") && out.stdout.contains("n2") && out.stdout.contains("ready"),
        "{}",
        out.stdout
    );
    let out = cli(s.addr("http"), &["instances", "--app", "shop/web"]).await;
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("shop/web"))
            .count(),
        3,
        "{}",
        out.stdout
    );

    let starts = a.starts() + b.starts();
    let out = cli(s.addr("http"), &["apps", "restart", "shop/web"]).await;
    assert!(out.ok, "{}", out.stderr);
    wait_until("3 new instances", WAIT, || async {
        a.starts() + b.starts() == starts + 3 && total() == 3
    })
    .await;

    let out = cli(s.addr("http"), &["apps", "rm", "shop/web"]).await;
    assert!(out.ok, "{}", out.stderr);
    wait_until("all stopped", WAIT, || async { total() == 0 }).await;
    let out = cli(s.addr("http"), &["apps", "show", "shop/web"]).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    let status = s.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM");
}

#[tokio::test]
async fn bad_spec_names_every_field_and_exits_nonzero() {
    let data = tempfile::tempdir().unwrap();
    let s = server(data.path()).await;
    let spec = write(
        data.path(),
        "bad.toml",
        "id = \"Bad/App\"\ncpus = -2\ninstnces = 2\n[[health_checks]]\nprotocol = \"http\"\ntimeout_seconds = 0\n",
    );
    let out = cli(s.addr("http"), &["apps", "deploy", &spec]).await;
    assert!(!out.ok);
    for field in [
        "id:",
        "cmd:",
        "cpus:",
        "instnces:",
        "health_checks[0].path:",
        "health_checks[0].timeout_seconds:",
    ] {
        assert!(
            out.stderr.contains(field),
            "{field} missing in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("did you mean `instances`"),
        "{}",
        out.stderr
    );
    let out = cli(s.addr("http"), &["apps", "list"]).await;
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "nothing stored: {}",
        out.stdout
    );
    let out = cli(s.addr("http"), &["apps", "deploy", "/nonexistent/app.toml"]).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains("cannot read the spec file"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn deploy_that_cannot_be_placed_fails_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let s = server(data.path()).await;
    let _a = FakeAgent::connect(s.addr("grpc"), NodeSpec::new("n1", 4.0, 300)).await;
    let spec = write(
        data.path(),
        "big.toml",
        "id = \"big\"\ncmd = \"x\"\nmem = 512\n",
    );
    let out = cli(s.addr("http"), &["apps", "deploy", &spec]).await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("no node has 512 MiB memory free; largest free is 300 MiB on n1"),
        "{}",
        out.stderr
    );
    let detached = cli(s.addr("http"), &["apps", "deploy", "--detach", &spec]).await;
    assert!(detached.ok, "{}", detached.stderr);
}

#[tokio::test]
async fn apps_survive_a_server_restart() {
    let data = tempfile::tempdir().unwrap();
    let s = server(data.path()).await;
    let spec = write(
        data.path(),
        "a.toml",
        "id = \"keep\"\ncmd = \"x\"\ninstances = 0\n",
    );
    assert!(cli(s.addr("http"), &["apps", "deploy", &spec]).await.ok);
    assert!(s.terminate().await.success());
    let s = server(data.path()).await;
    let out = cli(s.addr("http"), &["apps", "list"]).await;
    assert!(out.stdout.contains("keep"), "{}", out.stdout);
}

#[tokio::test]
async fn clear_errors_for_unreachable_server_and_bad_flags() {
    let out = tokio::process::Command::new(BIN)
        .args(["--server-url", "http://127.0.0.1:1", "apps", "list"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:1"),
        "{err}"
    );

    let data = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--agent-listen",
            "127.0.0.1:0",
            "--node-ttl",
            "banana",
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node_ttl") || err.contains("node-ttl"),
        "{err}"
    );
    assert!(err.contains("banana"), "{err}");
}

#[tokio::test]
async fn deploy_of_a_crashing_app_fails_with_the_exit_reason() {
    let data = tempfile::tempdir().unwrap();
    let s = server(data.path()).await;
    let a = FakeAgent::connect(s.addr("grpc"), NodeSpec::new("n1", 4.0, 1024)).await;
    let spec = write(
        data.path(),
        "crash.toml",
        "id = \"crash\"\ncmd = \"exit 1\"\nbackoff_seconds = 0.1\nmax_launch_delay_seconds = 0.5\n[[health_checks]]\nprotocol = \"tcp\"\n",
    );
    let args = ["apps", "deploy", "--timeout", "30s", &spec];
    let deploy = cli(s.addr("http"), &args);
    let crasher = async {
        for _ in 0..3 {
            let id = berth_testkit::wait_for("an instance to crash", WAIT, || async {
                a.running()
                    .into_iter()
                    .find(|i| i.app_id == "crash")
                    .map(|i| i.instance_id)
            })
            .await;
            a.fail(&id).await;
        }
    };
    let (out, ()) = tokio::join!(deploy, crasher);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains("crash: deployment") && out.stderr.contains("keep failing"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("exited with code 1"), "{}", out.stderr);
}

/// The real pair: `berth server` and `berth agent` (process driver) over loopback.
#[tokio::test]
async fn real_agent_runs_heals_and_scales_an_app() {
    let data = tempfile::tempdir().unwrap();
    // A fixed agent port, so the agent finds the server again after its restart.
    let grpc = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let s = server_on(&data.path().join("server"), &grpc).await;
    let agent_dir = data.path().join("agent");
    let _agent = BerthProcess::start(
        BIN,
        &[
            "agent",
            "--server",
            &grpc,
            "--registry",
            "127.0.0.1:9848",
            "--registry-http",
            "off",
            "--data-dir",
            agent_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "real-node",
            "--cpus",
            "4",
            "--mem-mib",
            "4096",
        ],
    )
    .await;
    let spec = write(
        data.path(),
        "sleeper.toml",
        "id = \"real/sleeper\"\ncmd = \"exec sleep 300\"\ninstances = 2\nmem = 16\n",
    );
    let out = cli(
        s.addr("http"),
        &["apps", "deploy", "--timeout", "30s", &spec],
    )
    .await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);

    let running = |v: &serde_json::Value| -> Vec<(String, u64)> {
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "running" || i["state"] == "healthy")
            .map(|i| {
                (
                    i["id"].as_str().unwrap().to_string(),
                    i["pid"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let instances = || async {
        let out = cli(
            s.addr("http"),
            &["-o", "json", "instances", "--app", "real/sleeper"],
        )
        .await;
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    let before = running(&instances().await);
    assert_eq!(before.len(), 2, "{before:?}");

    // kill -9 one instance: the agent reports it failed, the server starts a replacement.
    let (victim, pid) = before[0].clone();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_until("replacement running", WAIT, || async {
        let now = running(&instances().await);
        now.len() == 2 && now.iter().all(|(id, _)| *id != victim)
    })
    .await;

    // Restart the server: the agent reconnects, reports, and nothing is restarted.
    let pids: Vec<u64> = running(&instances().await)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert!(s.terminate().await.success());
    let s = server_on(&data.path().join("server"), &grpc).await;
    let instances = || async {
        let out = cli(
            s.addr("http"),
            &["-o", "json", "instances", "--app", "real/sleeper"],
        )
        .await;
        serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()
    };
    wait_until("agent reports again", WAIT, || async {
        running(&instances().await).len() == 2
    })
    .await;
    let url = format!("http://{}/v1/info", s.addr("http"));
    wait_until("reconciler active", WAIT, || async {
        let info: serde_json::Value = get_json(&url).await;
        info["reconciler"] == "active"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut after: Vec<u64> = running(&instances().await)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut pids = pids;
    pids.sort();
    after.sort();
    assert_eq!(pids, after, "same processes after the server restart");

    let out = cli(s.addr("http"), &["apps", "scale", "real/sleeper", "0"]).await;
    assert!(out.ok, "{}", out.stderr);
    wait_until("all stopped", WAIT, || async {
        running(&instances().await).is_empty()
    })
    .await;
    let (_, pid_left) = before[1].clone();
    wait_until("process gone", WAIT, || async {
        !std::path::Path::new(&format!("/proc/{pid_left}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid_left}/stat"))
                .is_ok_and(|s| s.contains(") Z"))
    })
    .await;
}

/// A crash loop on the real agent: `deploy` fails with the exit code and stderr, and
/// `apps show` tells why the app will not start: failures, backoff, last exit, stderr.
#[tokio::test]
async fn a_crash_loop_shows_its_exit_code_stderr_and_backoff() {
    let data = tempfile::tempdir().unwrap();
    let s = server(&data.path().join("server")).await;
    let grpc = s.addr("grpc").to_string();
    let agent_dir = data.path().join("agent");
    let _agent = BerthProcess::start(
        BIN,
        &[
            "agent",
            "--server",
            &grpc,
            "--registry",
            "127.0.0.1:9848",
            "--registry-http",
            "off",
            "--data-dir",
            agent_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "crash-node",
        ],
    )
    .await;
    let spec = write(
        data.path(),
        "crash.toml",
        "id = \"crashy\"\ncmd = \"echo 'config file /etc/crashy.conf missing' >&2; exit 3\"\nmem = 16\nbackoff_seconds = 0.2\nbackoff_factor = 5.0\n",
    );
    let out = cli(
        s.addr("http"),
        &["apps", "deploy", "--timeout", "60s", &spec],
    )
    .await;
    assert!(!out.ok, "{}", out.stdout);
    assert!(out.stderr.contains("keep failing"), "{}", out.stderr);
    assert!(out.stderr.contains("exited with code 3"), "{}", out.stderr);
    assert!(out.stderr.contains("crashy.conf missing"), "{}", out.stderr);
    assert!(
        out.stdout.contains("failed: exited with code 3"),
        "{}",
        out.stdout
    );

    let out = cli(s.addr("http"), &["apps", "show", "crashy"]).await;
    assert!(out.ok, "{}", out.stderr);
    for part in [
        "failures:  3 in a row",
        "backoff:   next launch in",
        "exit code 3",
        "stderr (last lines):",
        "| config file /etc/crashy.conf missing",
    ] {
        assert!(
            out.stdout.contains(part),
            "{part} missing in:\n{}",
            out.stdout
        );
    }
    let out = cli(s.addr("http"), &["apps", "rm", "crashy"]).await;
    assert!(out.ok, "{}", out.stderr);
}
