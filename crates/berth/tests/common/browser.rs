//! A real browser for the web UI tests: headless Chromium driven through ChromeDriver
//! (WebDriver, by fantoccini), each test with its own ChromeDriver and profile.

use std::process::Stdio;

use berth_testkit::wait_until;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::WAIT_PLATFORM;

/// ChromeDriver on a free loopback port. Dropping it kills its whole process group, the
/// browsers it started included, also when the test fails half-way.
pub struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver runs (scripts/test installs Debian's chromium-driver)");
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    wait_until("chromedriver answers", WAIT_PLATFORM, || async {
        reqwest::get(&status).await.is_ok()
    })
    .await;
    Driver { child, url }
}

/// A headless Chromium session keeping its profile in `profile`.
pub async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // ChromeDriver speaks plain HTTP on loopback.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// Evaluates `expr` in the page.
pub async fn eval(page: &Client, expr: &str) -> Value {
    page.execute(&format!("return {expr};"), vec![])
        .await
        .unwrap_or(Value::Null)
}

/// Waits until `expr` is true in the page.
pub async fn wait_page(page: &Client, what: &str, expr: &str) {
    wait_until(what, WAIT_PLATFORM, || async {
        eval(page, expr).await == json!(true)
    })
    .await;
}

/// Clicks the element with `id`, finding it again when a redraw replaced it between the
/// find and the click (the app page redraws as events arrive).
pub async fn click(page: &Client, id: &str) {
    wait_until(&format!("#{id} clicked"), WAIT_PLATFORM, || async {
        match page.find(Locator::Id(id)).await {
            Ok(element) => element.click().await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
}
