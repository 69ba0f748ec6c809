//! The web UI against `berth server --acl` in a real browser (headless Chromium): the
//! page asks for a token on its login view, takes the bootstrap token, lists apps and
//! follows the event stream with it, keeps it in sessionStorage and in no URL, and
//! forgets it on sign out.

mod common;

use berth_testkit::temp_dir;
use common::browser::{browser, chromedriver, click, eval, wait_page};
use common::{acl_bootstrap, acl_server};
use fantoccini::Locator;
use serde_json::json;

#[tokio::test]
async fn the_login_view_takes_a_token_and_keeps_it_out_of_urls() {
    let data = temp_dir();
    let server = acl_server(data.path(), &[]).await;
    let api = server.addr("http");
    let secret = acl_bootstrap(api).await;
    let driver = chromedriver().await;
    let profile = temp_dir();
    let page = browser(&driver, profile.path()).await;

    page.goto(&format!("http://{api}/")).await.unwrap();
    wait_page(
        &page,
        "the login view",
        "!!document.getElementById('login-token') && document.body.innerText.includes('berth acl bootstrap')",
    )
    .await;
    assert_eq!(
        eval(&page, "document.getElementById('login-token').type").await,
        json!("password")
    );

    // A wrong token: refused, still the login view, nothing kept.
    let input = page.find(Locator::Id("login-token")).await.unwrap();
    input.send_keys("not-a-token").await.unwrap();
    click(&page, "login-submit").await;
    wait_page(
        &page,
        "the refusal shown",
        "document.getElementById('login-reason')?.textContent.includes('refused')",
    )
    .await;
    assert_eq!(
        eval(&page, "sessionStorage.getItem('berth.token')").await,
        json!(null)
    );

    // The bootstrap token: the app list, live.
    let input = page.find(Locator::Id("login-token")).await.unwrap();
    input.send_keys(&secret).await.unwrap();
    click(&page, "login-submit").await;
    wait_page(
        &page,
        "the empty app list",
        "document.body.innerText.includes('No apps yet')",
    )
    .await;
    wait_page(
        &page,
        "the event stream connected with the token",
        "document.getElementById('live').textContent === 'live'",
    )
    .await;

    // An app created elsewhere shows up through the event stream, which carries the token.
    let created = reqwest::Client::new()
        .post(format!("http://{api}/v1/apps"))
        .bearer_auth(&secret)
        .json(&json!({"id": "demo/x", "cmd": "sleep 1000", "instances": 1, "cpus": 0.1, "mem": 16}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    wait_page(
        &page,
        "the new app listed",
        "!!document.querySelector('tr[data-app=\"demo/x\"]')",
    )
    .await;

    // Where the token is: in this tab's sessionStorage, in no URL the page used.
    assert_eq!(
        eval(&page, "sessionStorage.getItem('berth.token')").await,
        json!(secret)
    );
    assert_eq!(eval(&page, "localStorage.length").await, json!(0));
    let urls = eval(
        &page,
        "[location.href, ...performance.getEntriesByType('resource').map((e) => e.name)]",
    )
    .await;
    let urls = urls.as_array().expect("a list of URLs");
    assert!(
        urls.iter()
            .any(|u| u.as_str().unwrap().contains("/v1/apps")),
        "the page's API calls are listed: {urls:?}"
    );
    for url in urls {
        assert!(
            !url.as_str().unwrap().contains(&secret),
            "the token is in a URL: {url}"
        );
    }

    // Sign out: the token is gone, the login view is back.
    click(&page, "sign-out").await;
    wait_page(
        &page,
        "the login view after signing out",
        "!!document.getElementById('login-token') && sessionStorage.getItem('berth.token') === null",
    )
    .await;
    page.close().await.unwrap();
}
