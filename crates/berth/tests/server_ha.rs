//! Black-box: two `berth server` processes on one PostgreSQL database elect one leader.
//! The standby redirects the API to the leader and refuses agents, which move on to the
//! leader; when the leader is killed, the standby takes over, the agent reconnects to it,
//! and the running instances are adopted, not restarted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use berth_testkit::postgres::TempPostgres;
use berth_testkit::{BerthProcess, InstanceReaper, temp_dir, wait_for, wait_until};
use common::{BIN, WAIT_PLATFORM, get_json, postgres_server};
use tokio::process::Command;

/// A server of the pair: short lease, heartbeats and passes, so a takeover is quick.
async fn ha_server(data: &Path, url_file: &Path) -> BerthProcess {
    postgres_server(
        data,
        url_file,
        &[
            "--startup-grace",
            "1s",
            "--heartbeat-interval",
            "300ms",
            "--node-ttl",
            "3s",
            "--reconcile-interval",
            "500ms",
        ],
    )
    .await
}

/// Instance id -> pid of the app's running instances, as `base` answers.
async fn running(base: &str) -> BTreeMap<String, u64> {
    get_json(&format!("{base}/v1/instances?app=ha/sleeper")).await["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|i| i["state"] == "running")
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn reconcile_passes(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("berth_server_reconcile_passes_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no reconcile pass counter in {text}"))
}

#[tokio::test]
async fn the_standby_takes_over_from_a_dead_leader_and_nothing_restarts() {
    let pg = TempPostgres::start();
    let dir = temp_dir();
    let url_file = dir.path().join("postgres-url");
    std::fs::write(&url_file, pg.create_database("berth")).unwrap();

    let a = ha_server(&dir.path().join("a"), &url_file).await;
    let a_url = format!("http://{}", a.addr("http"));
    assert_eq!(
        get_json(&format!("{a_url}/v1/leader")).await["role"],
        "leader"
    );
    let b = ha_server(&dir.path().join("b"), &url_file).await;
    let b_url = format!("http://{}", b.addr("http"));
    let view = get_json(&format!("{b_url}/v1/leader")).await;
    assert_eq!(view["role"], "standby", "{view}");
    assert_eq!(view["leader"]["api_url"], a_url.as_str(), "{view}");

    // The agent lists the standby first: it is refused there and settles on the leader.
    let agent_dir = dir.path().join("agent");
    let _reaper = InstanceReaper::new([agent_dir.clone()]);
    let _agent = BerthProcess::start(
        BIN,
        &[
            "agent",
            "--server",
            &format!("{},{}", b.addr("grpc"), a.addr("grpc")),
            "--registry-http",
            "off",
            "--data-dir",
            agent_dir.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "ha-node",
            "--backoff-max",
            "1s",
        ],
    )
    .await;
    // Asked through the standby, answered by the leader (307).
    wait_until("the node reports to the leader", WAIT_PLATFORM, || async {
        get_json(&format!("{b_url}/v1/nodes")).await["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 1 && n[0]["status"] == "ready")
    })
    .await;
    let spec = dir.path().join("sleeper.toml");
    std::fs::write(
        &spec,
        "id = \"ha/sleeper\"\ncmd = \"exec sleep 300\"\ninstances = 2\nmem = 16\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--server-url", &b_url, "apps", "deploy", "--timeout", "20s"])
        .arg(&spec)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = running(&a_url).await;
    assert_eq!(before.len(), 2, "{before:?}");

    // The leader dies without a word: the standby takes over once the lease runs out.
    a.kill().await;
    wait_until("b leads", WAIT_PLATFORM, || async {
        get_json(&format!("{b_url}/v1/leader")).await["role"] == "leader"
    })
    .await;
    wait_until("the agent reports to b", WAIT_PLATFORM, || async {
        running(&b_url).await == before
    })
    .await;
    wait_for("b's reconciler active", WAIT_PLATFORM, || async {
        (get_json(&format!("{b_url}/v1/info")).await["reconciler"] == "active").then_some(())
    })
    .await;
    // Two full reconcile passes later the very same processes run.
    let passes = reconcile_passes(&b_url).await;
    wait_until("two more reconcile passes", WAIT_PLATFORM, || async {
        reconcile_passes(&b_url).await >= passes + 2
    })
    .await;
    assert_eq!(running(&b_url).await, before, "adopted, not restarted");

    // And b manages the app.
    let out = Command::new(BIN)
        .args(["--server-url", &b_url, "apps", "scale", "ha/sleeper", "3"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("three running", WAIT_PLATFORM, || async {
        running(&b_url).await.len() == 3
    })
    .await;
}
