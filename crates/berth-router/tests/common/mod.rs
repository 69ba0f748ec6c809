//! Real loopback backends and clients for the router's integration tests.
#![allow(dead_code)]

pub mod fake_registry;
pub mod nats_server;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_router::metrics::RouterMetrics;
use berth_router::proxy::{Proxy, ProxyConfig};
use berth_router::server::{self, Listener};
use berth_router::{EndpointSpec, LbAlgorithm, RouteEntry, RouteKey, RouteStore};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A backend answering with JSON describing the request it saw.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Released by tests to let `/hold` and `/stream` finish.
    pub release: Arc<Notify>,
}

pub async fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (h, r) = (hits.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (h, r) = (h.clone(), r.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    answer(name, req, r.clone())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Backend {
        addr,
        hits,
        release,
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    name: &'static str,
    mut req: Request<Incoming>,
    release: Arc<Notify>,
) -> Result<Response<BoxBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/ws" {
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = up.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut out = b"echo:".to_vec();
                            out.extend_from_slice(&buf[..n]);
                            if io.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(full(""))
            .unwrap());
    }
    if path == "/stream" {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                .await;
            release.notified().await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                .await;
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        return Ok(Response::new(BodyExt::boxed(body)));
    }
    if path == "/hold" {
        release.notified().await;
    }
    if path == "/sleep" {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(k.to_string(), v.to_str().unwrap_or("").to_string());
    }
    let method = req.method().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "name": name, "method": method, "path": path, "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut resp = Response::builder()
        .header("content-type", "application/json")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5");
    if path == "/status500" {
        resp = resp.status(500);
    }
    if path == "/login" {
        resp = resp.header("set-cookie", "JSESSIONID=abc; Path=/");
    }
    Ok(resp.body(full(json.to_string())).unwrap())
}

fn full(s: impl Into<Bytes>) -> BoxBody {
    Full::new(s.into()).boxed()
}

/// An address nothing listens on (bound, then closed).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

pub struct TestRouter {
    pub addr: SocketAddr,
    pub store: Arc<RouteStore>,
    pub metrics: Arc<RouterMetrics>,
    pub stop: CancellationToken,
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn fast_config() -> ProxyConfig {
    ProxyConfig {
        connect_timeout: Duration::from_millis(500),
        response_header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        failure_cooldown: Duration::from_secs(30),
        ..ProxyConfig::default()
    }
}

pub async fn router(cfg: ProxyConfig) -> TestRouter {
    let store = Arc::new(RouteStore::new());
    let metrics = Arc::new(RouterMetrics::default());
    let proxy = Arc::new(Proxy::new(store.clone(), cfg, metrics.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(server::serve(
        Listener {
            listener,
            tls: None,
        },
        proxy,
        stop.clone(),
        Duration::from_secs(2),
        Duration::from_secs(5),
    ));
    TestRouter {
        addr,
        store,
        metrics,
        stop,
    }
}

pub fn entry(route: &str, addrs: &[SocketAddr]) -> RouteEntry {
    RouteEntry {
        key: RouteKey::parse(route).unwrap(),
        lb: LbAlgorithm::RoundRobin,
        endpoints: addrs.iter().map(|a| EndpointSpec::new(*a)).collect(),
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn router_error(&self) -> Option<&str> {
        self.headers
            .get("x-berth-router-error")
            .map(|v| v.to_str().unwrap())
    }
}

pub async fn get(router: SocketAddr, host: &str, path: &str) -> Got {
    send(
        router,
        Request::get(format!("http://{router}{path}")).header("host", host),
        "",
    )
    .await
}

pub async fn send(router: SocketAddr, req: http::request::Builder, body: &str) -> Got {
    let _ = router;
    let resp = client()
        .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends raw bytes and returns the raw answer (for requests clients refuse to build).
pub async fn raw(router: SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(router).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A router started through the public `start`, stopped when dropped.
pub struct Running {
    pub handle: berth_router::RouterHandle,
    pub shutdown: berth_util::shutdown::Shutdown,
    pub dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.handle.http_addr()
    }
}

pub async fn start_router(
    dir: tempfile::TempDir,
    tweak: impl FnOnce(&mut berth_router::RouterConfig),
) -> Running {
    let mut cfg = berth_router::RouterConfig::for_test(dir.path());
    tweak(&mut cfg);
    let shutdown = berth_util::shutdown::Shutdown::new();
    let handle = berth_router::start(cfg, &shutdown)
        .await
        .expect("router starts");
    Running {
        handle,
        shutdown,
        dir,
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Waits until `host` or `host/path` answers with `status` through the router.
pub async fn wait_status(router: SocketAddr, route: &str, status: u16) {
    let (host, path) = match route.find('/') {
        Some(i) => (route[..i].to_string(), route[i..].to_string()),
        None => (route.to_string(), "/".to_string()),
    };
    berth_testkit::wait_until(&format!("{route} -> {status}"), WAIT, || {
        let (host, path) = (host.clone(), path.clone());
        async move { get(router, &host, &path).await.status == status }
    })
    .await;
}
