//! Route propagation latency: time from a registry change to the first 200 through the
//! router, with many routes already loaded. Runs the router in-process against a small
//! in-process gRPC registry (the same one the tests use) on loopback.
//!
//!   cargo run --release -p berth-router --example propagation -- [ROUTES] [SAMPLES]

#[path = "../tests/common/fake_registry.rs"]
#[allow(dead_code)]
mod fake_registry;

use std::net::SocketAddr;
use std::time::Duration;

use berth_router::RouterConfig;
use berth_router::sources::registry::RegistryConfig;
use berth_util::shutdown::Shutdown;
use fake_registry::{FakeRegistry, instance, service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

async fn status_of(router: SocketAddr, host: &str) -> u16 {
    let Ok(mut s) = tokio::net::TcpStream::connect(router).await else {
        return 0;
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = [0u8; 12];
    if s.read_exact(&mut buf).await.is_err() {
        return 0;
    }
    std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let routes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let samples: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);

    // One backend answering 200 to everything.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });

    let fake = FakeRegistry::default();
    for i in 0..routes {
        let host = format!("svc{i}.bench.example");
        let meta = [("berth.routes", host.as_str())];
        fake.put(
            service(
                &format!("svc{i}"),
                vec![instance(backend_addr, true, &meta)],
            ),
            false,
        );
    }
    let (reg_addr, _stop) = fake.serve("127.0.0.1:0".parse().unwrap()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RouterConfig::for_test(dir.path());
    cfg.route_cache = None;
    cfg.proxy.access_log = false;
    cfg.registry = Some(RegistryConfig {
        endpoint: format!("http://{reg_addr}"),
        namespace: "public".into(),
        retry_max: Duration::from_millis(200),
        secret: None,
    });
    let shutdown = Shutdown::new();
    let handle = berth_router::start(cfg, &shutdown).await.unwrap();
    let router = handle.http_addr();
    let last = format!("svc{}.bench.example", routes - 1);
    let t0 = Instant::now();
    while status_of(router, &last).await != 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "snapshot of {routes} routes routable after {:?}",
        t0.elapsed()
    );

    // A full table rebuild (every route, one swap), for comparison with the
    // per-change updates measured below.
    let t = Instant::now();
    for _ in 0..10 {
        handle.store().update(|_| {});
    }
    println!(
        "one full table rebuild with {routes} routes: {:?}",
        t.elapsed() / 10
    );

    let mut lat = Vec::with_capacity(samples);
    for n in 0..samples {
        let host = format!("new{n}.bench.example");
        let meta = [("berth.routes", host.as_str())];
        let start = Instant::now();
        fake.put(
            service(
                &format!("new{n}"),
                vec![instance(backend_addr, true, &meta)],
            ),
            false,
        );
        while status_of(router, &host).await != 200 {
            tokio::task::yield_now().await;
        }
        lat.push(start.elapsed());
    }
    lat.sort();
    let pct = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "propagation with {} routes over {samples} changes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        routes + samples,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
        lat.last().unwrap().as_secs_f64() * 1000.0
    );
    shutdown.trigger();
}
