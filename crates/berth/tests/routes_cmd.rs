//! Black-box test of `berth routes`: the route table of a running router, as a table, as
//! JSON, filtered by host, and behind the status listener's basic auth.

mod common;

use std::time::Duration;

use berth_testkit::{BerthProcess, InstanceReaper, dev_command, temp_dir, wait_for};
use common::BIN;
use tokio::process::Command;

async fn routes(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().await.unwrap()
}

#[tokio::test]
async fn routes_lists_the_demo_app_filters_and_speaks_json() {
    let data = temp_dir();
    let _reaper = InstanceReaper::new([data.path().join("agent")]);
    let dev = BerthProcess::spawn(dev_command(BIN, data.path())).await;
    let status = format!("http://{}", dev.addr("router_status"));

    let table = wait_for(
        "both demo endpoints in the table",
        Duration::from_secs(60),
        || async {
            let out = routes(&["routes", "--router-url", &status], &[]).await;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.success() && text.matches("demo/hello").count() == 2).then_some(text)
        },
    )
    .await;
    assert!(table.starts_with("ROUTE"), "{table}");
    assert!(table.contains("hello.localhost"), "{table}");

    let out = routes(&["-o", "json", "routes", "--router-url", &status], &[]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let route = &json["routes"][0];
    assert_eq!(route["route"], "hello.localhost", "{json}");
    assert_eq!(route["endpoints"].as_array().unwrap().len(), 2, "{json}");

    let out = routes(
        &[
            "routes",
            "--router-url",
            &status,
            "--host",
            "nothing.example",
        ],
        &[],
    )
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no routes"));
}

#[tokio::test]
async fn routes_asks_for_the_status_password_and_names_a_dead_router() {
    let router = BerthProcess::start(
        BIN,
        &[
            "router",
            "--listen",
            "127.0.0.1:0",
            "--status-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    drop(router);
    let env = [
        ("BERTH_ROUTER_STATUS_USER", "ops"),
        ("BERTH_ROUTER_STATUS_PASSWORD", "s3cret"),
    ];
    let mut command = Command::new(BIN);
    command.args([
        "router",
        "--listen",
        "127.0.0.1:0",
        "--status-listen",
        "127.0.0.1:0",
    ]);
    for (k, v) in env {
        command.env(k, v);
    }
    let router = BerthProcess::spawn(command).await;
    let status = format!("http://{}", router.addr("status"));

    let out = routes(&["routes", "--router-url", &status], &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--user"), "{stderr}");

    let out = routes(
        &["routes", "--router-url", &status, "--user", "ops"],
        &[("BERTH_ROUTER_STATUS_PASSWORD", "s3cret")],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("no routes"));

    let dead = format!("http://{}", router.addr("status"));
    drop(router);
    let out = routes(&["routes", "--router-url", &dead], &[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--router-url"));
}
