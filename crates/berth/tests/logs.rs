//! Black-box test of `berth logs`: an app's output read through the server from the agent
//! that runs it, merged and prefixed per instance, one instance alone, stderr, and
//! following live output until the instances stop.

mod common;

use std::process::Stdio;
use std::time::Duration;

use berth_testkit::{InstanceReaper, temp_dir, wait_until};
use common::{BIN, cli, dev_without_demo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn logs_of_every_instance_one_instance_stderr_and_follow() {
    let data = temp_dir();
    let _reaper = InstanceReaper::new([data.path().join("agent")]);
    let dev = dev_without_demo(data.path()).await;
    let api = dev.addr("api");
    // Each instance says who it is on both outputs, then ticks once per 100 ms on stdout.
    let spec = data.path().join("chatty.toml");
    std::fs::write(
        &spec,
        r#"
id = "logs/chatty"
cmd = 'echo "hello from $BERTH_INSTANCE"; echo "oops from $BERTH_INSTANCE" >&2; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.1; done'
instances = 2
cpus = 0.1
mem = 32
"#,
    )
    .unwrap();
    let deployed = cli(api, &["apps", "deploy", spec.to_str().unwrap()]).await;
    assert!(deployed.ok, "{}\n{}", deployed.stdout, deployed.stderr);

    let instances: Vec<String> = {
        let out = cli(api, &["-o", "json", "instances", "--app", "logs/chatty"]).await;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let mut ids: Vec<String> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(instances.len(), 2, "{instances:?}");

    // Every instance, each line prefixed with its instance.
    wait_until(
        "both instances' first lines",
        Duration::from_secs(20),
        || async {
            let out = cli(api, &["logs", "logs/chatty", "-n", "10000"]).await;
            out.ok
                && instances
                    .iter()
                    .all(|id| out.stdout.contains(&format!("[{id}] hello from {id}\n")))
        },
    )
    .await;

    // One instance: its lines only, unprefixed; the last N lines; stderr on request.
    let one = &instances[0];
    wait_until(
        "the last 3 lines of one instance, all ticks",
        Duration::from_secs(20),
        || async {
            let out = cli(api, &["logs", "logs/chatty", "--instance", one, "-n", "3"]).await;
            let lines: Vec<&str> = out.stdout.lines().collect();
            out.ok && lines.len() == 3 && lines.iter().all(|l| l.starts_with("tick "))
        },
    )
    .await;
    let err = cli(
        api,
        &[
            "logs",
            "logs/chatty",
            "--instance",
            one,
            "--stream",
            "stderr",
        ],
    )
    .await;
    assert_eq!(err.stdout, format!("oops from {one}\n"), "{}", err.stderr);

    // Wrong requests are named.
    let bad = cli(api, &["logs", "logs/chatty", "-n", "0"]).await;
    assert!(!bad.ok && bad.stderr.contains("lines"), "{}", bad.stderr);
    let unknown = cli(api, &["logs", "logs/none"]).await;
    assert!(
        !unknown.ok && unknown.stderr.contains("logs/none") && unknown.stderr.contains("404"),
        "{}",
        unknown.stderr
    );

    // Follow: lines keep coming from both instances, then the stream ends once the
    // instances are stopped.
    let mut follow = Command::new(BIN)
        .arg("--server-url")
        .arg(format!("http://{api}"))
        .args(["logs", "logs/chatty", "--follow", "-n", "1"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut ticks = std::collections::HashMap::<String, u32>::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while ticks.len() < 2 || ticks.values().any(|n| *n < 5) {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the stream goes on");
            let (prefix, text) = line.split_once(' ').unwrap();
            assert!(text.starts_with("tick "), "{line}");
            *ticks.entry(prefix.to_string()).or_default() += 1;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("live lines from both instances, got {ticks:?}"));

    let scaled = cli(api, &["apps", "scale", "logs/chatty", "0"]).await;
    assert!(scaled.ok, "{}", scaled.stderr);
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        while lines.next_line().await.unwrap().is_some() {}
        follow.wait().await.unwrap()
    })
    .await
    .expect("following ends once the instances stopped");
    assert!(status.success());
}
