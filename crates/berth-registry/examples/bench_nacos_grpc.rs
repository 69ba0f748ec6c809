//! Load generator for `scripts/bench-registry-grpc`: drives any Nacos 2.x gRPC server
//! (Berth's registry, rnacos) the way an SDK does, and reports per mode throughput and
//! the server's own CPU time (from /proc), so the generator's share does not blur it.
//!
//! Every simulated client is one HTTP/2 connection (one tonic `Channel` over one TCP
//! connection): unary `ServerCheckRequest`, then the bi-stream opened with a
//! `ConnectionSetupRequest`, then unary requests on the same connection (the server ties
//! them to the stream by the client's address). Requests the server sends on the stream
//! (`NotifySubscriberRequest`, `ClientDetectionRequest`, `ConfigChangeNotifyRequest`)
//! are answered with their response type and the same `requestId`; a connection that
//! made no request for 5 s sends a `HealthCheckRequest`, as the SDKs do.
//!
//! `bench_nacos_grpc MODE GRPC_ADDR PID [--connections C] [--secs D] [--hold S]
//! [--subscribers N] [--changes K] [--spacing-ms MS] [--idle N]`
//!
//! The server CPU of a timed mode is counted from the start of the load until the server
//! is quiet again after it (`tail_cpu_secs`: work it queued while answering), so
//! `ops_per_cpu_sec` charges each server for all the work the load caused;
//! `ops_per_window_cpu_sec` counts the load's window only.
//!
//! Modes, each printing one JSON line:
//! - `register`: C connections register ephemeral instances (`InstanceRequest`
//!   registerInstance) for D seconds; connection w's k-th registration is w's instance of
//!   service `bench-reg-k`, so every request adds an instance (Nacos keeps one instance
//!   per service and connection) and the services fill up to C instances each. Then the
//!   connections stay open, silent, for `--hold` seconds and the server's CPU over that
//!   hold is reported (background work per held instance).
//! - `query`: one connection batch-registers 100 instances of `bench-query`; C
//!   connections send `ServiceQueryRequest` for it for D seconds.
//! - `config-publish`: C connections publish (`ConfigPublishRequest`) 512-byte configs,
//!   100 data ids per connection, new content every time, for D seconds.
//! - `config-get`: 1000 configs published first (not timed), then C connections query
//!   them (`ConfigQueryRequest`) for D seconds.
//! - `push`: N subscriber connections (default 1000) subscribe (`SubscribeServiceRequest`)
//!   to `bench-push`; a writer connection registers then deregisters one instance, K
//!   changes (default 20) spaced by `--spacing-ms`; for each change, the time from the
//!   writer's response (and from its request) until each subscriber read the
//!   `NotifySubscriberRequest` showing it; p50/p99/max and subscribers missed.
//! - `idle`: N connections (default 10000) set up and kept (health check every 5 s) for
//!   `--hold` seconds; the server's RSS before, after and once they closed, so bytes per
//!   idle connection.
//! - `idle-h2`: as `idle`, but each connection stops after its ServerCheck (an HTTP/2
//!   connection without the Nacos stream): what the transport alone costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use berth_proto::nacos as pb;
use berth_proto::nacos::bi_request_stream_client::BiRequestStreamClient;
use berth_proto::nacos::request_client::RequestClient;
use futures::StreamExt;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

/// Linux's USER_HZ: /proc reports CPU time in these ticks.
const TICKS_PER_SEC: f64 = 100.0;
/// The SDKs' keep-alive period: a connection silent this long sends a health check.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Connections set up at once while a mode opens many.
const OPEN_PARALLEL: usize = 64;

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// Waits until the server is quiet again (under 10% of a core over half a second, at
/// most 15 s) and returns the CPU seconds it spent meanwhile: work a server queued while
/// answering (rnacos applies registrations in actors after answering) belongs to the
/// load that caused it.
async fn settle(pid: u32) -> (f64, f64) {
    let t0 = Instant::now();
    let start = cpu_secs(pid);
    let mut last = start;
    while t0.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_secs(pid);
        if now - last < 0.05 {
            return (now - start, t0.elapsed().as_secs_f64());
        }
        last = now;
    }
    (cpu_secs(pid) - start, t0.elapsed().as_secs_f64())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A payload as the SDKs frame it: the type's simple name in metadata, the JSON as body.
fn payload(kind: &str, body: &Value) -> pb::Payload {
    pb::Payload {
        metadata: Some(pb::Metadata {
            r#type: kind.to_string(),
            client_ip: "127.0.0.1".to_string(),
            headers: Default::default(),
        }),
        body: Some(pb::Any {
            type_url: String::new(),
            value: serde_json::to_vec(body).expect("JSON"),
        }),
    }
}

/// The fields of any response the generator checks.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "resultCode", default)]
    result_code: u64,
    #[serde(default)]
    message: Option<String>,
}

/// A server request read from the stream: its id and, for a naming push, the hosts.
#[derive(Deserialize)]
struct ServerRequest {
    #[serde(rename = "requestId", default)]
    request_id: Option<String>,
    #[serde(rename = "serviceInfo", default)]
    service_info: Option<ServiceInfo>,
}

#[derive(Deserialize)]
struct ServiceInfo {
    #[serde(default)]
    hosts: Option<Vec<IgnoredAny>>,
}

/// A push a subscriber read: which connection, when, how many hosts it listed.
struct Push {
    conn: usize,
    at: Instant,
    hosts: usize,
}

/// Milliseconds since the generator started (a connection's last successful request).
fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

/// One SDK connection.
#[derive(Clone)]
struct Conn {
    rpc: RequestClient<Channel>,
    /// The client's side of the stream; kept so the stream stays open.
    _stream: mpsc::Sender<pb::Payload>,
    last_ok: Arc<AtomicU64>,
    epoch: Instant,
}

impl Conn {
    /// One unary request; the response's body when it says success.
    async fn call(&mut self, kind: &str, body: &Value) -> Result<Vec<u8>, String> {
        let answer = self
            .rpc
            .request(payload(kind, body))
            .await
            .map_err(|s| format!("{kind}: {s}"))?
            .into_inner();
        let rtype = answer
            .metadata
            .as_ref()
            .map(|m| m.r#type.clone())
            .unwrap_or_default();
        let raw = answer.body.map(|b| b.value).unwrap_or_default();
        let head: Head =
            serde_json::from_slice(&raw).map_err(|e| format!("{kind}: unreadable {rtype}: {e}"))?;
        if head.result_code != 200 {
            return Err(format!(
                "{kind}: {rtype} {}: {}",
                head.result_code,
                head.message.unwrap_or_default()
            ));
        }
        self.last_ok.store(now_ms(self.epoch), Ordering::Relaxed);
        Ok(raw)
    }
}

/// Connects as an SDK: ServerCheck, the stream with its setup, a reader answering the
/// server's requests (and reporting naming pushes to `pushes`), and the keep-alive.
async fn connect(
    addr: SocketAddr,
    idx: usize,
    module: &str,
    pushes: Option<mpsc::UnboundedSender<Push>>,
    epoch: Instant,
) -> Result<Conn, String> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (tx, rx) = mpsc::channel::<pb::Payload>(16);
    let mut conn = Conn {
        rpc: RequestClient::new(channel.clone()).max_decoding_message_size(64 << 20),
        _stream: tx.clone(),
        last_ok: Arc::new(AtomicU64::new(now_ms(epoch))),
        epoch,
    };
    conn.call(
        "ServerCheckRequest",
        &json!({"headers": {}, "requestId": "", "module": "internal"}),
    )
    .await?;
    if BARE.load(Ordering::Relaxed) {
        // `idle-h2`: the HTTP/2 connection alone, no stream (what the transport costs).
        return Ok(conn);
    }
    let setup = json!({
        "headers": {}, "requestId": "", "module": "internal",
        "clientVersion": "Nacos-Rust-Bench:v1", "tenant": "",
        "labels": {"source": "sdk", "module": module},
        "abilityTable": {},
    });
    tx.send(payload("ConnectionSetupRequest", &setup))
        .await
        .map_err(|_| "stream closed before setup".to_string())?;
    let mut inbound = BiRequestStreamClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .request_bi_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("stream: {s}"))?
        .into_inner();
    let acks = tx;
    let last_ok = conn.last_ok.clone();
    tokio::spawn(async move {
        while let Ok(Some(p)) = inbound.message().await {
            let at = Instant::now();
            let kind = p
                .metadata
                .as_ref()
                .map(|m| m.r#type.clone())
                .unwrap_or_default();
            let raw = p.body.map(|b| b.value).unwrap_or_default();
            let Ok(req) = serde_json::from_slice::<ServerRequest>(&raw) else {
                continue;
            };
            let answer = match kind.as_str() {
                "NotifySubscriberRequest" => "NotifySubscriberResponse",
                "ClientDetectionRequest" => "ClientDetectionResponse",
                "ConfigChangeNotifyRequest" => "ConfigChangeNotifyResponse",
                "ConnectResetRequest" => "ConnectResetResponse",
                // SetupAckRequest and anything else: no answer.
                _ => continue,
            };
            if kind == "NotifySubscriberRequest"
                && let Some(pushes) = &pushes
            {
                let hosts = req
                    .service_info
                    .and_then(|s| s.hosts)
                    .map(|h| h.len())
                    .unwrap_or(0);
                let _ = pushes.send(Push {
                    conn: idx,
                    at,
                    hosts,
                });
            }
            let ack = json!({
                "resultCode": 200, "errorCode": 0, "message": "",
                "requestId": req.request_id.unwrap_or_default(),
            });
            if acks.send(payload(answer, &ack)).await.is_err() {
                break;
            }
            last_ok.store(now_ms(epoch), Ordering::Relaxed);
        }
    });
    // The SDKs wait 100 ms after the setup before their first request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Keep-alive: a health check whenever the connection was silent for 5 s, first
    // check spread over the period so thousands of connections do not tick together.
    let mut ka = conn.clone();
    let offset = Duration::from_millis((idx as u64 * 7919) % KEEP_ALIVE.as_millis() as u64);
    tokio::spawn(async move {
        tokio::time::sleep(offset).await;
        let mut tick = tokio::time::interval(KEEP_ALIVE);
        loop {
            tick.tick().await;
            let silent = now_ms(ka.epoch).saturating_sub(ka.last_ok.load(Ordering::Relaxed));
            if silent + 50 < KEEP_ALIVE.as_millis() as u64 {
                continue;
            }
            let check = json!({"headers": {}, "requestId": "", "module": "internal"});
            if let Err(err) = ka.call("HealthCheckRequest", &check).await {
                HEALTH_ERRORS.fetch_add(1, Ordering::Relaxed);
                if HEALTH_ERRORS.load(Ordering::Relaxed) <= 3 {
                    eprintln!("health check failed: {err}");
                }
                if err.contains("transport") || err.contains("broken") {
                    return;
                }
            }
        }
    });
    Ok(conn)
}

static HEALTH_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Set by the `idle-h2` mode: connections stop after ServerCheck.
static BARE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Opens `n` connections, `OPEN_PARALLEL` at a time; the failures are counted.
async fn open_many(
    addr: SocketAddr,
    n: usize,
    module: &'static str,
    pushes: Option<mpsc::UnboundedSender<Push>>,
    epoch: Instant,
) -> (Vec<Conn>, usize) {
    let results: Vec<Result<Conn, String>> = futures::stream::iter(0..n)
        .map(|i| connect(addr, i, module, pushes.clone(), epoch))
        .buffer_unordered(OPEN_PARALLEL)
        .collect()
        .await;
    let mut conns = Vec::with_capacity(n);
    let mut failed = 0;
    for r in results {
        match r {
            Ok(c) => conns.push(c),
            Err(err) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connection failed: {err}");
                }
            }
        }
    }
    (conns, failed)
}

fn instance_body(service: &str, ip: &str, port: u16, kind: &str) -> Value {
    json!({
        "headers": {}, "requestId": "", "module": "naming",
        "namespace": "public", "serviceName": service, "groupName": "DEFAULT_GROUP",
        "type": kind,
        "instance": {
            "instanceId": "", "ip": ip, "port": port, "weight": 1.0, "healthy": true,
            "enabled": true, "ephemeral": true, "clusterName": "DEFAULT", "serviceName": "",
            "metadata": {"version": "1.0.0", "zone": "bench"},
        },
    })
}

fn ip_of(i: usize) -> String {
    format!(
        "10.{}.{}.{}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        (i & 255).max(1)
    )
}

fn config_body(data_id: &str, content: Option<String>) -> Value {
    let mut body = json!({
        "headers": {}, "requestId": "", "module": "config",
        "dataId": data_id, "group": "DEFAULT_GROUP", "tenant": "",
    });
    if let Some(content) = content {
        body["content"] = Value::String(content);
        body["casMd5"] = Value::String(String::new());
        body["additionMap"] = json!({"type": "yaml", "appName": "bench"});
    }
    body
}

/// 512 bytes of YAML-ish content that differs on every call.
fn content(w: usize, k: u64) -> String {
    let mut s = format!("# bench connection {w} publish {k}\nkey: value-{k}\n");
    while s.len() < 512 {
        s.push_str("padding: 0123456789abcdef0123456789abcdef\n");
    }
    s.truncate(512);
    s
}

#[derive(Clone, Copy)]
enum Load {
    Register,
    Query,
    Publish,
    Get,
}

/// C connections doing `load` for `secs`; ops and errors.
async fn timed(conns: &[Conn], load: Load, secs: f64) -> (u64, u64, f64) {
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = conns
        .iter()
        .cloned()
        .enumerate()
        .map(|(w, mut conn)| {
            let (ops, errors) = (ops.clone(), errors.clone());
            tokio::spawn(async move {
                let ip = ip_of(w + 1);
                let mut k: u64 = 0;
                while Instant::now() < deadline {
                    let result = match load {
                        Load::Register => {
                            let svc = format!("bench-reg-{k}");
                            conn.call(
                                "InstanceRequest",
                                &instance_body(&svc, &ip, 8080, "registerInstance"),
                            )
                            .await
                            .map(|_| ())
                        }
                        Load::Query => {
                            let body = json!({
                                "headers": {}, "requestId": "", "module": "naming",
                                "namespace": "public", "serviceName": "bench-query",
                                "groupName": "DEFAULT_GROUP", "cluster": "",
                                "healthyOnly": false, "udpPort": 0,
                            });
                            conn.call("ServiceQueryRequest", &body).await.map(|_| ())
                        }
                        Load::Publish => {
                            let id = format!("bench-cfg-{w}-{}", k % 100);
                            conn.call(
                                "ConfigPublishRequest",
                                &config_body(&id, Some(content(w, k))),
                            )
                            .await
                            .map(|_| ())
                        }
                        Load::Get => {
                            let id = format!("bench-get-{}", (k as usize * 31 + w) % 1000);
                            conn.call("ConfigQueryRequest", &config_body(&id, None))
                                .await
                                .map(|_| ())
                        }
                    };
                    match result {
                        Ok(()) => {
                            ops.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("request failed: {err}");
                            }
                        }
                    }
                    k += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    (
        ops.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    )
}

struct Args {
    mode: String,
    addr: SocketAddr,
    pid: u32,
    connections: usize,
    secs: f64,
    hold: f64,
    subscribers: usize,
    changes: usize,
    spacing_ms: u64,
    idle: usize,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() < 4 {
        eprintln!(
            "usage: bench_nacos_grpc register|query|config-publish|config-get|push|idle|idle-h2 GRPC_ADDR PID \
             [--connections C] [--secs D] [--hold S] [--subscribers N] [--changes K] [--spacing-ms MS] [--idle N]"
        );
        std::process::exit(2);
    }
    let mut a = Args {
        mode: argv[1].clone(),
        addr: argv[2].parse().expect("GRPC_ADDR as ip:port"),
        pid: argv[3].parse().expect("PID"),
        connections: 32,
        secs: 10.0,
        hold: 10.0,
        subscribers: 1000,
        changes: 20,
        spacing_ms: 250,
        idle: 10_000,
    };
    let mut rest = argv[4..].iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--connections" => a.connections = value.parse().expect("--connections"),
            "--secs" => a.secs = value.parse().expect("--secs"),
            "--hold" => a.hold = value.parse().expect("--hold"),
            "--subscribers" => a.subscribers = value.parse().expect("--subscribers"),
            "--changes" => a.changes = value.parse().expect("--changes"),
            "--spacing-ms" => a.spacing_ms = value.parse().expect("--spacing-ms"),
            "--idle" => a.idle = value.parse().expect("--idle"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// Prints one JSON line: the fields given plus throughput per second and per server
/// CPU-second.
fn report(mode: &str, ops: u64, secs: f64, cpu: f64, errors: u64, pid: u32, extra: Value) {
    let mut line = json!({
        "mode": mode,
        "ops": ops,
        "secs": (secs * 1000.0).round() / 1000.0,
        "ops_per_sec": (ops as f64 / secs).round(),
        "server_cpu_secs": (cpu * 100.0).round() / 100.0,
        "ops_per_cpu_sec": (ops as f64 / cpu.max(0.01)).round(),
        "errors": errors,
        "rss_mib": (rss_kib(pid) as f64 / 1024.0 * 10.0).round() / 10.0,
        "load1": load1(),
    });
    if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
        line.extend(extra);
    }
    println!("{line}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i]
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

async fn push_mode(a: &Args, epoch: Instant) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Push>();
    let (subs, failed) = open_many(a.addr, a.subscribers, "naming", Some(tx), epoch).await;
    let mut sub_errors = failed as u64;
    let subscribe = json!({
        "headers": {}, "requestId": "", "module": "naming", "namespace": "public",
        "serviceName": "bench-push", "groupName": "DEFAULT_GROUP", "subscribe": true,
        "clusters": "",
    });
    let results: Vec<bool> = futures::stream::iter(subs.iter().cloned())
        .map(|mut c| {
            let subscribe = subscribe.clone();
            async move { c.call("SubscribeServiceRequest", &subscribe).await.is_ok() }
        })
        .buffer_unordered(OPEN_PARALLEL)
        .collect()
        .await;
    sub_errors += results.iter().filter(|ok| !**ok).count() as u64;
    let subscribed = results.iter().filter(|ok| **ok).count();
    let (mut writers, _) = open_many(a.addr, 1, "naming", None, epoch).await;
    let Some(mut writer) = writers.pop() else {
        eprintln!("the writer could not connect");
        std::process::exit(1);
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    while rx.try_recv().is_ok() {}
    let cpu0 = cpu_secs(a.pid);
    let own0 = cpu_secs(std::process::id());
    let t0 = Instant::now();
    let mut from_response = Vec::new();
    let mut from_request = Vec::new();
    let mut before_response = 0u64;
    let mut missed = 0usize;
    let mut writer_errors = 0u64;
    let mut seen = vec![u64::MAX; a.subscribers];
    for k in 0..a.changes {
        let register = k % 2 == 0;
        let expected = usize::from(register);
        let kind = if register {
            "registerInstance"
        } else {
            "deregisterInstance"
        };
        let sent = Instant::now();
        if writer
            .call(
                "InstanceRequest",
                &instance_body("bench-push", "10.9.0.1", 20_000, kind),
            )
            .await
            .is_err()
        {
            writer_errors += 1;
        }
        let answered = Instant::now();
        let mut got = 0;
        let deadline = answered + Duration::from_secs(3);
        while got < subscribed {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(p)) => {
                    if p.at < sent || p.hosts != expected || seen[p.conn] == k as u64 {
                        continue;
                    }
                    seen[p.conn] = k as u64;
                    got += 1;
                    from_request.push(p.at.duration_since(sent).as_secs_f64() * 1000.0);
                    if p.at < answered {
                        before_response += 1;
                    }
                    from_response
                        .push(p.at.saturating_duration_since(answered).as_secs_f64() * 1000.0);
                }
                _ => break,
            }
        }
        missed += subscribed - got;
        if std::env::var_os("BENCH_PUSH_DETAIL").is_some() {
            eprintln!(
                "change {k}: {got}/{subscribed} pushes, writer answered after {:.2} ms",
                answered.duration_since(sent).as_secs_f64() * 1000.0
            );
        }
        tokio::time::sleep(Duration::from_millis(a.spacing_ms)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(a.pid) - cpu0;
    // The subscribers' side shares the machine: its CPU per change is part of the figure.
    let own = cpu_secs(std::process::id()) - own0;
    from_response.sort_by(|x, y| x.total_cmp(y));
    from_request.sort_by(|x, y| x.total_cmp(y));
    let delivered = from_request.len() as u64;
    report(
        "push",
        delivered,
        secs,
        cpu,
        sub_errors + writer_errors,
        a.pid,
        json!({
            "subscribers": subscribed,
            "changes": a.changes,
            "p50_ms": round2(percentile(&from_response, 0.50)),
            "p99_ms": round2(percentile(&from_response, 0.99)),
            "max_ms": round2(from_response.last().copied().unwrap_or(f64::NAN)),
            "from_request_p50_ms": round2(percentile(&from_request, 0.50)),
            "from_request_p99_ms": round2(percentile(&from_request, 0.99)),
            "from_request_max_ms": round2(from_request.last().copied().unwrap_or(f64::NAN)),
            "before_response": before_response,
            "missed": missed,
            "health_errors": HEALTH_ERRORS.load(Ordering::Relaxed),
            "client_cpu_secs": round2(own),
        }),
    );
    drop(subs);
}

async fn idle_mode(a: &Args, epoch: Instant) {
    let before = rss_kib(a.pid);
    let cpu0 = cpu_secs(a.pid);
    let t0 = Instant::now();
    let (conns, failed) = open_many(a.addr, a.idle, "naming", None, epoch).await;
    let open_secs = t0.elapsed().as_secs_f64();
    let open_cpu = cpu_secs(a.pid) - cpu0;
    let opened = rss_kib(a.pid);
    let cpu1 = cpu_secs(a.pid);
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let hold_cpu = cpu_secs(a.pid) - cpu1;
    let held = rss_kib(a.pid);
    let n = conns.len();
    drop(conns);
    // Closing: the client side goes away; give the server time to notice and free.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let closed = rss_kib(a.pid);
    let per_conn =
        |kib: u64| (kib.saturating_sub(before) as f64 * 1024.0 / n.max(1) as f64).round();
    report(
        &a.mode,
        n as u64,
        open_secs,
        open_cpu,
        failed as u64 + HEALTH_ERRORS.load(Ordering::Relaxed),
        a.pid,
        json!({
            "connections": n,
            "failed": failed,
            "hold_secs": a.hold,
            "hold_cpu_secs": round2(hold_cpu),
            "health_errors": HEALTH_ERRORS.load(Ordering::Relaxed),
            "rss_before_kib": before,
            "rss_opened_kib": opened,
            "rss_held_kib": held,
            "rss_closed_kib": closed,
            "bytes_per_conn": per_conn(held),
            "bytes_per_conn_opened": per_conn(opened),
        }),
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    let epoch = Instant::now();
    let load = match a.mode.as_str() {
        "push" => return push_mode(&a, epoch).await,
        "idle" => return idle_mode(&a, epoch).await,
        "idle-h2" => {
            BARE.store(true, Ordering::Relaxed);
            return idle_mode(&a, epoch).await;
        }
        "register" => Load::Register,
        "query" => Load::Query,
        "config-publish" => Load::Publish,
        "config-get" => Load::Get,
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    };
    let mut extra = json!({"connections": a.connections});
    // Preparation, not timed.
    let mut setup_conns = Vec::new();
    match load {
        Load::Query => {
            let (mut c, _) = open_many(a.addr, 1, "naming", None, epoch).await;
            let mut c = c.pop().expect("a setup connection");
            let instances: Vec<Value> = (0..100)
                .map(|i| {
                    instance_body("bench-query", &ip_of(0x0008_0000 + i + 1), 8080, "")["instance"]
                        .clone()
                })
                .collect();
            let batch = json!({
                "headers": {}, "requestId": "", "module": "naming", "namespace": "public",
                "serviceName": "bench-query", "groupName": "DEFAULT_GROUP",
                "type": "batchRegisterInstance", "instances": instances,
            });
            if let Err(err) = c.call("BatchInstanceRequest", &batch).await {
                eprintln!("batch registration failed: {err}");
            }
            let query = json!({
                "headers": {}, "requestId": "", "module": "naming", "namespace": "public",
                "serviceName": "bench-query", "groupName": "DEFAULT_GROUP", "cluster": "",
                "healthyOnly": false, "udpPort": 0,
            });
            let hosts = match c.call("ServiceQueryRequest", &query).await {
                Ok(raw) => {
                    extra["response_bytes"] = json!(raw.len());
                    if std::env::var_os("BENCH_DUMP").is_some() {
                        eprintln!("{}", String::from_utf8_lossy(&raw));
                    }
                    #[derive(Deserialize)]
                    struct Answer {
                        #[serde(rename = "serviceInfo")]
                        service_info: Option<ServiceInfo>,
                    }
                    serde_json::from_slice::<Answer>(&raw)
                        .ok()
                        .and_then(|a| a.service_info?.hosts)
                        .map(|h| h.len())
                        .unwrap_or(0)
                }
                Err(err) => {
                    eprintln!("query failed: {err}");
                    0
                }
            };
            extra["hosts"] = json!(hosts);
            setup_conns.push(c);
        }
        Load::Get => {
            let (conns, _) = open_many(a.addr, 8, "config", None, epoch).await;
            let errors = Arc::new(AtomicU64::new(0));
            let tasks: Vec<_> = conns
                .iter()
                .cloned()
                .enumerate()
                .map(|(w, mut c)| {
                    let errors = errors.clone();
                    tokio::spawn(async move {
                        for i in (w..1000).step_by(8) {
                            let id = format!("bench-get-{i}");
                            if c.call(
                                "ConfigPublishRequest",
                                &config_body(&id, Some(content(w, i as u64))),
                            )
                            .await
                            .is_err()
                            {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            extra["prefill_errors"] = json!(errors.load(Ordering::Relaxed));
            if let Some(c) = conns.first() {
                let answer = c
                    .clone()
                    .call("ConfigQueryRequest", &config_body("bench-get-0", None))
                    .await;
                extra["response_bytes"] = json!(answer.map(|r| r.len()).unwrap_or(0));
            }
            setup_conns.extend(conns);
        }
        _ => {}
    }
    let module = match load {
        Load::Publish | Load::Get => "config",
        _ => "naming",
    };
    let (conns, failed) = open_many(a.addr, a.connections, module, None, epoch).await;
    // A quiet second so the server's setup work is out of the measured CPU.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = cpu_secs(a.pid);
    let (ops, errors, secs) = timed(&conns, load, a.secs).await;
    let window_cpu = cpu_secs(a.pid) - cpu0;
    let (tail_cpu, tail_secs) = settle(a.pid).await;
    let cpu = window_cpu + tail_cpu;
    extra["window_cpu_secs"] = json!(round2(window_cpu));
    extra["tail_cpu_secs"] = json!(round2(tail_cpu));
    extra["tail_secs"] = json!(round2(tail_secs));
    extra["ops_per_window_cpu_sec"] = json!((ops as f64 / window_cpu.max(0.01)).round());
    if let Load::Register = load {
        // The instances stay held by their open connections: what does the server spend
        // on them while nothing happens?
        let cpu1 = cpu_secs(a.pid);
        tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
        extra["hold_secs"] = json!(a.hold);
        extra["hold_cpu_secs"] = json!(round2(cpu_secs(a.pid) - cpu1));
        extra["held_instances"] = json!(ops);
    }
    report(
        &a.mode,
        ops,
        secs,
        cpu,
        errors + failed as u64,
        a.pid,
        extra,
    );
    drop(conns);
    drop(setup_conns);
}
