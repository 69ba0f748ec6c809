//! Load generator for `scripts/bench-registry`: drives any Nacos v1 server (Berth's
//! registry, rnacos) over keep-alive HTTP/1.1 and reports, per phase, throughput and the
//! server's own CPU time (from /proc), so the generator's share does not blur the figure.
//!
//! `bench_registry ADDR PID [instances] [concurrency] [push subscribers]`: prints one JSON line per phase.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

const SERVICES: usize = 100;
/// Linux's USER_HZ: /proc reports CPU time in these ticks.
const TICKS_PER_SEC: f64 = 100.0;

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / TICKS_PER_SEC
}

/// The machine's one-minute load average: the figures are only as quiet as the machine.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn instance(i: usize) -> (String, String, u16) {
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    (
        format!("bench-svc-{}", i % SERVICES),
        ip,
        10_000 + (i % 50_000) as u16,
    )
}

/// With `BENCH_HOLD_MS`, registrations carry Nacos's per-instance timeouts so that a
/// long memory run keeps every instance without beating (both servers honour the keys).
fn hold_metadata() -> &'static str {
    static HOLD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOLD.get_or_init(|| match std::env::var("BENCH_HOLD_MS") {
        Ok(ms) if !ms.is_empty() => format!(
            "&metadata={}",
            enc(&format!(
                r#"{{"preserved.heart.beat.timeout":"{ms}","preserved.ip.delete.timeout":"{ms}"}}"#
            ))
        ),
        _ => String::new(),
    })
}

/// Instances the server lists over all bench services (checks a memory run kept them).
async fn held(addr: SocketAddr) -> usize {
    let mut total = 0;
    for s in 0..SERVICES {
        let path = format!("/nacos/v1/ns/instance/list?serviceName=bench-svc-{s}");
        if let Some(body) = http_body(addr, hyper::Method::GET, path).await
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            total += v["hosts"].as_array().map(Vec::len).unwrap_or(0);
        }
    }
    total
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn path_for(phase: &str, i: usize) -> (hyper::Method, String) {
    let (svc, ip, port) = instance(i);
    match phase {
        "register" => (
            hyper::Method::POST,
            format!(
                "/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral=true{}",
                hold_metadata()
            ),
        ),
        "beat" => {
            let beat = format!(
                r#"{{"serviceName":"DEFAULT_GROUP@@{svc}","ip":"{ip}","port":{port},"cluster":"DEFAULT","weight":1.0}}"#
            );
            (
                hyper::Method::PUT,
                format!(
                    "/nacos/v1/ns/instance/beat?serviceName={svc}&groupName=DEFAULT_GROUP&beat={}",
                    enc(&beat)
                ),
            )
        }
        _ => (
            hyper::Method::GET,
            format!(
                "/nacos/v1/ns/instance/list?serviceName=bench-svc-{}",
                i % SERVICES
            ),
        ),
    }
}

async fn worker(
    addr: SocketAddr,
    phase: &'static str,
    next: Arc<AtomicU64>,
    total: u64,
    errors: Arc<AtomicU64>,
) {
    let stream = TcpStream::connect(addr)
        .await
        .expect("connect to the server under test");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return;
        }
        let (method, path) = path_for(phase, i as usize);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("valid request");
        match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

async fn phase(addr: SocketAddr, pid: u32, name: &'static str, ops: u64, concurrency: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(addr, name, next.clone(), ops, errors.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_secs(pid) - cpu0).max(0.01);
    println!(
        "{{\"phase\":\"{name}\",\"ops\":{ops},\"secs\":{secs:.3},\"ops_per_sec\":{:.0},\"server_cpu_secs\":{cpu:.2},\"ops_per_cpu_sec\":{:.0},\"errors\":{},\"rss_mib\":{:.1},\"load1\":{:.2}}}",
        ops as f64 / secs,
        ops as f64 / cpu,
        errors.load(Ordering::Relaxed),
        rss_mib(pid),
        load1(),
    );
}

async fn http_call(addr: SocketAddr, method: hyper::Method, path: String) -> bool {
    http_body(addr, method, path).await.is_some()
}

/// The body of a successful answer, or `None`.
async fn http_body(addr: SocketAddr, method: hyper::Method, path: String) -> Option<Bytes> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let resp = sender.send_request(req).await.ok()?;
    let ok = resp.status().is_success();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    ok.then_some(body)
}

/// The fields of a push packet the subscriber needs (`data` stays an escaped string).
#[derive(serde::Deserialize)]
struct PushPacket<'a> {
    #[serde(rename = "lastRefTime")]
    last_ref_time: serde_json::Value,
    #[serde(borrow)]
    data: std::borrow::Cow<'a, str>,
}

/// One datagram as read, stamped when it was read and when the kernel queued it.
struct Arrival {
    socket: usize,
    from: SocketAddr,
    at: Instant,
    /// The kernel's receive stamp (SO_TIMESTAMPNS, wall clock): when the server's send
    /// delivered it to the socket, whenever this thread got to run.
    queued: Option<std::time::SystemTime>,
    raw: Vec<u8>,
}

/// Reads one datagram without blocking: its length, sender and kernel receive stamp.
fn read_stamped(
    sock: &mio::net::UdpSocket,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> Option<(usize, SocketAddr, Option<std::time::SystemTime>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    use std::os::fd::AsRawFd;
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(
        sock.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let from = SocketAddr::from(msg.address?);
    let queued = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::ScmTimestampns(ts) => Some(
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32),
            ),
            _ => None,
        })
    });
    Some((msg.bytes, from, queued))
}

/// The subscribers' side of the push phase: every socket on one epoll-driven thread.
///
/// While datagrams arrive the thread only reads them and stamps each as it is read (a
/// `recv` and a clock read, about two microseconds). Decoding, acking and reporting wait
/// until the sockets have been quiet for `QUIET` or every subscriber's packet is in: a
/// thousand subscribers share two cores with the server here, and acking (plus the
/// server handling each ack) in the middle of a burst would slow the server's own send
/// loop, which on a real network 1000 separate machines would not. `QUIET` is long enough
/// that a sender pausing a few milliseconds mid-burst (its core taken by another
/// process) does not start the decoding early, when the rest of the burst would then
/// be read only after it (a 2 ms quiet period put 40 ms stalls into the figure); a
/// complete burst is processed at once. Acks reach the server well inside its 500 ms
/// resend timeout either way.
///
/// What the figure holds: the registration request, the server's commit, render and send
/// loop, kernel delivery, and this thread's wake-up, all on the machine's two cores.
fn receive(sockets: Vec<mio::net::UdpSocket>, tx: tokio::sync::mpsc::UnboundedSender<Vec<Report>>) {
    use std::io::Read;
    const QUIET: std::time::Duration = std::time::Duration::from_millis(100);
    let mut poll = mio::Poll::new().expect("epoll");
    let mut sockets = sockets;
    for (n, sock) in sockets.iter_mut().enumerate() {
        poll.registry()
            .register(sock, mio::Token(n), mio::Interest::READABLE)
            .expect("register a socket with epoll");
    }
    let mut events = mio::Events::with_capacity(1024);
    let mut buf = vec![0u8; 65536];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut arrivals: Vec<Arrival> = Vec::with_capacity(sockets.len());
    loop {
        let timeout = (!arrivals.is_empty()).then_some(QUIET);
        if poll.poll(&mut events, timeout).is_err() {
            continue;
        }
        for ev in events.iter() {
            let n = ev.token().0;
            // Edge-triggered: drain the socket.
            while let Some((len, from, queued)) = read_stamped(&sockets[n], &mut buf, &mut cmsg) {
                arrivals.push(Arrival {
                    socket: n,
                    from,
                    at: Instant::now(),
                    queued,
                    raw: buf[..len].to_vec(),
                });
            }
        }
        if arrivals.is_empty() || (!events.is_empty() && arrivals.len() < sockets.len()) {
            continue;
        }
        let mut report = Vec::with_capacity(arrivals.len());
        for a in arrivals.drain(..) {
            let mut raw = a.raw;
            if raw.starts_with(&[0x1f, 0x8b]) {
                let mut out = Vec::new();
                if flate2::read::GzDecoder::new(&raw[..])
                    .read_to_end(&mut out)
                    .is_ok()
                {
                    raw = out;
                }
            }
            let Ok(packet) = serde_json::from_slice::<PushPacket>(&raw) else {
                continue;
            };
            let nonce = match &packet.last_ref_time {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.clone(),
                _ => String::new(),
            };
            let ack = format!(r#"{{"type":"push-ack","lastRefTime":"{nonce}","data":""}}"#);
            let _ = sockets[a.socket].send_to(ack.as_bytes(), a.from);
            report.push((
                packet.data.matches(r#""instanceId":"#).count(),
                a.at,
                a.queued,
            ));
        }
        if tx.send(report).is_err() {
            return;
        }
    }
}

/// What the receiver reports per packet: hosts in it, when read, when the kernel queued it.
type Report = (usize, Instant, Option<std::time::SystemTime>);

/// UDP push latency: `subscribers` sockets subscribe to one service; each of `changes`
/// registrations is timed from the request until each subscriber's packet was read.
async fn push_phase(addr: SocketAddr, subscribers: usize, changes: usize) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Report>>();
    let mut sockets = Vec::with_capacity(subscribers);
    for n in 0..subscribers {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        sock.set_nonblocking(true).expect("non-blocking UDP");
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .expect("SO_TIMESTAMPNS");
        let port = sock.local_addr().expect("local addr").port();
        let path = format!(
            "/nacos/v1/ns/instance/list?serviceName=bench-push&udpPort={port}&clientIP=127.0.0.1"
        );
        if !http_call(addr, hyper::Method::GET, path).await {
            eprintln!("subscription {n} failed");
        }
        sockets.push(mio::net::UdpSocket::from_std(sock));
    }
    // The thread ends with the process (it blocks in epoll between pushes).
    std::thread::spawn(move || receive(sockets, tx));
    let mut latencies = Vec::new();
    let mut queued_latencies = Vec::new();
    let mut missed = 0usize;
    for k in 0..changes {
        while rx.try_recv().is_ok() {}
        let started = Instant::now();
        let started_wall = std::time::SystemTime::now();
        let path = format!(
            "/nacos/v1/ns/instance?serviceName=bench-push&ip=10.9.0.{}&port={}&ephemeral=true",
            k % 250,
            20_000 + k
        );
        http_call(addr, hyper::Method::POST, path).await;
        let mut got = 0;
        let mut batches = 0;
        let deadline = Instant::now() + std::time::Duration::from_secs(3);
        'wait: while got < subscribers {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(batch)) => {
                    batches += 1;
                    for (hosts, at, queued) in batch {
                        if hosts == k + 1 {
                            latencies.push(at.duration_since(started).as_secs_f64() * 1000.0);
                            if let Some(q) =
                                queued.and_then(|q| q.duration_since(started_wall).ok())
                            {
                                queued_latencies.push(q.as_secs_f64() * 1000.0);
                            }
                            got += 1;
                        }
                    }
                }
                _ => break 'wait,
            }
        }
        missed += subscribers - got;
        if std::env::var_os("BENCH_PUSH_DETAIL").is_some() {
            let these = &latencies[latencies.len() - got..];
            let first = these.iter().copied().fold(f64::INFINITY, f64::min);
            let last = these.iter().copied().fold(0.0, f64::max);
            let q = &queued_latencies[queued_latencies.len().saturating_sub(got)..];
            let q_first = q.iter().copied().fold(f64::INFINITY, f64::min);
            let q_last = q.iter().copied().fold(0.0, f64::max);
            eprintln!(
                "change {k}: {got} packets, read first {first:.2} ms, last {last:.2} ms; queued first {q_first:.2} ms, last {q_last:.2} ms; {batches} report(s)"
            );
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    queued_latencies.sort_by(|a, b| a.total_cmp(b));
    let pct_of = |v: &[f64], p: f64| {
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let pct = |p: f64| pct_of(&latencies, p);
    println!(
        "{{\"phase\":\"push\",\"subscribers\":{subscribers},\"changes\":{changes},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\"queued_p50_ms\":{:.2},\"queued_p99_ms\":{:.2},\"missed\":{missed},\"load1\":{:.2}}}",
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        pct_of(&queued_latencies, 0.50),
        pct_of(&queued_latencies, 0.99),
        load1(),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: bench_registry ADDR PID [instances] [concurrency]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR as ip:port");
    let pid: u32 = args[2].parse().expect("PID");
    let instances: u64 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(32);
    // BENCH_PHASES=register,beat runs a subset (the memory run registers 1M and stops).
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "register,beat,list,push".into());
    let wanted = |p: &str| phases.split(',').any(|w| w.trim() == p);
    if wanted("register") {
        phase(addr, pid, "register", instances, concurrency).await;
    }
    if wanted("beat") {
        phase(addr, pid, "beat", instances, concurrency).await;
    }
    if wanted("list") {
        phase(addr, pid, "list", instances / 2, concurrency).await;
    }
    if wanted("held") {
        println!("{{\"phase\":\"held\",\"instances\":{}}}", held(addr).await);
    }
    if wanted("push") {
        let subscribers: usize = args.get(5).and_then(|v| v.parse().ok()).unwrap_or(1000);
        push_phase(addr, subscribers, 20).await;
    }
}
