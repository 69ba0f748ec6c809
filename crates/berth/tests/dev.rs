//! Black-box test of `berth dev`: every role in one process, the demo app deployed through
//! the server API, scheduled on the embedded agent, registered once healthy, and reached
//! through the router. Every listener is moved to an ephemeral port through the roles'
//! own BERTH_<ROLE>_* variables, which `berth dev` honours like the standalone roles.

mod common;

use std::time::Duration;

use berth_testkit::{BerthProcess, InstanceReaper, dev_command, temp_dir, wait_for, wait_until};
use common::BIN;

#[tokio::test]
async fn dev_serves_the_demo_app_through_the_router_and_stops_cleanly() {
    let data = temp_dir();
    let _reaper = InstanceReaper::new([data.path().join("agent")]);
    let command = dev_command(BIN, data.path());
    let dev = BerthProcess::spawn(command).await;
    let api = dev.addr("api");
    let router = dev.addr("router");
    let client = reqwest::Client::new();

    let body = wait_for(
        "the demo app through the router",
        Duration::from_secs(90),
        || {
            let client = client.clone();
            async move {
                let response = client
                    .get(format!("http://{router}/"))
                    .header("host", "hello.localhost")
                    .send()
                    .await
                    .ok()?;
                if !response.status().is_success() {
                    return None;
                }
                response.text().await.ok()
            }
        },
    )
    .await;
    assert!(body.starts_with("Hello from Berth! instance "), "{body}");

    // Both instances serve: the router balances across them.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    wait_until(
        "both demo instances answer",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let seen = seen.clone();
            async move {
                if let Ok(response) = client
                    .get(format!("http://{router}/"))
                    .header("host", "hello.localhost")
                    .send()
                    .await
                    && let Ok(text) = response.text().await
                {
                    seen.lock().unwrap().insert(text);
                }
                seen.lock().unwrap().len() >= 2
            }
        },
    )
    .await;

    // Live diagnostics through the embedded gateway: the demo's processes.
    let ps = wait_for(
        "the demo's processes through the gateway",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                let response = client
                    .get(format!("http://{api}/v1/diag/ps?app=demo/hello"))
                    .send()
                    .await
                    .ok()?;
                let text = response.text().await.ok()?;
                text.contains("hello-app").then_some(text)
            }
        },
    )
    .await;
    assert!(!ps.contains("error:"), "{ps}");

    // Removing the app stops its instances and the router stops routing to them.
    let response = client
        .delete(format!("http://{api}/v1/apps/demo/hello"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    wait_until(
        "the demo route to disappear",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                client
                    .get(format!("http://{router}/"))
                    .header("host", "hello.localhost")
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 404 || r.status() == 503)
            }
        },
    )
    .await;
    wait_until(
        "the demo instances to exit",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let Ok(response) = client
                    .get(format!("http://{api}/v1/instances?app=demo/hello"))
                    .send()
                    .await
                else {
                    return false;
                };
                let Ok(view) = response.json::<serde_json::Value>().await else {
                    return false;
                };
                let alive = |i: &serde_json::Value| {
                    matches!(
                        i["state"].as_str(),
                        Some(
                            "pending"
                                | "starting"
                                | "running"
                                | "healthy"
                                | "unhealthy"
                                | "stopping"
                        )
                    )
                };
                view["instances"]
                    .as_array()
                    .is_some_and(|list| !list.iter().any(alive))
            }
        },
    )
    .await;

    let status = dev.terminate().await;
    assert!(status.success(), "berth dev exited with {status:?}");
}
