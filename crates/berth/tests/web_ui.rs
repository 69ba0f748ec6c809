//! The web UI in a real browser (headless Chromium through ChromeDriver) against
//! `berth dev`: create an app from a spec, watch it run, scale it, diagnose it (processes,
//! grep), see live changes made elsewhere, get every bad field named, delete it.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use berth_testkit::{InstanceReaper, temp_dir, wait_until};
use common::browser::{browser, chromedriver, click, eval, wait_page};
use common::{BIN, WAIT_PLATFORM, dev_without_demo};
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

async fn running_text(page: &Client) -> String {
    eval(
        page,
        "document.getElementById('running')?.textContent ?? ''",
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Waits until the app has no deployment in progress (a change meanwhile gets 409).
async fn deployment_done(app_url: &str) {
    wait_until("the deployment done", WAIT_PLATFORM, || async {
        let app: Value = reqwest::get(app_url).await.unwrap().json().await.unwrap();
        app["deployment"].is_null() || app["deployment"]["state"] == "succeeded"
    })
    .await;
}

#[tokio::test]
async fn create_scale_watch_validate_and_delete_from_the_browser() {
    let data = temp_dir();
    let _reaper = InstanceReaper::new([data.path().join("agent")]);
    let dev = dev_without_demo(data.path()).await;
    let api: SocketAddr = dev.addr("api");
    let driver = chromedriver().await;
    let profile = temp_dir();
    let page = browser(&driver, profile.path()).await;

    page.goto(&format!("http://{api}/")).await.unwrap();
    wait_page(
        &page,
        "the empty app list",
        "document.body.innerText.includes('No apps yet')",
    )
    .await;

    // Create from the spec editor.
    click(&page, "nav-new").await;
    wait_page(
        &page,
        "the spec editor",
        "!!document.getElementById('spec-text')",
    )
    .await;
    let spec = json!({
        "id": "ui/hello",
        "args": [BIN, "hello-app"],
        "instances": 1,
        "cpus": 0.1,
        "mem": 32,
        "ports": 1,
        "health_checks": [{"protocol": "http", "path": "/healthz", "interval_seconds": 1, "timeout_seconds": 1}],
    });
    page.execute(
        "document.getElementById('spec-text').value = arguments[0];",
        vec![json!(serde_json::to_string_pretty(&spec).unwrap())],
    )
    .await
    .unwrap();
    click(&page, "save").await;
    wait_until("the app page shows 1/1 running", WAIT_PLATFORM, || async {
        running_text(&page).await == "1/1"
    })
    .await;

    // Scale with the toolbar, once the first deployment is over (a change meanwhile would
    // get 409, shown in the page).
    let app_url = format!("http://{api}/v1/apps/ui/hello");
    deployment_done(&app_url).await;
    // The page redraws as events arrive, until the field has the focus: find it again if
    // a redraw replaced it before the first keystroke.
    wait_until("typed 2 into the scale field", WAIT_PLATFORM, || async {
        let Ok(input) = page.find(Locator::Id("scale-to")).await else {
            return false;
        };
        input.clear().await.is_ok()
            && input.send_keys("2").await.is_ok()
            && input.prop("value").await.ok().flatten().as_deref() == Some("2")
    })
    .await;
    click(&page, "scale").await;
    let scaled_in_page = tokio::time::timeout(WAIT_PLATFORM, async {
        while running_text(&page).await != "2/2" {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if scaled_in_page.is_err() {
        let body = eval(&page, "document.body.innerText").await;
        let app: Value = reqwest::get(&app_url).await.unwrap().json().await.unwrap();
        panic!(
            "2/2 never shown after scaling in the page.\npage:\n{}\napp: {app}",
            body.as_str().unwrap_or_default()
        );
    }
    wait_page(
        &page,
        "two instance rows",
        "document.querySelectorAll('tr[data-instance]').length === 2",
    )
    .await;

    // Live diagnostics from the app page: the instances' processes, then a grep.
    click(&page, "diagnose").await;
    wait_page(
        &page,
        "the diagnostics page",
        "!!document.getElementById('diag-run')",
    )
    .await;
    // Run until both instances answer (the second may still be starting): as a user
    // would press Run again.
    wait_until("both instances' processes listed", WAIT_PLATFORM, || async {
        let listed = eval(
            &page,
            "document.getElementById('diag-status').textContent === 'done' && (document.getElementById('diag-output').textContent.match(/hello-app/g) || []).length >= 2",
        )
        .await
            == json!(true);
        if !listed {
            let running = eval(&page, "document.getElementById('diag-status')?.textContent === 'running'").await;
            if running != json!(true) {
                let _ = page
                    .execute(
                        "document.getElementById('diag-op').value = 'ps'; document.getElementById('diag-run').click();",
                        vec![],
                    )
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        listed
    })
    .await;
    page.execute(
        "document.getElementById('diag-op').value = 'grep'; document.getElementById('diag-pattern').value = '(unclosed';",
        vec![],
    )
    .await
    .unwrap();
    click(&page, "diag-run").await;
    wait_page(
        &page,
        "a bad pattern named",
        "document.getElementById('diag-output').textContent.includes('not a valid regular expression')",
    )
    .await;

    // A change made elsewhere (the API, as the CLI does) shows without a reload.
    page.goto(&format!("http://{api}/ui/#/apps")).await.unwrap();
    wait_page(
        &page,
        "the app in the list",
        "!!document.querySelector('tr[data-app=\"ui/hello\"]')",
    )
    .await;
    deployment_done(&app_url).await;
    let scaled = reqwest::Client::new()
        .post(format!("http://{api}/v1/apps/ui/hello/scale"))
        .json(&json!({"instances": 3}))
        .send()
        .await
        .unwrap();
    assert!(scaled.status().is_success());
    wait_page(
        &page,
        "the list follows the event stream to 3/3",
        "document.querySelector('tr[data-app=\"ui/hello\"] td.num')?.textContent === '3/3'",
    )
    .await;

    // A bad spec: every problem is named, nothing changes.
    page.goto(&format!("http://{api}/ui/#/edit/ui/hello"))
        .await
        .unwrap();
    wait_page(
        &page,
        "the editor with the current spec",
        "(document.getElementById('spec-text')?.value ?? '').includes('hello-app')",
    )
    .await;
    let mut bad = spec.clone();
    bad["cpus"] = json!(-1);
    bad["instancez"] = json!(2);
    page.execute(
        "document.getElementById('spec-text').value = arguments[0];",
        vec![json!(bad.to_string())],
    )
    .await
    .unwrap();
    click(&page, "save").await;
    wait_page(&page, "the error names the bad field", "!document.getElementById('error').hidden && document.getElementById('error').textContent.includes('instancez')").await;
    let version: Value = reqwest::get(format!("http://{api}/v1/apps/ui/hello"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        version["spec"]["instances"], 3,
        "the bad spec changed nothing"
    );

    // Delete, confirming the browser's dialog.
    deployment_done(&app_url).await;
    page.goto(&format!("http://{api}/ui/#/apps/ui/hello"))
        .await
        .unwrap();
    wait_page(&page, "the app page", "!!document.getElementById('delete')").await;
    click(&page, "delete").await;
    page.accept_alert().await.unwrap();
    wait_page(
        &page,
        "back at an empty list",
        "location.hash === '#/apps' && document.body.innerText.includes('No apps yet')",
    )
    .await;
    page.close().await.unwrap();
}
