#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use berth_server::{ServerConfig, ServerHandle};
use berth_util::shutdown::Shutdown;
use serde_json::Value;

// A bound on failure, not a speed check: generous, because CI machines are small and busy.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct TestServer {
    pub handle: ServerHandle,
    pub shutdown: Shutdown,
    pub http: reqwest::Client,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), |_| {}).await
    }

    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig::for_test(dir.path());
        tweak(&mut config);
        let shutdown = Shutdown::new();
        let handle = berth_server::start(config, &shutdown)
            .await
            .expect("server starts");
        let base = format!("http://{}", handle.http_addr());
        TestServer {
            handle,
            shutdown,
            http: reqwest::Client::new(),
            base,
            dir,
        }
    }

    pub fn agent_addr(&self) -> SocketAddr {
        self.handle.agent_addr()
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.trigger();
        self.shutdown
            .drain(Duration::from_secs(5))
            .await
            .expect("drains");
        drop(self.handle);
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        ct: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let r = self
            .http
            .request(method, self.url(path))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            "application/json",
            body.to_string(),
        )
        .await
    }

    pub async fn deploy(&self, spec: Value) -> Value {
        let id = spec["id"].as_str().unwrap().to_string();
        let (code, body) = self
            .send(
                reqwest::Method::PUT,
                // Tests change apps back to back; the 409 of a busy app has its own test.
                &format!("/v1/apps/{id}?force=true"),
                "application/json",
                spec.to_string(),
            )
            .await;
        assert!(code == 200 || code == 201, "deploy {id}: {code} {body}");
        body
    }

    pub async fn status(&self, app: &str) -> Value {
        self.get(&format!("/v1/apps/{app}")).await.1["status"].clone()
    }
}
