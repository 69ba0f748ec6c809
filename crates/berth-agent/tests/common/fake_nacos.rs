//! A fake registry speaking the Nacos v1 instance API: it records every call, can be told
//! to refuse calls, and checks, when an instance registers, that it really serves, and
//! when it deregisters, that it has not been told to stop yet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, put};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub params: HashMap<String, String>,
    pub at: tokio::time::Instant,
    /// Register: the instance accepted a TCP connection on the registered port.
    pub serving: bool,
    /// Deregister: the instance had already received SIGTERM (its marker file exists).
    pub terminated: bool,
}

#[derive(Clone, Default)]
struct Shared {
    calls: Arc<Mutex<Vec<Call>>>,
    fail_next_registers: Arc<Mutex<u32>>,
    forget_next_beats: Arc<Mutex<u32>>,
    marker: Arc<Mutex<Option<PathBuf>>>,
}

pub struct FakeNacos {
    pub addr: SocketAddr,
    shared: Shared,
    task: JoinHandle<()>,
}

impl FakeNacos {
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = Router::new()
            .route("/nacos/v1/ns/instance", any(instance))
            .route("/nacos/v1/ns/instance/beat", put(beat))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { addr, shared, task }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }

    pub fn calls_of(&self, method: Method, path_suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path.ends_with(path_suffix))
            .collect()
    }

    pub fn fail_next_registers(&self, n: u32) {
        *self.shared.fail_next_registers.lock().unwrap() = n;
    }

    pub fn forget_next_beats(&self, n: u32) {
        *self.shared.forget_next_beats.lock().unwrap() = n;
    }

    /// The file whose existence means "the instance got SIGTERM".
    pub fn watch_marker(&self, path: PathBuf) {
        *self.shared.marker.lock().unwrap() = Some(path);
    }
}

impl Drop for FakeNacos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(_shared: &Shared, method: Method, path: &str, params: HashMap<String, String>) -> Call {
    Call {
        method,
        path: path.to_string(),
        params,
        at: tokio::time::Instant::now(),
        serving: false,
        terminated: false,
    }
}

async fn instance(
    State(shared): State<Shared>,
    method: Method,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mut call = record(
        &shared,
        method.clone(),
        "/nacos/v1/ns/instance",
        params.clone(),
    );
    if method == Method::POST {
        let addr = format!(
            "{}:{}",
            params.get("ip").cloned().unwrap_or_default(),
            params.get("port").cloned().unwrap_or_default()
        );
        call.serving = tokio::net::TcpStream::connect(addr).await.is_ok();
        let refuse = {
            let mut n = shared.fail_next_registers.lock().unwrap();
            let refuse = *n > 0;
            *n = n.saturating_sub(1);
            refuse
        };
        shared.calls.lock().unwrap().push(call);
        if refuse {
            return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
        }
        return "ok".into_response();
    }
    if method == Method::DELETE {
        call.terminated = shared
            .marker
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|p| p.exists());
    }
    shared.calls.lock().unwrap().push(call);
    "ok".into_response()
}

async fn beat(
    State(shared): State<Shared>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let call = record(&shared, Method::PUT, "/nacos/v1/ns/instance/beat", params);
    shared.calls.lock().unwrap().push(call);
    let forget = {
        let mut n = shared.forget_next_beats.lock().unwrap();
        let forget = *n > 0;
        *n = n.saturating_sub(1);
        forget
    };
    let code = if forget { 20404 } else { 10200 };
    axum::Json(serde_json::json!({ "clientBeatInterval": 5000, "code": code })).into_response()
}
