//! Load generator for `scripts/bench-registry-cluster`.
//!
//! - `load ADDR[,ADDR...] INSTANCES CONCURRENCY`: registers then beats INSTANCES
//!   instances (1000 services), connections spread over the given members; one JSON line
//!   per phase with ops/s.
//! - `lag WRITE_ADDR WATCH_GRPC_ADDR N`: N registrations through one member, each timed
//!   until a watch stream on another member shows it; p50/p99 in ms.
//! - `converge HTTP_ADDR REFERENCE_ADDRS`: waits until the member is loaded and the
//!   checksum of everything it holds (`/v1/cluster`) equals each reference member's;
//!   prints the seconds each took and the instance count.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_proto::registry::v1 as pb;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

const SERVICES: usize = 1000;

fn instance(i: usize) -> (String, String, u16) {
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    (
        format!("cl-svc-{}", i % SERVICES),
        ip,
        10_000 + (i % 50_000) as u16,
    )
}

fn path_for(phase: &str, i: usize) -> (hyper::Method, String) {
    let (svc, ip, port) = instance(i);
    match phase {
        "register" => (
            hyper::Method::POST,
            format!("/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral=true"),
        ),
        _ => (
            hyper::Method::PUT,
            format!("/nacos/v1/ns/instance/beat?serviceName={svc}&ip={ip}&port={port}"),
        ),
    }
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect to a member");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    sender
}

async fn call(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    method: hyper::Method,
    path: String,
) -> Option<Bytes> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            if std::env::var_os("BENCH_VERBOSE").is_some() {
                eprintln!("request failed: {e}");
            }
            return None;
        }
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    if !status.is_success() && std::env::var_os("BENCH_VERBOSE").is_some() {
        eprintln!("answer {status}: {}", String::from_utf8_lossy(&body));
    }
    status.is_success().then_some(body)
}

async fn load(addrs: Vec<SocketAddr>, instances: u64, concurrency: usize) {
    for phase in ["register", "beat"] {
        let next = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..concurrency)
            .map(|w| {
                let addr = addrs[w % addrs.len()];
                let (next, errors) = (next.clone(), errors.clone());
                tokio::spawn(async move {
                    let mut sender = connect(addr).await;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= instances {
                            return;
                        }
                        let (method, path) = path_for(phase, i as usize);
                        if call(&mut sender, addr, method, path).await.is_none() {
                            errors.fetch_add(1, Ordering::Relaxed);
                            sender = connect(addr).await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{{\"phase\":\"{phase}\",\"members\":{},\"ops\":{instances},\"secs\":{secs:.3},\"ops_per_sec\":{:.0},\"errors\":{}}}",
            addrs.len(),
            instances as f64 / secs,
            errors.load(Ordering::Relaxed)
        );
    }
}

async fn lag(write: SocketAddr, watch: SocketAddr, n: usize) {
    let mut client = pb::registry_client::RegistryClient::connect(format!("http://{watch}"))
        .await
        .expect("connect the watch")
        .max_decoding_message_size(256 * 1024 * 1024);
    let mut stream = client
        .watch(pb::WatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let _snapshot = stream.message().await.expect("stream").expect("snapshot");
    let mut sender = connect(write).await;
    let mut lat = Vec::with_capacity(n);
    let mut refused = 0;
    for k in 0..n {
        let port = 30_000 + k as u16;
        let svc = format!("lag-{}", k % 50);
        let t0 = Instant::now();
        let path = format!(
            "/nacos/v1/ns/instance?serviceName={svc}&ip=10.77.0.1&port={port}&ephemeral=true"
        );
        if call(&mut sender, write, hyper::Method::POST, path)
            .await
            .is_none()
        {
            refused += 1;
            eprintln!("lag write {k} (port {port}) got no success answer");
            sender = connect(write).await;
        }
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let e = stream.message().await.ok()??;
                if let Some(pb::watch_event::Kind::Change(c)) = e.kind
                    && c.service
                        .is_some_and(|s| s.instances.iter().any(|i| i.port == u32::from(port)))
                {
                    return Some(());
                }
            }
        })
        .await;
        if matches!(seen, Ok(Some(()))) {
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"phase\":\"lag\",\"samples\":{},\"missed\":{},\"refused\":{refused},\"p50_ms\":{:.1},\"p99_ms\":{:.1}}}",
        lat.len(),
        n - lat.len(),
        pct(0.5),
        pct(0.99)
    );
}

/// A member's `/v1/cluster` view, on a fresh connection (the member may be restarting).
async fn cluster_view(addr: SocketAddr) -> Option<serde_json::Value> {
    TcpStream::connect(addr).await.ok()?;
    let mut sender = connect(addr).await;
    let body = call(&mut sender, addr, hyper::Method::GET, "/v1/cluster".into()).await?;
    serde_json::from_slice(&body).ok()
}

async fn converge(addr: SocketAddr, refs: Vec<SocketAddr>) {
    let t0 = Instant::now();
    let mut loaded_at = None;
    loop {
        if let Some(v) = cluster_view(addr).await {
            if loaded_at.is_none() && v["loaded"] == true {
                loaded_at = Some(t0.elapsed().as_secs_f64());
            }
            if let Some(loaded) = loaded_at {
                let mut same = true;
                for r in &refs {
                    let other = cluster_view(*r).await;
                    same &= other.is_some_and(|o| o["checksum"] == v["checksum"]);
                }
                if same {
                    println!(
                        "{{\"phase\":\"converge\",\"instances\":{},\"checksum\":{},\"loaded_secs\":{loaded:.2},\"converged_secs\":{:.2}}}",
                        v["instances"],
                        v["checksum"],
                        t0.elapsed().as_secs_f64()
                    );
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_registry_cluster load ADDRS INSTANCES CONCURRENCY | lag WRITE_ADDR WATCH_GRPC N | converge ADDR REFERENCE_ADDRS";
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{usage}"))
    };
    match arg(1) {
        "load" => {
            let addrs = arg(2)
                .split(',')
                .map(|a| a.parse().expect("ADDR as ip:port"))
                .collect();
            load(
                addrs,
                arg(3).parse().expect("INSTANCES"),
                arg(4).parse().expect("CONCURRENCY"),
            )
            .await
        }
        "lag" => {
            lag(
                arg(2).parse().expect("WRITE_ADDR"),
                arg(3).parse().expect("WATCH_GRPC"),
                arg(4).parse().expect("N"),
            )
            .await
        }
        "converge" => {
            converge(
                arg(2).parse().expect("ADDR"),
                arg(3)
                    .split(',')
                    .map(|a| a.parse().expect("REFERENCE_ADDRS as ip:port,..."))
                    .collect(),
            )
            .await
        }
        _ => panic!("{usage}"),
    }
}
